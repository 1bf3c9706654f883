"""Dask clients for a laptop, a running scheduler, or an HPC batch system.

One entry point, :func:`start_client`, yields a :class:`distributed.Client`
for

- ``"local"``: a :class:`distributed.LocalCluster` of worker processes sized
  to the machine;
- an existing scheduler (``scheduler="tcp://host:8786"`` or a scheduler
  file written by ``dask scheduler --scheduler-file``);
- a dask-jobqueue kind (``"slurm"``, ``"pbs"``, ``"sge"``, ``"lsf"``,
  ``"htcondor"``): Dask workers started as batch jobs.

Job settings come from Dask's configuration, ``jobqueue.<kind>`` in
``~/.config/dask/jobqueue.yaml`` or ``/etc/dask/`` (examples in the
project's ``cluster/`` folder), and the keyword options override them.
:func:`add_cluster_arguments` and :func:`client_from_args` map the same
options onto command-line flags.

GPU routing: with ``gpu=True`` every worker advertises one ``GPU``
resource (``--resources GPU=1``); tasks built inside :func:`gpu_tasks` carry
``resources={"GPU": 1}`` and run only on such workers. Dask's graph
optimisation can fuse an annotated task with unannotated neighbours and
drop the annotation; :func:`preserve_annotations` (used by
:func:`compute`) turns that fusion off.

Modules: :mod:`.client` (start_client, make_cluster, job_script), :mod:`.local`
(local clusters, worker settings), :mod:`.jobqueue` (batch-job clusters),
:mod:`.keeper` (replacing lost jobs), :mod:`.shutdown` (a quiet close), :mod:`.compute` (annotations, compute with
progress). The command-line flags that feed :func:`start_client` live in
:mod:`plate_refocus.cli`.
"""

from __future__ import annotations

from .client import CLUSTER_KINDS, job_script, make_cluster, start_client
from .compute import GPU_RESOURCE, compute, gpu_tasks, preserve_annotations
from .jobqueue import JOBQUEUE_KINDS, lifetime_for_walltime, parse_walltime
from .local import WORKER_MALLOC_ENV, worker_malloc_config

__all__ = [
    "CLUSTER_KINDS",
    "JOBQUEUE_KINDS",
    "GPU_RESOURCE",
    "start_client",
    "make_cluster",
    "job_script",
    "gpu_tasks",
    "preserve_annotations",
    "compute",
    "lifetime_for_walltime",
    "parse_walltime",
    "WORKER_MALLOC_ENV",
    "worker_malloc_config",
]
