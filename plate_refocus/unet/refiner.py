"""The network that refines Richardson-Lucy at depth: ``hybrid``'s second network.

Richardson-Lucy at a well's ``|z|`` leaves noise and ringing whose form is set
by the blur more than by the cells. A small residual U-Net fed the plane, RL's
restoration and the ``|z|`` RL used learns to correct them: it predicts a
correction that is added to RL's output. It was trained on simulated fields of
the families the benchmarks do *not* hold out, at 8-36 um, with each field's
loss divided by RL's own error there, so every depth and light level counts
equally in dB (``benchmarks/refiner_experiment.py --save``). Near focus, where
RL's output is nearly the plane, it was not trained and is not used.

A refiner file is a ``.keras`` archive (the correction network only: no Lambda
layer, so it loads in Keras safe mode) with a :class:`RefinerInfo` JSON beside
it. Shipped refiners live in ``plate_refocus/models/refiners/``, one per
objective; :func:`shipped_refiner_path` picks the one for a plate's optics, or
None, and ``hybrid`` then runs without one and says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, ModelNotFoundError
from ..optics import Optics
from .io import check_archive, closest_for, load_archive, metadata_beside, sha256_of
from .model import OPTICS_TOLERANCE

__all__ = ["RefinerInfo", "Refiner", "build_refiner", "rl_plus", "save_refiner", "load_refiner", "read_refiner_info",
           "shipped_refiner_paths", "shipped_refiner_path"]

REFINER_FORMAT = 1


@dataclass(frozen=True)
class RefinerInfo:
    """What using a refiner file needs, stored as JSON beside it.

    Parameters
    ----------
    name : str
    optics : Optics
        The optics it was trained for; it is used only within ``OPTICS_TOLERANCE`` of them.
    min_depth_um, max_depth_um : float
        The ``|z|`` range it was trained on; RL restorations at other depths are left as RL made them.
    depth_channel : bool
        Whether the network is told the ``|z|`` RL used (a constant third channel, over `depth_scale_um`).
    depth_scale_um : float
    scale_percentile, min_scale : float
        Planes and restorations are offset-subtracted and divided by ``max(percentile of the plane
        - offset, min_scale)`` before the network and scaled back after it.
    divisor : int
        Images are padded (reflected) to a multiple of this.
    consistency_limit : float, optional
        ``hybrid`` keeps a refined output whose consistency with its plane (under the model
        blur) is at most this; None: Richardson-Lucy's own limit. Set by fine-tuning from
        the validation wells, where the refined outputs beat RL against the in-focus planes
        (an objective the model does not describe makes the right answer inconsistent with it).
    sha256 : str
        Hash of the ``.keras`` file (filled in by :func:`save_refiner`).
    training, metrics : dict
        How it was trained and what it scored on its validation fields.
    """

    name: str
    optics: Optics
    min_depth_um: float
    max_depth_um: float
    depth_channel: bool
    depth_scale_um: float = 36.0
    scale_percentile: float = 99.9
    min_scale: float = 20.0
    divisor: int = 8
    consistency_limit: float | None = None
    sha256: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    package_version: str = ""
    keras_version: str = ""

    @property
    def channels(self) -> int:
        return 3 if self.depth_channel else 2

    def trained_for(self, optics: Optics) -> bool:
        """Whether it was trained for these optics, within ``OPTICS_TOLERANCE``."""
        return not self.optics.differs_from(optics, rtol=OPTICS_TOLERANCE)

    def applies(self, optics: Optics, depth_um: float) -> bool:
        """Whether it was trained for these optics (within ``OPTICS_TOLERANCE``) and this ``|z|``."""
        return self.trained_for(optics) and self.min_depth_um <= depth_um <= self.max_depth_um

    def scale(self, plane: np.ndarray, offset: float) -> float:
        """The intensity unit of the network for `plane`: its high percentile above the offset, floored."""
        return max(float(np.percentile(plane, self.scale_percentile)) - offset, self.min_scale)

    def network_input(self, plane: np.ndarray, restored: np.ndarray, offset: float,
                      depth_um: float) -> tuple[np.ndarray, float]:
        """``((Y, X, channels) float32, scale)``: what the network is fed for RL's `restored` of `plane`
        at `depth_um`; a correction it predicts is times `scale` on the plane's intensities."""
        plane = np.asarray(plane, dtype=np.float32)
        restored = np.asarray(restored, dtype=np.float32)
        if plane.ndim != 2 or plane.shape != restored.shape:
            raise ValueError(f"plane and restored must be one (Y, X) shape, got {plane.shape} and {restored.shape}")
        scale = self.scale(plane, offset)
        maps = [(plane - offset) / scale, (restored - offset) / scale]
        if self.depth_channel:
            maps.append(np.full(plane.shape, depth_um / self.depth_scale_um, np.float32))
        return np.stack(maps, axis=-1).astype(np.float32), scale

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["optics"] = self.optics.to_dict()
        return {"format": "plate-refocus rl-refiner", "format_version": REFINER_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "refiner metadata") -> RefinerInfo:
        if not isinstance(data, dict) or data.get("format") != "plate-refocus rl-refiner":
            raise ModelError(f"{source} is not a plate-refocus RL refiner's metadata; "
                             "write refiners with 'plate-refocus train-refiner'")
        if data.get("format_version") != REFINER_FORMAT:
            raise ModelError(f"{source} has format version {data.get('format_version')!r}; this "
                             f"plate-refocus reads version {REFINER_FORMAT}: retrain the refiner")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            kwargs = {k: v for k, v in data.items() if k in names}
            kwargs["optics"] = Optics(**data["optics"])
            info = cls(**kwargs)
        except (KeyError, TypeError, ValueError) as error:
            raise ModelError(f"{source} is incomplete or invalid ({error}); retrain the refiner") from None
        if info.consistency_limit is not None and not info.consistency_limit > 0:
            raise ModelError(f"{source} has consistency limit {info.consistency_limit!r}; retrain the refiner")
        if not 0 <= info.min_depth_um < info.max_depth_um:
            raise ModelError(f"{source} has depths {info.min_depth_um}-{info.max_depth_um} um; retrain the refiner")
        return info


class Refiner:
    """A loaded refiner: :meth:`refine` corrects one RL restoration."""

    def __init__(self, keras_model: Any, info: RefinerInfo) -> None:
        self.keras_model = keras_model
        self.info = info

    def applies(self, optics: Optics, depth_um: float) -> bool:
        """Whether it was trained for these optics (within ``OPTICS_TOLERANCE``) and this ``|z|``."""
        return self.info.applies(optics, depth_um)

    def refine(self, plane: np.ndarray, restored: np.ndarray, offset: float, depth_um: float) -> np.ndarray:
        """RL's restoration of `plane` at `depth_um` plus the network's correction, on the plane's scale (float32)."""
        x, scale = self.info.network_input(plane, restored, offset, depth_um)
        ny, nx = x.shape[:2]
        divisor = self.info.divisor
        pad = ((0, 0), (0, (-ny) % divisor), (0, (-nx) % divisor), (0, 0))
        correction = self.keras_model.predict_on_batch(np.pad(x[None], pad, mode="reflect"))[0, :ny, :nx, 0]
        return (np.asarray(restored, np.float32) + correction * scale).astype(np.float32)


def build_refiner(filters: int = 16, depth: int = 3, channels: int = 3) -> tuple[Any, Any]:
    """``(to_train, correction)``: a U-Net (3x3 convolutions, `depth` poolings) predicting the correction,
    and the same wrapped as ``RL + correction`` for training (only the correction is saved)."""
    import keras
    from keras import layers

    inp = keras.Input((None, None, channels))
    x, skips = inp, []
    for level in range(depth):
        x = layers.Conv2D(filters * 2**level, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters * 2**level, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(filters * 2**depth, 3, padding="same", activation="relu")(x)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(filters * 2**level, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skips[level]])
        x = layers.Conv2D(filters * 2**level, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters * 2**level, 3, padding="same", activation="relu")(x)
    correction = keras.Model(inp, layers.Conv2D(1, 1)(x), name="rl_correction")
    return rl_plus(correction), correction


def rl_plus(correction: Any) -> Any:
    """The model trained: RL's restoration (input channel 1) plus `correction`'s output. Only
    `correction` is saved; the Lambda here would not load in safe mode."""
    import keras
    from keras import layers

    inp = keras.Input((None, None, int(correction.inputs[0].shape[-1])))
    rl = layers.Lambda(lambda t: t[..., 1:2])(inp)
    return keras.Model(inp, layers.Add()([rl, correction(inp)]))


def save_refiner(correction: Any, info: RefinerInfo, path: str | os.PathLike) -> Path:
    """Write the correction network as ``path`` (``.keras``) and `info` (with the file's hash) beside it."""
    import keras

    from .. import __version__

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"refiner path must end in '.keras', got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    correction.save(path)
    info = dataclasses.replace(info, sha256=sha256_of(path), package_version=__version__,
                               keras_version=keras.__version__)
    path.with_suffix(".json").write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return path


def read_refiner_info(path: str | os.PathLike) -> RefinerInfo:
    """The validated metadata of a refiner file (no Keras)."""
    path = Path(path)
    data = metadata_beside(path, "refiner", "'plate-refocus train-refiner'")
    return RefinerInfo.from_dict(data, source=f"refiner metadata {str(path.with_suffix('.json'))!r}")


def load_refiner(path: str | os.PathLike) -> Refiner:
    """Load a refiner and its metadata in Keras safe mode, checking hash and channels."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"refiner file {str(path)!r} does not exist")
    check_archive(path, "refiner")
    info = read_refiner_info(path)
    keras_model = load_archive(path, info.sha256)
    shape_in, shape_out = tuple(keras_model.inputs[0].shape), tuple(keras_model.outputs[0].shape)
    if len(keras_model.inputs) != 1 or shape_in[-1] != info.channels or shape_out[-1] != 1:
        raise ModelError(f"refiner file {str(path)!r} takes {shape_in} and gives {shape_out}; its metadata "
                         f"needs ({info.channels} channels in, 1 out)")
    return Refiner(keras_model, info)


def shipped_refiner_folder() -> Path:
    """``plate_refocus/models/refiners``: the refiners this installation ships."""
    return Path(str(resources.files("plate_refocus") / "models" / "refiners"))


def shipped_refiner_paths() -> list[Path]:
    """Every refiner shipped with the package (``plate_refocus/models/refiners/*.keras``), sorted."""
    return sorted(shipped_refiner_folder().glob("*.keras"))


def shipped_refiner_path(optics: Optics) -> Path | None:
    """The shipped refiner trained for the closest optics within ``OPTICS_TOLERANCE``, or None."""
    return closest_for(optics, shipped_refiner_paths(), lambda p: read_refiner_info(p).optics)
