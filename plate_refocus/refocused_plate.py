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
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import NotAPlateError
from .optics import Optics

__all__ = [
    "DTYPES",
    "LAYOUTS",
    "MISSING_UINT16",
    "RefocusedPlate",
    "create_refocused_plate",
    "downsample_2x",
    "encode",
    "decode",
    "level_shapes",
    "open_refocused",
    "refocused_plate",
    "write_field",
    "write_pyramid",
]

log = logging.getLogger(__name__)

#: Stored value types of the refocused pixels.
DTYPES = ("uint16", "float32")
#: Shard layouts (see the module docstring).
LAYOUTS = ("plane", "field")
#: The uint16 value that marks a missing plane (NaN); valid values are clipped to 0..65534.
MISSING_UINT16 = 65535
#: ``plate_refocus.written_by`` of a refocused plate (what ``--overwrite`` may replace).
WRITER = "refocused_plate"
#: Key of this layout's description inside the plate's ``plate_refocus`` attributes.
_META_KEY = "refocused"
_FORMAT = "plate_refocus.refocused_plate/1"


# --- values and pyramid levels (NumPy in, NumPy out) -------------------------------------------


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


def _pyramid(planes: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """``[planes, downsample_2x(planes), ...]``, ``n_levels`` arrays of float32."""
    levels = [np.asarray(planes, dtype=np.float32)]
    for _ in range(n_levels - 1):
        levels.append(downsample_2x(levels[-1]))
    return levels


# --- the handle ---------------------------------------------------------------------------------


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
        out["format"] = _FORMAT
        out["missing_value"] = MISSING_UINT16 if self.dtype == "uint16" else "NaN"
        return out


def refocused_plate(path: str | os.PathLike) -> RefocusedPlate:
    """The :class:`RefocusedPlate` handle of an existing refocused plate (metadata only).

    Raises
    ------
    PlateNotFoundError, NotAPlateError
        No zarr store there, or one that :func:`create_refocused_plate` did not write.
    """
    from .plate import ATTRS_KEY
    from .plate.ngff import open_root

    root = open_root(os.fspath(path))
    meta = root.attrs.asdict().get(ATTRS_KEY, {}).get(_META_KEY)
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise NotAPlateError(
            f"{os.fspath(path)!r} is not a refocused plate (no {ATTRS_KEY}.{_META_KEY} metadata of "
            f"format {_FORMAT!r}); give the refocused plate a run wrote, or open other plates "
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
    )


def _handle(plate: RefocusedPlate | str | os.PathLike) -> RefocusedPlate:
    if isinstance(plate, RefocusedPlate):
        return plate
    if isinstance(plate, (str, os.PathLike)):
        return refocused_plate(plate)
    raise TypeError(f"plate must be a RefocusedPlate or a path, got {type(plate).__name__}")


# --- creating -----------------------------------------------------------------------------------


def create_refocused_plate(
    path: str | os.PathLike,
    *,
    wells: Sequence[str],
    plate_rows: int | Sequence[str],
    plate_columns: int | Sequence[str],
    n_fields: int,
    z_um: Sequence[float],
    shape: tuple[int, int],
    optics: Optics,
    channel_name: str,
    dtype: str = "uint16",
    layout: str = "plane",
    min_size: int = 256,
    max_value: float | None = None,
    extra_attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
) -> RefocusedPlate:
    """Create the refocused plate's groups, metadata and empty arrays (no pixels are written).

    Parameters
    ----------
    path : str or Path
        The new store (a local folder).
    wells : sequence of str
        Well names (``"A01"``), in the order the writers will index them (the
        results' ``well`` axis).
    plate_rows, plate_columns : int or sequence of str
        The physical plate (8 and 12 for 96 wells): every row and column is
        listed in the plate metadata, the wells only where acquired.
    n_fields : int
        Fields per well.
    z_um : sequence of float
        Depth of every plane, in um (NGFF's ``scale`` holds the smallest step,
        the exact depths go to ``plate_refocus.z_um``, as in input plates).
    shape : (int, int)
        ``(Y, X)`` of a refocused plane.
    optics : Optics
        Stored with the plate; ``optics.pixel_size_um`` is the level-0 pixel size.
    channel_name : str
        The refocused channel (omero label and ``c`` coordinate).
    dtype : {"uint16", "float32"}
        Stored values (see the module docstring): uint16 rounds to the
        nearest count, with 65535 for missing planes.
    layout : {"plane", "field"}
        Shard layout (see the module docstring): ``"plane"`` when tasks write
        single planes concurrently, ``"field"`` when each field is written by
        one call.
    min_size : int
        Smallest larger side of a pyramid level, in px.
    max_value : float, optional
        Upper end of the viewers' display window (omero); the largest stored
        value by default (65534 for uint16, 1.0 for float32). Give the input
        camera's ``max_value``.
    extra_attrs : dict, optional
        JSON-able items added to the ``plate_refocus`` metadata (e.g. the
        source plate and the results store).
    overwrite : bool
        Replace an existing refocused plate at ``path`` (never anything else).
    inputs : sequence of path
        The run's inputs (the source plate): ``path`` may not be, hold or lie in one.

    Returns
    -------
    RefocusedPlate

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false, or it is not a refocused plate.
    OutputLocationError
        ``path`` overlaps an input or cannot be created.
    """
    import zarr
    from zarr.core.group import GroupMetadata

    from .plate import ATTRS_KEY, compressor, create_plate
    from .plate.ngff import multiscales, omero, wrap_ome, z_step

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES!r}, got {dtype!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS!r}, got {layout!r}")
    if not (isinstance(n_fields, (int, np.integer)) and n_fields >= 1):
        raise ValueError(f"n_fields must be an int >= 1, got {n_fields!r}")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (Y, X) with both >= 1, got {shape!r}")
    if not isinstance(channel_name, str):
        raise TypeError(f"channel_name must be a str, got {channel_name!r}")
    wells = [wells] if isinstance(wells, str) else [str(w) for w in wells]
    z_um = [float(z) for z in z_um]
    shape = (int(shape[0]), int(shape[1]))
    levels = level_shapes(shape, min_size)
    n_w, n_z = len(wells), len(z_um)
    if max_value is None:
        max_value = MISSING_UINT16 - 1 if dtype == "uint16" else 1.0

    # The plate, well and image groups exactly as input plates have them (one owner of the HCS
    # metadata: plate_refocus.plate); its level-0 arrays are then replaced by this layout's.
    plate_shape = (n_w, int(n_fields), 1, n_z, *shape)
    targets = create_plate(
        path, plate_shape, np.dtype(dtype), wells, optics=optics, z_um=z_um,
        channel_names=[channel_name], plate_rows=plate_rows, plate_columns=plate_columns,
        focal_plane=None, camera=None, ngff_version="0.5", ground_truth=None,
        extra_attrs={**dict(extra_attrs or {}), "written_by": WRITER}, overwrite=overwrite,
        inputs=inputs,
    )
    root = zarr.open_group(str(targets.path), mode="r+")
    well_paths = [targets.fields[w][0].path.rsplit("/", 2)[0] for w in range(n_w)]
    handle = RefocusedPlate(
        path=str(targets.path), wells=tuple(wells), well_paths=tuple(well_paths),
        n_fields=int(n_fields), z_um=tuple(z_um), shape=shape, levels=tuple(levels),
        dtype=dtype, layout=layout,
    )
    ms = multiscales("", optics.pixel_size_um, z_step(z_um), "0.5")[0]
    base = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    datasets = []
    for level in range(len(levels)):
        f = 2.0**level
        scale = [base[0], base[1], base[2] * f, base[3] * f]
        # A level-l pixel covers 2**l level-0 pixels: its centre lies (2**l - 1) / 2 of them in.
        shift = [0.0, 0.0, round(base[2] * (f - 1) / 2, 9), round(base[3] * (f - 1) / 2, 9)]
        transforms = [{"type": "scale", "scale": scale}]
        if level:
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    fill = MISSING_UINT16 if dtype == "uint16" else float("nan")
    # Each level's array metadata, made once in memory and reused for every field.
    templates = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    array_meta = []
    for level, (ny, nx) in enumerate(levels):
        shards = None if (layout == "plane" and level == 0) else (1, n_z, ny, nx)
        array_meta.append(templates.create_array(
            str(level), shape=(1, n_z, ny, nx), chunks=(1, 1, ny, nx), shards=shards, dtype=dtype,
            fill_value=fill, compressors=compressor(3), dimension_names=["c", "z", "y", "x"],
        ).metadata)
    rendering = omero([channel_name], max_value)
    nodes: dict[str, Any] = {}
    for w, well in enumerate(wells):
        for f in range(n_fields):
            key = f"{well_paths[w]}/{f}"
            image = dict(ms, name=f"{well} field {f} refocused", datasets=datasets)
            attrs = wrap_ome({"multiscales": [image], "omero": rendering}, "0.5")
            nodes[key] = GroupMetadata(attributes=attrs, zarr_format=3)
            nodes.update({f"{key}/{level}": meta for level, meta in enumerate(array_meta)})
    _open_array.cache_clear()  # arrays opened before at this path are gone
    try:
        # One call: the image groups (replaced, with the arrays plate.py made in them) and every
        # level's array, written concurrently (one by one, metadata writes cost ~5 ms each).
        for _ in zarr.create_hierarchy(store=root.store, nodes=nodes, overwrite=True):
            pass
        ours = dict(root.attrs[ATTRS_KEY])
        ours[_META_KEY] = handle.to_dict()
        root.attrs[ATTRS_KEY] = ours
    except BaseException:
        import shutil

        shutil.rmtree(targets.path, ignore_errors=True)
        raise
    log.info("created refocused plate %s: %d wells x %d fields x %d planes, %d levels, %s, "
             "layout %s", targets.path, n_w, n_fields, n_z, len(levels), dtype, layout)
    return handle


# --- writing ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _open_array(path: str, array_path: str):
    """A level array opened once per process (opening reads and parses its zarr.json)."""
    import zarr

    return zarr.open_array(path, path=array_path, mode="r+")


def _array(plate: RefocusedPlate, well: int, field: int, level: int):
    return _open_array(plate.path, plate.array_path(well, field, level))


def _planes_index(z: int | Sequence[int] | None, n_z: int) -> list[int]:
    if z is None:
        return list(range(n_z))
    zs = [z] if isinstance(z, (int, np.integer)) else list(z)
    if not zs or any(not isinstance(k, (int, np.integer)) or not 0 <= k < n_z for k in zs):
        raise ValueError(f"z must be a plane index or indices in 0..{n_z - 1}, got {z!r}")
    if len(set(zs)) != len(zs):
        raise ValueError(f"z repeats a plane: {z!r}")
    return [int(k) for k in zs]


def _runs(zs: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(start, stop, position in zs)`` of every run of consecutive plane indices in ``zs``."""
    runs: list[tuple[int, int, int]] = []
    for i, k in enumerate(zs):
        if runs and k == runs[-1][1]:
            runs[-1] = (runs[-1][0], k + 1, runs[-1][2])
        else:
            runs.append((k, k + 1, i))
    return runs


def write_field(
    plate: RefocusedPlate | str | os.PathLike,
    well: int | str,
    field: int,
    planes: np.ndarray,
    *,
    z: int | Sequence[int] | None = None,
    lock: contextlib.AbstractContextManager | None = None,
) -> None:
    """Write refocused planes of one field, and its pyramid when the call can.

    Parameters
    ----------
    plate : RefocusedPlate or path
    well : int or str
        Index in ``plate.wells`` or a well name.
    field : int
    planes : (Z', Y, X) ndarray of float
        On the input's camera-count scale; NaN for a missing plane. ``Z'`` is
        the plate's plane count, or ``len(z)``.
    z : int or sequence of int, optional
        The planes given (one index for a single ``(Y, X)`` or ``(1, Y, X)``
        plane); all of them when omitted.
    lock : context manager, optional
        Held around the write. Needed (layout ``"field"`` only) when single
        planes of one field are written by concurrent tasks: e.g.
        ``distributed.Lock(f"{plate.path}:{well}:{field}")``, or
        ``contextlib.nullcontext()`` when one process writes the field.

    Notes
    -----
    The whole field (``z`` omitted): every level is written, each shard in
    one piece. Some planes, layout ``"field"``: every level of those planes is
    written into the shards under ``lock`` (each write rewrites the shard).
    Some planes, layout ``"plane"``: level 0 only (one file per plane, safe
    concurrently); call :func:`write_pyramid` once the field is complete.

    Raises
    ------
    ValueError
        Wrong shape, plane indices, or a partial write of a ``"field"``
        layout plate without ``lock``.
    """
    plate = _handle(plate)
    w = plate.well_index(well)
    zs = _planes_index(z, plate.n_z)
    planes = np.asarray(planes, dtype=np.float32)
    if planes.ndim == 2 and len(zs) == 1:
        planes = planes[None]
    if planes.shape != (len(zs), *plate.shape):
        raise ValueError(
            f"planes must have shape {(len(zs), *plate.shape)!r} (one (Y, X) plane per z written), "
            f"got {planes.shape!r}"
        )
    whole = zs == list(range(plate.n_z))
    if plate.layout == "field" and not whole and lock is None:
        raise ValueError(
            f"plate {plate.path!r} has layout 'field' (one shard per field and level): writing "
            f"planes {zs!r} of a field rewrites its shard, and concurrent writers lose planes; "
            f"pass lock=distributed.Lock(...) per field, lock=contextlib.nullcontext() if one "
            f"process writes this field, or write the whole field at once"
        )
    n_levels = 1 if (plate.layout == "plane" and not whole) else len(plate.levels)
    with lock if lock is not None else contextlib.nullcontext():
        for level, values in enumerate(_pyramid(planes, n_levels)):
            array = _array(plate, w, field, level)
            stored = encode(values, plate.dtype)
            if whole:
                array[0] = stored
            else:  # one write per run of consecutive planes (one shard rewrite each)
                for start, stop, first in _runs(zs):
                    array[0, start:stop] = stored[first:first + stop - start]
    log.debug("wrote %s field %d planes %s (%d levels)", plate.wells[w], field, zs, n_levels)


def write_pyramid(plate: RefocusedPlate | str | os.PathLike, well: int | str,
                  fields: Sequence[int] | None = None) -> None:
    """Build levels >= 1 of fields from their level 0 (read back from the plate).

    For layout ``"plane"`` plates whose planes were written one by one: call
    it once every plane of the field is written (in a run, in the task that
    closes the well). Missing planes stay missing.

    Parameters
    ----------
    plate : RefocusedPlate or path
    well : int or str
    fields : sequence of int, optional
        All fields of the well by default.
    """
    plate = _handle(plate)
    w = plate.well_index(well)
    if len(plate.levels) == 1:
        return
    for field in range(plate.n_fields) if fields is None else fields:
        base = decode(_array(plate, w, field, 0)[0])  # (Z, Y, X)
        for level, values in enumerate(_pyramid(base, len(plate.levels))):
            if level:
                _array(plate, w, field, level)[0] = encode(values, plate.dtype)


# --- reading ------------------------------------------------------------------------------------


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

    from .plate import open_plate

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

