"""``plate-refocus``: a thin command line over the library.

Every command is a library function first; this package only parses
arguments, calls it, and prints. Errors a user can cause
(:class:`~plate_refocus.errors.PlateRefocusError`) are printed as one line
without a traceback and exit with status 2; a run in which some wells failed
exits with status 1 after its summary.

Each command module has ``add_<name>(subparsers)``, which declares the
command's arguments, and ``run_<name>(args) -> int``, which runs it:
:mod:`.plates` (simulate, ingest, info), :mod:`.run` (run, demo),
:mod:`.model` (train, evaluate), :mod:`.report`. :mod:`.cluster_flags` maps
the cluster flags onto :func:`plate_refocus.cluster.start_client`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import PlateRefocusError
from .model import add_evaluate, add_train, add_train_refiner
from .plates import add_info, add_ingest, add_simulate
from .report import add_report
from .run import add_demo, add_run

__all__ = ["main", "build_parser"]

log = logging.getLogger("plate_refocus")

#: (name, add_<name>) in --help order.
_COMMANDS: list[tuple[str, Callable]] = [
    ("simulate", add_simulate),
    ("info", add_info),
    ("ingest", add_ingest),
    ("run", add_run),
    ("demo", add_demo),
    ("train", add_train),
    ("train-refiner", add_train_refiner),
    ("evaluate", add_evaluate),
    ("report", add_report),
]


def _add_verbosity(parser: argparse.ArgumentParser, suffix: str = "") -> None:
    parser.add_argument("-v", "--verbose", dest=f"verbose{suffix}", action="count", default=0,
                        help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", dest=f"quiet{suffix}", action="count", default=0,
                        help="less output: errors only, no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to check that ``--help`` is complete)."""
    parser = argparse.ArgumentParser(
        prog="plate-refocus",
        description="Refocus whole screening plates (OME-Zarr HCS) with a U-Net on Dask "
        "and recover the defocus PSF of every well.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_verbosity(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, add in _COMMANDS:
        add(subparsers)
    for sub in subparsers.choices.values():  # -v/-q also after the command's name
        _add_verbosity(sub, suffix="_here")
    return parser


def _configure_logging(verbosity: int) -> None:
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, min(verbosity, 2)), logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the terminal shows `level` and up ...
        handler.setLevel(level)
    # ... while this package's INFO records are still made, for the run's OUT/run.log.
    logging.getLogger("plate_refocus").setLevel(min(level, logging.INFO))
    # Dask's own INFO lines (workers joining, comms closing) are noise at -v; -vv shows them.
    # distributed sets its loggers up from Dask's config when first imported, so set both.
    import dask

    quiet = "debug" if verbosity >= 2 else ("error" if verbosity < 0 else "warning")
    dask.config.set({"logging.distributed": quiet, "logging.dask_jobqueue": quiet})
    for name in ("distributed", "dask_jobqueue"):
        logging.getLogger(name).setLevel(quiet.upper())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbosity = (args.verbose + args.verbose_here) - (args.quiet + args.quiet_here)
    _configure_logging(args.verbosity)
    try:
        return int(args.func(args) or 0)
    except PlateRefocusError as error:
        print(f"plate-refocus {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"plate-refocus {args.command}: interrupted", file=sys.stderr)
        return 130
