"""The whole-plate run: one pure function per (well, depth), and the orchestrator around it.

Layout of the work (see DESIGN.md, "Flow of data"):

1. :func:`process_depth` is the science of one well at one depth, arrays in
   and arrays out, with no I/O: refocus the well's fields (one network
   batch), mask unusable planes, pool the fields' Fourier partial sums,
   recover the PSF and the fitted defocus, measure quality. It is tested on
   its own and is what a benchmark's bare loop calls.
2. :func:`plan_run` checks everything a run needs before anything starts (the
   plate, the output, the model, sizes, z metadata, what a resume would
   continue) and returns a :class:`RunPlan`; the CLI starts the cluster only
   after it.
3. :func:`execute_run` creates the results store (:mod:`plate_refocus.results`)
   and submits wells a few at a time. Each well is a small graph: one task
   per depth (:func:`depth_task`: read its planes through
   :mod:`plate_refocus.plate`, call :func:`process_depth`, write the refocused
   planes) and one task that writes the well's variables. A well whose tasks
   fail (a corrupt chunk, a decode error) is marked failed with the reason
   and the other wells go on; the run ends with a summary, and ``--resume``
   computes only the wells not done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np

from . import __version__
from .cluster import gpu_tasks, preserve_annotations
from .errors import OutputExistsError, PlateLayoutError
from .optics import Optics
from .plate import PlateLayout, read_layout, read_plane, truth_plane
from .results import (
    PLANE_FLAG_NAMES,
    PLANE_MISSING,
    PLANE_NO_REFERENCE,
    PLANE_NO_SIGNAL,
    PLANE_NONFINITE,
    PSF_SIZE,
    REFOCUSED_PLATE,
    RESULTS_FORMAT,
    WELL_DONE,
    WELL_FAILED,
    ResultsWriter,
    check_resume,
    create_results_store,
    describe_flags,
    open_results,
    results_template,
    settings_for_resume,
)

log = logging.getLogger(__name__)

__all__ = [
    "REFERENCES",
    "MIN_IMAGE_SIZE",
    "DTYPES",
    "DepthSettings",
    "DepthResult",
    "process_depth",
    "RunPlan",
    "RunSummary",
    "plan_run",
    "execute_run",
    "run_plate",
    "open_results",
    "well_graph",
    "plate_graph_size",
]

#: Where the sharp reference for the PSF comes from.
#: ``"refocused"``: the U-Net output of the same plane (estimates ``K_z / K_0``);
#: ``"focal-plane"``: the stack's own in-focus plane (needs ``focal_plane`` metadata).
REFERENCES = ("refocused", "focal-plane")
#: How the refocused images are stored: camera counts rounded to uint16 (the default: the
#: rounding error, at most 0.5 count, is far below the images' noise; see the README) or float32.
DTYPES = ("uint16", "float32")
#: The run's log, inside the results store (zarr readers ignore it).
RUN_LOG = "run.log"
#: Smallest image side a run accepts: the 33 x 33 PSF and the 11-px SSIM window must fit.
MIN_IMAGE_SIZE = PSF_SIZE


# --- the pure per-(well, depth) function ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DepthSettings:
    """What :func:`process_depth` needs besides the pixels."""

    optics: Optics
    reference: str  # one of REFERENCES
    background: float  # camera offset, removed before the Fourier sums
    data_range: float  # of PSNR/SSIM
    backend: str  # FFT array backend: "numpy", "cupy" or "auto"
    psf_size: int = PSF_SIZE


@dataclasses.dataclass
class DepthResult:
    """:func:`process_depth`'s output for one well at one depth (F fields)."""

    refocused: np.ndarray  # (F, Y, X) float32, NaN where a plane was masked or missing
    otf_radial: np.ndarray  # (freq,)
    psf: np.ndarray  # (psf_size, psf_size)
    defocus_um: float
    defocus_err_um: float
    quality: np.ndarray  # (F, 2, 3): [input, refocused] x [sharpness, psnr, ssim]
    flags: np.ndarray  # (F,) uint8, PLANE_* bits

    def small(self) -> dict[str, Any]:
        """Everything but the refocused planes: what a depth task sends on."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "refocused"}


def _usable(image: np.ndarray | None) -> bool:
    return image is not None and (
        not np.issubdtype(image.dtype, np.floating) or bool(np.isfinite(image).all())
    )


def process_depth(
    planes: Sequence[np.ndarray | None],
    *,
    refocus: Callable[[np.ndarray], np.ndarray],
    settings: DepthSettings,
    references: Sequence[np.ndarray | None] | None = None,
    truths: Sequence[np.ndarray | None] | None = None,
    freq_size: int,
) -> DepthResult:
    """Refocus one well's fields at one depth and recover the well's PSF there.

    Parameters
    ----------
    planes : sequence of (Y, X) ndarray or None, one per field
        The defocused planes; None where the plane is missing.
    refocus : callable
        ``(N, Y, X) -> (N, Y, X) float32``: the refocusing method, run once on
        all usable planes.
    settings : DepthSettings
    references : sequence of (Y, X) ndarray or None, optional
        With ``settings.reference == "focal-plane"``: each field's in-focus
        plane (None where missing). Otherwise the refocused planes are the
        reference.
    truths : sequence of (Y, X) ndarray or None, optional
        Ground-truth in-focus images, for PSNR/SSIM.
    freq_size : int
        Length of the radial frequency axis (for NaN profiles).

    Returns
    -------
    DepthResult
        A plane with NaN or infinite pixels is masked like a missing plane
        (``PLANE_NONFINITE``). A plane without signal above its noise is
        refocused but left out of the PSF (``PLANE_NO_SIGNAL``); a depth
        without a usable plane gets NaN defocus and profile.
    """
    from .metrics import has_signal, plane_quality
    from .psf import field_spectra, recover_psf

    n = len(planes)
    flags = np.zeros(n, dtype=np.uint8)
    quality = np.full((n, 2, 3), np.nan)
    present = []
    for f, plane in enumerate(planes):
        if plane is None:
            flags[f] |= PLANE_MISSING
        elif not _usable(plane):
            flags[f] |= PLANE_NONFINITE
        else:
            present.append(f)
    shape = next((p.shape for p in planes if p is not None), (0, 0))
    refocused = np.full((n, *shape), np.nan, dtype=np.float32)
    if present:
        refocused[present] = refocus(np.stack([planes[f] for f in present]))
    spectra = None
    for f in present:
        raw = np.asarray(planes[f], dtype=np.float32)
        truth = truths[f] if truths is not None else None
        quality[f] = plane_quality(raw, refocused[f], truth, data_range=settings.data_range)
        reference = refocused[f]
        if settings.reference == "focal-plane":
            reference = references[f] if references is not None else None
            if not _usable(reference) or not has_signal(reference):
                flags[f] |= PLANE_NO_REFERENCE
                continue
            reference = np.asarray(reference, dtype=np.float32)
        if not has_signal(raw):
            flags[f] |= PLANE_NO_SIGNAL
            continue
        field = field_spectra(reference, raw, reference_background=settings.background,
                              defocused_background=settings.background, backend=settings.backend)
        spectra = field if spectra is None else spectra + field
    if spectra is None:
        return DepthResult(refocused, np.full(freq_size, np.nan),
                           np.full((settings.psf_size, settings.psf_size), np.nan),
                           np.nan, np.nan, quality, flags)
    est = recover_psf(spectra, shape, settings.optics, reference="in-focus",
                      psf_size=settings.psf_size)
    return DepthResult(refocused, np.asarray(est.otf_radial, dtype=np.float64),
                       np.asarray(est.psf, dtype=np.float64), float(est.defocus_um),
                       float(est.defocus_err_um), quality, flags)


# --- the tasks around it (they alone read the plate and write the results) ------------------------

_MODEL_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], Any] = {}


def _worker_model(model_path: str, sha256: str) -> Any:
    """The U-Net at ``model_path`` with this hash, loaded once per worker process and kept
    (a model retrained at the same path has another hash, so it is loaded afresh)."""
    key = (model_path, sha256)
    with _MODEL_LOCK:
        model = _MODELS.get(key)
        if model is None:
            _limit_framework_threads()
            from .unet import load_model

            model = load_model(model_path)
            _MODELS[key] = model
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


def refocus_planes(planes: np.ndarray, model_path: str, sha256: str = "") -> np.ndarray:
    """Refocus a ``(N, Y, X)`` stack with the worker's cached model, in one batch (float32)."""
    model = _worker_model(model_path, sha256)
    planes = np.asarray(planes)  # camera integers as they are: their percentiles are cheaper
    return np.asarray(model.predict_batch(planes, batch_size=max(4, len(planes))), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every task of a run needs: small and picklable (no pixels, no model)."""

    layout: PlateLayout
    channel: int
    writer: ResultsWriter
    model_path: str
    model_sha256: str
    settings: DepthSettings
    freq_size: int


def depth_task(job: _Job, well: int, z: int) -> dict[str, Any]:
    """One well at one depth: read, :func:`process_depth`, write the refocused planes.

    An error here (a corrupt chunk, a decode error, bad pixels) is caught and
    returned as ``{"error": ...}``: it belongs to this well, is recorded with
    it, and is not retried (retries are for lost workers, which Dask handles).
    """
    try:
        return _depth_task(job, well, z)
    except Exception as error:  # noqa: BLE001 - a bad well must not cost the other wells
        return {"error": f"{type(error).__name__}: {error}"}


def _depth_task(job: _Job, well: int, z: int) -> dict[str, Any]:
    layout, c = job.layout, job.channel
    missing = layout.missing_mask(c)
    planes = [None if missing[well, f, z] else read_plane(layout, well, f, c, z)
              for f in range(layout.n_fields)]
    references = None
    if job.settings.reference == "focal-plane":
        focal = layout.focal_plane
        references = [None if missing[well, f, focal] else read_plane(layout, well, f, c, focal)
                      for f in range(layout.n_fields)]
    truths = [truth_plane(layout, well, f, c) for f in range(layout.n_fields)]
    result = process_depth(
        planes, references=references, truths=truths if layout.ground_truth else None,
        refocus=lambda stack: refocus_planes(stack, job.model_path, job.model_sha256),
        settings=job.settings, freq_size=job.freq_size,
    )
    for f in range(layout.n_fields):
        job.writer.write_refocused(well, f, z, result.refocused[f])
    return result.small()


def well_task(job: _Job, well: int, *depths: dict[str, Any]) -> dict[str, Any]:
    """Write one well's per-depth results into its own chunks.

    Returns ``{"flags": (F, Z) plane flags}``, or ``{"error": ...}`` (and writes
    nothing) when a depth of the well failed.
    """
    errors = [d["error"] for d in depths if "error" in d]
    if errors:
        return {"error": errors[0]}
    try:
        return {"flags": _write_well(job, well, depths)}
    except Exception as error:  # noqa: BLE001
        return {"error": f"{type(error).__name__}: {error}"}


def _write_well(job: _Job, well: int, depths: Sequence[dict[str, Any]]) -> np.ndarray:
    quality = np.stack([d["quality"] for d in depths], axis=1)  # (F, Z, 2, 3)
    flags = np.stack([d["flags"] for d in depths], axis=1)  # (F, Z)
    values = {
        "otf_radial": np.stack([d["otf_radial"] for d in depths]),
        "psf": np.stack([d["psf"] for d in depths]),
        "defocus_um": np.array([d["defocus_um"] for d in depths]),
        "defocus_err_um": np.array([d["defocus_err_um"] for d in depths]),
        "sharpness": quality[..., 0],
        "plane_flags": flags,
    }
    if job.layout.ground_truth:
        values["psnr"] = quality[..., 1]
        values["ssim"] = quality[..., 2]
    job.writer.finish_well(well)  # the refocused fields' pyramids, now that every plane is written
    job.writer.write_well(well, values)
    return flags


def well_graph(plan: RunPlan, well: int, job: _Job | None = None):
    """One well's work as a Delayed (nothing is computed).

    ``n_z`` depth tasks (annotated with the GPU resource when asked) and one
    task writing the well's per-depth results.
    """
    job = job if job is not None else plan.job
    tag = f"{well}-{dask.base.tokenize(job)[:8]}"
    with gpu_tasks(plan.gpu):
        depths = [dask.delayed(depth_task, pure=False)(job, well, z, dask_key_name=f"depth-{tag}-{z}")
                  for z in range(job.layout.n_z)]
    return dask.delayed(well_task, pure=False)(job, well, *depths, dask_key_name=f"well-{tag}")


# --- planning: every check before anything starts -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """A checked run: what :func:`execute_run` does, decided before any cluster starts."""

    out: Path
    job: _Job  # its writer is bound when the store exists
    wells: tuple[int, ...]  # the wells to compute (indices), in order
    skipped: tuple[str, ...]  # done wells a resume skips
    statuses: np.ndarray | None  # of the store to resume; None: create it
    replace: bool  # remove an existing (ours) OUT when creating the store
    resume: bool  # a store another run creates meanwhile is resumed, not refused
    gpu: bool
    attrs: dict[str, Any]
    model_info: dict[str, Any]

    @property
    def layout(self) -> PlateLayout:
        return self.job.layout


def _check_model(model_path: str, optics: Optics) -> dict[str, Any]:
    from .unet import load_model

    model = load_model(model_path)  # refuses models whose input/output do not fit
    model.check_optics(optics)
    return model.info.to_dict()


def _check_size(layout: PlateLayout) -> None:
    ny, nx = layout.shape
    if min(ny, nx) < MIN_IMAGE_SIZE:
        raise PlateLayoutError(
            f"the images of {layout.path!r} are {ny} x {nx} px; plate-refocus run needs at least "
            f"{MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE} px (the {PSF_SIZE} x {PSF_SIZE} PSF and the SSIM "
            "window must fit): acquire or ingest larger fields"
        )


def _run_attrs(job: _Job, info: dict[str, Any], command_line: str | None,
               settings: dict[str, Any], gpu: bool) -> dict[str, Any]:
    return {
        "format": RESULTS_FORMAT,
        "title": "plate_refocus results",
        "source_plate": str(Path(job.layout.path).resolve()),
        "channel": job.layout.channels[job.channel],
        "optics": json.dumps(job.settings.optics.to_dict()),
        "reference": job.settings.reference,
        "method": "unet",
        "psf_estimate": "K_z / K_0 (relative to the in-focus image) inside the passband",
        # "auto": CuPy on the workers that saw a GPU, NumPy elsewhere (same numbers to 1e-5)
        "fft_backend": job.settings.backend,
        "gpu_tasks": int(gpu),
        "model_path": job.model_path,
        "model_name": str(info.get("name", Path(job.model_path).stem)),
        "model_sha256": str(info.get("sha256", "")),
        "plate_rows": list(job.layout.plate_rows),
        "plate_columns": list(job.layout.plate_columns),
        "plate_refocus_version": __version__,
        "run_settings": json.dumps(settings),
        "command_line": command_line or " ".join(sys.argv),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def plan_run(
    plate: str | os.PathLike,
    out: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    channel: str | int | None = None,
    reference: str = "refocused",
    resume: bool = False,
    overwrite: bool = False,
    wells: Sequence[str] | None = None,
    gpu: bool = False,
    backend: str | None = None,
    z_step_um: float | None = None,
    dtype: str = "uint16",
    command_line: str | None = None,
) -> RunPlan:
    """Check a run completely, without starting or writing anything.

    The plate (metadata, sizes, z positions), the channel and reference, the
    output (not inside the input, writable, not an existing store unless
    ``resume``/``overwrite`` allow it, and for ``resume`` the same settings),
    and the model (loads, fits the data, optics). Every problem is a
    :class:`~plate_refocus.errors.PlateRefocusError` whose message says what
    to do. Parameters as in :func:`run_plate`.
    """
    from .optics import radial_frequencies
    from .outputs import prepare_output
    from .unet import default_model_path

    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES!r}, got {reference!r}")
    if resume and overwrite:
        raise ValueError("pass resume=True or overwrite=True, not both")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES!r}, got {dtype!r}")
    out = prepare_output(out, kind="results", inputs=(plate,), overwrite=overwrite, resume=resume,
                         remove=False)
    layout = read_layout(plate, z_step_um=z_step_um)
    ci = layout.channel_index(channel)
    _check_size(layout)
    if reference == "focal-plane" and layout.focal_plane is None:
        raise PlateLayoutError(
            "reference='focal-plane' needs the plate's in-focus plane index, which this plate "
            "does not record; use the default reference 'refocused', or ingest with --focal-plane"
        )
    names = list(layout.wells)
    if wells is not None:
        unknown = sorted(set(wells) - set(names))
        if unknown:
            raise PlateLayoutError(f"wells {unknown!r} are not in the plate; it has {names!r}")
    model_path = str(Path(model) if model is not None else default_model_path())
    # Loaded here: a missing, corrupt or ill-fitting model fails before any worker starts,
    # and a model trained for other optics warns with both sets of numbers.
    info = _check_model(model_path, layout.optics)
    if backend is None:
        backend = "auto" if gpu else "numpy"
    settings = DepthSettings(optics=layout.optics, reference=reference, background=layout.offset,
                             data_range=layout.data_range, backend=backend)
    job = _Job(layout=layout, channel=ci, writer=ResultsWriter(str(out), ""),
               model_path=model_path, model_sha256=str(info.get("sha256", "")),
               settings=settings,
               freq_size=int(radial_frequencies(layout.shape, layout.optics.pixel_size_um).size))
    run_settings = settings_for_resume(
        source_plate=str(Path(layout.path).resolve()), channel=layout.channels[ci],
        method="unet", reference=reference, model_sha256=job.model_sha256,
        optics=layout.optics.to_dict(), wells=names, fields=layout.n_fields,
        z_um=list(layout.z_um), shape=list(layout.shape), dtype=dtype)
    statuses = check_resume(out, run_settings) if resume else None
    # Replace OUT only when asked (--overwrite) or when resuming a store of ours whose layout was
    # never completed; never a store another run creates meanwhile.
    replace = overwrite or (resume and statuses is None and out.exists())
    attrs = _run_attrs(job, info, command_line, run_settings, gpu)
    attrs.update(refocused_plate=REFOCUSED_PLATE, refocused_dtype=dtype)
    return _with_statuses(RunPlan(
        out=out, job=job, wells=(), skipped=(), statuses=None, replace=replace, resume=resume,
        gpu=gpu, attrs=attrs, model_info=info,
    ), statuses, wells)


def _with_statuses(plan: RunPlan, statuses: np.ndarray | None,
                   wells: Sequence[str] | None = None) -> RunPlan:
    """The plan's wells to compute: those not done (within ``wells``, if given)."""
    names = list(plan.layout.wells)
    done = statuses == WELL_DONE if statuses is not None else np.zeros(len(names), dtype=bool)
    todo = tuple(i for i, name in enumerate(names)
                 if not done[i] and (wells is None or name in wells))
    return dataclasses.replace(
        plan, wells=todo, skipped=tuple(n for n, d in zip(names, done, strict=True) if d),
        statuses=statuses)


# --- execution ------------------------------------------------------------------------------------


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
    wells_failed: dict[str, str] = dataclasses.field(default_factory=dict)  # well -> why
    planes_flagged: dict[str, int] = dataclasses.field(default_factory=dict)  # flag -> count
    tables: dict[str, Path] = dataclasses.field(default_factory=dict)  # name -> file written

    @property
    def planes_per_second(self) -> float:
        return self.planes / self.seconds if self.seconds > 0 else float("nan")

    @property
    def ok(self) -> bool:
        return not self.wells_failed


def _log_flags(well: str, flags: np.ndarray, layout: PlateLayout, limit: int = 3) -> None:
    """Warn about the planes of a well that were masked or left out, naming them."""
    shown = 0
    for f, z in zip(*np.nonzero(flags & (PLANE_NONFINITE | PLANE_NO_SIGNAL | PLANE_NO_REFERENCE)),
                    strict=True):
        if shown == limit:
            log.warning("well %s: more planes flagged (see plane_flags in the results)", well)
            break
        log.warning("well %s field %d plane %d (z = %g um): %s", well, f, z, layout.z_um[z],
                    describe_flags(int(flags[f, z])))
        shown += 1


def execute_run(
    plan: RunPlan,
    client: Any,
    *,
    max_wells_in_flight: int | None = None,
    on_well_done: Callable[[str, int, int], None] | None = None,
    tables_csv: bool = False,
) -> RunSummary:
    """Create (or reopen) the results store and compute the plan's wells on ``client``.

    A well whose tasks raise is marked failed (``well_status`` 2, the reason in
    ``well_error``) and the run goes on; the summary lists the failures. The
    package's log records of the run also go to ``OUT/run.log``, and the per-well
    and per-field tables to ``OUT/tables/`` (Parquet; also CSV with ``tables_csv``).
    """
    layout = plan.layout
    if plan.statuses is None:
        try:
            create_results_store(plan.out, results_template(layout, attrs=plan.attrs),
                                 replace=plan.replace,
                                 refocused=functools.partial(_create_refocused, plan))
        except OutputExistsError:
            if not plan.resume:
                raise
            # Another run created the store meanwhile: finish it together (same settings).
            statuses = check_resume(plan.out, json.loads(plan.attrs["run_settings"]))
            plan = _with_statuses(plan, statuses, [layout.wells[i] for i in plan.wells])
    writer = ResultsWriter.open(plan.out)
    job = dataclasses.replace(plan.job, writer=writer)
    with _run_log(plan.out / RUN_LOG):
        log.info("run of %s into %s: %d wells to compute (%d already done), %d fields x %d "
                 "planes each, model %s, reference %s", layout.path, plan.out, len(plan.wells),
                 len(plan.skipped), layout.n_fields, layout.n_z, plan.attrs["model_name"],
                 plan.attrs["reference"])
        summary = _compute_wells(plan, job, client, max_wells_in_flight, on_well_done)
        summary.tables = _write_tables(plan.out, csv=tables_csv)
        log.info("finished: %d wells computed, %d failed, %d skipped, %.1f s",
                 len(summary.wells_computed), len(summary.wells_failed),
                 len(summary.wells_skipped), summary.seconds)
    return summary


def _create_refocused(plan: RunPlan, path: Path) -> Any:
    """The run's refocused plate (empty), at ``path`` inside the store being created."""
    from .refocused_plate import create_refocused_plate

    layout = plan.layout
    return create_refocused_plate(
        path, wells=layout.wells, plate_rows=list(layout.plate_rows),
        plate_columns=list(layout.plate_columns), n_fields=layout.n_fields, z_um=layout.z_um,
        shape=layout.shape, optics=layout.optics, channel_name=layout.channels[plan.job.channel],
        dtype=plan.attrs["refocused_dtype"], max_value=layout.data_range,
        extra_attrs={"source_plate": plan.attrs["source_plate"]})


@contextlib.contextmanager
def _run_log(path: Path) -> Iterator[None]:
    """Also write this package's log records (INFO and up, as the logger lets through) to ``path``."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("plate_refocus")
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        handler.close()


def _write_tables(out: Path, *, csv: bool) -> dict[str, Path]:
    from .tables import write_tables

    return write_tables(open_results(out, chunks=None), out, csv=csv)


def _compute_wells(plan: RunPlan, job: _Job, client: Any, max_wells_in_flight: int | None,
                   on_well_done: Callable[[str, int, int], None] | None) -> RunSummary:
    """Submit the plan's wells a few at a time; record each as done or failed as it ends."""
    from distributed import CancelledError, as_completed

    layout, writer = plan.layout, job.writer
    names = list(layout.wells)
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    window = max_wells_in_flight or 2 * n_workers
    computed: list[str] = []
    failed: dict[str, str] = {}
    flag_totals = np.zeros(4, dtype=np.int64)
    start = time.perf_counter()
    pending: Iterator[int] = iter(plan.wells)
    futures: dict[Any, int] = {}
    ac = as_completed(loop=client.loop)

    def submit_next() -> None:
        index = next(pending, None)
        if index is not None:
            # Without fusion the GPU annotations survive optimisation; culling still happens.
            with preserve_annotations() if plan.gpu else contextlib.nullcontext():
                future = client.compute(well_graph(plan, index, job), retries=2)
            futures[future] = index
            ac.add(future)

    for _ in range(window):
        submit_next()
    for future in ac:
        index = futures.pop(future)
        try:
            outcome = future.result()
        except CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - e.g. a worker killed again and again
            outcome = {"error": f"{type(error).__name__}: {error}"}
        if "error" in outcome:
            failed[names[index]] = outcome["error"]
            writer.set_status(index, WELL_FAILED, outcome["error"])
            log.error("well %s failed: %s", names[index], outcome["error"])
        else:
            flags = outcome["flags"]
            writer.set_status(index, WELL_DONE)
            computed.append(names[index])
            log.info("well %s done (%d of %d)", names[index], len(computed) + len(failed),
                     len(plan.wells))
            _log_flags(names[index], flags, layout)
            for bit in range(4):
                flag_totals[bit] += int(np.count_nonzero(flags & (1 << bit)))
        if on_well_done is not None:
            on_well_done(names[index], len(computed) + len(failed), len(plan.wells))
        submit_next()
    seconds = time.perf_counter() - start
    return RunSummary(
        out=plan.out,
        wells_total=len(names),
        wells_computed=computed,
        wells_skipped=list(plan.skipped),
        fields=len(computed) * layout.n_fields,
        planes=len(computed) * layout.n_fields * layout.n_z,
        seconds=seconds,
        wells_failed=failed,
        planes_flagged={text: int(flag_totals[i]) for i, text in enumerate(PLANE_FLAG_NAMES.values())
                        if flag_totals[i]},
    )


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
    z_step_um: float | None = None,
    dtype: str = "uint16",
    max_wells_in_flight: int | None = None,
    on_well_done: Callable[[str, int, int], None] | None = None,
    command_line: str | None = None,
    tables_csv: bool = False,
) -> RunSummary:
    """Refocus a whole plate and estimate every well's PSF into a results store.

    :func:`plan_run` then :func:`execute_run`.

    Parameters
    ----------
    plate : path
        OME-Zarr HCS plate; opened read-only, never written.
    out : path
        Results store (zarr). Refused when it exists, unless ``resume`` (finish
        the wells not done, with the same settings) or ``overwrite`` (start
        again; only a results store or an empty folder is ever removed).
        Never inside the plate, nor holding it.
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
    z_step_um : float, optional
        Spacing of the planes in um, for a plate whose metadata lacks distinct
        z positions.
    dtype : {"uint16", "float32"}
        How the refocused plate stores the images (see :data:`DTYPES`).
    max_wells_in_flight : int, optional
        Wells submitted at once (default: twice the number of workers), which
        bounds the memory a run holds.
    on_well_done : callable, optional
        Called as ``on_well_done(well, n_finished, n_total)`` after each well
        is written and marked done or failed (the CLI's progress bar).

    Returns
    -------
    RunSummary
        ``wells_failed`` lists the wells whose tasks failed, with the reason.
    """
    plan = plan_run(plate, out, model=model, channel=channel, reference=reference, resume=resume,
                    overwrite=overwrite, wells=wells, gpu=gpu, backend=backend,
                    z_step_um=z_step_um, dtype=dtype, command_line=command_line)
    return execute_run(plan, client, max_wells_in_flight=max_wells_in_flight,
                       on_well_done=on_well_done, tables_csv=tables_csv)


def plate_graph_size(plan: RunPlan) -> tuple[int, int, int]:
    """Pickled bytes (all wells, largest well) and task count of a run's graphs.

    Built without computing anything: each well's graph is optimised as it is
    when submitted and pickled with cloudpickle, as the client does.
    """
    import cloudpickle

    total_bytes = largest = total_tasks = 0
    for well in range(plan.layout.n_wells):
        (optimized,) = dask.optimize(well_graph(plan, well))
        graph = dict(optimized.__dask_graph__())
        size = len(cloudpickle.dumps(graph))
        total_bytes += size
        largest = max(largest, size)
        total_tasks += len(graph)
    return total_bytes, largest, total_tasks
