"""Dask clients: start a local or jobqueue cluster, or attach to a running scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..errors import ClusterError
from .jobqueue import JOBQUEUE_KINDS, jobqueue_cluster
from .keeper import JobKeeper
from .local import local_cluster

__all__ = ["CLUSTER_KINDS", "start_client", "make_cluster", "job_script"]

log = logging.getLogger(__name__)

CLUSTER_KINDS: tuple[str, ...] = ("local", *JOBQUEUE_KINDS)
_CONNECT_TIMEOUT = "20s"


def job_script(kind: str = "local", **options: Any) -> str:
    """The batch script a jobqueue kind would submit for each worker job.

    Starts the cluster's scheduler (no job is submitted), renders
    ``cluster.job_script()`` and closes it, so users can check the script
    before a run (``plate-refocus run --dry-run``).

    Parameters
    ----------
    kind : str
        As in :func:`start_client`.
    **options
        The keyword options of :func:`start_client` (``scheduler=``: no script).

    Returns
    -------
    str
        The job script; for ``local`` or ``--scheduler``, a one-line description.
    """
    scheduler = options.pop("scheduler", None)
    if scheduler:
        return f"# attaching to the running scheduler {scheduler!r}: no job script\n"
    if kind == "local":
        return "# --cluster local: worker processes on this machine, no job script\n"
    cluster = make_cluster(kind, scale=False, check_submit=False, **options)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


@contextlib.contextmanager
def start_client(kind: str = "local", **options: Any) -> Iterator[Any]:
    """A Dask client on a local cluster, a running scheduler, or batch-job workers.

    Parameters
    ----------
    kind : {"local", "slurm", "pbs", "sge", "lsf", "htcondor"}
        Where the workers run. Ignored when ``scheduler`` is given.
    **options
        ``scheduler`` (address or scheduler file: attach, start nothing) with
        ``timeout`` (seconds or a Dask duration, default 20 s) for reaching it;
        otherwise the options of :func:`make_cluster`.

    Yields
    ------
    distributed.Client
        Connected; the cluster (if one was started) is closed on exit and
        its batch jobs cancelled.

    Raises
    ------
    ClusterError
        The scheduler cannot be reached, or a jobqueue kind is misconfigured
        (the message says which setting to fix).
    """
    from distributed import Client

    scheduler = options.pop("scheduler", None)
    timeout = options.pop("timeout", _CONNECT_TIMEOUT)
    if scheduler:
        with _attach(scheduler, tls=options.get("tls"), timeout=timeout) as client:
            yield client
        return
    cluster = make_cluster(kind, **options)
    keeper = None
    try:
        client = Client(cluster, security=getattr(cluster, "security", None))
    except Exception:
        cluster.close()
        raise
    try:
        if kind != "local":
            keeper = JobKeeper(cluster)
        _quiet_close(client)
        log.info("Dask dashboard: %s", client.dashboard_link)
        yield client
    finally:
        if keeper is not None:
            keeper.stop()
        client.close()
        cluster.close()


def _quiet_close(client: Any) -> None:
    """Workers of this cluster, now and later, drop the heartbeat traceback of their own close
    (:mod:`.shutdown`); a failure to register only costs that quiet."""
    from .shutdown import QuietClose

    try:
        client.register_plugin(QuietClose())
    except Exception as error:  # noqa: BLE001 - cosmetic: never fail a run over it
        log.debug("could not register the quiet-close worker plugin: %s", error)


def _connect(*args: Any, **kwargs: Any) -> Any:
    """``distributed.Client(*args, **kwargs)``, made the default only once it has connected.

    A Client that fails to connect has already registered itself as the
    default; it is never closed, so the previous default scheduler is never
    restored and every later ``.compute()`` in the process fails with "no
    Client active". A first connection that does not touch the default
    fails cleanly; only when it succeeds is the default client made.
    """
    from distributed import Client

    Client(*args, set_as_default=False, **kwargs).close()
    return Client(*args, **kwargs)


@contextlib.contextmanager
def _attach(scheduler: str, *, tls: bool | None, timeout: str | float) -> Iterator[Any]:
    if not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address string, got {type(scheduler).__name__}")
    kwargs: dict[str, Any]
    if scheduler.endswith(".json"):
        if not os.path.exists(scheduler):
            raise ClusterError(
                f"scheduler file {scheduler!r} does not exist: start the scheduler with "
                f"`dask scheduler --scheduler-file {scheduler}` first, or give its address "
                "(tcp://host:8786)"
            )
        kwargs = {"scheduler_file": scheduler}
    else:
        kwargs = {"address": scheduler}
    if tls is False and scheduler.startswith("tls://"):
        raise ClusterError(f"scheduler {scheduler!r} uses TLS but --no-tls was given")
    try:
        client = _connect(timeout=timeout, **kwargs)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        hint = ""
        if scheduler.startswith("tls://"):
            hint = (" For a TLS scheduler, give the client its credentials in the Dask config "
                    "(distributed.comm.tls.ca-file, .client.cert, .client.key).")
        raise ClusterError(
            f"cannot reach the Dask scheduler at {scheduler!r} ({error}). Check the address "
            "(the scheduler prints it at start), that the scheduler is still running, and that "
            f"this machine can reach that host and port.{hint}"
        ) from error
    try:
        log.info("Dask dashboard: %s", client.dashboard_link)
        yield client
    finally:
        client.close()


def make_cluster(
    kind: str = "local",
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory: str | None = None,
    jobs: int | None = None,
    min_jobs: int | None = None,
    max_jobs: int | None = None,
    cores: int | None = None,
    processes: int | None = None,
    walltime: str | None = None,
    queue: str | None = None,
    account: str | None = None,
    job_extra: Sequence[str] = (),
    interface: str | None = None,
    lifetime: str | None = "auto",
    gpu: bool = False,
    tls: bool | None = None,
    dashboard_address: str = ":8787",
    scheduler_options: Mapping[str, Any] | None = None,
    scale: bool = True,
    check_submit: bool = True,
    **job_kwargs: Any,
) -> Any:
    """Start a local or dask-jobqueue cluster (without a client).

    Parameters
    ----------
    kind : {"local", "slurm", "pbs", "sge", "lsf", "htcondor"}
    workers, threads_per_worker : int, optional
        Local only: worker processes (default one per usable core) and threads
        per process (default 1). ``n_workers`` is accepted for ``workers``, as
        in :class:`distributed.LocalCluster`.
    memory : str, optional
        Local: memory limit per worker (default: the machine's memory shared
        out). Jobqueue: memory per job.
    jobs : int, optional
        Jobqueue: worker jobs to keep running (default 1). Jobs that end
        (walltime, ``scancel``) are replaced.
    min_jobs, max_jobs : int, optional
        Jobqueue: scale adaptively between these (instead of ``jobs``).
    cores, processes, walltime, queue, account, interface : optional
        Jobqueue job settings; ``None`` keeps the Dask config's value.
    job_extra : sequence of str
        Extra scheduler directives, appended to the config's
        ``job-extra-directives``.
    lifetime : str or None
        Jobqueue: worker ``--lifetime``; ``"auto"`` derives it (with a
        stagger) from the walltime so workers retire before the batch
        system kills them; ``None`` or ``"none"`` turns it off.
    gpu : bool
        Every worker advertises ``GPU=1`` (``--resources GPU=1``).
    tls : bool, optional
        Temporary TLS credentials (:meth:`distributed.security.Security.temporary`);
        default: on for jobqueue kinds, off for local.
    dashboard_address : str
        Where the dashboard listens; a free port is used if it is taken.
    scheduler_options : mapping, optional
        Extra jobqueue ``scheduler_options`` (e.g. ``{"host": "127.0.0.1"}``).
    scale : bool
        Submit the jobs (False: only start the scheduler, for :func:`job_script`).
    check_submit : bool
        Check that the batch system's submit command is on ``PATH``.
    **job_kwargs
        Passed on to the dask-jobqueue cluster class (e.g. ``log_directory``,
        ``shared_temp_directory``, ``job_script_prologue``).

    Returns
    -------
    distributed.LocalCluster or dask_jobqueue.JobQueueCluster
    """
    if kind not in CLUSTER_KINDS:
        raise ValueError(f"kind must be one of {CLUSTER_KINDS}, got {kind!r}")
    if "n_workers" in job_kwargs:
        if workers is not None:
            raise TypeError("give workers= or n_workers=, not both")
        workers = job_kwargs.pop("n_workers")
    for name, value in (("workers", workers), ("threads_per_worker", threads_per_worker),
                        ("jobs", jobs), ("min_jobs", min_jobs), ("max_jobs", max_jobs),
                        ("cores", cores), ("processes", processes)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value is not None and value < (0 if name == "min_jobs" else 1):
            raise ValueError(f"{name} must be >= {0 if name == 'min_jobs' else 1}, got {value!r}")
    if min_jobs is not None and max_jobs is not None and min_jobs > max_jobs:
        raise ValueError(f"min_jobs ({min_jobs!r}) must not exceed max_jobs ({max_jobs!r})")
    if isinstance(job_extra, str):
        raise TypeError(f"job_extra must be a sequence of directives, not a string: {job_extra!r}")
    if kind == "local":
        ignored = {name: value for name, value in (
            ("jobs", jobs), ("min_jobs", min_jobs), ("max_jobs", max_jobs), ("cores", cores),
            ("processes", processes), ("walltime", walltime), ("queue", queue),
            ("account", account)) if value is not None}
        if ignored or job_extra or job_kwargs:
            raise ValueError(
                f"options {sorted([*ignored, *(['job_extra'] if job_extra else []), *job_kwargs])} "
                "only apply to jobqueue kinds (slurm, pbs, ...); use workers= and "
                "threads_per_worker= for a local cluster"
            )
        return local_cluster(workers=workers, threads_per_worker=threads_per_worker,
                              memory=memory, interface=interface, gpu=gpu, tls=bool(tls),
                              dashboard_address=dashboard_address)
    if workers is not None or threads_per_worker is not None:
        raise ValueError(
            f"workers/threads_per_worker apply to local clusters; for {kind!r} use jobs= "
            "(or min_jobs/max_jobs), cores= and processes="
        )
    return jobqueue_cluster(
        kind, memory=memory, jobs=jobs, min_jobs=min_jobs, max_jobs=max_jobs, cores=cores,
        processes=processes, walltime=walltime, queue=queue, account=account,
        job_extra=tuple(job_extra), interface=interface, lifetime=lifetime, gpu=gpu,
        tls=True if tls is None else tls, dashboard_address=dashboard_address,
        scheduler_options=dict(scheduler_options or {}), scale=scale,
        check_submit=check_submit, job_kwargs=job_kwargs,
    )
