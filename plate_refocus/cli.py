"""``plate-refocus``: a thin command line over the library.

Every command is a library function first; this module only parses
arguments, calls it, and prints. Errors a user can cause
(:class:`~plate_refocus.errors.PlateRefocusError`) are printed as one line
without a traceback and exit with status 2.

Each command has a ``_add_<name>(subparsers)`` that declares its arguments
and a ``_cmd_<name>(args) -> int`` that runs it; both are listed in
``_COMMANDS`` at the bottom.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .errors import PlateRefocusError
from .optics import Optics

log = logging.getLogger("plate_refocus")


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like '0,2,4,10', got {text!r}"
        ) from None


def _add_optics_arguments(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """The optics flags shared by the commands that take them."""
    d = Optics() if defaults else None
    group = parser.add_argument_group("optics")
    group.add_argument("--na", type=float, default=d and d.na,
                       help="numerical aperture" + (f" (default {d.na})" if d else ""))
    group.add_argument("--wavelength", type=float, default=d and d.wavelength_um,
                       help="emission wavelength in um" + (f" (default {d.wavelength_um})" if d else ""))
    group.add_argument("--immersion-index", type=float, default=d and d.immersion_index,
                       help="immersion refractive index" + (f" (default {d.immersion_index})" if d else ""))
    group.add_argument("--pixel-size", type=float, default=d and d.pixel_size_um,
                       help="pixel size at the sample in um" + (f" (default {d.pixel_size_um})" if d else ""))


def _optics_from_args(args: argparse.Namespace) -> Optics:
    return Optics(
        na=args.na,
        wavelength_um=args.wavelength,
        immersion_index=args.immersion_index,
        pixel_size_um=args.pixel_size,
    )


# --- commands ---------------------------------------------------------------------------------
# Each command: _add_<name>(subparsers) and _cmd_<name>(args) -> int.


# --- entry point ------------------------------------------------------------------------------

_COMMANDS: list[tuple[str, Callable]] = []  # (name, _add_<name>) in --help order


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to check that ``--help`` is complete)."""
    parser = argparse.ArgumentParser(
        prog="plate-refocus",
        description="Refocus whole screening plates (OME-Zarr HCS) with a U-Net on Dask "
        "and recover the defocus PSF of every well.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except PlateRefocusError as error:
        print(f"plate-refocus {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"plate-refocus {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
