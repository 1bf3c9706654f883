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
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dask

from .errors import ClusterError

__all__ = [
    "CLUSTER_KINDS",
    "JOBQUEUE_KINDS",
    "GPU_RESOURCE",
    "add_cluster_arguments",
    "cluster_options_from_args",
    "client_from_args",
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

log = logging.getLogger(__name__)

#: dask-jobqueue kinds -> the cluster class name in :mod:`dask_jobqueue`.
JOBQUEUE_KINDS: dict[str, str] = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
}
CLUSTER_KINDS: tuple[str, ...] = ("local", *JOBQUEUE_KINDS)

#: The worker resource that GPU tasks ask for.
GPU_RESOURCE = "GPU"

#: How the ``account`` option is spelled by each jobqueue kind (None: not supported).
_ACCOUNT_KEYWORD = {"slurm": "account", "pbs": "account", "sge": "project", "lsf": "project",
                    "htcondor": None}
#: Seconds between checks for worker jobs that died (cancelled, walltime) and need replacing.
_KEEPER_INTERVAL_S = 1.0  # cheap: a few dict lookups on the cluster's loop
_CONNECT_TIMEOUT = "20s"


# --- command line -----------------------------------------------------------------------------


def add_cluster_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the cluster flags (``--cluster``, ``--scheduler``, jobqueue and GPU options).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The (sub)command parser to extend; its namespace feeds
        :func:`client_from_args`.

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    if not isinstance(parser, argparse.ArgumentParser):
        raise TypeError(f"parser must be an argparse.ArgumentParser, got {type(parser).__name__}")
    group = parser.add_argument_group(
        "cluster",
        "Where the work runs. Job settings for slurm/pbs/sge/lsf/htcondor come from "
        "jobqueue.<kind> in ~/.config/dask/jobqueue.yaml or /etc/dask/ (examples in the "
        "project's cluster/ folder); these flags override them.",
    )
    group.add_argument("--cluster", choices=CLUSTER_KINDS, default="local",
                       help="local worker processes (default) or Dask workers as batch jobs")
    group.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="attach to a running Dask scheduler (tcp://host:8786, or a "
                            "scheduler file .json) instead of starting a cluster")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="local: worker processes (default: one per core)")
    group.add_argument("--threads-per-worker", type=int, default=None, metavar="N",
                       help="local: threads per worker process (default 1)")
    group.add_argument("--jobs", type=int, default=None, metavar="N",
                       help="jobqueue: number of worker jobs to keep running (default 1)")
    group.add_argument("--min-jobs", type=int, default=None, metavar="N",
                       help="jobqueue: adaptive scaling, at least N jobs")
    group.add_argument("--max-jobs", type=int, default=None, metavar="N",
                       help="jobqueue: adaptive scaling, at most N jobs")
    group.add_argument("--cores", type=int, default=None, metavar="N",
                       help="jobqueue: cores per job")
    group.add_argument("--processes", type=int, default=None, metavar="N",
                       help="jobqueue: worker processes per job")
    group.add_argument("--memory", default=None, metavar="SIZE",
                       help="jobqueue: memory per job (e.g. 16GB); local: per worker")
    group.add_argument("--walltime", default=None, metavar="TIME",
                       help="jobqueue: job walltime (e.g. 02:00:00)")
    group.add_argument("--queue", default=None, help="jobqueue: queue/partition")
    group.add_argument("--account", default=None, help="jobqueue: account/project to charge")
    group.add_argument("--job-extra", action="append", default=None, metavar="DIRECTIVE",
                       help="jobqueue: extra scheduler directive, repeatable "
                            "(e.g. --job-extra=--gres=gpu:1)")
    group.add_argument("--interface", default=None,
                       help="network interface workers and scheduler talk on (e.g. ib0)")
    group.add_argument("--lifetime", default="auto", metavar="TIME",
                       help="jobqueue: retire workers gracefully after TIME (e.g. 55m); 'auto' "
                            "(default) derives it from the walltime, 'none' turns it off")
    group.add_argument("--gpu", action="store_true",
                       help="workers advertise a GPU resource; network and FFT tasks run "
                            "only on them")
    group.add_argument("--tls", dest="tls", action="store_true", default=None,
                       help="encrypt and authenticate with temporary TLS credentials "
                            "(default for jobqueue kinds)")
    group.add_argument("--no-tls", dest="tls", action="store_false",
                       help="plain TCP even for jobqueue kinds")
    group.add_argument("--dashboard-address", default=":8787", metavar="ADDRESS",
                       help="where the dashboard listens (default :8787, a free port if taken)")
    return parser


def cluster_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword options of :func:`start_client` from parsed :func:`add_cluster_arguments` flags."""
    names = ("scheduler", "workers", "threads_per_worker", "jobs", "min_jobs", "max_jobs",
             "cores", "processes", "memory", "walltime", "queue", "account", "job_extra",
             "interface", "lifetime", "gpu", "tls", "dashboard_address")
    options = {name: getattr(args, name) for name in names if hasattr(args, name)}
    options["job_extra"] = tuple(options.get("job_extra") or ())
    return options


@contextlib.contextmanager
def client_from_args(args: argparse.Namespace) -> Iterator[Any]:
    """:func:`start_client` for the flags of :func:`add_cluster_arguments`.

    Yields
    ------
    distributed.Client
    """
    with start_client(getattr(args, "cluster", "local"), **cluster_options_from_args(args)) as client:
        yield client


def job_script(args: argparse.Namespace | None = None, /, **options: Any) -> str:
    """The batch script a jobqueue kind would submit for each worker job.

    Starts the cluster's scheduler (no job is submitted), renders
    ``cluster.job_script()`` and closes it, so users can check the script
    before a run (``plate-refocus run --dry-run``).

    Parameters
    ----------
    args : argparse.Namespace, optional
        Parsed :func:`add_cluster_arguments` flags.
    **options
        Or ``kind=...`` and the keyword options of :func:`start_client`.

    Returns
    -------
    str
        The job script; for ``local`` or ``--scheduler``, a one-line description.
    """
    if args is not None:
        options = {"kind": getattr(args, "cluster", "local"), **cluster_options_from_args(args),
                   **options}
    kind = options.pop("kind", "local")
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


# --- clients ----------------------------------------------------------------------------------


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
            keeper = _JobKeeper(cluster)
        log.info("Dask dashboard: %s", client.dashboard_link)
        yield client
    finally:
        if keeper is not None:
            keeper.stop()
        client.close()
        cluster.close()


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
        return _local_cluster(workers=workers, threads_per_worker=threads_per_worker,
                              memory=memory, interface=interface, gpu=gpu, tls=bool(tls),
                              dashboard_address=dashboard_address)
    if workers is not None or threads_per_worker is not None:
        raise ValueError(
            f"workers/threads_per_worker apply to local clusters; for {kind!r} use jobs= "
            "(or min_jobs/max_jobs), cores= and processes="
        )
    return _jobqueue_cluster(
        kind, memory=memory, jobs=jobs, min_jobs=min_jobs, max_jobs=max_jobs, cores=cores,
        processes=processes, walltime=walltime, queue=queue, account=account,
        job_extra=tuple(job_extra), interface=interface, lifetime=lifetime, gpu=gpu,
        tls=True if tls is None else tls, dashboard_address=dashboard_address,
        scheduler_options=dict(scheduler_options or {}), scale=scale,
        check_submit=check_submit, job_kwargs=job_kwargs,
    )


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


def _local_cluster(*, workers, threads_per_worker, memory, interface, gpu, tls,
                   dashboard_address) -> Any:
    from distributed import LocalCluster

    cores = _usable_cores()
    threads = threads_per_worker or 1
    n_workers = workers or max(1, cores // threads)
    kwargs: dict[str, Any] = {}
    if tls:
        kwargs.update(security=_temporary_security(), protocol="tls://")
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


def _temporary_security() -> Any:
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError as error:
        raise ClusterError(
            "TLS needs the `cryptography` package: pip install cryptography (or run with --no-tls)"
        ) from error


def _jobqueue_cluster(kind, *, memory, jobs, min_jobs, max_jobs, cores, processes, walltime,
                      queue, account, job_extra, interface, lifetime, gpu, tls,
                      dashboard_address, scheduler_options, scale, check_submit,
                      job_kwargs) -> Any:
    import dask_jobqueue

    cls = getattr(dask_jobqueue, JOBQUEUE_KINDS[kind])
    conf = f"jobqueue.{kind}"
    kwargs: dict[str, Any] = dict(job_kwargs)
    for name, value in (("cores", cores), ("memory", memory), ("processes", processes),
                        ("queue", queue), ("walltime", walltime), ("interface", interface)):
        if value is None:
            continue
        if kind == "htcondor" and name in ("queue", "walltime"):
            raise ClusterError(
                f"HTCondor has no {name}; drop --{name} (put requirements in "
                "jobqueue.htcondor.job-extra-directives instead)"
            )
        kwargs[name] = value
    if account is not None:
        keyword = _ACCOUNT_KEYWORD[kind]
        if keyword is None:
            raise ClusterError(f"{kind} has no account option; drop --account")
        kwargs[keyword] = account
    for name, flag in (("cores", "--cores"), ("memory", "--memory")):
        if kwargs.get(name) is None and dask.config.get(f"{conf}.{name}", None) is None:
            raise ClusterError(
                f"{kind}: the {name} per job is not set. Give {flag}, or set "
                f"`{conf}.{name}` in ~/.config/dask/jobqueue.yaml (examples in the project's "
                "cluster/ folder)"
            )

    # Worker arguments: the config's, then resources, lifetime.
    extra_args = list(dask.config.get(f"{conf}.worker-extra-args", None) or [])
    if gpu and not any(str(a).startswith("--resources") for a in extra_args):
        extra_args += ["--resources", f"{GPU_RESOURCE}=1"]
    if lifetime == "auto":
        wall = kwargs.get("walltime", dask.config.get(f"{conf}.walltime", None))
        if wall and not any(str(a).startswith("--lifetime") for a in extra_args):
            seconds = parse_walltime(wall, kind=kind)
            if seconds is not None:
                life, stagger = lifetime_for_walltime(seconds)
                if life is not None:
                    extra_args += ["--lifetime", f"{life}s", "--lifetime-stagger", f"{stagger}s"]
    elif lifetime not in (None, "none"):
        extra_args += ["--lifetime", str(lifetime)]
    kwargs["worker_extra_args"] = extra_args
    if job_extra:
        kwargs["job_extra_directives"] = [
            *(dask.config.get(f"{conf}.job-extra-directives", None) or []), *job_extra]

    options = dict(dask.config.get(f"{conf}.scheduler-options", None) or {})
    options.update(scheduler_options)
    options.setdefault("dashboard_address", dashboard_address)
    kwargs["scheduler_options"] = options
    # Job logs: `~` and $VARS are expanded here (sbatch/qsub would not) and the folder made.
    logs = kwargs.get("log_directory", dask.config.get(f"{conf}.log-directory", None))
    if logs:
        kwargs["log_directory"] = os.path.expanduser(os.path.expandvars(str(logs)))
        os.makedirs(kwargs["log_directory"], exist_ok=True)
    if tls:
        kwargs["security"] = _temporary_security()
        kwargs["protocol"] = "tls://"
        # Worker jobs read the temporary certificates from here, so it must be on a file
        # system the compute nodes see: by default the home directory, shared on every
        # cluster we know. The job script keeps `~`/$VARS for the node's shell to expand.
        shared = kwargs.get("shared_temp_directory",
                            dask.config.get(f"{conf}.shared-temp-directory", None))
        if shared is None:
            shared = kwargs["shared_temp_directory"] = os.path.join(
                os.path.expanduser("~"), ".plate-refocus", "tls")
        os.makedirs(os.path.expanduser(os.path.expandvars(str(shared))), mode=0o700,
                    exist_ok=True)

    if check_submit:
        command = cls.job_cls.submit_command
        if shutil.which(command) is None:
            raise ClusterError(
                f"--cluster {kind} submits jobs with {command!r}, which is not on PATH here. "
                "Run on the cluster's login node (or a node that can submit jobs), or use "
                "--cluster local"
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            cluster = cls(**kwargs)
    except ValueError as error:
        raise ClusterError(
            f"{kind} cluster misconfigured: {error}. Set the missing value under `{conf}` in "
            "~/.config/dask/jobqueue.yaml (examples in the project's cluster/ folder) or pass "
            "the matching flag"
        ) from error
    except OSError as error:
        raise ClusterError(
            f"{kind}: cannot start the scheduler ({error}); check --interface and "
            f"`{conf}.scheduler-options` (host, port)"
        ) from error
    if scale:
        if min_jobs is not None or max_jobs is not None:
            low = min_jobs if min_jobs is not None else 0
            high = max_jobs if max_jobs is not None else max(low, jobs or 1)
            cluster.adapt(minimum_jobs=low, maximum_jobs=high)
            cluster._plate_refocus_jobs = None
        else:
            cluster.scale(jobs=jobs or 1)
            cluster._plate_refocus_jobs = jobs or 1
    return cluster


class _JobKeeper:
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


# --- walltime and lifetime --------------------------------------------------------------------


def parse_walltime(text: str, *, kind: str = "slurm") -> int | None:
    """Seconds in a batch-system walltime, or None when it cannot be read.

    SLURM/PBS/SGE forms: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``,
    ``D-HH:MM``, ``D-HH:MM:SS``; LSF: ``[HH:]MM``.
    """
    if not isinstance(text, str):
        raise TypeError(f"walltime must be a string like '02:00:00', got {text!r}")
    match = re.fullmatch(r"\s*(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\s*", text)
    if match is None:
        return None
    days, a, b, c = match.groups()
    fields = [int(v) for v in (a, b, c) if v is not None]
    if days is not None:
        hours, minutes, seconds = (fields + [0, 0])[:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if kind == "lsf":
        if len(fields) > 2:
            return None
        hours, minutes = ([0] + fields)[-2:]
        return (hours * 60 + minutes) * 60
    if len(fields) == 1:
        return fields[0] * 60
    if len(fields) == 2:
        return fields[0] * 60 + fields[1]
    return (fields[0] * 60 + fields[1]) * 60 + fields[2]


def lifetime_for_walltime(walltime_s: float) -> tuple[int | None, int]:
    """Worker ``--lifetime`` and ``--lifetime-stagger`` (seconds) for a walltime.

    A worker retires at lifetime +- stagger; both leave a margin of
    ``max(60 s, 5%)`` before the walltime for the worker to hand its data
    over. The stagger, ``min(5 min, 5%)``, keeps all jobs from retiring at
    once. Returns ``(None, 0)`` for walltimes under 3 minutes (no lifetime).
    """
    if walltime_s < 180:
        return None, 0
    margin = max(60.0, 0.05 * walltime_s)
    stagger = min(300.0, 0.05 * walltime_s)
    return int(math.floor(walltime_s - margin - stagger)), int(stagger)


# --- GPU routing ------------------------------------------------------------------------------


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
