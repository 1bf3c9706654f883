"""dask-jobqueue clusters (SLURM, PBS, SGE, LSF, HTCondor): job settings, TLS, walltimes."""

from __future__ import annotations

import math
import os
import re
import shutil
import warnings
from typing import Any

import dask

from ..errors import ClusterError
from .compute import GPU_RESOURCE
from .local import temporary_security

__all__ = ["JOBQUEUE_KINDS", "jobqueue_cluster", "parse_walltime", "lifetime_for_walltime"]

#: dask-jobqueue kinds -> the cluster class name in :mod:`dask_jobqueue`.
JOBQUEUE_KINDS: dict[str, str] = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
}

#: How the ``account`` option is spelled by each jobqueue kind (None: not supported).
_ACCOUNT_KEYWORD = {"slurm": "account", "pbs": "account", "sge": "project", "lsf": "project",
                    "htcondor": None}


def _job_settings(kind: str, conf: str, settings: dict[str, Any], account: str | None,
                  job_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The job class's keyword settings: the given ones over the Dask config's, checked."""
    kwargs: dict[str, Any] = dict(job_kwargs)
    for name, value in settings.items():
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
    return kwargs


def _worker_args(kind: str, conf: str, kwargs: dict[str, Any], gpu: bool,
                 lifetime: str | None) -> list[str]:
    """Worker command-line arguments: the config's, then the GPU resource, then the lifetime."""
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
    return extra_args


def _files_and_security(conf: str, kwargs: dict[str, Any], tls: bool) -> None:
    """Job log folder and TLS credentials, on file systems the compute nodes see."""
    # Job logs: `~` and $VARS are expanded here (sbatch/qsub would not) and the folder made.
    logs = kwargs.get("log_directory", dask.config.get(f"{conf}.log-directory", None))
    if logs:
        kwargs["log_directory"] = os.path.expanduser(os.path.expandvars(str(logs)))
        os.makedirs(kwargs["log_directory"], exist_ok=True)
    if tls:
        kwargs["security"] = temporary_security()
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


def _construct(cls: Any, kind: str, conf: str, kwargs: dict[str, Any], check_submit: bool) -> Any:
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
            return cls(**kwargs)
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


def jobqueue_cluster(kind, *, memory, jobs, min_jobs, max_jobs, cores, processes, walltime,
                     queue, account, job_extra, interface, lifetime, gpu, tls,
                     dashboard_address, scheduler_options, scale, check_submit,
                     job_kwargs) -> Any:
    """A dask-jobqueue cluster of ``kind`` (see :func:`plate_refocus.cluster.make_cluster`)."""
    import dask_jobqueue

    cls = getattr(dask_jobqueue, JOBQUEUE_KINDS[kind])
    conf = f"jobqueue.{kind}"
    kwargs = _job_settings(kind, conf, {
        "cores": cores, "memory": memory, "processes": processes, "queue": queue,
        "walltime": walltime, "interface": interface}, account, dict(job_kwargs))
    kwargs["worker_extra_args"] = _worker_args(kind, conf, kwargs, gpu, lifetime)
    if job_extra:
        kwargs["job_extra_directives"] = [
            *(dask.config.get(f"{conf}.job-extra-directives", None) or []), *job_extra]
    options = dict(dask.config.get(f"{conf}.scheduler-options", None) or {})
    options.update(scheduler_options)
    options.setdefault("dashboard_address", dashboard_address)
    kwargs["scheduler_options"] = options
    _files_and_security(conf, kwargs, tls)
    cluster = _construct(cls, kind, conf, kwargs, check_submit)
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
