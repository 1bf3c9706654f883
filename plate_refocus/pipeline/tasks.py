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

__all__ = ["RunJob", "refocus_planes", "depth_task", "well_task", "well_graph"]

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
            from ..unet import load_model

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
class RunJob:
    """What every task of a run needs: small and picklable (no pixels, no model)."""

    layout: PlateLayout
    channel: int
    writer: ResultsWriter
    model_path: str
    model_sha256: str
    settings: DepthSettings
    freq_size: int


def depth_task(job: RunJob, well: int, z: int) -> dict[str, Any]:
    """One well at one depth: read, :func:`process_depth`, write the refocused planes.

    An error here (a corrupt chunk, a decode error, bad pixels) is caught and
    returned as ``{"error": ...}``: it belongs to this well, is recorded with
    it, and is not retried (retries are for lost workers, which Dask handles).
    """
    try:
        return _depth_task(job, well, z)
    except Exception as error:  # noqa: BLE001 - a bad well must not cost the other wells
        return {"error": f"{type(error).__name__}: {error}"}


def _depth_task(job: RunJob, well: int, z: int) -> dict[str, Any]:
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


def well_task(job: RunJob, well: int, *depths: dict[str, Any]) -> dict[str, Any]:
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


def _write_well(job: RunJob, well: int, depths: Sequence[dict[str, Any]]) -> np.ndarray:
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


def well_graph(plan: Any, well: int, job: RunJob | None = None):
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
