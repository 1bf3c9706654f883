"""Running a plan: create the results store, compute the wells a few at a time, record each."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..cluster import preserve_annotations
from ..errors import OutputExistsError
from ..plate import PlateLayout
from ..results import (
    PLANE_FLAG_NAMES,
    PLANE_INCONSISTENT,
    PLANE_NO_REFERENCE,
    PLANE_NO_SIGNAL,
    PLANE_NONFINITE,
    WELL_DONE,
    WELL_FAILED,
    ResultsWriter,
    check_resume,
    create_results_store,
    describe_flags,
    open_results,
    results_template,
)
from .plan import DEFAULT_METHOD, RunPlan, plan_run, with_statuses
from .tasks import RunJob, well_graph

__all__ = ["RUN_LOG", "RunSummary", "execute_run", "run_plate"]

log = logging.getLogger("plate_refocus.pipeline")

#: The run's log, inside the results store (zarr readers ignore it).
RUN_LOG = "run.log"


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
    for f, z in zip(*np.nonzero(flags & (PLANE_NONFINITE | PLANE_NO_SIGNAL | PLANE_NO_REFERENCE | PLANE_INCONSISTENT)),
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
            plan = with_statuses(plan, statuses, [layout.wells[i] for i in plan.wells])
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
    from ..plate import create_refocused_plate

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
    from ..tables import write_tables

    return write_tables(open_results(out, chunks=None), out, csv=csv)


def _compute_wells(plan: RunPlan, job: RunJob, client: Any, max_wells_in_flight: int | None,
                   on_well_done: Callable[[str, int, int], None] | None) -> RunSummary:
    """Submit the plan's wells a few at a time; record each as done or failed as it ends."""
    from distributed import CancelledError, as_completed

    layout, writer = plan.layout, job.writer
    names = list(layout.wells)
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    window = max_wells_in_flight or 2 * n_workers
    computed: list[str] = []
    failed: dict[str, str] = {}
    flag_totals = np.zeros(len(PLANE_FLAG_NAMES), dtype=np.int64)
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
            writer.set_status(index, WELL_DONE, record=outcome.get("record"))
            computed.append(names[index])
            log.info("well %s done (%d of %d)", names[index], len(computed) + len(failed),
                     len(plan.wells))
            _log_flags(names[index], flags, layout)
            for i, bit in enumerate(PLANE_FLAG_NAMES):
                flag_totals[i] += int(np.count_nonzero(flags & bit))
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
    max_wells_in_flight: int | None = None,
    on_well_done: Callable[[str, int, int], None] | None = None,
    command_line: str | None = None,
    tables_csv: bool = False,
    refiner: str | os.PathLike | None = None,
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
        A ``.keras`` model from ``plate-refocus train`` for the methods that use
        the network; the shipped default when omitted.
    method : {"rl", "wiener", "unet", "hybrid"}
        How planes are refocused (see :data:`~plate_refocus.pipeline.compute.METHODS`);
        :data:`DEFAULT_METHOD` by default.
    channel : str or int, optional
        Channel name or index to refocus; the first channel by default.
    reference : {"auto", "focal-plane", "blind", "refocused"}
        Sharp reference for the PSF and the physics refocus (see :data:`REFERENCES`).
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
    optics : dict, optional
        ``na``, ``wavelength_um``, ``immersion_index``, ``pixel_size_um`` over the
        plate's metadata (see :func:`plate_refocus.plate.override_layout`).
    focal_plane : int, optional
        The stack's in-focus plane index, over the plate's metadata.
    dtype : {"uint16", "float32"}
        How the refocused plate stores the images (see :data:`DTYPES`).
    max_wells_in_flight : int, optional
        Wells submitted at once (default: twice the number of workers), which
        bounds the memory a run holds.
    on_well_done : callable, optional
        Called as ``on_well_done(well, n_finished, n_total)`` after each well
        is written and marked done or failed (the CLI's progress bar).
    refiner : path or "none", optional
        ``hybrid``'s RL refiner (e.g. one from ``plate-refocus train-refiner``);
        by default the shipped one for the plate's optics, ``"none"`` for none.

    Returns
    -------
    RunSummary
        ``wells_failed`` lists the wells whose tasks failed, with the reason.
    """
    plan = plan_run(plate, out, model=model, method=method, channel=channel, reference=reference,
                    resume=resume, overwrite=overwrite, wells=wells, gpu=gpu, backend=backend,
                    z_step_um=z_step_um, optics=optics, focal_plane=focal_plane, dtype=dtype,
                    command_line=command_line, refiner=refiner)
    return execute_run(plan, client, max_wells_in_flight=max_wells_in_flight,
                       on_well_done=on_well_done, tables_csv=tables_csv)
