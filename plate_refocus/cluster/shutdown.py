"""A quiet end for workers: no traceback from a heartbeat cut short by the worker's own close.

When a cluster closes, a worker's heartbeat that is in flight as the worker
shuts down fails, and ``distributed.worker`` logs "Failed to communicate with
scheduler during heartbeat" at ERROR with a traceback (dask/distributed#7105,
open): a successful command then ends with a traceback on the terminal, which
reads like a failure. :class:`QuietClose` drops exactly that record once its
worker is closing; the same failure while the worker runs (a scheduler that
went away mid-run) is still logged.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from distributed import WorkerPlugin
from distributed.core import Status

__all__ = ["QuietClose", "HeartbeatAtCloseFilter"]

_MESSAGE = "Failed to communicate with scheduler during heartbeat"


class HeartbeatAtCloseFilter(logging.Filter):
    """Drops the heartbeat-failure record of a worker that is closing or closed."""

    def __init__(self, worker: Any):
        super().__init__()
        self._worker = weakref.ref(worker)

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(_MESSAGE):
            return True
        worker = self._worker()
        return worker is not None and worker.status not in (Status.closing, Status.closing_gracefully,
                                                             Status.closed)


class QuietClose(WorkerPlugin):
    """Worker plugin that installs :class:`HeartbeatAtCloseFilter` on ``distributed.worker``.

    Registered by :func:`~plate_refocus.cluster.start_client` on the clusters it
    starts (not on a scheduler it only attaches to: that cluster is not ours).
    """

    name = "plate-refocus-quiet-close"
    idempotent = True

    def setup(self, worker: Any) -> None:
        self._filter = HeartbeatAtCloseFilter(worker)
        logging.getLogger("distributed.worker").addFilter(self._filter)

    def teardown(self, worker: Any) -> None:
        filt = getattr(self, "_filter", None)
        if filt is not None:
            logging.getLogger("distributed.worker").removeFilter(filt)
