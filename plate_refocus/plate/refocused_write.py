"""Creating refocused plates and writing refocused planes into them (see :mod:`.refocused`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..optics import Optics
from .ngff import ATTRS_KEY, compressor, multiscales, omero, wrap_ome, z_step
from .refocused import (
    DTYPES,
    LAYOUTS,
    MISSING_UINT16,
    REFOCUSED_META_KEY,
    WRITER,
    RefocusedPlate,
    as_handle,
    decode,
    encode,
    level_shapes,
    pyramid,
)

__all__ = ["create_refocused_plate", "write_field", "write_pyramid"]

log = logging.getLogger(__name__)


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

    from .write import create_plate

    _check_arguments(dtype, layout, n_fields, shape, channel_name)
    wells = [wells] if isinstance(wells, str) else [str(w) for w in wells]
    z_um = [float(z) for z in z_um]
    shape = (int(shape[0]), int(shape[1]))
    levels = level_shapes(shape, min_size)
    n_w, n_z = len(wells), len(z_um)
    if max_value is None:
        max_value = MISSING_UINT16 - 1 if dtype == "uint16" else 1.0
    # The plate, well and image groups exactly as input plates have them (one owner of the HCS
    # metadata: plate_refocus.plate); its level-0 arrays are then replaced by this layout's.
    targets = create_plate(
        path, (n_w, int(n_fields), 1, n_z, *shape), np.dtype(dtype), wells, optics=optics,
        z_um=z_um, channel_names=[channel_name], plate_rows=plate_rows, plate_columns=plate_columns,
        focal_plane=None, camera=None, ngff_version="0.5", ground_truth=None,
        extra_attrs={**dict(extra_attrs or {}), "written_by": WRITER}, overwrite=overwrite,
        inputs=inputs,
    )
    handle = RefocusedPlate(
        path=str(targets.path), wells=tuple(wells),
        well_paths=tuple(targets.fields[w][0].path.rsplit("/", 2)[0] for w in range(n_w)),
        n_fields=int(n_fields), z_um=tuple(z_um), shape=shape, levels=tuple(levels),
        dtype=dtype, layout=layout, token=uuid.uuid4().hex,
    )
    root = zarr.open_group(str(targets.path), mode="r+")
    try:
        # One call: the image groups (replaced, with the arrays plate.py made in them) and every
        # level's array, written concurrently (one by one, metadata writes cost ~5 ms each).
        nodes = _image_nodes(handle, optics, channel_name, max_value)
        for _ in zarr.create_hierarchy(store=root.store, nodes=nodes, overwrite=True):
            pass
        ours = dict(root.attrs[ATTRS_KEY])
        ours[REFOCUSED_META_KEY] = handle.to_dict()
        root.attrs[ATTRS_KEY] = ours
    except BaseException:
        import shutil

        shutil.rmtree(targets.path, ignore_errors=True)
        raise
    log.info("created refocused plate %s: %d wells x %d fields x %d planes, %d levels, %s, "
             "layout %s", targets.path, n_w, n_fields, n_z, len(levels), dtype, layout)
    return handle


def _check_arguments(dtype: str, layout: str, n_fields: Any, shape: Any, channel_name: Any) -> None:
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


def _datasets(optics: Optics, z_um: Sequence[float], n_levels: int) -> tuple[dict, list[dict]]:
    """The multiscales entry and its datasets: level l scaled by 2**l and shifted to its centre."""
    ms = multiscales("", optics.pixel_size_um, z_step(z_um), "0.5")[0]
    base = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    datasets = []
    for level in range(n_levels):
        f = 2.0**level
        scale = [base[0], base[1], base[2] * f, base[3] * f]
        # A level-l pixel covers 2**l level-0 pixels: its centre lies (2**l - 1) / 2 of them in.
        shift = [0.0, 0.0, round(base[2] * (f - 1) / 2, 9), round(base[3] * (f - 1) / 2, 9)]
        transforms = [{"type": "scale", "scale": scale}]
        if level:
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    return ms, datasets


def _image_nodes(handle: RefocusedPlate, optics: Optics, channel_name: str,
                 max_value: float) -> dict[str, Any]:
    """Every image group and level array of the plate, as zarr metadata for create_hierarchy."""
    import zarr
    from zarr.core.group import GroupMetadata

    ms, datasets = _datasets(optics, handle.z_um, len(handle.levels))
    fill = MISSING_UINT16 if handle.dtype == "uint16" else float("nan")
    # Each level's array metadata, made once in memory and reused for every field.
    templates = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=3)
    array_meta = []
    for level, (ny, nx) in enumerate(handle.levels):
        shards = None if (handle.layout == "plane" and level == 0) else (1, handle.n_z, ny, nx)
        array_meta.append(templates.create_array(
            str(level), shape=(1, handle.n_z, ny, nx), chunks=(1, 1, ny, nx), shards=shards,
            dtype=handle.dtype, fill_value=fill, compressors=compressor(3),
            dimension_names=["c", "z", "y", "x"],
        ).metadata)
    rendering = omero([channel_name], max_value)
    nodes: dict[str, Any] = {}
    for w, well in enumerate(handle.wells):
        for f in range(handle.n_fields):
            key = f"{handle.well_paths[w]}/{f}"
            image = dict(ms, name=f"{well} field {f} refocused", datasets=datasets)
            attrs = wrap_ome({"multiscales": [image], "omero": rendering}, "0.5")
            nodes[key] = GroupMetadata(attributes=attrs, zarr_format=3)
            nodes.update({f"{key}/{level}": meta for level, meta in enumerate(array_meta)})
    return nodes


@functools.lru_cache(maxsize=4096)
def _open_array(path: str, token: str, array_path: str):
    """A level array opened once per process and plate (opening reads and parses its zarr.json)."""
    import zarr

    return zarr.open_array(path, path=array_path, mode="r+")


def _array(plate: RefocusedPlate, well: int, field: int, level: int):
    return _open_array(plate.path, plate.token, plate.array_path(well, field, level))


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
    plate = as_handle(plate)
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
        for level, values in enumerate(pyramid(planes, n_levels)):
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
    plate = as_handle(plate)
    w = plate.well_index(well)
    if len(plate.levels) == 1:
        return
    for field in range(plate.n_fields) if fields is None else fields:
        base = decode(_array(plate, w, field, 0)[0])  # (Z, Y, X)
        for level, values in enumerate(pyramid(base, len(plate.levels))):
            if level:
                _array(plate, w, field, level)[0] = encode(values, plate.dtype)
