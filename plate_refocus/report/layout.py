"""The physical plate a report draws: its rows and columns, and the grids of the heat maps.

:func:`plate_layout` finds every row and column of the plate the results come
from (empty wells are drawn blank); :func:`plate_grids` places each well on
it with the plate's state grid (empty, pending, failed, done) and
:func:`on_plate` spreads per-well values over it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import PlateLayoutError

__all__ = ["MAX_MAP_PANELS", "on_plate", "plate_grids", "plate_layout", "spread"]

log = logging.getLogger(__name__)

#: Panels of the plate maps, at most: the depths are spread over them evenly.
MAX_MAP_PANELS = 12


def spread(n: int, k: int) -> np.ndarray:
    """At most `k` indices spread evenly over ``0 .. n - 1``, ends included (the depths drawn)."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def _axis_names(value: Any, kind: str) -> list[str] | None:
    from ..plate import row_name

    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
        return [row_name(i) for i in range(value)] if kind == "rows" else [str(i + 1) for i in range(value)]
    if isinstance(value, (list, tuple)) and value:
        return [str(v["name"]) if isinstance(v, dict) else str(v) for v in value]
    return None


def plate_layout(ds: xr.Dataset) -> tuple[list[str], list[str]]:
    """Row and column names of the physical plate the results come from.

    In order of trust: the results' ``plate_rows``/``plate_columns``
    attributes (counts or name lists; the run should store them), the source
    plate's NGFF plate metadata (read-only, metadata only), else the smallest
    standard plate (96, 384, 1536 wells) that holds every well.

    Returns
    -------
    rows, columns : list of str
        ``["A", ..., "H"]`` and ``["1", ..., "12"]`` for a 96-well plate.
    """
    from ..plate import PLATE_FORMATS, parse_well, read_plate_grid

    rows = _axis_names(ds.attrs.get("plate_rows"), "rows")
    columns = _axis_names(ds.attrs.get("plate_columns"), "columns")
    if rows and columns:
        return rows, columns
    source = ds.attrs.get("source_plate")
    if source and Path(str(source)).exists():
        try:
            source_rows, source_columns = read_plate_grid(str(source))
            rows = _axis_names(source_rows, "rows")
            columns = _axis_names(source_columns, "columns")
            if rows and columns:
                return rows, columns
        except Exception as error:  # noqa: BLE001 - fall back to the standard formats
            log.info("plate layout not read from %s (%s); inferring it", source, error)
    positions = [parse_well(str(w)) for w in ds["well"].values]
    need_rows = max(r for r, _ in positions) + 1
    need_columns = max(c for _, c in positions)
    for wells in (96, 384, 1536):
        n_rows, n_columns = PLATE_FORMATS[wells]
        if need_rows <= n_rows and need_columns <= n_columns:
            break
    return _axis_names(n_rows, "rows"), _axis_names(n_columns, "columns")


def plate_grids(ds: xr.Dataset, rows: list[str], columns: list[str], status: np.ndarray):
    """Where each well sits on the plate, and the plate's state grid."""
    from ..figures import WELL_STATE
    from ..plate import row_name

    r_index = {name: i for i, name in enumerate(rows)}
    c_index = {name: i for i, name in enumerate(columns)}
    where = []
    for row, column in zip(ds["row"].values, ds["column"].values, strict=True):
        r, c = r_index.get(str(row)), c_index.get(str(int(column)))
        if r is None or c is None:
            raise PlateLayoutError(
                f"well {row}{int(column):02d} lies outside the plate layout of {len(rows)} rows x "
                f"{len(columns)} columns ({row_name(0)}..{rows[-1]}, 1..{columns[-1]}); store the "
                f"right plate_rows/plate_columns in the results' attributes"
            )
        where.append((r, c))
    state = np.full((len(rows), len(columns)), WELL_STATE["empty"])
    for (r, c), s in zip(where, status, strict=True):
        state[r, c] = WELL_STATE.get(str(s), WELL_STATE["pending"])
    return where, state


def on_plate(values: np.ndarray, where: list[tuple[int, int]], shape: tuple[int, int],
             status: np.ndarray) -> np.ndarray:
    """(well, P) values -> (P, R, C) grids, NaN where no well or not done."""
    out = np.full((values.shape[1], *shape), np.nan)
    for (r, c), v, s in zip(where, values, status, strict=True):
        if s == "done":
            out[:, r, c] = v
    return out
