"""The cluster flags of ``run`` and ``ingest``, mapped onto :func:`plate_refocus.cluster.start_client`."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from ..cluster import CLUSTER_KINDS, job_script, start_client

__all__ = ["add_cluster_arguments", "cluster_options_from_args", "client_from_args",
           "job_script_for_args"]


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


def job_script_for_args(args: argparse.Namespace) -> str:
    """:func:`plate_refocus.cluster.job_script` for the parsed flags (``run --dry-run``)."""
    return job_script(getattr(args, "cluster", "local"), **cluster_options_from_args(args))
