"""The job keeper: replaces batch jobs that ended, so a jobqueue cluster keeps its size.

It uses private names of distributed's ``SpecCluster`` (``_i``,
``_new_worker_name``, ``worker_spec``): pyproject pins the versions where they
exist and a test checks them (see cluster/README.md).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import dask

__all__ = ["JobKeeper"]

log = logging.getLogger(__name__)

#: Seconds between checks for worker jobs that died (cancelled, walltime) and need replacing.
_KEEPER_INTERVAL_S = 1.0  # cheap: a few dict lookups on the cluster's loop


class JobKeeper:
    """Replaces worker jobs that ended (walltime, scancel) so the cluster keeps its size.

    dask-jobqueue's cluster keeps a job in its plan after the job is gone, so
    neither ``scale`` nor ``adapt`` would submit a replacement. Every few
    seconds this drops from the plan the jobs that were running and are gone,
    then rescales (fixed size) or lets the adaptive loop scale up. A job is
    gone when the cluster has dropped it, or when none of its workers has
    been connected to the scheduler for ``distributed.deploy.lost-worker-timeout``
    after the keeper saw one connected (the cluster's own bookkeeping of lost
    workers missed a job once in CI, and that job was never replaced).

    A replacement never takes a lost job's name: see :meth:`_skip_used_names`.
    """

    def __init__(self, cluster: Any, interval: float = _KEEPER_INTERVAL_S):
        self._cluster = cluster
        self._seen: set = set()
        self._retired: set = set()
        self._last_connected: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True,
                                        name="plate-refocus-job-keeper")
        self._thread.start()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._cluster.loop.add_callback(self._check)
            except Exception:  # the loop is closing
                return

    def _check(self) -> None:
        cluster = self._cluster
        if self._stop.is_set() or str(getattr(cluster.status, "name", "")) != "running":
            return
        current = set(cluster.workers)
        lost = (self._seen - current) & set(cluster.worker_spec)
        self._seen |= current
        lost |= self._disconnected_jobs()
        if not lost:
            return
        log.warning("worker jobs ended: %s; submitting replacements", sorted(map(str, lost)))
        for name in lost:
            cluster.worker_spec.pop(name, None)
        self._seen -= lost
        self._retired |= lost
        self._skip_used_names()
        jobs = getattr(cluster, "_plate_refocus_jobs", None)
        if jobs:
            cluster.scale(jobs=jobs)

    def _skip_used_names(self) -> None:
        """Move the cluster's job counter past every name a job has had.

        ``SpecCluster.new_worker_spec`` names a new job after the lowest
        number not in the plan, which is the lost job's own number. The
        cluster still holds the lost job under that name until the
        lost-worker timeout, so it would start nothing (the name looks
        running), then delete whatever holds the name: CI saw a scancel'ed
        job never replaced this way.
        """
        cluster = self._cluster
        used = self._retired | set(cluster.workers) | set(cluster.worker_spec)
        while cluster._new_worker_name(cluster._i) in used:
            cluster._i += 1

    def _disconnected_jobs(self) -> set:
        """Jobs of the plan with no worker connected for longer than the lost-worker timeout."""
        from dask.utils import parse_timedelta

        cluster, now = self._cluster, time.monotonic()
        workers = getattr(cluster, "scheduler_info", {}).get("workers", {}).values()
        names = [str(w.get("name", "")) for w in workers]
        grace = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
        gone = set()
        for job in list(cluster.worker_spec):
            # a job of several processes names its workers "<job>-0", "<job>-1", ...
            if any(n == str(job) or n.startswith(f"{job}-") for n in names):
                self._last_connected[job] = now
            elif job in self._last_connected and now - self._last_connected[job] >= grace:
                gone.add(job)
                del self._last_connected[job]
        return gone

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * _KEEPER_INTERVAL_S)
