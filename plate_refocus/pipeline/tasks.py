"""The Dask tasks of a run: they alone read the plate and write the results.

A well is ``n_z`` depth tasks (read the depth's planes, :func:`process_depth`,
write the refocused planes) and one task writing the well. Errors inside them
are returned as records, so a bad well never stops the others.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

from ..cluster import gpu_tasks
from ..plate import PlateLayout, read_plane, truth_plane
from ..results import ResultsWriter
from .compute import DepthSettings, process_depth

__all__ = ["RunJob", "resolve_reference", "refocus_planes", "survey_task", "depth_task",
           "well_task", "well_graph"]

_MODEL_LOCK = threading.Lock()


_MODELS: dict[tuple[str, str], Any] = {}


def _worker_model(model_path: str, sha256: str, kind: str = "refocus") -> Any:
    """The U-Net (or, ``kind="refiner"``, the RL refiner) at ``model_path`` with this hash, loaded
    once per worker process and kept (a model retrained at the same path has another hash, so it
    is loaded afresh)."""
    key = (model_path, sha256)
    with _MODEL_LOCK:
        model = _MODELS.get(key)
        if model is None:
            _limit_framework_threads()
            from ..unet import load_model
            from ..unet.refiner import load_refiner

            model = (load_refiner if kind == "refiner" else load_model)(model_path)
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
class RunJob:
    """What every task of a run needs: small and picklable (no pixels, no model).

    ``reference`` is what the user asked for (``"auto"``, ``"focal-plane"``,
    ``"blind"``, ``"refocused"``); each well resolves it (:func:`resolve_reference`)
    and ``settings.reference`` is then set per well.
    """

    layout: PlateLayout
    channel: int
    writer: ResultsWriter
    model_path: str
    model_sha256: str
    settings: DepthSettings
    freq: tuple[float, ...]
    reference: str = "auto"
    refiner_path: str = ""  # hybrid's RL refiner, where one was trained for the optics
    refiner_sha256: str = ""

    @property
    def needs_survey(self) -> bool:
        """Whether a well first looks for its in-focus plane (auto, none recorded, a stack)."""
        return (self.reference == "auto" and self.layout.focal_plane is None
                and self.layout.n_z > 1)


def resolve_reference(job: RunJob, focus: dict[str, Any] | None) -> tuple[str, int | None, str]:
    """``(reference, focal plane index or None, how it was chosen)`` for one well.

    ``auto``: the plate's recorded in-focus plane, else the plane the survey found
    in focus, else the blind estimate.
    """
    layout = job.layout
    if job.reference in ("blind", "refocused"):
        return job.reference, None, job.reference
    if layout.focal_plane is not None:
        return "focal-plane", layout.focal_plane, "focal-plane (recorded)"
    if focus and focus.get("index") is not None:
        return ("focal-plane", int(focus["index"]),
                f"focal-plane (found, prominence {focus['prominence']:.2f})")
    return "blind", None, "blind (no plane found in focus)" if focus else "blind"


def _error(error: Exception) -> dict[str, str]:
    return {"error": f"{type(error).__name__}: {error}"}


def _read_usable(job: RunJob, well: int, z: int, missing: np.ndarray) -> list[np.ndarray | None]:
    layout, c = job.layout, job.channel
    return [None if missing[well, f, z] else read_plane(layout, well, f, c, z)
            for f in range(layout.n_fields)]


def survey_task(job: RunJob, well: int) -> dict[str, Any]:
    """Find the well's in-focus plane from every plane's pooled power spectrum (or none)."""
    try:
        from ..focus import blind_defocus, find_focus, power_spectrum
        from ..metrics import has_signal

        layout, optics = job.layout, job.settings.optics
        missing = layout.missing_mask(job.channel)
        spectra, blind = [], []
        for z in range(layout.n_z):
            planes = [np.asarray(p, dtype=np.float32) for p in _read_usable(job, well, z, missing)
                      if p is not None]
            planes = [p for p in planes if np.isfinite(p).all() and has_signal(p)]
            if not planes:
                return {"index": None, "prominence": float("nan")}
            spectra.append(power_spectrum(np.stack(planes), optics.pixel_size_um,
                                          background=job.settings.background,
                                          backend=job.settings.backend))
            blind.append(blind_defocus(spectra[-1], optics))
        found = find_focus(np.asarray(layout.z_um), spectra, optics, blind=blind)
        if found is None:
            return {"index": None, "prominence": float("nan")}
        return {"index": int(found.index), "prominence": float(found.prominence)}
    except Exception as error:  # noqa: BLE001 - a bad well must not cost the other wells
        return _error(error)


def depth_task(job: RunJob, well: int, z: int, focus: dict[str, Any] | None = None) -> dict[str, Any]:
    """One well at one depth: read, :func:`process_depth`, write the refocused planes.

    An error here (a corrupt chunk, a decode error, bad pixels) is caught and
    returned as ``{"error": ...}``: it belongs to this well, is recorded with
    it, and is not retried (retries are for lost workers, which Dask handles).
    """
    if focus is not None and "error" in focus:
        return focus
    try:
        return _depth_task(job, well, z, focus)
    except Exception as error:  # noqa: BLE001 - a bad well must not cost the other wells
        return _error(error)


def _depth_task(job: RunJob, well: int, z: int, focus: dict[str, Any] | None) -> dict[str, Any]:
    layout, c = job.layout, job.channel
    missing = layout.missing_mask(c)
    planes = _read_usable(job, well, z, missing)
    reference, focal, how = resolve_reference(job, focus)
    references = None
    if reference == "focal-plane":
        references = [planes[f] if z == focal else (
            None if missing[well, f, focal] else read_plane(layout, well, f, c, focal))
            for f in range(layout.n_fields)]
    truths = [truth_plane(layout, well, f, c) for f in range(layout.n_fields)]
    result = process_depth(
        planes, references=references, truths=truths if layout.ground_truth else None,
        refocus=lambda stack: refocus_planes(stack, job.model_path, job.model_sha256),
        settings=dataclasses.replace(job.settings, reference=reference),
        freq=np.asarray(job.freq),
        refiner=_worker_model(job.refiner_path, job.refiner_sha256, "refiner") if job.refiner_path else None,
    )
    for f in range(layout.n_fields):
        job.writer.write_refocused(well, f, z, result.refocused[f])
    return {**result.small(), "reference": how, "focal": -1 if focal is None else focal,
            "prominence": float("nan") if not focus else focus.get("prominence", float("nan"))}


def well_task(job: RunJob, well: int, *depths: dict[str, Any]) -> dict[str, Any]:
    """Write one well's per-depth results into its own chunks.

    Returns ``{"flags": (F, Z) plane flags, "record": the well's one-value
    variables}`` (the client writes those, as they share one chunk), or
    ``{"error": ...}`` (and writes nothing) when a depth of the well failed.
    """
    errors = [d["error"] for d in depths if "error" in d]
    if errors:
        return {"error": errors[0]}
    try:
        flags = _write_well(job, well, depths)
    except Exception as error:  # noqa: BLE001
        return _error(error)
    first = depths[0]
    return {"flags": flags, "record": {"reference_used": first["reference"],
                                       "focal_plane_used": first["focal"],
                                       "focus_prominence": first["prominence"]}}


def _write_well(job: RunJob, well: int, depths: Sequence[dict[str, Any]]) -> np.ndarray:
    quality = np.stack([d["quality"] for d in depths], axis=1)  # (F, Z, 2, 3)
    flags = np.stack([d["flags"] for d in depths], axis=1)  # (F, Z)
    values = {name: np.stack([d[name] for d in depths]) for name in (
        "otf_radial", "psf", "defocus_um", "defocus_err_um", "defocus_blind_um",
        "defocus_blind_err_um")}
    for name in ("consistency", "method_used"):
        values[name] = np.stack([d[name] for d in depths], axis=1)  # (F, Z)
    values["sharpness"] = quality[..., 0]
    values["plane_flags"] = flags
    if job.layout.ground_truth:
        values["psnr"] = quality[..., 1]
        values["ssim"] = quality[..., 2]
    job.writer.finish_well(well)  # the refocused fields' pyramids, now that every plane is written
    job.writer.write_well(well, values)
    return flags


def well_graph(plan: Any, well: int, job: RunJob | None = None):
    """One well's work as a Delayed (nothing is computed).

    With ``reference="auto"`` on a stack that records no in-focus plane, a
    survey task first looks for it; then ``n_z`` depth tasks (annotated with
    the GPU resource when asked) and one task writing the well's results.
    """
    job = job if job is not None else plan.job
    tag = f"{well}-{dask.base.tokenize(job)[:8]}"
    focus = None
    if job.needs_survey:
        focus = dask.delayed(survey_task, pure=False)(job, well, dask_key_name=f"survey-{tag}")
    with gpu_tasks(plan.gpu):
        depths = [dask.delayed(depth_task, pure=False)(job, well, z, focus,
                                                       dask_key_name=f"depth-{tag}-{z}")
                  for z in range(job.layout.n_z)]
    return dask.delayed(well_task, pure=False)(job, well, *depths, dask_key_name=f"well-{tag}")
