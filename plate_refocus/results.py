"""The results store of a run: its schema in one place, its creation, its writer, its reader.

A results store is one zarr group that ``xr.open_zarr`` / :func:`open_results`
opens lazily. :data:`SCHEMA` declares every variable once (dims, dtype,
chunking, attributes, when it is present); :func:`results_template` builds the
xarray layout from it and :class:`ResultsWriter` writes into the same arrays,
so the two cannot disagree.

The layout is created in a hidden sibling folder and renamed into place when
complete (:func:`create_results_store`), so a run killed while creating it
leaves nothing that ``--resume`` could mistake for a store. The run's
settings are stored as an attribute, and :func:`check_resume` refuses to
resume a store written with other settings, naming each difference.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import threading
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NotAPlateError, OutputExistsError
from .outputs import RESULTS_FORMAT_PREFIX, is_ours, remove_ours

__all__ = [
    "RESULTS_FORMAT",
    "STAGES",
    "PSF_SIZE",
    "WELL_PENDING",
    "WELL_DONE",
    "WELL_FAILED",
    "PLANE_MISSING",
    "PLANE_NONFINITE",
    "PLANE_NO_SIGNAL",
    "PLANE_NO_REFERENCE",
    "PLANE_INCONSISTENT",
    "PLANE_FLAG_NAMES",
    "METHOD_IDENTITY",
    "METHOD_UNET",
    "METHOD_WIENER",
    "METHOD_RL",
    "METHOD_RL_REFINED",
    "METHOD_NAMES",
    "Variable",
    "SCHEMA",
    "REFOCUSED_PLATE",
    "results_coords",
    "results_template",
    "create_results_store",
    "check_resume",
    "ResultsWriter",
    "open_results",
    "describe_flags",
    "results_info",
    "format_results_info",
    "flag_counts",
    "settings_for_resume",
]

log = logging.getLogger(__name__)

#: Version of the store's layout; a store of another version is not resumed.
RESULTS_FORMAT = f"{RESULTS_FORMAT_PREFIX}2"
STAGES = ("input", "refocused")
PSF_SIZE = 33

#: ``well_status`` values.
WELL_PENDING, WELL_DONE, WELL_FAILED = 0, 1, 2

#: ``plane_flags`` bits.
PLANE_MISSING = 1  # no file at ingest: written as NaN, left out of the PSF
PLANE_NONFINITE = 2  # NaN or infinite pixels: masked like a missing plane
PLANE_NO_SIGNAL = 4  # no signal above the noise: refocused, left out of the PSF
PLANE_NO_REFERENCE = 8  # the reference plane is missing or unusable: left out of the PSF
PLANE_INCONSISTENT = 16  # the RL restoration did not explain the plane: left as it is
#: ``method_used`` values: how each plane was refocused.
METHOD_IDENTITY, METHOD_UNET, METHOD_WIENER, METHOD_RL, METHOD_RL_REFINED = 0, 1, 2, 3, 4
METHOD_NAMES = {METHOD_IDENTITY: "left as it is (blur not identifiable, or its restoration inconsistent)",
                METHOD_UNET: "unet", METHOD_WIENER: "wiener", METHOD_RL: "rl",
                METHOD_RL_REFINED: "rl, refined by the network (hybrid at depth)"}
PLANE_FLAG_NAMES = {
    PLANE_MISSING: "missing at ingest",
    PLANE_NONFINITE: "NaN or infinite pixels (masked)",
    PLANE_NO_SIGNAL: "no signal above the noise (left out of the PSF)",
    PLANE_NO_REFERENCE: "no usable reference plane (left out of the PSF)",
    PLANE_INCONSISTENT: "restoration inconsistent with the plane (left as it is)",
}


@dataclasses.dataclass(frozen=True)
class Variable:
    """One variable of the results store.

    ``chunks``: ``"plane"`` (one chunk per (well, field, z) image), ``"well"``
    (one well per chunk, the rest whole) or ``"whole"`` (one chunk, written by
    the client alone). ``only_with``: ``"truth"`` for variables present only
    when the plate carries ground truth.
    """

    dims: tuple[str, ...]
    dtype: Any
    chunks: str
    attrs: Mapping[str, str]
    only_with: str | None = None


_QUALITY = ("well", "field", "z", "stage")

#: The refocused images live in an OME-Zarr HCS plate inside the store, at this path
#: (:mod:`plate_refocus.plate`); :func:`open_results` shows them as ``refocused``.
REFOCUSED_PLATE = "refocused"

SCHEMA: dict[str, Variable] = {
    "otf_radial": Variable(
        ("well", "z", "freq"), np.float64, "well",
        {"long_name": "isotropic OTF profile relative to the in-focus OTF (K_z / K_0 inside the "
                      "passband), normalised so otf_radial[..., 0] == 1"}),
    "psf": Variable(("well", "z", "py", "px"), np.float64, "well",
                    {"long_name": "recovered spatial PSF, centred, sums to 1"}),
    "defocus_um": Variable(("well", "z"), np.float64, "well",
                           {"long_name": "fitted |defocus| from the OTF", "units": "um"}),
    "defocus_err_um": Variable(("well", "z"), np.float64, "well",
                               {"long_name": "uncertainty of defocus_um", "units": "um"}),
    "defocus_blind_um": Variable(
        ("well", "z"), np.float64, "well",
        {"long_name": "|defocus| from the fields' pooled power spectra alone (no reference): "
                      "plate_refocus.focus.blind_defocus", "units": "um"}),
    "defocus_blind_err_um": Variable(
        ("well", "z"), np.float64, "well",
        {"long_name": "uncertainty of defocus_blind_um (95 % interval width / 3.92; wide where "
                      "the blur is not identifiable, near focus)", "units": "um"}),
    "consistency": Variable(
        ("well", "field", "z"), np.float64, "well",
        {"long_name": "how well the refocused plane, re-blurred, explains the observed plane: "
                      "reduced chi-square under the camera's noise model (about 1 when it does; "
                      "plate_refocus.deconvolve.consistency)"}),
    "method_used": Variable(
        ("well", "field", "z"), np.int8, "well",
        {"long_name": "how the plane was refocused: " + "; ".join(
            f"{code} = {text}" for code, text in METHOD_NAMES.items()) + "; -1 = not refocused"}),
    "reference_used": Variable(
        ("well",), "str", "whole",
        {"long_name": "the PSF reference of the well: focal-plane (recorded or found), blind, "
                      "or refocused"}),
    "focal_plane_used": Variable(
        ("well",), np.int16, "whole",
        {"long_name": "the plane index used as the in-focus reference (-1: none)"}),
    "focus_prominence": Variable(
        ("well",), np.float64, "whole",
        {"long_name": "how clearly the focus measure peaks at focal_plane_used when it was found "
                      "from the stack (0 flat .. 1 sharp; NaN when recorded or not found)"}),
    "sharpness": Variable(
        _QUALITY, np.float64, "well",
        {"long_name": "no-reference focus measure of input and refocused planes, higher is "
                      "sharper: var(LoG_2px(image)) / var(image) (plate_refocus.metrics.sharpness)"}),
    "psnr": Variable(_QUALITY, np.float64, "well",
                     {"long_name": "PSNR against the ground-truth in-focus image", "units": "dB"},
                     only_with="truth"),
    "ssim": Variable(_QUALITY, np.float64, "well",
                     {"long_name": "SSIM against the ground-truth in-focus image"},
                     only_with="truth"),
    "plane_flags": Variable(
        ("well", "field", "z"), np.uint8, "well",
        {"long_name": "why a plane was masked or left out of the PSF (bit flags): "
                      + "; ".join(f"{bit} = {text}" for bit, text in PLANE_FLAG_NAMES.items())}),
    "well_status": Variable(
        ("well",), np.int8, "whole",
        {"long_name": "0 = not done, 1 = done (every variable written), 2 = failed (see "
                      "well_error); --resume computes the wells that are not done"}),
    "well_error": Variable(("well",), "str", "whole",
                           {"long_name": "why a well failed (empty when it did not)"}),
}


def _chunks(variable: Variable, shape: tuple[int, ...]) -> tuple[int, ...]:
    if variable.chunks == "plane":
        return tuple(n if d in ("y", "x") else 1 for d, n in zip(variable.dims, shape, strict=True))
    if variable.chunks == "well":
        return (1, *shape[1:])
    return shape


def results_coords(layout: Any) -> dict[str, Any]:
    """The store's coordinates for a plate: well (row, column), field, z (z_um), y/x, freq, py/px, stage."""
    from .optics import radial_frequencies

    dx = layout.optics.pixel_size_um
    p = PSF_SIZE
    ny, nx = layout.shape
    return {
        "well": np.asarray(layout.wells, dtype=object),
        "row": ("well", np.asarray(layout.rows, dtype=object)),
        "column": ("well", np.asarray(layout.columns, dtype=int)),
        "field": np.arange(layout.n_fields),
        "z": np.arange(layout.n_z),
        "z_um": ("z", np.asarray(layout.z_um, dtype=float), {"units": "um"}),
        "y": ("y", np.arange(ny) * dx, {"units": "um"}),
        "x": ("x", np.arange(nx) * dx, {"units": "um"}),
        "freq": ("freq", radial_frequencies(layout.shape, dx), {"units": "cycles/um"}),
        "py": ("py", (np.arange(p) - p // 2) * dx, {"units": "um"}),
        "px": ("px", (np.arange(p) - p // 2) * dx, {"units": "um"}),
        "stage": ("stage", np.array(STAGES, dtype=object)),
    }


def results_template(layout: Any, *, attrs: Mapping[str, Any]):
    """The results dataset of a plate with lazy zeros: what :func:`create_results_store` writes.

    Parameters
    ----------
    layout : plate_refocus.plate.PlateLayout
        The plate (its wells, fields, depths, image shape, optics, ground truth).
    attrs : mapping
        The store's attributes.
    """
    import dask.array as da
    import xarray as xr

    coords = results_coords(layout)
    sizes = {"well": layout.n_wells, "field": layout.n_fields, "z": layout.n_z,
             "y": layout.shape[0], "x": layout.shape[1], "freq": coords["freq"][1].size,
             "py": PSF_SIZE, "px": PSF_SIZE, "stage": len(STAGES)}
    data_vars = {}
    for name, variable in SCHEMA.items():
        if variable.only_with == "truth" and not layout.ground_truth:
            continue
        shape = tuple(sizes[d] for d in variable.dims)
        if variable.dtype == "str":
            data = np.full(shape, "", dtype=np.dtypes.StringDType())
        elif variable.chunks == "whole":  # small, written by the client: not-yet values
            kind = np.dtype(variable.dtype).kind
            fill = 0 if name == "well_status" else (-1 if kind == "i" else np.nan)
            data = np.full(shape, fill, dtype=variable.dtype)
        else:
            data = da.zeros(shape, chunks=_chunks(variable, shape), dtype=variable.dtype)
        data_vars[name] = (variable.dims, data, dict(variable.attrs))
    return xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))


def create_results_store(out: str | os.PathLike, template, *, replace: bool = False,
                         refocused: Any = None) -> Path:
    """Write a store's whole layout (metadata, coordinates, no data chunks), atomically.

    The layout is written into a hidden sibling folder and renamed to ``out``
    when complete. ``replace``: an existing ``out`` that is a results store (or
    empty) is removed first; anything else is refused. ``refocused``: a
    callable that creates the refocused plate at the path it is given (inside
    the new store, :data:`REFOCUSED_PLATE`), before the rename.

    The results variables' metadata is consolidated before the refocused plate
    is added, so ``xr.open_zarr(out)`` reads one small file and the plate's
    thousands of arrays stay out of it.
    """
    out = Path(out)
    tmp = out.parent / f".{out.name}.incomplete-{uuid.uuid4().hex[:8]}"
    attrs = dict(template.attrs)
    attrs["store_id"] = uuid.uuid4().hex
    template = template.assign_attrs(attrs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            template.to_zarr(tmp, mode="w-", compute=False, consolidated=True)
        if refocused is not None:
            refocused(tmp / REFOCUSED_PLATE)
        if replace and (out.exists() or out.is_symlink()):
            remove_ours(out, "results")
        try:
            os.rename(tmp, out)
        except OSError as error:
            if out.exists():
                raise OutputExistsError(
                    f"{str(out)!r} was created by another run meanwhile; nothing of it was "
                    "changed: run again with --resume to finish it together, or choose another path"
                ) from error
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_stale_partials(out)
    return out


def _remove_stale_partials(out: Path) -> None:
    """Remove layouts of earlier runs into ``out`` that were killed before the rename."""
    for partial in out.parent.glob(f".{out.name}.incomplete-*"):
        if is_ours(partial, "results"):
            shutil.rmtree(partial, ignore_errors=True)


def _read_attrs(out: Path) -> dict[str, Any]:
    import zarr

    return zarr.open_group(str(out), mode="r").attrs.asdict()


def check_resume(out: str | os.PathLike, settings: Mapping[str, Any]) -> np.ndarray | None:
    """The well statuses of a store to resume, or None when it must be created afresh.

    A missing or empty ``out``, or a store of ours whose layout was never
    completed, gives None (create it afresh). A store of this project written
    with the same settings gives its ``well_status``. Anything else is refused with
    one line: not a results store, another layout version, or other settings
    (each difference named).
    """
    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not is_ours(out, "results"):
        raise OutputExistsError(
            f"cannot resume {str(out)!r}: it is not a results store of plate-refocus run; nothing "
            "was changed: choose another output path"
        )
    attrs = _read_attrs(out)
    if attrs.get("format") != RESULTS_FORMAT:
        raise OutputExistsError(
            f"cannot resume {str(out)!r}: it was written by another version of plate-refocus "
            f"(results format {attrs.get('format')!r}, this version writes {RESULTS_FORMAT!r}); "
            "run with --overwrite to start it again, or choose another output path"
        )
    stored = attrs.get("run_settings")
    stored = json.loads(stored) if isinstance(stored, str) else {}
    differ = [
        f"{key} {stored.get(key)!r} -> {value!r}"
        for key, value in settings.items() if stored.get(key) != value
    ]
    if differ:
        raise OutputExistsError(
            f"cannot resume {str(out)!r}: it was written with other settings ("
            + "; ".join(differ) + "); resume with the settings it was started with, run with "
            "--overwrite to start again, or choose another output path"
        )
    import zarr

    group = zarr.open_group(str(out), mode="r", use_consolidated=False)  # what is really there
    absent = [name for name, v in SCHEMA.items() if v.only_with is None and name not in group]
    if absent:
        log.warning("%s: its layout was never completed (no %s); it is rebuilt and no well is "
                    "taken as done", out, ", ".join(absent))
        return None
    return np.asarray(group["well_status"][:], dtype=np.int8)


@functools.lru_cache(maxsize=64)
def _array(path: str, store_id: str, name: str) -> Any:
    import zarr

    return zarr.open_array(path, path=name, mode="r+")


_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class ResultsWriter:
    """Writes into the arrays of one results store; small and picklable, for tasks.

    ``store_id`` (a fresh id per created store) keys each process's open
    arrays, so a store replaced at the same path is never written through
    stale handles.
    """

    path: str
    store_id: str
    refocused: Any = None  # the RefocusedPlate handle, when the store has one

    @classmethod
    def open(cls, out: str | os.PathLike) -> ResultsWriter:
        from .plate import refocused_plate

        attrs = _read_attrs(Path(out))
        plate = Path(out) / REFOCUSED_PLATE
        handle = refocused_plate(plate) if plate.exists() else None
        return cls(str(out), str(attrs.get("store_id", "")), handle)

    def _target(self, name: str) -> Any:
        with _LOCK:
            return _array(self.path, self.store_id, name)

    def write_refocused(self, well: int, field: int, z: int, image: np.ndarray) -> None:
        """One refocused plane, into level 0 of the refocused plate (one file per plane)."""
        from .plate import write_field

        write_field(self.refocused, well, field, image, z=z)

    def finish_well(self, well: int) -> None:
        """Build the well's pyramid levels from its refocused planes."""
        from .plate import write_pyramid

        write_pyramid(self.refocused, well)

    def write_well(self, well: int, values: Mapping[str, np.ndarray]) -> None:
        """A well's per-well variables, each into its own chunk."""
        for name, value in values.items():
            self._target(name)[well] = value

    def set_status(self, well: int, status: int, error: str = "",
                   record: Mapping[str, Any] | None = None) -> None:
        """A well's status, error text and one-value variables (called by the client alone:
        these variables are one chunk for the whole plate)."""
        for name, value in (record or {}).items():
            self._target(name)[well] = value
        self._target("well_error")[well] = error
        self._target("well_status")[well] = status

    def statuses(self) -> np.ndarray:
        return np.asarray(self._target("well_status")[:], dtype=np.int8)


def open_results(path: str | os.PathLike, **open_kwargs: Any):
    """Open a results store lazily (dask-backed); same as ``xr.open_zarr(path)``.

    Parameters
    ----------
    path : path
        A results store written by ``plate-refocus run``.
    **open_kwargs
        Passed to :func:`xarray.open_zarr`; e.g. ``chunks=None`` gives lazily
        loaded NumPy-backed variables that never touch a Dask scheduler.

    Raises
    ------
    NotAPlateError
        When ``path`` is missing or not a results store written by ``run``.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise NotAPlateError(f"no results store at {str(path)!r}; run 'plate-refocus run' first")
    if not is_ours(path, "results"):
        raise NotAPlateError(
            f"{str(path)!r} is not a results store of plate-refocus run; open other zarr stores "
            "with xr.open_zarr"
        )
    open_kwargs.setdefault("consolidated", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            ds = xr.open_zarr(path, **open_kwargs)
    except Exception as error:  # noqa: BLE001 - any unreadable store
        raise NotAPlateError(f"{str(path)!r} cannot be opened as a results store: {error}") from error
    plate = path / REFOCUSED_PLATE
    if plate.exists():
        from .plate import open_refocused

        refocused = open_refocused(plate)  # dask-backed whatever `chunks`: one chunk per plane
        ds["refocused"] = refocused.drop_vars([c for c in refocused.coords if c not in refocused.dims])
    return ds


def results_info(path: str | os.PathLike) -> dict[str, Any]:
    """What a results store holds, from its small variables and attributes (no images read).

    Returns
    -------
    dict
        ``path``, ``format``, ``source_plate``, ``channel``, ``method``, ``reference``,
        ``model_name``, ``model_sha256``, ``refiner_name``, ``refiner_sha256`` (hybrid's RL refiner,
        None or empty without one), ``created``, ``command_line``, ``wells``
        (count), ``done``/``failed``/``pending`` (well names), ``errors`` (well ->
        why), ``planes_flagged`` (flag -> count), ``complete`` (every well done).
    """
    ds = open_results(path, chunks=None)
    names = [str(w) for w in ds["well"].values]
    status = np.asarray(ds["well_status"].values)
    errors = [str(e) for e in ds["well_error"].values] if "well_error" in ds else [""] * len(names)
    flags = np.asarray(ds["plane_flags"].values) if "plane_flags" in ds else np.zeros(1, np.uint8)
    done = status == WELL_DONE
    keys = ("format", "source_plate", "channel", "method", "reference", "model_name",
            "model_sha256", "refiner_name", "refiner_sha256", "created", "command_line")
    return {
        "path": str(path),
        **{key: ds.attrs.get(key) for key in keys},
        "wells": len(names),
        "done": [n for n, d in zip(names, done, strict=True) if d],
        "failed": [n for n, s in zip(names, status, strict=True) if s == WELL_FAILED],
        "pending": [n for n, s in zip(names, status, strict=True) if s == WELL_PENDING],
        "errors": {n: e for n, e in zip(names, errors, strict=True) if e},
        "planes_flagged": {k: v for k, v in flag_counts(flags[done] if done.any() else flags[:0]).items() if v},
        "complete": bool(done.all()),
    }


def format_results_info(info: Mapping[str, Any]) -> str:
    """The text ``plate-refocus info RESULTS`` prints."""
    def wells(names: list[str]) -> str:
        return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")

    lines = [
        f"results      {info['path']} ({info['format']})",
        f"source plate {info['source_plate']} (channel {info['channel']})",
        f"method       {info['method']}, PSF reference {info['reference']}",
        f"model        {info['model_name']} ({str(info['model_sha256'])[:12]})" if info["model_name"]
        else "model        none (the method uses no network)",
        *([f"refiner      {info['refiner_name']} ({str(info['refiner_sha256'])[:12]}), "
           "refines Richardson-Lucy at depth"] if info.get("refiner_name") else []),
        f"created      {info['created']} by: {info['command_line']}",
        f"wells        {len(info['done'])} of {info['wells']} done"
        + (f"; FAILED: {wells(info['failed'])}" if info["failed"] else "")
        + (f"; not done yet: {wells(info['pending'])}" if info["pending"] else ""),
    ]
    for well, error in list(info["errors"].items())[:5]:
        lines.append(f"  {well}: {error}")
    for text, count in info["planes_flagged"].items():
        lines.append(f"flagged      {count} planes {text}")
    lines.append("complete     " + ("yes" if info["complete"] else
                                   "no: finish it with plate-refocus run PLATE OUT --resume"))
    return "\n".join(lines)


def describe_flags(flags: int) -> str:
    """``plane_flags`` bits as words: ``5 -> "missing at ingest; no signal ..."``."""
    return "; ".join(text for bit, text in PLANE_FLAG_NAMES.items() if int(flags) & bit) or "ok"


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    """How many planes carry each flag."""
    flags = np.asarray(flags)
    return {text: int(np.count_nonzero(flags & bit)) for bit, text in PLANE_FLAG_NAMES.items()}


def settings_for_resume(**settings: Any) -> dict[str, Any]:
    """JSON-normalised settings (tuples become lists), as compared by :func:`check_resume`."""
    return json.loads(json.dumps(settings))
