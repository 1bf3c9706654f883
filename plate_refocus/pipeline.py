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
2. :func:`well_graph` builds one well's graph from the lazily opened plate;
   the model travels as a path, and each worker loads it once
   (:func:`_worker_model`), so graphs stay small.
3. :func:`run_plate` submits wells to the cluster a few at a time and marks a
   well done (``well_done[i] = 1``) only after all its variables are written,
   so an interrupted run resumes with ``resume=True`` where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr

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


def refocus_plane(plane: np.ndarray, model_path: str) -> np.ndarray:
    """Refocus one ``(Y, X)`` plane with the worker's cached model.

    Returns
    -------
    refocused : (Y, X) ndarray of float32
        On the input's intensity scale.
    """
    model = _worker_model(model_path)
    return np.asarray(model.predict(np.asarray(plane, dtype=np.float32)), dtype=np.float32)


def _refocus_block(block: np.ndarray, model_path: str) -> np.ndarray:
    # block: (1, ..., 1, Y, X) -- one image plane
    out = refocus_plane(block.reshape(block.shape[-2:]), model_path)
    return out.reshape(block.shape)


def _spectra_block(
    reference: np.ndarray, defocused: np.ndarray, background: float, backend: str
) -> np.ndarray:
    """One field's Fourier partial sums, packed as ``(..., 2, Y, X//2+1)`` complex128.

    Packed so that Dask can sum them over fields with an ordinary array
    reduction: ``[0]`` is the numerator ``conj(F) G``, ``[1]`` the denominator
    ``|F|^2`` (real part).
    """
    from .psf import field_spectra

    shape = defocused.shape[-2:]
    spectra = field_spectra(
        reference.reshape(shape).astype(np.float64),
        defocused.reshape(shape).astype(np.float64),
        reference_background=background,
        defocused_background=background,
        backend=backend,
    )
    packed = np.stack([np.asarray(spectra.numerator), np.asarray(spectra.denominator)])
    return packed.astype(np.complex128).reshape(defocused.shape[:-2] + packed.shape)


def _recover_block(
    summed: np.ndarray, count: int, shape: tuple[int, int], optics: Optics, reference: str
) -> np.ndarray:
    """Recover one (well, depth) PSF from summed spectra, packed as a vector.

    The vector is ``[otf_radial (F), psf (P*P), defocus_um, defocus_err_um]``.
    """
    from .psf import FieldSpectra, recover_psf

    lead = summed.shape[:-3]
    packed = summed.reshape(summed.shape[-3:])
    spectra = FieldSpectra(numerator=packed[0], denominator=packed[1].real, count=count)
    est = recover_psf(spectra, shape, optics, reference=reference, psf_size=PSF_SIZE)
    vector = np.concatenate(
        [
            np.asarray(est.otf_radial, dtype=np.float64),
            np.asarray(est.psf, dtype=np.float64).ravel(),
            [est.defocus_um, est.defocus_err_um],
        ]
    )
    return vector.reshape(lead + vector.shape)


def _quality_block(
    defocused: np.ndarray,
    refocused: np.ndarray,
    truth: np.ndarray | None,
    data_range: float,
) -> np.ndarray:
    """Per-plane ``[[sharpness, psnr, ssim] for stage in (input, refocused)]``.

    PSNR and SSIM are NaN when there is no ground truth.
    """
    from .metrics import psnr, sharpness, ssim

    shape = defocused.shape[-2:]
    out = np.full((2, 3), np.nan)
    for row, image in enumerate((defocused, refocused)):
        image = image.reshape(shape).astype(np.float64)
        out[row, 0] = sharpness(image)
        if truth is not None:
            target = truth.reshape(shape).astype(np.float64)
            out[row, 1] = psnr(target, image, data_range=data_range)
            out[row, 2] = ssim(target, image, data_range=data_range)
    return out.reshape(defocused.shape[:-2] + out.shape)


def _quality_blocks(defocused: np.ndarray, refocused: np.ndarray, *truth: np.ndarray,
                    data_range: float) -> np.ndarray:
    return _quality_block(defocused, refocused, truth[0] if truth else None, data_range)


# --- the plate, the well and the results layout --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Job:
    """Everything a well's graph needs, resolved once per run."""

    plate: xr.DataArray  # (well, field, z, y, x) of the chosen channel
    truth: xr.DataArray | None  # (well, field, y, x) in-focus ground truth, or None
    model_path: str
    optics: Optics
    reference: str
    focal_plane: int | None
    background: float
    data_range: float
    backend: str
    gpu: bool
    freq: np.ndarray
    model_info: dict[str, Any]


def _resolve_job(
    plate_path: str | os.PathLike,
    *,
    model: str | os.PathLike | None,
    channel: str | int | None,
    reference: str,
    backend: str,
    gpu: bool,
) -> _Job:
    from .plate import open_ground_truth, open_plate
    from .psf import radial_frequencies

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES!r}, got {reference!r}")
    plate = open_plate(plate_path)
    channels = [str(c) for c in plate.coords["c"].values]
    if channel is None:
        ci = 0
    elif isinstance(channel, int) or str(channel).isdigit():
        ci = int(channel)
        if not 0 <= ci < len(channels):
            raise PlateLayoutError(
                f"channel index {channel!r} is out of range: the plate has channels {channels!r}"
            )
    else:
        if channel not in channels:
            raise PlateLayoutError(
                f"channel {channel!r} is not in the plate; choose one of {channels!r} with --channel"
            )
        ci = channels.index(channel)
    optics = Optics.from_dict(plate.attrs["optics"]) if plate.attrs.get("optics") else Optics()
    focal_plane = plate.attrs.get("focal_plane")
    if reference == "focal-plane" and focal_plane is None:
        raise PlateLayoutError(
            "reference='focal-plane' needs the plate's in-focus plane index, which this plate "
            "does not record; use the default reference 'refocused', or ingest with --focal-plane"
        )
    camera = plate.attrs.get("camera") or {}
    background = float(camera.get("offset", 0.0))
    bit_depth = int(camera.get("bit_depth", 12 if plate.dtype == np.uint16 else 8))
    truth_ds = open_ground_truth(plate_path)
    truth = None
    if truth_ds is not None and "in_focus" in truth_ds:
        truth = truth_ds["in_focus"].isel(c=ci)
    from .unet import default_model_path

    model_path = str(Path(model) if model is not None else default_model_path())
    # Load once here: a missing or corrupt model fails before any worker starts,
    # and the model's optics can be checked against the plate's.
    model_info = _check_model(model_path, optics)
    shape = (plate.sizes["y"], plate.sizes["x"])
    return _Job(
        plate=plate.isel(c=ci),
        truth=truth,
        model_path=model_path,
        optics=optics,
        reference=reference,
        focal_plane=None if focal_plane is None else int(focal_plane),
        background=background,
        data_range=float(2**bit_depth - 1),
        backend=backend,
        gpu=gpu,
        freq=np.asarray(radial_frequencies(shape, optics.pixel_size_um)),
        model_info=model_info,
    )


def _check_model(model_path: str, optics: Optics) -> dict[str, Any]:
    """Load the model once in the client: a bad file fails before any task runs,
    and a model trained for other optics warns with both sets of numbers."""
    from .unet import load_model

    model = load_model(model_path)
    model.check_optics(optics)
    return model.info.to_dict()


def well_graph(job: _Job, well: int) -> dict[str, da.Array]:
    """Lazy results of one well, keyed by variable name (nothing is computed).

    Returns dask arrays with the results layout's shapes for a single well
    (leading ``well`` axis of length 1).
    """
    raw = job.plate.isel(well=slice(well, well + 1)).data  # (1, F, Z, Y, X)
    raw = raw.rechunk((1, 1, 1) + raw.shape[-2:])
    n_fields, n_z = raw.shape[1], raw.shape[2]
    ny, nx = raw.shape[-2:]
    meta32 = np.empty((0,) * raw.ndim, dtype=np.float32)
    with gpu_tasks(job.gpu):
        refocused = raw.map_blocks(
            _refocus_block, job.model_path, dtype=np.float32, meta=meta32,
            name=f"refocus-{well}"
        )
        if job.reference == "refocused":
            reference = refocused
        else:
            focal = raw[:, :, job.focal_plane : job.focal_plane + 1]
            reference = da.broadcast_to(focal, raw.shape, chunks=raw.chunks)
        spectra = da.map_blocks(
            _spectra_block,
            reference,
            raw,
            job.background,
            job.backend,
            dtype=np.complex128,
            meta=np.empty((0,) * (raw.ndim + 1), dtype=np.complex128),
            chunks=raw.chunks[:3] + ((2,), (ny,), (nx // 2 + 1,)),
            new_axis=[3],
            name=f"spectra-{well}",
        )
    summed = spectra.sum(axis=1, split_every=8)  # (1, Z, 2, Y, Xr)
    n_freq = job.freq.size
    vec_len = n_freq + PSF_SIZE * PSF_SIZE + 2
    kind = "in-focus"
    packed = summed.map_blocks(
        _recover_block,
        n_fields,
        (ny, nx),
        job.optics,
        kind,
        dtype=np.float64,
        meta=np.empty((0, 0, 0), dtype=np.float64),
        chunks=(summed.chunks[0], summed.chunks[1], (vec_len,)),
        drop_axis=[3, 4],
        name=f"recover-{well}",
    )
    truth = None
    if job.truth is not None:
        truth = job.truth.isel(well=slice(well, well + 1)).data[:, :, None]  # (1, F, 1, Y, X)
        truth = da.broadcast_to(truth, raw.shape, chunks=raw.chunks)
    quality_inputs = [raw, refocused] + ([truth] if truth is not None else [])
    quality = da.map_blocks(
        _quality_blocks,
        *quality_inputs,
        data_range=job.data_range,
        dtype=np.float64,
        meta=np.empty((0,) * 5, dtype=np.float64),
        chunks=raw.chunks[:3] + ((2,), (3,)),
        drop_axis=[3, 4],
        new_axis=[3, 4],
        name=f"quality-{well}",
    )
    p = PSF_SIZE
    out = {
        "refocused": refocused,
        "otf_radial": packed[..., :n_freq],
        "psf": packed[..., n_freq : n_freq + p * p].reshape((1, n_z, p, p)),
        "defocus_um": packed[..., -2],
        "defocus_err_um": packed[..., -1],
        "sharpness": quality[..., 0],
    }
    if truth is not None:
        out["psnr"] = quality[..., 1]
        out["ssim"] = quality[..., 2]
    return out


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
        "long_name": "isotropic OTF profile, normalised so otf_radial[..., 0] == 1",
    },
    "psf": {"long_name": "recovered spatial PSF, centred, sums to 1"},
    "defocus_um": {"long_name": "fitted |defocus| from the OTF", "units": "um"},
    "defocus_err_um": {"long_name": "uncertainty of defocus_um", "units": "um"},
    "sharpness": {"long_name": "no-reference sharpness of input and refocused planes"},
    "psnr": {"long_name": "PSNR against the ground-truth in-focus image", "units": "dB"},
    "ssim": {"long_name": "SSIM against the ground-truth in-focus image"},
    "well_done": {"long_name": "1 once every variable of the well is written (for resuming)"},
}


def _template(job: _Job, attrs: dict[str, Any]) -> xr.Dataset:
    """The results dataset with lazy zeros: its layout, coordinates and attributes."""
    plate = job.plate
    n_w, n_f, n_z = plate.sizes["well"], plate.sizes["field"], plate.sizes["z"]
    ny, nx = plate.sizes["y"], plate.sizes["x"]
    n_freq, p = job.freq.size, PSF_SIZE
    shapes = {
        "refocused": ((n_w, n_f, n_z, ny, nx), (1, 1, 1, ny, nx), np.float32),
        "otf_radial": ((n_w, n_z, n_freq), (1, n_z, n_freq), np.float64),
        "psf": ((n_w, n_z, p, p), (1, n_z, p, p), np.float64),
        "defocus_um": ((n_w, n_z), (1, n_z), np.float64),
        "defocus_err_um": ((n_w, n_z), (1, n_z), np.float64),
        "sharpness": ((n_w, n_f, n_z, 2), (1, n_f, n_z, 2), np.float64),
        "well_done": ((n_w,), (1,), np.int8),
    }
    if job.truth is not None:
        shapes["psnr"] = shapes["ssim"] = shapes["sharpness"]
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
        "freq": ("freq", job.freq, {"units": "cycles/um"}),
        "py": ("py", (np.arange(p) - p // 2) * dx, {"units": "um"}),
        "px": ("px", (np.arange(p) - p // 2) * dx, {"units": "um"}),
        "stage": ("stage", np.array(STAGES, dtype=object)),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def create_results_store(job: _Job, out: Path, attrs: dict[str, Any]) -> None:
    """Write the results store's full layout once; no data variable is filled."""
    template = _template(job, attrs)
    encoding = {name: {"fill_value": 0} for name in ["well_done"]}
    template.to_zarr(out, mode="w", compute=False, consolidated=False, encoding=encoding)


def _store_well(job: _Job, well: int, out: Path) -> list[Any]:
    """Lazy collections that write one well's variables into their own chunks of ``out``."""
    results = well_graph(job, well)
    group = zarr.open_group(str(out), mode="r+")
    sources, targets, regions = [], [], []
    for name, array in results.items():
        target = group[name]
        region = (slice(well, well + 1),) + (slice(None),) * (array.ndim - 1)
        sources.append(array.astype(target.dtype))
        targets.append(target)
        regions.append(region)
    stored = da.store(sources, targets, regions=regions, lock=False, compute=False)
    return list(stored) if isinstance(stored, (list, tuple)) else [stored]


def _all_written(*parts: Any) -> int:
    """Joins a well's store tasks into one future (its result is the part count)."""
    return len(parts)


# --- running a plate ----------------------------------------------------------------------------


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
    out: Path, job: _Job, attrs: dict[str, Any], *, resume: bool, overwrite: bool
) -> np.ndarray:
    """Create, reuse or refuse the output store; returns the done-mask of wells."""
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
                existing.sizes.get("well") != job.plate.sizes["well"]
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
    create_results_store(job, out, attrs)
    return np.zeros(job.plate.sizes["well"], dtype=bool)


def _run_attrs(job: _Job, plate_path: Path, command_line: str | None) -> dict[str, Any]:
    info = job.model_info
    return {
        "format": _RESULTS_FORMAT,
        "title": "plate_refocus results",
        "source_plate": str(plate_path.resolve()),
        "channel": str(job.plate.coords["c"].values),
        "optics": json.dumps(job.optics.to_dict()),
        "reference": job.reference,
        "psf_estimate": "K_z / K_0 (relative to the in-focus image) inside the passband",
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
    backend: str = "numpy",
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
    backend : {"numpy", "cupy", "auto"}
        Array backend of the FFT step (see :mod:`plate_refocus.xp`).
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
    job = _resolve_job(
        plate_path, model=model, channel=channel, reference=reference, backend=backend, gpu=gpu
    )
    names = [str(w) for w in job.plate.coords["well"].values]
    if wells is not None:
        unknown = sorted(set(wells) - set(names))
        if unknown:
            raise PlateLayoutError(f"wells {unknown!r} are not in the plate; it has {names!r}")
    attrs = _run_attrs(job, plate_path, command_line)
    done = _prepare_output(out, job, attrs, resume=resume, overwrite=overwrite)
    todo = [i for i, name in enumerate(names) if not done[i] and (wells is None or name in wells)]
    skipped = [names[i] for i in range(len(names)) if done[i]]
    n_workers = max(1, len(client.scheduler_info().get("workers", {})) or 1)
    window = max_wells_in_flight or 2 * n_workers
    done_group = zarr.open_group(str(out), mode="r+")
    computed: list[str] = []
    start = time.perf_counter()
    pending: Iterator[int] = iter(todo)
    futures: dict[Any, int] = {}
    ac = None

    def submit_next() -> bool:
        index = next(pending, None)
        if index is None:
            return False
        delayed = _store_well(job, index, out)
        # Without fusion, the GPU annotations survive optimisation; culling still happens.
        with preserve_annotations() if gpu else contextlib.nullcontext():
            parts = client.compute(delayed, retries=2)
        future = client.submit(_all_written, *parts, key=f"well-written-{names[index]}-{index}",
                               pure=False)
        futures[future] = index
        if ac is not None:
            ac.add(future)
        return True

    for _ in range(window):
        if not submit_next():
            break
    ac = as_completed(list(futures), loop=client.loop)
    for future in ac:
        index = futures.pop(future)
        future.result()  # re-raises a task's error here, with its traceback
        done_group["well_done"][index] = 1
        computed.append(names[index])
        if on_well_done is not None:
            on_well_done(names[index], len(computed), len(todo))
        submit_next()
    seconds = time.perf_counter() - start
    zarr.consolidate_metadata(str(out))
    n_fields, n_z = job.plate.sizes["field"], job.plate.sizes["z"]
    return RunSummary(
        out=out,
        wells_total=len(names),
        wells_computed=computed,
        wells_skipped=skipped,
        fields=len(computed) * n_fields,
        planes=len(computed) * n_fields * n_z,
        seconds=seconds,
    )


def open_results(path: str | os.PathLike) -> xr.Dataset:
    """Open a results store lazily (dask-backed); same as ``xr.open_zarr(path)``.

    Raises
    ------
    PlateRefocusError
        When ``path`` is missing or not a results store written by ``run``.
    """
    path = Path(path)
    if not path.exists():
        raise NotAPlateError(f"no results store at {str(path)!r}; run 'plate-refocus run' first")
    try:
        ds = xr.open_zarr(path)
    except Exception as error:  # noqa: BLE001
        raise NotAPlateError(f"{str(path)!r} is not a zarr results store: {error}") from error
    if ds.attrs.get("format") != _RESULTS_FORMAT:
        raise NotAPlateError(
            f"{str(path)!r} is a zarr store but not plate_refocus results "
            f"(format {ds.attrs.get('format')!r}); open it with xr.open_zarr instead"
        )
    return ds


def plate_graph_size(job: _Job, out: Path) -> tuple[int, int]:
    """Pickled bytes and task count of the graphs of every well (nothing computed).

    Each well's graph is optimised (culled) as it is when submitted, then
    pickled with cloudpickle, as the client does before sending it.
    """
    import cloudpickle

    total_bytes = total_tasks = 0
    for well in range(job.plate.sizes["well"]):
        graph: dict = {}
        for collection in dask.optimize(*_store_well(job, well, out)):
            graph.update(dict(collection.__dask_graph__()))
        total_bytes += len(cloudpickle.dumps(graph))
        total_tasks += len(graph)
    return total_bytes, total_tasks
