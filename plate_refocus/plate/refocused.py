"""The refocused plate: an OME-Zarr HCS plate (NGFF 0.5, zarr v3) of the refocused images.

The refocused pixels of a run are stored once, in a plate with the input's
plate/well/field layout, that NGFF viewers (napari-ome-zarr, ome-zarr-py,
OMERO, vizarr) open directly; the results dataset reads them back lazily
with :func:`open_refocused`. Layout::

    refocused.zarr/             plate group: "ome" -> "plate" (every row and column of the
                                physical plate, the wells where acquired), "plate_refocus" ->
                                optics, z_um, channel_names and "refocused" (this layout: dtype,
                                missing value, levels, shard layout)
      A/1/                      well group: "ome" -> "well"
      A/1/0/                    image group (one field): "ome" -> "multiscales" (levels 0..L-1,
                                scale 2**level in y and x), "omero" (the channel)
      A/1/0/0 .. A/1/0/{L-1}    arrays (c=1, z, y, x); level l is 2**l smaller in y and x

Pyramid: each level is the previous one averaged over 2 x 2 blocks in
``(y, x)`` (an odd last row or column is averaged over the pixels it has);
``z`` is never downsampled, so a plane's pyramid depends on that plane only.
Levels stop before the larger side would fall below ``min_size`` (2160 px:
2160, 1080, 540, 270).

Shards (zarr v3 sharding: one file holds many chunks; the inner chunk is
always one plane of one level). Two layouts, because two writers of one
shard file race (each reads the shard, adds its chunk and writes the whole
file back, so the last writer wins and the other's plane is lost):

``"plane"`` (for writers of single planes, e.g. one task per (well, depth))
    level 0 one file per plane (no shared file, so concurrent plane writes
    are safe); levels >= 1 one shard per field and level, written by
    :func:`write_pyramid` once the field's planes are all written (or by
    :func:`write_field` given the whole field). Files per field: ``Z + L - 1``.
``"field"`` (for writers of whole fields)
    every level one shard per field: ``(1, Z, Y_l, X_l)``. Files per field:
    ``L``. Writing single planes of one field from concurrent tasks needs a
    lock around each write (``lock=``), and every plane write rewrites the
    shard (``(Z + 1) / 2`` times the bytes for a field written plane by plane).

Values: ``dtype="uint16"`` rounds to the nearest count and clips to
``[0, 65534]`` (the refocused values are on the input's camera-count scale);
65535 (:data:`MISSING_UINT16`, also the arrays' fill value, so a plane never
written reads as missing) marks a missing plane (NaN in float). ``"float32"``
stores the values as they are, NaN where missing. :func:`open_refocused`
returns float32 with NaN in both cases.

This module holds the handle, the stored values and the reading;
:mod:`.refocused_write` creates plates and writes into them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from ..errors import NotAPlateError

__all__ = [
    "DTYPES",
    "LAYOUTS",
    "MISSING_UINT16",
    "RefocusedPlate",
    "downsample_2x",
    "encode",
    "decode",
    "level_shapes",
    "pyramid",
    "open_refocused",
    "refocused_plate",
    "as_handle",
    "REFOCUSED_FORMAT",
    "REFOCUSED_META_KEY",
    "WRITER",
]

#: Stored value types of the refocused pixels.
DTYPES = ("uint16", "float32")


#: Shard layouts (see the module docstring).
LAYOUTS = ("plane", "field")


#: The uint16 value that marks a missing plane (NaN); valid values are clipped to 0..65534.
MISSING_UINT16 = 65535


#: ``plate_refocus.written_by`` of a refocused plate (what ``--overwrite`` may replace).
WRITER = "refocused_plate"


#: Key of this layout's description inside the plate's ``plate_refocus`` attributes.
REFOCUSED_META_KEY = "refocused"


REFOCUSED_FORMAT = "plate_refocus.refocused_plate/1"


def encode(values: np.ndarray, dtype: str) -> np.ndarray:
    """Refocused values as stored: rounded and clipped uint16 (NaN -> 65535), or float32.

    Parameters
    ----------
    values : (..., Y, X) ndarray of float
        On the input's camera-count scale; NaN where a plane is missing.
    dtype : {"uint16", "float32"}

    Returns
    -------
    (..., Y, X) ndarray of uint16 or float32
        uint16: ``clip(rint(values), 0, 65534)``, :data:`MISSING_UINT16` where
        ``values`` is NaN; the error is at most 0.5 count where ``values`` lies
        in ``[-0.5, 65534.5]``.
    """
    if dtype == "float32":
        return np.asarray(values, dtype=np.float32)
    if dtype != "uint16":
        raise ValueError(f"dtype must be one of {DTYPES!r}, got {dtype!r}")
    values = np.asarray(values, dtype=np.float32)
    missing = np.isnan(values)
    out = np.clip(np.rint(np.where(missing, 0, values)), 0, MISSING_UINT16 - 1).astype(np.uint16)
    out[missing] = MISSING_UINT16
    return out


def decode(stored: np.ndarray) -> np.ndarray:
    """Stored values back to float32, NaN where missing (the inverse of :func:`encode`).

    Parameters
    ----------
    stored : (..., Y, X) ndarray of uint16 or float32

    Returns
    -------
    (..., Y, X) ndarray of float32
    """
    stored = np.asarray(stored)
    out = stored.astype(np.float32)
    if stored.dtype == np.uint16:
        out[stored == MISSING_UINT16] = np.nan
    return out


def downsample_2x(planes: np.ndarray) -> np.ndarray:
    """Mean over 2 x 2 blocks of the last two axes; an odd last row/column keeps its own mean.

    Parameters
    ----------
    planes : (..., Y, X) ndarray of float

    Returns
    -------
    (..., ceil(Y / 2), ceil(X / 2)) ndarray of float32
        NaN stays NaN (a missing plane stays missing).

    Notes
    -----
    An odd size is padded by repeating the last row (column), so the last
    block's mean is the mean of the pixels it has.
    """
    planes = np.asarray(planes, dtype=np.float32)
    if planes.ndim < 2:
        raise ValueError(f"planes must be at least 2-D (..., Y, X), got shape {planes.shape!r}")
    ny, nx = planes.shape[-2:]
    pad = [(0, 0)] * (planes.ndim - 2) + [(0, ny % 2), (0, nx % 2)]
    if ny % 2 or nx % 2:
        planes = np.pad(planes, pad, mode="edge")
    total = planes[..., 0::2, 0::2] + planes[..., 1::2, 0::2]
    total += planes[..., 0::2, 1::2]
    total += planes[..., 1::2, 1::2]
    total *= np.float32(0.25)
    return total


def level_shapes(shape: tuple[int, int], min_size: int = 256) -> list[tuple[int, int]]:
    """``(Y, X)`` of every pyramid level: halved (rounded up) while the larger side stays >= ``min_size``.

    ``(2160, 2160) -> [(2160, 2160), (1080, 1080), (540, 540), (270, 270)]``;
    an image no larger than ``min_size`` has one level.
    """
    if not (isinstance(min_size, (int, np.integer)) and min_size >= 1):
        raise ValueError(f"min_size must be an int >= 1, got {min_size!r}")
    shapes = [(int(shape[0]), int(shape[1]))]
    while True:
        ny, nx = shapes[-1]
        half = (-(-ny // 2), -(-nx // 2))
        if max(half) < min_size or (ny, nx) == half:
            return shapes
        shapes.append(half)


def pyramid(planes: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """``[planes, downsample_2x(planes), ...]``, ``n_levels`` arrays of float32."""
    levels = [np.asarray(planes, dtype=np.float32)]
    for _ in range(n_levels - 1):
        levels.append(downsample_2x(levels[-1]))
    return levels


@dataclasses.dataclass(frozen=True)
class RefocusedPlate:
    """Where a refocused plate's arrays are and how values are stored: small and picklable.

    Made by :func:`create_refocused_plate`, or read back from a plate's
    metadata by :func:`refocused_plate`; every task of a run can carry it.

    Attributes
    ----------
    path : str
    wells : tuple of str
        Well names (``"A01"``) in the order of the results' ``well`` axis.
    well_paths : tuple of str
        Their groups in the plate (``"A/1"``).
    n_fields : int
    z_um : tuple of float
    shape : (int, int)
        ``(Y, X)`` of level 0.
    levels : tuple of (int, int)
        ``(Y, X)`` of every level, level 0 first.
    dtype : {"uint16", "float32"}
    layout : {"plane", "field"}
    token : str
        A fresh id per created plate: per-process caches of open arrays are
        keyed by it, so a plate replaced at the same path is never written
        through stale handles.
    """

    path: str
    wells: tuple[str, ...]
    well_paths: tuple[str, ...]
    n_fields: int
    z_um: tuple[float, ...]
    shape: tuple[int, int]
    levels: tuple[tuple[int, int], ...]
    dtype: str
    layout: str
    token: str = ""

    @property
    def n_z(self) -> int:
        return len(self.z_um)

    def array_path(self, well: int | str, field: int, level: int = 0) -> str:
        """Store path of one field's array at one level, e.g. ``"A/1/0/0"``."""
        w = self.well_index(well)
        if not 0 <= field < self.n_fields:
            raise ValueError(f"field must be in 0..{self.n_fields - 1}, got {field!r}")
        if not 0 <= level < len(self.levels):
            raise ValueError(f"level must be in 0..{len(self.levels) - 1}, got {level!r}")
        return f"{self.well_paths[w]}/{field}/{level}"

    def well_index(self, well: int | str) -> int:
        """The position of ``well`` (a name like ``"A01"`` or an index) in :attr:`wells`."""
        if isinstance(well, (int, np.integer)) and not isinstance(well, bool):
            if not 0 <= well < len(self.wells):
                raise ValueError(f"well index must be in 0..{len(self.wells) - 1}, got {well!r}")
            return int(well)
        if isinstance(well, str) and well in self.wells:
            return self.wells.index(well)
        raise ValueError(f"well {well!r} is not in the refocused plate; it has {list(self.wells)!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the plate's metadata; ``path`` left out)."""
        out = dataclasses.asdict(self)
        out.pop("path")
        out["format"] = REFOCUSED_FORMAT
        out["missing_value"] = MISSING_UINT16 if self.dtype == "uint16" else "NaN"
        return out


def refocused_plate(path: str | os.PathLike) -> RefocusedPlate:
    """The :class:`RefocusedPlate` handle of an existing refocused plate (metadata only).

    Raises
    ------
    PlateNotFoundError, NotAPlateError
        No zarr store there, or one that :func:`create_refocused_plate` did not write.
    """
    from .ngff import ATTRS_KEY, open_root

    root = open_root(os.fspath(path))
    meta = root.attrs.asdict().get(ATTRS_KEY, {}).get(REFOCUSED_META_KEY)
    if not isinstance(meta, dict) or meta.get("format") != REFOCUSED_FORMAT:
        raise NotAPlateError(
            f"{os.fspath(path)!r} is not a refocused plate (no {ATTRS_KEY}.{REFOCUSED_META_KEY} metadata of "
            f"format {REFOCUSED_FORMAT!r}); give the refocused plate a run wrote, or open other plates "
            f"with plate_refocus.open_plate"
        )
    return RefocusedPlate(
        path=os.fspath(path),
        wells=tuple(meta["wells"]),
        well_paths=tuple(meta["well_paths"]),
        n_fields=int(meta["n_fields"]),
        z_um=tuple(float(z) for z in meta["z_um"]),
        shape=tuple(meta["shape"]),
        levels=tuple(tuple(s) for s in meta["levels"]),
        dtype=str(meta["dtype"]),
        layout=str(meta["layout"]),
        token=str(meta.get("token", "")),
    )


def as_handle(plate: RefocusedPlate | str | os.PathLike) -> RefocusedPlate:
    if isinstance(plate, RefocusedPlate):
        return plate
    if isinstance(plate, (str, os.PathLike)):
        return refocused_plate(plate)
    raise TypeError(f"plate must be a RefocusedPlate or a path, got {type(plate).__name__}")


def _decode_block(block: np.ndarray) -> np.ndarray:
    return decode(block)


def open_refocused(path: str | os.PathLike):
    """The refocused images of a refocused plate, lazily, as float32 with NaN where missing.

    Only metadata is read here (through :func:`plate_refocus.plate.open_plate`,
    the one reader of plates); pixels are read and decoded per plane when the
    result is computed.

    Parameters
    ----------
    path : str or Path
        A plate written by :func:`create_refocused_plate`.

    Returns
    -------
    xarray.DataArray
        Dims ``(well, field, z, y, x)``, float32, one Dask chunk per plane,
        level 0; coordinates as :func:`~plate_refocus.plate.open_plate` gives
        them (``well``, ``row``, ``column``, ``field``, ``z``, ``z_um``,
        ``y``/``x`` in um) plus the scalar ``c`` (the channel name). Never
        written planes read as NaN (the arrays' fill value is the missing value).
    """
    import dask.array as da
    import xarray as xr

    from .views import open_plate

    handle = refocused_plate(path)
    stored = open_plate(os.fspath(path)).isel(c=0)
    if [str(w) for w in stored["well"].values] != list(handle.wells):
        # open_plate orders wells as the plate lists them (row-major); keep the writers' order.
        stored = stored.sel(well=list(handle.wells))
    data = da.map_blocks(_decode_block, stored.data, dtype=np.float32,
                         meta=np.empty((0,) * stored.ndim, dtype=np.float32))
    attrs = {"long_name": "refocused image", "units": "camera counts (input scale)",
             "source": os.fspath(path), "stored_dtype": handle.dtype}
    return xr.DataArray(data, dims=stored.dims, coords=stored.coords, attrs=attrs, name="refocused")
