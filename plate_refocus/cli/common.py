"""Argument types and shared flags of the command line, and its printing of progress."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from ..optics import Optics

__all__ = ["float_list", "positive_int", "size", "add_optics_arguments", "optics_from_args",
           "optics_overrides", "progress_printer", "command_line"]


def command_line() -> str:
    """The command line as the user typed it, for the metadata of what it writes."""
    return " ".join(["plate-refocus", *sys.argv[1:]])


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like '0,2,4,10', got {text!r}"
        ) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 8:
        raise argparse.ArgumentTypeError(f"expected a size like 256 or 256x192 (Y x X, >= 8), got {text!r}")
    return values[0], values[1]


def add_optics_arguments(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
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


def optics_from_args(args: argparse.Namespace) -> Optics:
    return Optics(
        na=args.na,
        wavelength_um=args.wavelength,
        immersion_index=args.immersion_index,
        pixel_size_um=args.pixel_size,
    )


def optics_overrides(args: argparse.Namespace) -> dict[str, float]:
    """The optics flags that were given (``add_optics_arguments(defaults=False)``), by Optics field."""
    names = {"na": "na", "wavelength": "wavelength_um", "immersion_index": "immersion_index",
             "pixel_size": "pixel_size_um"}
    return {field: getattr(args, flag) for flag, field in names.items()
            if getattr(args, flag, None) is not None}


def progress_printer(stream=sys.stderr) -> Callable[[str, int, int], None]:
    """A progress line for a run: a bar, wells done, the rate and the time left."""
    start = time.perf_counter()
    tty = stream.isatty()

    def show(well: str, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        elapsed = max(time.perf_counter() - start, 1e-9)
        rate = done / elapsed
        left = (total - done) / rate if rate > 0 else float("nan")
        eta = "done" if done == total else f"about {_duration(left)} left"
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} wells "
                f"(last {well}, {rate * 60:.1f} wells/min, {eta})")
        if tty:
            stream.write("\r" + line + ("\n" if done == total else ""))
        elif done == total or done % max(1, total // 10) == 0:
            stream.write(line + "\n")
        stream.flush()

    return show


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
