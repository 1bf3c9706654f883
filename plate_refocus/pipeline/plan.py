"""Planning a run: every check before anything starts, into a :class:`RunPlan`."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np

from .. import __version__
from ..errors import ModelError, PlateLayoutError
from ..optics import Optics
from ..plate import PlateLayout, read_layout
from ..results import (
    PSF_SIZE,
    REFOCUSED_PLATE,
    RESULTS_FORMAT,
    WELL_DONE,
    ResultsWriter,
    check_resume,
    settings_for_resume,
)
from .compute import METHODS, DepthSettings
from .tasks import RunJob, well_graph

log = logging.getLogger("plate_refocus.pipeline")

__all__ = ["REFERENCES", "DEFAULT_METHOD", "DTYPES", "MIN_IMAGE_SIZE", "RunPlan", "plan_run", "with_statuses",
           "plate_graph_size"]

#: Where the sharp reference for the PSF (and the physics refocus) comes from.
#: ``"auto"``: the stack's in-focus plane when the plate records one or a survey of the stack
#: finds one, else the blind estimate; ``"focal-plane"``: the recorded (or --focal-plane) plane;
#: ``"blind"``: the fields' pooled power spectra alone; ``"refocused"``: the network's output.
REFERENCES = ("auto", "focal-plane", "blind", "refocused")


#: The refocusing method of a run unless one is asked for: the best on held-out data (README,
#: "Blind defocus, physics refocus and unseen morphologies").
DEFAULT_METHOD = "rl"

#: How the refocused images are stored: camera counts rounded to uint16 (the default: the
#: rounding error, at most 0.5 count, is far below the images' noise; see the README) or float32.
DTYPES = ("uint16", "float32")


#: Smallest image side a run accepts: the 33 x 33 PSF and the 11-px SSIM window must fit.
MIN_IMAGE_SIZE = PSF_SIZE


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """A checked run: what :func:`execute_run` does, decided before any cluster starts."""

    out: Path
    job: RunJob  # its writer is bound when the store exists
    wells: tuple[int, ...]  # the wells to compute (indices), in order
    skipped: tuple[str, ...]  # done wells a resume skips
    statuses: np.ndarray | None  # of the store to resume; None: create it
    replace: bool  # remove an existing (ours) OUT when creating the store
    resume: bool  # a store another run creates meanwhile is resumed, not refused
    gpu: bool
    attrs: dict[str, Any]
    model_info: dict[str, Any]
    refiner_info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def layout(self) -> PlateLayout:
        return self.job.layout


def _check_model(model_path: str, optics: Optics) -> dict[str, Any]:
    from ..unet import load_model
    from ..unet.model import OPTICS_TOLERANCE

    model = load_model(model_path)  # refuses models whose input/output do not fit
    model.check_optics(optics, refuse_beyond=OPTICS_TOLERANCE)  # and models of other optics
    return model.info.to_dict()


def _refiner_for(method: str, optics: Optics, refiner: str | os.PathLike | None = None) -> tuple[str, dict[str, Any]]:
    """``hybrid``'s RL refiner, loaded here so a broken file fails before any worker starts: its path
    and metadata, or ``("", {})`` for other methods, ``refiner="none"`` and optics none was trained for.
    Without `refiner` the shipped one for the optics; a given one must fit the optics."""
    from ..unet.model import OPTICS_TOLERANCE
    from ..unet.refiner import load_refiner, shipped_refiner_path

    if refiner is not None and str(refiner) != "none" and method != "hybrid":
        raise ModelError(f"--refiner refines Richardson-Lucy inside --method hybrid; this run's method "
                         f"is {method!r}: drop --refiner or use --method hybrid")
    if method != "hybrid" or str(refiner) == "none":
        return "", {}
    path = shipped_refiner_path(optics) if refiner is None else Path(refiner)
    if path is None:
        return "", {}
    info = load_refiner(path).info
    if not info.trained_for(optics):
        raise ModelError(f"refiner {str(path)!r} was trained for {info.optics}, not the plate's {optics} "
                         f"(more than {OPTICS_TOLERANCE:.0%} apart): fine-tune it on these optics with "
                         "'plate-refocus train-refiner', or run with --refiner none")
    return str(path), info.to_dict()


def depth_settings(layout: PlateLayout, *, method: str, reference: str, backend: str,
                   network_limit: float | None = None) -> DepthSettings:
    """What :func:`process_depth` needs to know about a plate besides its pixels (its optics and camera)."""
    camera = layout.camera
    return DepthSettings(
        optics=layout.optics, method=method, reference=reference, background=layout.offset,
        data_range=layout.data_range, backend=backend,
        read_noise=float(camera["read_noise"]) if {"offset", "read_noise"} <= set(camera) else None,
        network_limit=network_limit)


def _check_size(layout: PlateLayout) -> None:
    ny, nx = layout.shape
    if min(ny, nx) < MIN_IMAGE_SIZE:
        raise PlateLayoutError(
            f"the images of {layout.path!r} are {ny} x {nx} px; plate-refocus run needs at least "
            f"{MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE} px (the {PSF_SIZE} x {PSF_SIZE} PSF and the SSIM "
            "window must fit): acquire or ingest larger fields"
        )


def _run_attrs(job: RunJob, info: dict[str, Any], command_line: str | None,
               settings: dict[str, Any], gpu: bool) -> dict[str, Any]:
    return {
        "format": RESULTS_FORMAT,
        "title": "plate_refocus results",
        "source_plate": str(Path(job.layout.path).resolve()),
        "channel": job.layout.channels[job.channel],
        "optics": json.dumps(job.settings.optics.to_dict()),
        "reference": job.reference,
        "method": job.settings.method,
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
    method: str = DEFAULT_METHOD,
    channel: str | int | None = None,
    reference: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    wells: Sequence[str] | None = None,
    gpu: bool = False,
    backend: str | None = None,
    z_step_um: float | None = None,
    optics: dict[str, float] | None = None,
    focal_plane: int | None = None,
    dtype: str = "uint16",
    command_line: str | None = None,
    refiner: str | os.PathLike | None = None,
) -> RunPlan:
    """Check a run completely, without starting or writing anything.

    The plate (metadata, sizes, z positions, optics), the channel, method and
    reference, the output (not inside the input, writable, not an existing
    store unless ``resume``/``overwrite`` allow it, and for ``resume`` the same
    settings), and the model when the method uses it (loads, fits the data,
    optics). Every problem is a :class:`~plate_refocus.errors.PlateRefocusError`
    whose message says what to do. Parameters as in :func:`run_plate`.
    """
    from ..optics import radial_frequencies
    from ..outputs import prepare_output

    _check_choices(method=method, reference=reference, dtype=dtype)
    if resume and overwrite:
        raise ValueError("pass resume=True or overwrite=True, not both")
    out = prepare_output(out, kind="results", inputs=(plate,), overwrite=overwrite, resume=resume,
                         remove=False)
    layout = _checked_layout(plate, z_step_um, optics or {}, focal_plane, reference, wells)
    ci = layout.channel_index(channel)
    model_path, info = _model_for(method, reference, model, layout.optics)
    if backend is None:
        backend = "auto" if gpu else "numpy"
    settings = depth_settings(layout, method=method, reference=reference, backend=backend,
                              network_limit=info.get("consistency_limit"))
    refiner_path, refiner_info = _refiner_for(method, layout.optics, refiner)
    job = RunJob(layout=layout, channel=ci, writer=ResultsWriter(str(out), ""),
                 model_path=model_path, model_sha256=str(info.get("sha256", "")),
                 settings=settings, reference=reference,
                 freq=tuple(radial_frequencies(layout.shape, layout.optics.pixel_size_um).tolist()),
                 refiner_path=refiner_path, refiner_sha256=str(refiner_info.get("sha256", "")))
    run_settings = settings_for_resume(
        source_plate=str(Path(layout.path).resolve()), channel=layout.channels[ci],
        method=method, reference=reference, model_sha256=job.model_sha256,
        # only where there is one, so runs without a refiner resume across this change
        **({"refiner_sha256": job.refiner_sha256} if job.refiner_sha256 else {}),
        optics=layout.optics.to_dict(), focal_plane=layout.focal_plane, wells=list(layout.wells),
        fields=layout.n_fields, z_um=list(layout.z_um), shape=list(layout.shape), dtype=dtype)
    statuses = check_resume(out, run_settings) if resume else None
    # Replace OUT only when asked (--overwrite) or when resuming a store of ours whose layout was
    # never completed; never a store another run creates meanwhile.
    replace = overwrite or (resume and statuses is None and out.exists())
    attrs = _run_attrs(job, info, command_line, run_settings, gpu)
    attrs.update(refocused_plate=REFOCUSED_PLATE, refocused_dtype=dtype, refiner_path=refiner_path,
                 refiner_name=str(refiner_info.get("name", "")), refiner_sha256=job.refiner_sha256)
    return with_statuses(RunPlan(
        out=out, job=job, wells=(), skipped=(), statuses=None, replace=replace, resume=resume,
        gpu=gpu, attrs=attrs, model_info=info, refiner_info=refiner_info,
    ), statuses, wells)


def _check_choices(*, method: str, reference: str, dtype: str) -> None:
    for name, value, choices in (("method", method, METHODS), ("reference", reference, REFERENCES),
                                 ("dtype", dtype, DTYPES)):
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices!r}, got {value!r}")


def _checked_layout(plate: Any, z_step_um: float | None, optics: dict[str, float],
                    focal_plane: int | None, reference: str,
                    wells: Sequence[str] | None) -> PlateLayout:
    """The plate's layout with the flags applied, checked for what a run needs."""
    from ..plate import override_layout

    layout, notes = override_layout(read_layout(plate, z_step_um=z_step_um),
                                    focal_plane=focal_plane, **optics)
    for note in notes:
        log.warning("%s", note)
    _check_size(layout)
    if reference == "focal-plane" and layout.focal_plane is None:
        raise PlateLayoutError(
            "reference='focal-plane' needs the stack's in-focus plane, which this plate does not "
            "record; give it with --focal-plane N, or use --reference auto (the stack's plane "
            "found in focus, else the blind estimate)"
        )
    names = list(layout.wells)
    if wells is not None:
        unknown = sorted(set(wells) - set(names))
        if unknown:
            raise PlateLayoutError(f"wells {unknown!r} are not in the plate; it has {names!r}")
    return layout


def _model_for(method: str, reference: str, model: Any, optics: Optics) -> tuple[str, dict[str, Any]]:
    """The model's path and metadata when the method or reference needs the network."""
    from ..unet import default_model_path, shipped_optics

    # Unnamed: the shipped model for the plate's objective (the default one where none fits,
    # which _check_model then refuses with what to do).
    model_path = str(Path(model) if model is not None else default_model_path(optics))
    if method in ("wiener", "rl") and reference != "refocused":
        if model is None:
            return "", {}
        # A model the user named is checked all the same (a typo in its path must not pass
        # silently), and the run says that this method does not use it.
        _check_model(model_path, optics)
        log.warning(
            "--model %s is not used: --method %s restores without a network; pass --method unet "
            "or hybrid to use it", model_path, method)
        return model_path, {}
    # Loaded here: a missing, corrupt or ill-fitting model, or one trained for other optics, fails
    # before any worker starts; optics within OPTICS_TOLERANCE warn with both sets of numbers.
    try:
        return model_path, _check_model(model_path, optics)
    except ModelError as err:
        if model is not None:
            raise
        # no shipped model fits the plate: say which objectives they do cover
        raise ModelError(f"{err}; the shipped models were trained for: {shipped_optics()}") from None


def with_statuses(plan: RunPlan, statuses: np.ndarray | None,
                   wells: Sequence[str] | None = None) -> RunPlan:
    """The plan's wells to compute: those not done (within ``wells``, if given)."""
    names = list(plan.layout.wells)
    done = statuses == WELL_DONE if statuses is not None else np.zeros(len(names), dtype=bool)
    todo = tuple(i for i, name in enumerate(names)
                 if not done[i] and (wells is None or name in wells))
    return dataclasses.replace(
        plan, wells=todo, skipped=tuple(n for n, d in zip(names, done, strict=True) if d),
        statuses=statuses)


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
