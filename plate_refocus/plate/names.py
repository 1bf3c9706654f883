"""Plate geometry and well names: formats, rows "A".."AF", wells "A01"."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "PLATE_FORMATS",
    "row_name",
    "row_index",
    "well_name",
    "parse_well",
    "plate_axis",
    "wells_for",
    "check_plate_format",
    "format_for",
]

#: Wells per plate -> (rows, columns) of the physical plate.
PLATE_FORMATS: dict[int, tuple[int, int]] = {
    6: (2, 3), 12: (3, 4), 24: (4, 6), 48: (6, 8), 96: (8, 12), 384: (16, 24), 1536: (32, 48),
}

_WELL_RE = re.compile(r"^([A-Z]{1,2})0*([1-9][0-9]{0,2})$")


def row_name(index: int) -> str:
    """Plate row name of a 0-based index: ``0 -> "A"``, ``25 -> "Z"``, ``26 -> "AA"`` (1536 plates)."""
    if index < 0:
        raise ValueError(f"row index must be >= 0, got {index!r}")
    if index < 26:
        return chr(ord("A") + index)
    return chr(ord("A") + index // 26 - 1) + chr(ord("A") + index % 26)




def row_index(name: str) -> int:
    """Inverse of :func:`row_name`: ``"A" -> 0``, ``"AA" -> 26``."""
    if len(name) == 1:
        return ord(name) - ord("A")
    return (ord(name[0]) - ord("A") + 1) * 26 + ord(name[1]) - ord("A")


def well_name(row: int, column: int) -> str:
    """``"A01"`` for 0-based ``row`` and 1-based ``column``."""
    return f"{row_name(row)}{column:02d}"


def parse_well(name: str) -> tuple[int, int]:
    """``"B03" -> (1, 3)``: 0-based row index and 1-based column."""
    match = _WELL_RE.match(name) if isinstance(name, str) else None
    if not match:
        raise ValueError(f"well names look like 'A01' or 'AF48', got {name!r}")
    return row_index(match.group(1)), int(match.group(2))



def plate_axis(value: int | Sequence[str], kind: str) -> list[str]:
    """Row or column names of a physical plate from a count (8 -> A..H, 12 -> 1..12) or a list."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"plate_{kind} must be >= 1, got {value!r}")
        return [row_name(i) for i in range(value)] if kind == "rows" else [str(i + 1) for i in range(value)]
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise TypeError(f"plate_{kind} must be a count like 8 or a list of names, got {value!r}")
    return [str(v) for v in value]


def wells_for(rows: int, columns: int, plate_format: int) -> list[str]:
    """The first ``rows`` x ``columns`` wells of a plate, row-major: A01, A02, ..."""
    n_rows, n_columns = PLATE_FORMATS[plate_format]
    if not (1 <= rows <= n_rows and 1 <= columns <= n_columns):
        raise ValueError(
            f"{rows} rows x {columns} columns do not fit a {plate_format}-well plate "
            f"({n_rows} x {n_columns}); ask for fewer or choose a larger plate_format"
        )
    return [well_name(r, c + 1) for r in range(rows) for c in range(columns)]


def check_plate_format(plate_format: Any) -> tuple[int, int]:
    if plate_format not in PLATE_FORMATS or isinstance(plate_format, bool):
        raise ValueError(f"plate_format must be one of {sorted(PLATE_FORMATS)!r} wells, got {plate_format!r}")
    return PLATE_FORMATS[plate_format]




def format_for(rows: Sequence[str], columns: Sequence[int]) -> int | None:
    """The smallest standard plate format holding these rows and 1-based columns, or None."""
    n_rows = max((row_index(r) for r in rows), default=-1) + 1
    n_columns = max((int(c) for c in columns), default=0)
    for wells, (r, c) in sorted(PLATE_FORMATS.items()):
        if n_rows <= r and n_columns <= c:
            return wells
    return None
