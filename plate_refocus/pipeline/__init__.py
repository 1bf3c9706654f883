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

Modules: :mod:`.compute` (:func:`process_depth`), :mod:`.tasks` (the Dask tasks),
:mod:`.plan` (:func:`plan_run`), :mod:`.execute` (:func:`execute_run`,
:func:`run_plate`). A new refocusing method plugs in where
:func:`process_depth` calls ``refocus``.
"""

from __future__ import annotations

from ..results import open_results
from .compute import METHODS, RL_CONSISTENCY_LIMIT, DepthResult, DepthSettings, process_depth
from .execute import RUN_LOG, RunSummary, execute_run, run_plate
from .plan import (
    DEFAULT_METHOD,
    DTYPES,
    MIN_IMAGE_SIZE,
    REFERENCES,
    RunPlan,
    plan_run,
    plate_graph_size,
)
from .tasks import RunJob, depth_task, refocus_planes, well_graph, well_task

__all__ = [
    "REFERENCES",
    "METHODS",
    "RL_CONSISTENCY_LIMIT",
    "DEFAULT_METHOD",
    "MIN_IMAGE_SIZE",
    "DTYPES",
    "RUN_LOG",
    "DepthSettings",
    "DepthResult",
    "process_depth",
    "RunJob",
    "RunPlan",
    "RunSummary",
    "plan_run",
    "execute_run",
    "run_plate",
    "open_results",
    "well_graph",
    "depth_task",
    "well_task",
    "refocus_planes",
    "plate_graph_size",
]
