"""Local Dask clusters: worker processes sized to the machine, with their malloc settings."""

from __future__ import annotations

import logging
import os
from typing import Any

import dask

from ..errors import ClusterError
from .compute import GPU_RESOURCE

__all__ = ["WORKER_MALLOC_ENV", "worker_malloc_config", "local_cluster", "temporary_security"]

log = logging.getLogger(__name__)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: glibc settings for worker processes that allocate and free many arrays of a few MB.
#: Distributed sets MALLOC_TRIM_THRESHOLD_=65536 so workers hand memory back quickly; setting
#: it also freezes the mmap threshold at 128 KiB, so every array of the padded grid is a fresh
#: mmap whose pages fault in again (measured: 3x the page faults, +60% CPU per field). Keeping
#: arrays below 32 MiB on the heap, trimmed above 128 MiB, makes a worker as fast as a plain loop.
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20)}


def worker_malloc_config() -> dict[str, Any]:
    """Dask config that spawns local worker processes with :data:`WORKER_MALLOC_ENV`.

    Use as ``with dask.config.set(worker_malloc_config()): LocalCluster(...)``. Variables
    already in this process's environment win (that is how distributed reads them).
    """
    import dask

    current = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    return {"distributed.nanny.pre-spawn-environ": {**current, **WORKER_MALLOC_ENV}}


def local_cluster(*, workers, threads_per_worker, memory, interface, gpu, tls,
                   dashboard_address) -> Any:
    from distributed import LocalCluster

    cores = _usable_cores()
    threads = threads_per_worker or 1
    n_workers = workers or max(1, cores // threads)
    kwargs: dict[str, Any] = {}
    if tls:
        kwargs.update(security=temporary_security(), protocol="tls://")
    if gpu:
        kwargs["resources"] = {GPU_RESOURCE: 1}
    if interface:
        kwargs["interface"] = interface
    log.info("local cluster: %d worker processes x %d threads", n_workers, threads)
    try:
        # glibc settings that keep multi-MB arrays from being page-faulted afresh in every task
        # (see WORKER_MALLOC_ENV): workers spend their CPU on the work, as a plain loop does.
        with dask.config.set(worker_malloc_config()):
            return LocalCluster(
                n_workers=n_workers, threads_per_worker=threads, processes=True,
                memory_limit=memory or "auto", dashboard_address=dashboard_address, **kwargs,
            )
    except ValueError as error:
        raise ClusterError(f"cannot start a local Dask cluster: {error}") from error


def temporary_security() -> Any:
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError as error:
        raise ClusterError(
            "TLS needs the `cryptography` package: pip install cryptography (or run with --no-tls)"
        ) from error
