"""A plate's pixels, plane by plane: the per-process array cache and the plane readers.

Workers read planes with :func:`read_plane` and :func:`truth_plane` from a
:class:`~plate_refocus.plate.read.PlateLayout`; each zarr array is opened
read-only once per process and plate version (the layout's ``token``), so a
plate replaced at the same path is never read through stale handles.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

from ..errors import PlaneReadError
from .ngff import GROUND_TRUTH, local_path
from .read import PlateLayout

__all__ = ["plate_array", "read_plane", "truth_plane"]

_ARRAYS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _array(path: str, token: str, array_path: str) -> Any:
    """A zarr array of the plate, opened read-only once per process and plate version."""
    import zarr
    import zarr.storage

    local = local_path(path)
    store: Any = zarr.storage.LocalStore(local, read_only=True) if local is not None else path
    return zarr.open_array(store, path=array_path, mode="r")


def plate_array(layout: PlateLayout, array_path: str) -> Any:
    """The zarr array at ``array_path`` of the plate, from the per-process cache (read-only)."""
    with _ARRAYS_LOCK:
        return _array(layout.path, layout.token, array_path)


def _chunk_key(array: Any, index: tuple) -> str:
    try:
        coords = tuple(0 if isinstance(i, slice) else int(i) for i in index)
        return f"{array.path}/{array.metadata.encode_chunk_key(coords)}"
    except Exception:  # noqa: BLE001 - only for the message
        return array.path


def read_plane(layout: PlateLayout, well: int, field: int, channel: int, z: int) -> np.ndarray:
    """One ``(Y, X)`` plane, read straight from the plate (never written).

    Raises
    ------
    PlaneReadError
        The plane's chunk cannot be read or decoded; the message names the
        well, field, plane and chunk file.
    """
    array_path = layout.field_arrays[well][field]
    where = {"t": 0, "c": channel, "z": z}
    index = tuple(where.get(axis, slice(None)) for axis in layout.field_axes)
    array = plate_array(layout, array_path)
    try:
        return np.asarray(array[index])
    except Exception as error:  # noqa: BLE001 - any decode/IO error names the chunk
        raise PlaneReadError(
            f"cannot read well {layout.wells[well]} field {field} channel "
            f"{layout.channels[channel]!r} plane {z} of {layout.path!r} (chunk "
            f"{_chunk_key(array, index)!r}): {type(error).__name__}: {error}; the file is damaged "
            "or unreadable: restore it from the source (e.g. re-ingest the plate)"
        ) from None


@functools.lru_cache(maxsize=16)
def _truth(path: str, token: str, well: int, field: int, channel: int) -> np.ndarray:
    with _ARRAYS_LOCK:
        array = _array(path, token, f"{GROUND_TRUTH}/in_focus")
    truth = np.asarray(array[well, field, channel], dtype=np.float64)
    truth.flags.writeable = False
    return truth


def truth_plane(layout: PlateLayout, well: int, field: int, channel: int) -> np.ndarray | None:
    """A simulated field's ground-truth in-focus image (read once per worker), or None."""
    if not layout.ground_truth:
        return None
    return _truth(layout.path, layout.token, well, field, channel)
