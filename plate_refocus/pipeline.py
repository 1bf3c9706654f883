"""The whole-plate Dask pipeline and its results dataset.

For every well, a small Dask graph refocuses each image plane with the U-Net,
turns each (reference, defocused) pair into Fourier partial sums, adds them
over the well's fields per depth, recovers the isotropic OTF, the PSF and the
fitted defocus, measures sharpness (and PSNR/SSIM when the plate carries
ground truth), and writes the well into its own chunks of one zarr store.

Layout of the work (see DESIGN.md, "Flow of data"):

1. :func:`create_results_store` writes the store's full layout once (an
   xarray template written with ``compute=False``): every variable chunked
   one well per chunk along ``well``, so writers never share a chunk.
2. :func:`well_graph` builds one well's graph from the lazily opened plate:
   one task per depth does the U-Net on that depth's fields and their
   reduction to a PSF (so only small results leave a worker), one task writes
   the well; the model travels as a path, and each worker loads it once
   (:func:`_worker_model`), so graphs stay small.
3. :func:`run_plate` submits wells to the cluster a few at a time and marks a
   well done (``well_done[i] = 1``) only after all its variables are written,
   so an interrupted run resumes with ``resume=True`` where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import json
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
from dask.delayed import Delayed

from . import __version__
from .cluster import gpu_tasks, preserve_annotations
from .errors import NotAPlateError, OutputExistsError, PlateLayoutError
from .optics import Optics

log = logging.getLogger(__name__)

__all__ = [
    "REFERENCES",
    "RunSummary",
    "create_results_store",
    "open_results",
    "run_plate",
    "well_graph",
    "plate_graph_size",
]

#: Where the sharp reference for the PSF comes from.
#: ``"refocused"``: the U-Net output of the same plane (estimates ``K_z / K_0``);
#: ``"focal-plane"``: the stack's own in-focus plane (needs ``focal_plane`` metadata).
REFERENCES = ("refocused", "focal-plane")
STAGES = ("input", "refocused")
PSF_SIZE = 33
_RESULTS_FORMAT = "plate_refocus.results/1"


# --- per-chunk functions (NumPy in, NumPy out; tested on their own) ---------------------------

_MODEL_LOCK = threading.Lock()
_MODELS: dict[str, Any] = {}


def _worker_model(model_path: str) -> Any:
    """The U-Net for ``model_path``, loaded once per worker process and kept."""
    with _MODEL_LOCK:
        model = _MODELS.get(model_path)
        if model is None:
            _limit_framework_threads()
            from .unet import load_model

            model = load_model(model_path)
            _MODELS[model_path] = model
        return model


def _limit_framework_threads() -> None:
    """Keep TensorFlow to the worker's own threads, so processes do not oversubscribe cores."""
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))


def refocus_planes(planes: np.ndarray, model_path: str) -> np.ndarray:
    """Refocus a ``(N, Y, X)`` stack of planes with the worker's cached model, in one batch.

    Returns
    -------
    refocused : (N, Y, X) ndarray of float32
        On the input's intensity scale (each plane normalised on its own).
    """
    model = _worker_model(model_path)
    planes = np.asarray(planes)  # camera integers as they are: their percentiles are cheaper
    return np.asarray(model.predict_batch(planes, batch_size=max(4, len(planes))), dtype=np.float32)


_ARRAYS_LOCK = threading.Lock()
_ARRAYS: dict[tuple[str, str, str], Any] = {}


def _zarr_array(store: str, path: str, mode: str) -> Any:
    """A zarr array opened once per worker process (``mode='r'`` for the input plate)."""
    key = (store, path, mode)
    with _ARRAYS_LOCK:
        array = _ARRAYS.get(key)
        if array is None:
            array = zarr.open_array(store, path=path, mode=mode)
            _ARRAYS[key] = array
        return array


def _read_plane(job: _Job, array_path: str, z: int) -> np.ndarray:
    """One ``(Y, X)`` plane of the chosen channel, read straight from the input plate."""
    array = _zarr_array(job.plate_path, array_path, "r")
    where = {"t": 0, "c": job.channel, "z": z}
    index = tuple(where.get(axis, slice(None)) for axis in job.axes)
    return np.asarray(array[index])


def _quality(defocused: np.ndarray, refocused: np.ndarray, truth: np.ndarray | None,
             data_range: float) -> np.ndarray:
    """``[[sharpness, psnr, ssim] for stage in (input, refocused)]`` of one plane.

    PSNR and SSIM are NaN when there is no ground truth.
    """
    from .metrics import psnr, sharpness, ssim

    out = np.full((2, 3), np.nan)
    for row, image in enumerate((defocused, refocused)):
        image = np.asarray(image, dtype=np.float64)
        out[row, 0] = sharpness(image)
        if truth is not None:
            out[row, 1] = psnr(truth, image, data_range=data_range)
            out[row, 2] = ssim(truth, image, data_range=data_range)
    return out


def depth_task(
    job: _Job, field_paths: tuple[str, ...], well: int, z: int, missing: tuple[bool, ...]
) -> dict[str, Any]:
    """One well at one depth: refocus its fields, write them, recover the PSF, measure quality.

    The well's fields at this depth go through the network as one batch, each
    refocused plane goes straight into its own chunk of the results store, and
    the fields' Fourier partial sums are added here, so only the PSF, the fit
    and six numbers per field travel on (per-plane tasks had to ship every
    plane's spectra, 0.8 MB at 256 x 256, to a reducing task). A plane the
    plate marks missing (e.g. a TIFF absent at ingest) is written as NaN and
    left out of the PSF; a depth with no plane at all gets NaN.
    """
    from .psf import field_spectra, recover_psf

    refocused_out = _zarr_array(job.out, "refocused", "r+")
    quality = np.full((job.n_fields, 2, 3), np.nan)
    present = []
    for f in range(job.n_fields):
        if missing[f] or (job.reference == "focal-plane" and job.focal_missing(well, f)):
            refocused_out[well, f, z] = np.nan
        else:
            present.append(f)
    if not present:
        return {
            "otf_radial": np.full(radial_frequencies_size(job), np.nan),
            "psf": np.full((PSF_SIZE, PSF_SIZE), np.nan),
            "defocus_um": np.nan,
            "defocus_err_um": np.nan,
            "quality": quality,
        }
    planes = np.stack([_read_plane(job, field_paths[f], z) for f in present])
    refocused = refocus_planes(planes, job.model_path)
    raw = planes.astype(np.float32)
    spectra = None
    for defocused, output, f in zip(raw, refocused, present, strict=True):
        refocused_out[well, f, z] = output
        reference = output
        if job.reference == "focal-plane":
            reference = _read_plane(job, field_paths[f], job.focal_plane).astype(np.float32)
        field = field_spectra(  # makes its own float64 copies
            reference,
            defocused,
            reference_background=job.background,
            defocused_background=job.background,
            backend=job.backend,
        )
        spectra = field if spectra is None else spectra + field
        truth = None
        if job.truth_path is not None:
            truth = _truth_plane(job.plate_path, job.truth_path, well, f, job.channel)
        quality[f] = _quality(defocused, output, truth, job.data_range)
    est = recover_psf(spectra, job.shape, job.optics, reference="in-focus", psf_size=PSF_SIZE)
    return {
        "otf_radial": np.asarray(est.otf_radial, dtype=np.float64),
        "psf": np.asarray(est.psf, dtype=np.float64),
        "defocus_um": float(est.defocus_um),
        "defocus_err_um": float(est.defocus_err_um),
        "quality": quality,  # (F, 2, 3)
    }


@functools.lru_cache(maxsize=16)
def _truth_plane(plate_path: str, truth_path: str, well: int, field: int,
                 channel: int) -> np.ndarray:
    """A field's ground-truth in-focus image, read once per worker for all its depths."""
    truth = np.asarray(_zarr_array(plate_path, truth_path, "r")[well, field, channel],
                       dtype=np.float64)
    truth.flags.writeable = False
    return truth


def radial_frequencies_size(job: _Job) -> int:
    """Length of the ``freq`` axis for this job's field shape."""
    from .psf import radial_frequencies

    return int(np.asarray(radial_frequencies(job.shape, job.optics.pixel_size_um)).size)


def well_task(job: _Job, well: int, *depths: dict[str, Any]) -> int:
    """Write one well's per-depth results into its own chunks; returns the plane count."""
    out = {
        "otf_radial": np.stack([d["otf_radial"] for d in depths]),
        "psf": np.stack([d["psf"] for d in depths]),
        "defocus_um": np.array([d["defocus_um"] for d in depths]),
        "defocus_err_um": np.array([d["defocus_err_um"] for d in depths]),
    }
    quality = np.stack([d["quality"] for d in depths], axis=1)  # (F, Z, 2, 3)
    out["sharpness"] = quality[..., 0]
    if job.truth_path is not None:
        out["psnr"] = quality[..., 1]
        out["ssim"] = quality[..., 2]
    for name, values in out.items():
        _zarr_array(job.out, name, "r+")[well] = values
    return quality.shape[0] * quality.shape[1]


# --- the plate, the well and the results layout --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every task of a run needs: small, picklable, shared by all tasks of a well.

    No xarray or dask objects and no model: tasks read planes from the store
    paths here, and each worker loads the model from ``model_path`` once.
    """

    plate_path: str
    axes: tuple[str, ...]  # of those arrays, e.g. ("c", "z", "y", "x")
    channel: int
    truth_path: str | None  # the ground truth's in-focus array, when the plate has one
    out: str
    model_path: str
    optics: Optics
    reference: str
    focal_plane: int | None
    background: float
    data_range: float
    backend: str
    shape: tuple[int, int]
    n_fields: int
    n_z: int
    missing_focal: frozenset[tuple[int, int]] = frozenset()  # (well, field) without a focal plane

    def focal_missing(self, well: int, field: int) -> bool:
        return (well, field) in self.missing_focal


@dataclasses.dataclass(frozen=True)
class _Plan:
    """A resolved run: the task payload plus what the client alone needs."""

    job: _Job
    plate: xr.DataArray  # (well, field, z, y, x) of the chosen channel: coordinates only
    freq: np.ndarray
    model_info: dict[str, Any]
    gpu: bool
    missing: np.ndarray  # (well, field, z) bool: planes the plate marks missing
    field_arrays: tuple[tuple[str, ...], ...]  # per well, per field: level-0 array path
    tag: str  # identifies this run's tasks on the cluster


def _channel_index(channel: str | int | None, channels: list[str]) -> int:
    if channel is None:
        return 0
    if isinstance(channel, int) or str(channel).isdigit():
        index = int(channel)
        if not 0 <= index < len(channels):
            raise PlateLayoutError(
                f"channel index {channel!r} is out of range: the plate has channels {channels!r}"
            )
        return index
    if channel not in channels:
        raise PlateLayoutError(
            f"channel {channel!r} is not in the plate; choose one of {channels!r} with --channel"
        )
    return channels.index(channel)


def _resolve(
    plate_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str | os.PathLike | None,
    channel: str | int | None,
    reference: str,
    backend: str,
    gpu: bool,
) -> _Plan:
    """Open the plate (metadata only), check the options and the model, build the plan."""
    from .plate import GROUND_TRUTH, open_plate
    from .psf import radial_frequencies
    from .unet import default_model_path

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES!r}, got {reference!r}")
    plate = open_plate(plate_path)
    ci = _channel_index(channel, [str(c) for c in plate.coords["c"].values])
    optics = Optics.from_dict(plate.attrs["optics"])
    focal_plane = plate.attrs.get("focal_plane")
    if reference == "focal-plane" and focal_plane is None:
        raise PlateLayoutError(
            "reference='focal-plane' needs the plate's in-focus plane index, which this plate "
            "does not record; use the default reference 'refocused', or ingest with --focal-plane"
        )
    camera = plate.attrs.get("camera") or {}
    bit_depth = int(camera.get("bit_depth", 12 if plate.dtype == np.uint16 else 8))
    root = zarr.open_group(str(plate_path), mode="r")
    truth_path = f"{GROUND_TRUTH}/in_focus" if f"{GROUND_TRUTH}/in_focus" in root else None
    model_path = str(Path(model) if model is not None else default_model_path())
    # Load once here: a missing or corrupt model fails before any worker starts,
    # and a model trained for other optics warns with both sets of numbers.
    model_info = _check_model(model_path, optics)
    shape = (plate.sizes["y"], plate.sizes["x"])
    from .ingest import missing_planes

    missing = np.asarray(missing_planes(plate).isel(c=ci).values, dtype=bool)
    missing_focal = frozenset()
    if focal_plane is not None:
        w_idx, f_idx = np.nonzero(missing[:, :, int(focal_plane)])
        missing_focal = frozenset(zip(w_idx.tolist(), f_idx.tolist(), strict=True))
    job = _Job(
        plate_path=str(plate_path),
        axes=tuple(plate.attrs["field_axes"]),
        channel=ci,
        truth_path=truth_path,
        out=str(out),
        model_path=model_path,
        optics=optics,
        reference=reference,
        focal_plane=None if focal_plane is None else int(focal_plane),
        background=float(camera.get("offset", 0.0)),
        data_range=float(2**bit_depth - 1),
        backend=backend,
        shape=shape,
        n_fields=plate.sizes["field"],
        n_z=plate.sizes["z"],
        missing_focal=missing_focal,
    )
    return _Plan(
        job=job,
        plate=plate.isel(c=ci),
        freq=np.asarray(radial_frequencies(shape, optics.pixel_size_um)),
        model_info=model_info,
        gpu=gpu,
        missing=missing,
        field_arrays=tuple(tuple(paths) for paths in plate.attrs["field_arrays"]),
        tag=dask.base.tokenize(job)[:8],
    )


def _check_model(model_path: str, optics: Optics) -> dict[str, Any]:
    from .unet import load_model

    model = load_model(model_path)
    model.check_optics(optics)
    return model.info.to_dict()


def well_graph(plan: _Plan, well: int) -> Delayed:
    """One well's work as a Delayed (nothing is computed).

    ``n_z`` depth tasks (each: the U-Net on the well's fields at that depth,
    their writes, the PSF as a sum of the fields' Fourier partial sums, the
    fit and the quality measures; annotated with the GPU resource when
    asked) and one task writing the well's per-depth results.
    """
    job = plan.job
    tag = f"{well}-{plan.tag}"
    with gpu_tasks(plan.gpu):
        depths = [
            dask.delayed(depth_task, pure=False)(
                job, plan.field_arrays[well], well, z,
                tuple(bool(m) for m in plan.missing[well, :, z]),
                dask_key_name=f"depth-{tag}-{z}")
            for z in range(job.n_z)
        ]
    return dask.delayed(well_task, pure=False)(job, well, *depths, dask_key_name=f"well-{tag}")


_DIMS = {
    "refocused": ("well", "field", "z", "y", "x"),
    "otf_radial": ("well", "z", "freq"),
    "psf": ("well", "z", "py", "px"),
    "defocus_um": ("well", "z"),
    "defocus_err_um": ("well", "z"),
    "sharpness": ("well", "field", "z", "stage"),
    "psnr": ("well", "field", "z", "stage"),
    "ssim": ("well", "field", "z", "stage"),
    "well_done": ("well",),
}

_ATTRS = {
    "refocused": {"long_name": "refocused image", "units": "camera counts (input scale)"},
    "otf_radial": {
        "long_name": "isotropic OTF profile relative to the in-focus OTF (K_z / K_0 inside the "
        "passband), normalised so otf_radial[..., 0] == 1",
    },
    "psf": {"long_name": "recovered spatial PSF, centred, sums to 1"},
    "defocus_um": {"long_name": "fitted |defocus| from the OTF", "units": "um"},
    "defocus_err_um": {"long_name": "uncertainty of defocus_um", "units": "um"},
    "sharpness": {
        "long_name": "no-reference focus measure of input and refocused planes, higher is sharper: "
        "var(LoG_2px(image)) / var(image) (plate_refocus.metrics.sharpness)",
    },
    "psnr": {"long_name": "PSNR against the ground-truth in-focus image", "units": "dB"},
    "ssim": {"long_name": "SSIM against the ground-truth in-focus image"},
    "well_done": {"long_name": "1 once every variable of the well is written (for resuming)"},
}


def _template(plan: _Plan, attrs: dict[str, Any]) -> xr.Dataset:
    """The results dataset with lazy zeros: its layout, coordinates and attributes."""
    plate, job = plan.plate, plan.job
    n_w, n_f, n_z = plate.sizes["well"], job.n_fields, job.n_z
    ny, nx = job.shape
    n_freq, p = plan.freq.size, PSF_SIZE
    quality = ((n_w, n_f, n_z, 2), (1, n_f, n_z, 2), np.float64)
    shapes = {
        "refocused": ((n_w, n_f, n_z, ny, nx), (1, 1, 1, ny, nx), np.float32),
        "otf_radial": ((n_w, n_z, n_freq), (1, n_z, n_freq), np.float64),
        "psf": ((n_w, n_z, p, p), (1, n_z, p, p), np.float64),
        "defocus_um": ((n_w, n_z), (1, n_z), np.float64),
        "defocus_err_um": ((n_w, n_z), (1, n_z), np.float64),
        "sharpness": quality,
        "well_done": ((n_w,), (1,), np.int8),
    }
    if job.truth_path is not None:
        shapes["psnr"] = shapes["ssim"] = quality
    data_vars = {
        name: (_DIMS[name], da.zeros(shape, chunks=chunks, dtype=dtype), _ATTRS[name])
        for name, (shape, chunks, dtype) in shapes.items()
    }
    dx = job.optics.pixel_size_um
    coords = {
        "well": plate.coords["well"].values.astype(object),
        "row": ("well", plate.coords["row"].values.astype(object)),
        "column": ("well", plate.coords["column"].values),
        "field": plate.coords["field"].values,
        "z": plate.coords["z"].values,
        "z_um": ("z", plate.coords["z_um"].values, {"units": "um"}),
        "y": ("y", plate.coords["y"].values, {"units": "um"}),
        "x": ("x", plate.coords["x"].values, {"units": "um"}),
        "freq": ("freq", plan.freq, {"units": "cycles/um"}),
        "py": ("py", (np.arange(p) - p // 2) * dx, {"units": "um"}),
        "px": ("px", (np.arange(p) - p // 2) * dx, {"units": "um"}),
        "stage": ("stage", np.array(STAGES, dtype=object)),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def create_results_store(plan: _Plan, out: Path, attrs: dict[str, Any]) -> None:
    """Write the store's full layout once (metadata and coordinates; no data chunks)."""
    from .plate import _compressor

    template = _template(plan, attrs)
    # The plates' Blosc-zstd(1)+shuffle: the refocused planes are most of the bytes written, and
    # zarr's default zstd costs each plane task several ms more.
    encoding = {"refocused": {"compressors": [_compressor(3)]}}
    template.to_zarr(out, mode="w", compute=False, consolidated=False, encoding=encoding)


@dataclasses.dataclass
class RunSummary:
    """What a run did, for the CLI's closing lines and for tests."""

    out: Path
    wells_total: int
    wells_computed: list[str]
    wells_skipped: list[str]
    fields: int
    planes: int
    seconds: float

    @property
    def planes_per_second(self) -> float:
        return self.planes / self.seconds if self.seconds > 0 else float("nan")


def _done_wells(out: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(out), mode="r")["well_done"][:]).astype(bool)


def _prepare_output(
    out: Path, plan: _Plan, attrs: dict[str, Any], *, resume: bool, overwrite: bool
) -> np.ndarray:
    """Create, reuse or refuse the output store; returns the done-mask of wells."""
    n_wells = plan.plate.sizes["well"]
    if out.exists():
        if resume:
            try:
                existing = xr.open_zarr(out, consolidated=False)
            except Exception as error:  # noqa: BLE001 - any unreadable store is refused
                raise OutputExistsError(
                    f"cannot resume {str(out)!r}: it is not a results store ({error}); "
                    "pass --overwrite to replace it"
                ) from error
            if existing.attrs.get("format") != _RESULTS_FORMAT or (
                existing.sizes.get("well") != n_wells
                or existing.attrs.get("source_plate") != attrs["source_plate"]
            ):
                raise OutputExistsError(
                    f"cannot resume {str(out)!r}: it was written for another plate or layout; "
                    "pass --overwrite to replace it"
                )
            if existing.attrs.get("model_sha256") != attrs.get("model_sha256"):
                raise OutputExistsError(
                    f"cannot resume {str(out)!r}: it was written with model "
                    f"{existing.attrs.get('model_name')!r} ({existing.attrs.get('model_sha256')}), "
                    f"not {attrs.get('model_name')!r}; resume with that model or pass --overwrite"
                )
            return _done_wells(out)
        if not overwrite:
            raise OutputExistsError(
                f"the output {str(out)!r} exists; pass --resume to finish it or --overwrite "
                "to replace it"
            )
        shutil.rmtree(out)
    create_results_store(plan, out, attrs)
    return np.zeros(n_wells, dtype=bool)


def _run_attrs(plan: _Plan, command_line: str | None) -> dict[str, Any]:
    job, info = plan.job, plan.model_info
    return {
        "format": _RESULTS_FORMAT,
        "title": "plate_refocus results",
        "source_plate": str(Path(job.plate_path).resolve()),
        "channel": str(plan.plate.coords["c"].values),
        "optics": json.dumps(job.optics.to_dict()),
        "reference": job.reference,
        "psf_estimate": "K_z / K_0 (relative to the in-focus image) inside the passband",
        # "auto": CuPy on the workers that saw a GPU, NumPy elsewhere (same numbers to 1e-5)
        "fft_backend": job.backend,
        "gpu_tasks": int(plan.gpu),
        "model_path": job.model_path,
        "model_name": str(info.get("name", Path(job.model_path).stem)),
        "model_sha256": str(info.get("sha256", "")),
        "plate_refocus_version": __version__,
        "command_line": command_line or " ".join(sys.argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run_plate(
    plate: str | os.PathLike,
    out: str | os.PathLike,
    *,
    client: Any,
    model: str | os.PathLike | None = None,
    channel: str | int | None = None,
    reference: str = "refocused",
    resume: bool = False,
    overwrite: bool = False,
    wells: Sequence[str] | None = None,
    gpu: bool = False,
    backend: str | None = None,
    max_wells_in_flight: int | None = None,
    on_well_done: Callable[[str, int, int], None] | None = None,
    command_line: str | None = None,
) -> RunSummary:
    """Refocus a whole plate and estimate every well's PSF into a results store.

    Parameters
    ----------
    plate : path
        OME-Zarr HCS plate; opened read-only, never written.
    out : path
        Results store (zarr). Refused when it exists, unless ``resume`` (finish
        the wells not yet done) or ``overwrite`` (start again).
    client : distributed.Client
        The cluster to run on (see :mod:`plate_refocus.cluster`).
    model : path, optional
        A ``.keras`` model from ``plate-refocus train``; the shipped default
        when omitted.
    channel : str or int, optional
        Channel name or index to refocus; the first channel by default.
    reference : {"refocused", "focal-plane"}
        Sharp reference for the PSF (see :data:`REFERENCES`).
    wells : sequence of str, optional
        Restrict the run to these wells (e.g. ``["A01", "B02"]``).
    gpu : bool
        Annotate the U-Net and FFT tasks with the ``GPU`` resource so they run
        only on workers started with ``--resources GPU=1``.
    backend : {"numpy", "cupy", "auto"}, optional
        Array backend of the FFT step (see :mod:`plate_refocus.xp`). By
        default ``"auto"`` with ``gpu`` (CuPy on workers that see a GPU) and
        ``"numpy"`` without, so a CPU run never grabs a GPU it was not given.
    max_wells_in_flight : int, optional
        Wells submitted at once (default: twice the number of workers), which
        bounds the memory a run holds.
    on_well_done : callable, optional
        Called as ``on_well_done(well, n_done, n_total)`` after each well is
        written and marked done (the CLI's progress bar).

    Returns
    -------
    RunSummary
    """
    from distributed import as_completed

    if resume and overwrite:
        raise ValueError("pass resume=True or overwrite=True, not both")
    plate_path, out = Path(plate), Path(out)
    if out.resolve() == plate_path.resolve():
        raise OutputExistsError("the output path is the input plate; choose another path")
    if backend is None:
        backend = "auto" if gpu else "numpy"
    plan = _resolve(plate_path, out, model=model, channel=channel, reference=reference,
                    backend=backend, gpu=gpu)
    names = [str(w) for w in plan.plate.coords["well"].values]
    if wells is not None:
        unknown = sorted(set(wells) - set(names))
        if unknown:
            raise PlateLayoutError(f"wells {unknown!r} are not in the plate; it has {names!r}")
    attrs = _run_attrs(plan, command_line)
    done = _prepare_output(out, plan, attrs, resume=resume, overwrite=overwrite)
    todo = [i for i, name in enumerate(names) if not done[i] and (wells is None or name in wells)]
    skipped = [names[i] for i in range(len(names)) if done[i]]
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    window = max_wells_in_flight or 2 * n_workers
    done_array = zarr.open_array(str(out), path="well_done", mode="r+")
    computed: list[str] = []
    start = time.perf_counter()
    pending: Iterator[int] = iter(todo)
    futures: dict[Any, int] = {}
    ac = as_completed(loop=client.loop)

    def submit_next() -> None:
        index = next(pending, None)
        if index is not None:
            # Without fusion the GPU annotations survive optimisation; culling still happens.
            with preserve_annotations() if gpu else contextlib.nullcontext():
                future = client.compute(well_graph(plan, index), retries=2)
            futures[future] = index
            ac.add(future)

    for _ in range(window):
        submit_next()
    for future in ac:
        index = futures.pop(future)
        future.result()  # re-raises a task's error here, with its traceback
        done_array[index] = 1
        computed.append(names[index])
        if on_well_done is not None:
            on_well_done(names[index], len(computed), len(todo))
        submit_next()
    seconds = time.perf_counter() - start
    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not in the v3 spec yet; xarray reads it.
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(str(out))
    n_fields, n_z = plan.job.n_fields, plan.job.n_z
    return RunSummary(
        out=out,
        wells_total=len(names),
        wells_computed=computed,
        wells_skipped=skipped,
        fields=len(computed) * n_fields,
        planes=len(computed) * n_fields * n_z,
        seconds=seconds,
    )


def open_results(path: str | os.PathLike, **open_kwargs: Any) -> xr.Dataset:
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
    PlateRefocusError
        When ``path`` is missing or not a results store written by ``run``.
    """
    path = Path(path)
    if not path.exists():
        raise NotAPlateError(f"no results store at {str(path)!r}; run 'plate-refocus run' first")
    try:
        ds = xr.open_zarr(path, **open_kwargs)
    except Exception as error:  # noqa: BLE001
        raise NotAPlateError(f"{str(path)!r} is not a zarr results store: {error}") from error
    if ds.attrs.get("format") != _RESULTS_FORMAT:
        raise NotAPlateError(
            f"{str(path)!r} is a zarr store but not plate_refocus results "
            f"(format {ds.attrs.get('format')!r}); open it with xr.open_zarr instead"
        )
    return ds


def plate_graph_size(plan: _Plan) -> tuple[int, int, int]:
    """Pickled bytes (all wells, largest well) and task count of a run's graphs.

    Built without computing anything: each well's graph is optimised as it is
    when submitted and pickled with cloudpickle, as the client does.
    """
    import cloudpickle

    total_bytes = largest = total_tasks = 0
    for well in range(plan.plate.sizes["well"]):
        (optimized,) = dask.optimize(well_graph(plan, well))
        graph = dict(optimized.__dask_graph__())
        size = len(cloudpickle.dumps(graph))
        total_bytes += size
        largest = max(largest, size)
        total_tasks += len(graph)
    return total_bytes, largest, total_tasks
