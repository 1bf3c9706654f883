"""A quiet end for workers: no traceback from a heartbeat cut short by the worker's own close.

When a cluster closes, a worker's heartbeat that is in flight as the worker
shuts down fails, and ``distributed.worker`` logs "Failed to communicate with
scheduler during heartbeat" at ERROR with a traceback (dask/distributed#7105,
open): a successful command then ends with a traceback on the terminal, which
reads like a failure. :class:`QuietClose` drops exactly that record while the
workers of its process are closing; the same failure while a worker runs (a
scheduler that went away mid-run) is still logged.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from distributed import WorkerPlugin
from distributed.core import Status

__all__ = ["QuietClose", "HeartbeatAtCloseFilter"]

_MESSAGE = "Failed to communicate with scheduler during heartbeat"


_CLOSING = (Status.closing, Status.closing_gracefully, Status.closed)


class HeartbeatAtCloseFilter(logging.Filter):
    """Drops the heartbeat-failure record while every worker it watches is closing or closed.

    The record does not say which worker logged it; in a process with one worker (a nanny's)
    that is the one, and in a process of several (a threaded cluster) the record is dropped only
    when all of them close, so a worker that runs keeps its report.
    """

    def __init__(self, worker: Any = None):
        super().__init__()
        self._workers: weakref.WeakSet = weakref.WeakSet()
        if worker is not None:
            self.watch(worker)

    def watch(self, worker: Any) -> None:
        self._workers.add(worker)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_MESSAGE):
            return True
        workers = list(self._workers)
        return not workers or any(w.status not in _CLOSING for w in workers)


#: One filter per process, on ``distributed.worker``, watching that process's workers.
_FILTER = HeartbeatAtCloseFilter()


class QuietClose(WorkerPlugin):
    """Worker plugin that makes :data:`_FILTER` watch its worker.

    Registered by :func:`~plate_refocus.cluster.start_client` on the clusters it
    starts (not on a scheduler it only attaches to: that cluster is not ours).
    The filter stays installed when the plugin is torn down: ``Worker.close``
    removes its plugins before it stops the heartbeat, and a heartbeat in flight
    then is exactly the one to drop (a closed worker no longer counts as running).
    """

    name = "plate-refocus-quiet-close"
    idempotent = True

    def setup(self, worker: Any) -> None:
        logger = logging.getLogger("distributed.worker")
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        _FILTER.watch(worker)
