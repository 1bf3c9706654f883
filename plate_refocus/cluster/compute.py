"""Task annotations that survive Dask's optimisation, and compute with a progress bar."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import dask

__all__ = ["GPU_RESOURCE", "gpu_tasks", "preserve_annotations", "compute"]

#: The worker resource that GPU tasks ask for.
GPU_RESOURCE = "GPU"


def gpu_tasks(enabled: bool = True) -> contextlib.AbstractContextManager:
    """Annotate the tasks built inside to need one ``GPU`` worker resource.

    ``with gpu_tasks(args.gpu): refocused = da.map_blocks(...)``. When
    ``enabled`` is false, a no-op, so the same code builds CPU graphs.
    Compute with :func:`compute` (or inside :func:`preserve_annotations`)
    so the annotation survives graph optimisation.
    """
    if not enabled:
        return contextlib.nullcontext()
    return dask.annotate(resources={GPU_RESOURCE: 1})


def preserve_annotations() -> contextlib.AbstractContextManager:
    """Dask config under which task annotations survive graph optimisation.

    Blockwise fusion merges an annotated layer into its unannotated
    neighbours (the fused layer carries no annotation) and low-level fusion
    does the same for single tasks; both are turned off here. Everything
    computed inside (``dask.compute``, ``Client.compute``, ``to_zarr``)
    keeps its ``resources=`` restrictions.
    """
    return dask.config.set({"array.optimize_blockwise": False, "optimization.fuse.active": False})


def _current_client(client: Any) -> Any:
    """``client``, else the distributed client Dask would use now, else None."""
    if client is not None:
        return client
    scheduler = dask.config.get("scheduler", None)
    if hasattr(scheduler, "dashboard_link"):
        return scheduler
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def compute(*collections: Any, client: Any = None, progress: bool = False, **kwargs: Any) -> tuple:
    """``dask.compute`` that keeps resource annotations, with a text progress bar if asked.

    Parameters
    ----------
    *collections
        Dask collections (arrays, delayed, xarray objects).
    client : distributed.Client, optional
        Compute on this client (default: the current one, or Dask's default).
    progress : bool
        Show a text progress bar on stderr (and the dashboard link, on a
        distributed client) while it runs.
    **kwargs
        Passed to :func:`dask.compute` (or ``Client.compute``).

    Returns
    -------
    tuple
        The computed results, one per collection.
    """
    with preserve_annotations():
        client = _current_client(client)
        if client is None:
            if not progress:
                return dask.compute(*collections, **kwargs)
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                return dask.compute(*collections, **kwargs)
        if not progress:
            kwargs.setdefault("scheduler", client)
            return dask.compute(*collections, **kwargs)
        from distributed import progress as show_progress

        futures = client.compute(list(collections), **kwargs)
        print(f"dashboard: {client.dashboard_link}", file=sys.stderr)
        with client.as_current():
            show_progress(futures)
        return tuple(client.gather(futures))
