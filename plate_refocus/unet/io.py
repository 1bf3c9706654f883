"""Model files: a ``.keras`` archive with its :class:`~plate_refocus.unet.ModelInfo` JSON beside it.

:func:`save_model` writes both (the JSON records the SHA-256 of the archive,
so weights and metadata cannot drift apart silently), :func:`load_model`
checks and loads them in Keras safe mode (TensorFlow's start-up noise sent
to the log), :func:`read_model_info` reads the metadata alone (no Keras),
and :func:`default_model_path` is the shipped model for an objective (one per objective:
:func:`shipped_model_paths`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ModelError, ModelNotFoundError
from ..optics import Optics
from .model import OPTICS_TOLERANCE, ModelInfo, RefocusModel

__all__ = [
    "save_model",
    "load_model",
    "read_model_info",
    "default_model_path",
    "shipped_model_paths",
    "shipped_optics",
    "native_startup_lines_to_log",
]

# The package's logger, as before the split: TensorFlow's start-up lines go to ``plate_refocus.unet``.
log = logging.getLogger(__package__)

_DEFAULT_MODEL = "default.keras"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _metadata_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _models_folder() -> Path:
    return Path(str(resources.files("plate_refocus") / "models"))


def shipped_model_paths() -> list[Path]:
    """Every model shipped with the package (``plate_refocus/models/*.keras``), the default first.

    The network is not told the optics, so there is one model per objective; the default is the
    report's (NA 0.25, 0.52 um, 0.3 um pixels).
    """
    folder = _models_folder()
    default = folder / _DEFAULT_MODEL
    others = sorted(p for p in folder.glob("*.keras") if p != default)
    return ([default] if default.exists() else []) + others


def shipped_optics() -> str:
    """The objectives the shipped models were trained for, in one line (what a refused plate is told).

    e.g. ``"NA 0.25, 0.52 um, 0.3 um pixels (default.keras); NA 0.45, 0.46 um, 0.325 um pixels (na045.keras)"``;
    the immersion index is named only when it is not air.
    """
    described = []
    for path in shipped_model_paths():
        try:
            o = read_model_info(path).optics
        except ModelError:
            continue
        immersion = f", immersion {o.immersion_index:g}" if o.immersion_index != 1.0 else ""
        described.append(f"NA {o.na:g}, {o.wavelength_um:g} um, {o.pixel_size_um:g} um pixels{immersion} ({path.name})")
    return "; ".join(described) or "none"


def default_model_path(optics: Optics | None = None) -> Path:
    """Path of the shipped model to use when none is named.

    Without ``optics``: ``plate_refocus/models/default.keras``. With them: the
    shipped model trained for the closest optics within
    :data:`~plate_refocus.unet.model.OPTICS_TOLERANCE`, else the default
    (which ``run`` then refuses for those optics, saying how to fine-tune one).
    """
    default = _models_folder() / _DEFAULT_MODEL
    if optics is None:
        return default
    return closest_for(optics, shipped_model_paths(), lambda p: read_model_info(p).optics) or default


def closest_for(optics: Optics, paths: list[Path], trained_for: Any) -> Path | None:
    """Of `paths`, the one whose ``trained_for(path)`` optics are closest to `optics` within
    :data:`~plate_refocus.unet.model.OPTICS_TOLERANCE` (largest relative difference), else None."""
    best, best_distance = None, math.inf
    for path in paths:
        try:
            trained = trained_for(path)
        except ModelError:
            continue  # a broken shipped file is reported when it is loaded, not chosen here
        if trained.differs_from(optics, rtol=OPTICS_TOLERANCE):
            continue
        distance = max(abs(getattr(trained, f.name) / getattr(optics, f.name) - 1.0)
                       for f in dataclasses.fields(optics))
        if distance < best_distance:
            best, best_distance = path, distance
    return best


def save_model(model: RefocusModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as ``path`` (``.keras``) and its metadata as ``path`` with ``.json``.

    Parameters
    ----------
    model : RefocusModel
    path : str or path-like
        Must end in ``.keras``.

    Returns
    -------
    Path
        The ``.keras`` path. ``model.info`` is replaced by one that carries
        the file's SHA-256 and the package and Keras versions. Only the
        architecture and weights are written (no optimizer state).
    """
    if not isinstance(model, RefocusModel):
        raise TypeError(f"model must be a RefocusModel, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in '.keras', got {str(path)!r}")
    import keras

    from .. import __version__

    path.parent.mkdir(parents=True, exist_ok=True)
    keras_model = model.keras_model
    if getattr(keras_model, "optimizer", None) is not None:
        # A compiled model would carry its optimizer state (twice the weights) and its loss:
        # save an uncompiled copy, which is all that prediction needs.
        keras_model = keras.Model.from_config(keras_model.get_config())
        keras_model.set_weights(model.keras_model.get_weights())
    keras_model.save(path)
    info = dataclasses.replace(
        model.info,
        sha256=sha256_of(path),
        package_version=__version__,
        keras_version=keras.__version__,
    )
    _metadata_path(path).write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    model.info = info
    return path


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The validated metadata of a model file, without loading the weights (or Keras)."""
    path = Path(path)
    data = metadata_beside(path, "model", "plate_refocus.unet.save_model and `plate-refocus train`")
    return ModelInfo.from_dict(data, source=f"model metadata {str(_metadata_path(path))!r}")


def metadata_beside(path: Path, what: str, written_by: str) -> Any:
    """The parsed JSON beside a ``.keras`` file (``what``: "model" or "refiner", for the messages)."""
    meta = _metadata_path(path)
    if not meta.exists():
        raise ModelError(
            f"{what} {str(path)!r} has no metadata file {str(meta)!r}; a {what} file needs its JSON "
            f"beside it (written by {written_by})"
        )
    try:
        return json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"{what} metadata {str(meta)!r} is not valid JSON ({error}); re-save the {what}") from None


def check_archive(path: Path, what: str = "model") -> None:
    """Refuse a file that is not a Keras 3 ``.keras`` archive, before its JSON or Keras is read."""
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelError(
            f"{what} file {str(path)!r} is not a Keras 3 '.keras' archive (corrupt or another "
            "format); retrain it or copy it again"
        )


def load_model(path: str | os.PathLike | None = None) -> RefocusModel:
    """Load a refocusing model and its metadata, in Keras safe mode.

    Parameters
    ----------
    path : str or path-like, optional
        A ``.keras`` file with its ``.json`` beside it; by default the model
        shipped with the package (:func:`default_model_path`).

    Returns
    -------
    RefocusModel

    Raises
    ------
    ModelNotFoundError
        The file does not exist.
    ModelError
        The metadata is missing or invalid, does not match the file's hash,
        or the file is corrupt or holds code (e.g. a ``Lambda`` layer) that
        safe mode refuses to run.
    """
    if path is None:
        path = default_model_path()
        if not path.exists():
            raise ModelNotFoundError(
                f"the default model {str(path)!r} is missing from this installation; "
                "reinstall plate-refocus or pass a model with --model / load_model(path)"
            )
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(
            f"model file {str(path)!r} does not exist; pass the path of a .keras file written by "
            "`plate-refocus train`, or leave it out to use the shipped default model"
        )
    check_archive(path)
    info = read_model_info(path)
    keras_model = load_archive(path, info.sha256)
    _check_io(keras_model, path)
    return RefocusModel(keras_model, info)


def load_archive(path: Path, sha256: str) -> Any:
    """The Keras model in ``path``, after checking it against the hash its JSON records, in safe mode."""
    digest = sha256_of(path)
    if sha256 and sha256 != digest:
        raise ModelError(
            f"model file {str(path)!r} has SHA-256 {digest[:12]}... but its metadata says "
            f"{sha256[:12]}...; the weights and the JSON do not belong together"
        )
    with native_startup_lines_to_log():
        import keras

        try:
            keras_model = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001 - Keras raises many kinds for bad archives
            raise ModelError(
                f"cannot load model file {str(path)!r} in Keras safe mode: {error}. Files with "
                "Lambda layers or custom code are refused; use a model written by `plate-refocus train`"
            ) from error
    return keras_model


def _check_io(keras_model: Any, path: Path) -> None:
    """Refuse a network that cannot refocus planes: one (Y, X, 1) input of any size, one channel out."""
    problems = []
    inputs, outputs = list(keras_model.inputs), list(keras_model.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        problems.append(f"{len(inputs)} inputs and {len(outputs)} outputs (needs one of each)")
    else:
        shape_in, shape_out = tuple(inputs[0].shape), tuple(outputs[0].shape)
        if len(shape_in) != 4 or shape_in[-1] != 1:
            problems.append(f"input shape {shape_in} (needs (batch, Y, X, 1): one channel)")
        elif any(n is not None for n in shape_in[1:3]):
            problems.append(f"input shape {shape_in} fixes the image size (needs (None, None, None, 1)"
                            ": a fully convolutional network that takes any tile)")
        if len(shape_out) != 4 or shape_out[-1] != 1:
            problems.append(f"output shape {shape_out} (needs (batch, Y, X, 1): one channel)")
    if problems:
        raise ModelError(
            f"model file {str(path)!r} does not fit plate-refocus: " + "; ".join(problems)
            + ". Use a model written by `plate-refocus train`."
        )


#: TensorFlow's native start-up lines: absl INFO/WARNING records, its banner, the CPU-feature
#: hint, and the CUDA probes that fail on every machine without a GPU driver.
_STARTUP_NOISE = re.compile(
    r"^(?:[IW]\d{4} |WARNING: All log messages before absl::InitializeLog|To enable the following "
    r"instructions|E\d{4} .*(?:cuInit|Unable to register cu\w+ factory))"
)


@contextlib.contextmanager
def native_startup_lines_to_log() -> Any:
    """Send TensorFlow's native start-up lines to this module's logger instead of the terminal.

    TensorFlow's C++ code prints a dozen lines (oneDNN, CPU features, "could
    not find cuda drivers", "failed call to cuInit") straight to file
    descriptor 2 when it starts, ignoring ``TF_CPP_MIN_LOG_LEVEL`` (TensorFlow
    issue #100442), once per Dask worker. While Keras loads, descriptor 2 is
    captured; those lines go to the ``plate_refocus.unet`` logger at DEBUG
    and every other line is written back to stderr unchanged. Set
    ``PLATE_REFOCUS_TF_LOGS=1`` (inherited by local workers) to leave stderr alone.
    """
    if os.environ.get("PLATE_REFOCUS_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if _STARTUP_NOISE.match(line):
                    log.debug("TensorFlow: %s", line)
                elif line.strip():
                    print(line, file=sys.stderr)
