"""Reading OME-Zarr HCS plates: the layout once, pixels plane by plane or as one lazy array.

:func:`read_layout` reads every piece of metadata a run needs (wells, fields,
channels, z positions, optics, camera, focal plane, where each field's
pixels live, which planes were missing at ingest) into one small, picklable
:class:`PlateLayout`. Workers read pixels with :func:`read_plane` and
:func:`truth_plane` from it; :func:`open_plate` wraps the same layout as a
lazy ``xarray.DataArray``. Nothing else in the package knows the paths.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import NotAPlateError, PlaneReadError, PlateLayoutError, PlateRefocusError
from ..optics import Optics
from .ngff import ATTRS_KEY, GROUND_TRUTH, local_path, ome_metadata, open_root

__all__ = [
    "PlateLayout",
    "data_range",
    "read_layout",
    "open_plate",
    "read_plane",
    "truth_plane",
    "missing_planes",
    "open_ground_truth",
    "warn_assumed_optics",
]

_MALFORMED = (KeyError, TypeError, AttributeError, IndexError, ValueError)


@dataclass(frozen=True, eq=False)
class PlateLayout:
    """Everything known about a plate from its metadata; no pixels.

    Small and picklable: Dask tasks carry it and read planes with
    :func:`read_plane`. ``token`` changes when the plate is rewritten, so
    per-worker caches keyed by it never serve a replaced plate.
    """

    path: str
    token: str
    ngff_version: str | None
    zarr_format: int
    wells: tuple[str, ...]
    rows: tuple[str, ...]  # per well
    columns: tuple[int, ...]  # per well, 1-based
    plate_rows: tuple[str, ...]  # of the physical plate
    plate_columns: tuple[str, ...]
    n_fields: int
    channels: tuple[str, ...]
    z_um: tuple[float, ...]
    shape: tuple[int, int]
    dtype: str
    optics: Optics
    optics_recorded: bool  # False: the plate carries no optics, the defaults were assumed
    camera: Mapping[str, Any]  # bit_depth, offset, read_noise when recorded
    focal_plane: int | None
    field_arrays: tuple[tuple[str, ...], ...]  # [well][field] -> store path of the level-0 array
    field_axes: tuple[str, ...]
    ground_truth: bool
    missing: frozenset[tuple[int, int, int, int]] = field(default_factory=frozenset)

    @property
    def n_wells(self) -> int:
        return len(self.wells)

    @property
    def n_z(self) -> int:
        return len(self.z_um)

    @property
    def data_range(self) -> float:
        """PSNR/SSIM's data range for this plate (see :func:`data_range`)."""
        return data_range(self.camera, self.dtype)

    @property
    def offset(self) -> float:
        """The camera offset (bias) when recorded, else 0."""
        value = self.camera.get("offset", 0.0)
        return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else 0.0

    def missing_mask(self, channel: int) -> np.ndarray:
        """``(well, field, z)`` bool: planes of ``channel`` that were missing at ingest."""
        mask = np.zeros((self.n_wells, self.n_fields, self.n_z), dtype=bool)
        for w, f, c, z in self.missing:
            if c == channel:
                mask[w, f, z] = True
        return mask

    def channel_index(self, channel: str | int | None) -> int:
        """Index of a channel given by name or index (the first by default)."""
        names = list(self.channels)
        if channel is None:
            return 0
        if isinstance(channel, (int, np.integer)) or str(channel).isdigit():
            index = int(channel)
            if not 0 <= index < len(names):
                raise PlateLayoutError(
                    f"channel index {channel!r} is out of range: the plate has channels {names!r}"
                )
            return index
        if channel not in names:
            raise PlateLayoutError(
                f"channel {channel!r} is not in the plate; choose one of {names!r} with --channel"
            )
        return names.index(channel)


def data_range(camera: Mapping[str, Any] | None, dtype: Any) -> float:
    """The one rule for the data range of PSNR/SSIM on a plate.

    The camera's ``2**bit_depth - 1`` when recorded (4095 for 12-bit data
    stored as uint16), else the integer dtype's maximum, else 1.0 for float
    images.
    """
    bits = (camera or {}).get("bit_depth")
    if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool) and 1 <= bits <= 32:
        return float(2**int(bits) - 1)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


# --- metadata -----------------------------------------------------------------------------------


def _token(path: str) -> str:
    """Changes when the plate's root metadata is rewritten (inode, size, mtime)."""
    local = local_path(path)
    if local is None:
        return "remote"
    for name in ("zarr.json", ".zattrs", ".zgroup"):
        meta = local / name
        if meta.exists():
            st = meta.stat()
            return f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
    return "none"


def _field_array(root, well_path: str, image_path: str, plate: str):
    """The level-0 array of one field, its axes and its scale, from metadata only."""
    import zarr

    key = f"{well_path}/{image_path}"
    try:
        group = root[key]
    except KeyError:
        raise PlateLayoutError(
            f"plate {plate!r} lists field {key!r} but it is missing from the store; the plate is "
            f"incomplete: rewrite it or remove the field from the well metadata"
        ) from None
    ome, _ = ome_metadata(group.attrs.asdict())
    multiscales = ome.get("multiscales")
    if not multiscales or not isinstance(multiscales, list) or not isinstance(multiscales[0], Mapping):
        raise PlateLayoutError(
            f"field {key!r} of plate {plate!r} has no 'multiscales' metadata; it is not an OME-Zarr image"
        )
    ms = multiscales[0]
    axes = [a["name"] if isinstance(a, Mapping) else str(a) for a in ms.get("axes", [])]
    dataset = ms["datasets"][0]
    array = group[dataset["path"]]
    if not isinstance(array, zarr.Array):
        raise PlateLayoutError(f"{key}/{dataset['path']} in plate {plate!r} is not an array")
    if len(axes) != array.ndim:
        raise PlateLayoutError(
            f"field {key!r} of plate {plate!r} has axes {axes!r} but its array is {array.ndim}-D"
        )
    scale = [1.0] * len(axes)
    for transform in list(ms.get("coordinateTransformations") or []) + list(
        dataset.get("coordinateTransformations") or []
    ):
        if transform.get("type") == "scale":
            values = [float(v) for v in transform["scale"]]
            if len(values) != len(axes):
                raise PlateLayoutError(
                    f"field {key!r} of plate {plate!r}: its multiscales 'scale' {values!r} has "
                    f"{len(values)} entries for the {len(axes)} axes {axes!r}; NGFF needs one per "
                    "axis: rewrite the scale with an entry for every axis (e.g. the z step in um), "
                    "or pass the z step with --z-step"
                )
            scale = [a * b for a, b in zip(scale, values, strict=True)]
    return array, axes, dict(zip(axes, scale, strict=True))


def _check_axes(axes: list[str], sizes: Sequence[int], key: str, plate: str) -> None:
    allowed = ["t", "c", "z", "y", "x"]
    if axes[-2:] != ["y", "x"] or any(a not in allowed for a in axes) or axes != [
        a for a in allowed if a in axes
    ]:
        raise PlateLayoutError(
            f"field {key!r} of plate {plate!r} has axes {axes!r}; plate-refocus reads the NGFF "
            "orders (t,) (c,) (z,) y, x"
        )
    t = dict(zip(axes, sizes, strict=True)).get("t", 1)
    if t != 1:
        raise PlateLayoutError(
            f"field {key!r} of plate {plate!r} is a time series (t={t}); plate-refocus reads one "
            "time point per field; split the time points into separate plates"
        )


def _omero_labels(root, well_path: str, n_c: int) -> list[str]:
    try:
        well_ome, _ = ome_metadata(root[well_path].attrs.asdict())
        image = well_ome["well"]["images"][0]["path"]
        ome, _ = ome_metadata(root[f"{well_path}/{image}"].attrs.asdict())
        labels = [ch.get("label") for ch in ome["omero"]["channels"]]
        if len(labels) == n_c and all(isinstance(s, str) for s in labels):
            return labels
    except _MALFORMED:
        pass
    return [f"c{i}" for i in range(n_c)]


def _wells(root, plate_meta: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Per acquired well: name, row, column, field array paths; checks that fields agree."""
    wells_meta = plate_meta.get("wells") or []
    if not isinstance(wells_meta, list) or not wells_meta:
        raise PlateLayoutError(f"plate {name!r} lists no wells; it holds no images to open")
    rows = [str(r["name"]) for r in plate_meta.get("rows") or []]
    columns = [str(c["name"]) for c in plate_meta.get("columns") or []]
    wells_meta = sorted(wells_meta, key=lambda w: (int(w["rowIndex"]), int(w["columnIndex"])))
    out: dict[str, Any] = {"names": [], "rows": [], "columns": [], "arrays": [], "paths": [],
                           "reference": None, "plate_rows": rows, "plate_columns": columns,
                           "first_well": str(wells_meta[0]["path"])}
    for meta in wells_meta:
        well_path = str(meta["path"])
        parts = well_path.split("/")
        r, c = int(meta["rowIndex"]), int(meta["columnIndex"])
        row = rows[r] if 0 <= r < len(rows) else parts[0]
        label = columns[c] if 0 <= c < len(columns) else parts[-1]
        column = int(label) if str(label).isdigit() else c + 1
        try:
            well_group = root[well_path]
        except KeyError:
            raise PlateLayoutError(
                f"plate {name!r} lists well {well_path!r} but the store has no such group; the plate "
                "is incomplete: rewrite it or remove the well from the plate metadata"
            ) from None
        well_ome, _ = ome_metadata(well_group.attrs.asdict())
        images = (well_ome.get("well") or {}).get("images") or []
        if not images:
            raise PlateLayoutError(f"well {well_path!r} of plate {name!r} has no images")
        arrays, paths = [], []
        for image in images:
            array, axes, scale = _field_array(root, well_path, str(image["path"]), name)
            key = f"{well_path}/{image['path']}"
            this = (tuple(axes), tuple(array.shape), str(array.dtype))
            _check_axes(axes, array.shape, key, name)
            reference = out["reference"]
            if reference is None:
                out["reference"] = (*this, scale, key)
            elif this != reference[:3]:
                raise PlateLayoutError(
                    f"fields of plate {name!r} disagree: {key!r} has axes {list(axes)!r}, shape "
                    f"{tuple(array.shape)!r}, dtype {array.dtype} but {reference[4]!r} has axes "
                    f"{list(reference[0])!r}, shape {reference[1]!r}, dtype {reference[2]}; "
                    "plate-refocus needs fields of one shape: crop or pad them into a new plate"
                )
            arrays.append(array)
            paths.append(array.path)
        if out["arrays"] and len(arrays) != len(out["arrays"][0]):
            raise PlateLayoutError(
                f"wells of plate {name!r} disagree in field count: {row}{column:02d} has "
                f"{len(arrays)}, {out['names'][0]} has {len(out['arrays'][0])}; plate-refocus needs "
                "the same fields in every well: rewrite the plate with a common field count"
            )
        out["names"].append(f"{row}{column:02d}")
        out["rows"].append(row)
        out["columns"].append(column)
        out["arrays"].append(arrays)
        out["paths"].append(tuple(paths))
    return out


def _z_positions(ours: Mapping[str, Any], scale: Mapping[str, float], n_z: int,
                 focal_plane: int | None, z_step_um: float | None, name: str) -> list[float]:
    """Depth of every plane in um: a given z step, else ours, else the NGFF scale; checked distinct."""
    if z_step_um is not None:
        if not (isinstance(z_step_um, (int, float)) and np.isfinite(z_step_um) and z_step_um > 0):
            raise PlateLayoutError(f"the z step must be a positive number of um, got {z_step_um!r}")
        origin = focal_plane if focal_plane is not None else 0
        return [(k - origin) * float(z_step_um) for k in range(n_z)]
    z_um = ours.get("z_um")
    if isinstance(z_um, list) and len(z_um) == n_z:
        z_um = [float(z) for z in z_um]
        source = "its plate_refocus.z_um"
    else:
        z_um = [k * float(scale.get("z", 1.0)) for k in range(n_z)]
        source = f"its z scale ({scale.get('z', 'absent')!r}) with no plate_refocus.z_um"
    if n_z > 1 and (len(set(z_um)) != n_z or not all(np.isfinite(z_um))):
        raise PlateLayoutError(
            f"plate {name!r} has {n_z} planes but {source} gives z positions {z_um[:6]!r}"
            f"{'...' if n_z > 6 else ''}, which are not distinct; pass the spacing of the planes "
            "with --z-step UM (z_step_um=), or rewrite the plate with the right z scale"
        )
    return z_um


def _our_metadata(attrs: Mapping[str, Any], n_z: int, name: str) -> tuple[dict, Optics | None, int | None]:
    ours = attrs.get(ATTRS_KEY, {})
    if not isinstance(ours, Mapping):
        raise PlateLayoutError(
            f"plate {name!r} has malformed {ATTRS_KEY!r} metadata (not an object); remove that key "
            "or rewrite the plate"
        )
    optics = None
    if ours.get("optics"):
        try:
            optics = Optics.from_dict(dict(ours["optics"]))
        except (TypeError, ValueError) as error:
            raise PlateLayoutError(
                f"plate {name!r} has malformed optics in its {ATTRS_KEY!r} metadata ({error}); fix "
                "them or remove them and pass --na/--wavelength/--pixel-size"
            ) from None
    focal = ours.get("focal_plane")
    if focal is not None and not (isinstance(focal, int) and not isinstance(focal, bool)
                                  and 0 <= focal < n_z):
        raise PlateLayoutError(
            f"plate {name!r} records focal plane {focal!r}, not a plane index in 0..{n_z - 1}; fix "
            f"its {ATTRS_KEY}.focal_plane or remove it"
        )
    return dict(ours), optics, focal


def _missing(ours: Mapping[str, Any], wells: list[str], channels: list[str]) -> frozenset:
    out = set()
    for entry in (ours.get("ingest") or {}).get("missing", []) or []:
        try:
            out.add((wells.index(entry["well"]), int(entry["field"]), channels.index(entry["c"]),
                     int(entry["z"])))
        except (ValueError, KeyError, TypeError):
            continue
    return frozenset(out)


def read_layout(path: str | os.PathLike, *, z_step_um: float | None = None) -> PlateLayout:
    """Read a plate's metadata into a :class:`PlateLayout` (no pixels are read).

    Parameters
    ----------
    path : str or path-like
        The plate's root folder (NGFF 0.5 / zarr v3 or NGFF 0.4 / zarr v2).
    z_step_um : float, optional
        Spacing of the planes in um, for plates whose metadata does not give
        distinct z positions (planes counted from the focal plane, if known).

    Raises
    ------
    PlateNotFoundError, NotAPlateError, PlateLayoutError
        With what to do; malformed metadata of any kind is one of these.
    """
    path = os.fspath(path) if isinstance(path, os.PathLike) else path
    root = open_root(path)
    name = str(path)
    try:
        return _layout(root, name, z_step_um)
    except PlateRefocusError:
        raise
    except _MALFORMED as error:
        raise NotAPlateError(
            f"plate {name!r} has malformed OME-Zarr metadata ({type(error).__name__}: {error}); "
            "check its plate, well and multiscales metadata against the NGFF spec, or rewrite it "
            "with `plate-refocus ingest`"
        ) from None


def _layout(root, name: str, z_step_um: float | None) -> PlateLayout:
    attrs = root.attrs.asdict()
    ome, version = ome_metadata(attrs)
    plate = ome.get("plate")
    if not isinstance(plate, Mapping):
        raise NotAPlateError(
            f"{name!r} is a zarr group but not an OME-Zarr HCS plate (no 'plate' metadata); open "
            "single images with zarr or xarray, or make a plate with `plate-refocus ingest`"
        )
    wells = _wells(root, plate, name)
    axes, shape, dtype, scale, _ = wells["reference"]
    sizes = dict(zip(axes, shape, strict=True))
    n_c, n_z = sizes.get("c", 1), sizes.get("z", 1)
    ours, optics, focal = _our_metadata(attrs, n_z, name)
    z_um = _z_positions(ours, scale, n_z, focal, z_step_um, name)
    channels = ours.get("channel_names")
    if not (isinstance(channels, list) and len(channels) == n_c
            and all(isinstance(c, str) for c in channels)):
        channels = _omero_labels(root, wells["first_well"], n_c)
    recorded = optics is not None
    if optics is None:
        optics = Optics(pixel_size_um=float(scale.get("x", 1.0)))
    camera = ours.get("camera") if isinstance(ours.get("camera"), Mapping) else {}
    return PlateLayout(
        path=name,
        token=_token(name),
        ngff_version=version or plate.get("version"),
        zarr_format=root.metadata.zarr_format,
        wells=tuple(wells["names"]),
        rows=tuple(wells["rows"]),
        columns=tuple(wells["columns"]),
        plate_rows=tuple(wells["plate_rows"]),
        plate_columns=tuple(wells["plate_columns"]),
        n_fields=len(wells["arrays"][0]),
        channels=tuple(str(c) for c in channels),
        z_um=tuple(float(z) for z in z_um),
        shape=(sizes["y"], sizes["x"]),
        dtype=dtype,
        optics=optics,
        optics_recorded=recorded,
        camera=dict(camera),
        focal_plane=focal,
        field_arrays=tuple(wells["paths"]),
        field_axes=tuple(axes),
        ground_truth=f"{GROUND_TRUTH}/in_focus" in root,
        missing=_missing(ours, wells["names"], [str(c) for c in channels]),
    )


def warn_assumed_optics(layout: PlateLayout) -> None:
    """Warn once per call when the plate carries no optics and the defaults are assumed."""
    if not layout.optics_recorded:
        warnings.warn(
            f"plate {layout.path!r} carries no plate_refocus optics; assuming {layout.optics!r} "
            "(default NA and wavelength with the plate's pixel size); pass the right optics to the "
            "commands that need them",
            stacklevel=3,
        )


# --- pixels -------------------------------------------------------------------------------------

_ARRAYS_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _array(path: str, token: str, array_path: str) -> Any:
    """A zarr array of the plate, opened read-only once per process and plate version."""
    import zarr
    import zarr.storage

    local = local_path(path)
    store: Any = zarr.storage.LocalStore(local, read_only=True) if local is not None else path
    return zarr.open_array(store, path=array_path, mode="r")


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
    with _ARRAYS_LOCK:
        array = _array(layout.path, layout.token, array_path)
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


def missing_planes(plate: Any):
    """Which planes of an ingested plate had no file and were written as zeros.

    Parameters
    ----------
    plate : path, PlateLayout or xarray.DataArray
        An ingested plate, its layout, or :func:`open_plate` of it.

    Returns
    -------
    (well, field, c, z) xarray.DataArray of bool
        True where the plane is missing; all False for a plate written
        without gaps (or not by :func:`~plate_refocus.ingest.ingest`).
    """
    import xarray as xr

    if isinstance(plate, (str, os.PathLike)):
        layout = read_layout(plate)
    elif isinstance(plate, PlateLayout):
        layout = plate
    elif isinstance(plate, xr.DataArray) and "source" in plate.attrs:
        layout = read_layout(plate.attrs["source"])
    else:
        raise TypeError(f"plate must be a path, a PlateLayout or open_plate's DataArray, got {type(plate).__name__}")
    mask = np.zeros((layout.n_wells, layout.n_fields, len(layout.channels), layout.n_z), dtype=bool)
    for w, f, c, z in layout.missing:
        if w < layout.n_wells and f < layout.n_fields and z < layout.n_z:
            mask[w, f, c, z] = True
    dims = ("well", "field", "c", "z")
    coords = {"well": list(layout.wells), "field": np.arange(layout.n_fields),
              "c": list(layout.channels), "z": np.arange(layout.n_z)}
    return xr.DataArray(mask, dims=dims, coords=coords)


# --- lazy views ---------------------------------------------------------------------------------


def _lazy_field(layout: PlateLayout, well: int, field: int):
    """A dask (c, z, y, x) view of one field, one chunk per plane."""
    import dask.array as da
    from dask.base import tokenize

    with _ARRAYS_LOCK:
        array = _array(layout.path, layout.token, layout.field_arrays[well][field])
    axes = list(layout.field_axes)
    chunks = tuple(array.shape[i] if a in ("y", "x") else 1 for i, a in enumerate(axes))
    name = f"open_plate-{tokenize(layout.path, layout.token, layout.field_arrays[well][field])}"
    data = da.from_array(array, chunks=chunks, lock=False, asarray=True, name=name, inline_array=True)
    data = data[tuple(0 if a == "t" else slice(None) for a in axes)]
    kept = [a for a in axes if a != "t"]
    for position, axis in enumerate(("c", "z")):
        if axis not in kept:
            data = data[(slice(None),) * position + (None,)]
            kept.insert(position, axis)
    return data


def open_plate(path: str | os.PathLike | PlateLayout, *, z_step_um: float | None = None):
    """Open an OME-Zarr HCS plate lazily, as one labelled Dask-backed array.

    Only metadata is read (the plate, well and image groups and the array
    headers); pixels are read when the result is computed. The store is opened
    read-only.

    Parameters
    ----------
    path : str, path-like or PlateLayout
        The plate's root folder (NGFF 0.5 / zarr v3 or NGFF 0.4 / zarr v2),
        or its already read layout.
    z_step_um : float, optional
        See :func:`read_layout`.

    Returns
    -------
    xarray.DataArray
        Dims ``(well, field, c, z, y, x)``, one Dask chunk per ``(y, x)``
        plane. Coordinates ``well`` ("A01"), ``row`` ("A") and ``column``
        (1-based int) on ``well``, ``field`` (int), ``c`` (channel names),
        ``z`` (plane index) with ``z_um``, ``y``/``x`` in um. Attributes
        ``optics`` (dict), ``focal_plane`` (int or None), ``camera`` (dict,
        when known), ``source``, ``ngff_version``, ``zarr_format``. A plate without a ``c`` or ``z``
        axis gets one of length 1; a ``t`` axis of length 1 is dropped.
        A plate without optics warns once, naming the values assumed.

    Raises
    ------
    PlateNotFoundError
        The path does not exist.
    NotAPlateError
        It is not a zarr group with OME-Zarr HCS ``plate`` metadata, or that
        metadata is malformed.
    PlateLayoutError
        Wells or fields disagree in field count, shape, dtype or axes, a
        field is a time series (t > 1), or the z positions are not distinct.
    """
    import dask.array as da
    import xarray as xr

    layout = path if isinstance(path, PlateLayout) else read_layout(path, z_step_um=z_step_um)
    warn_assumed_optics(layout)
    data = da.stack([
        da.stack([_lazy_field(layout, w, f) for f in range(layout.n_fields)])
        for w in range(layout.n_wells)
    ])
    ny, nx = layout.shape
    attrs: dict[str, Any] = {
        "optics": layout.optics.to_dict(),
        "focal_plane": layout.focal_plane,
        "source": layout.path,
        "ngff_version": layout.ngff_version,
        "zarr_format": layout.zarr_format,
    }
    if layout.camera:
        attrs["camera"] = dict(layout.camera)
    dx = layout.optics.pixel_size_um
    return xr.DataArray(
        data,
        dims=("well", "field", "c", "z", "y", "x"),
        coords={
            "well": list(layout.wells),
            "row": ("well", list(layout.rows)),
            "column": ("well", np.asarray(layout.columns, dtype=int)),
            "field": np.arange(layout.n_fields),
            "c": list(layout.channels),
            "z": np.arange(layout.n_z),
            "z_um": ("z", np.asarray(layout.z_um, dtype=float)),
            "y": np.arange(ny) * float(dx),
            "x": np.arange(nx) * float(dx),
        },
        attrs=attrs,
        name="images",
    )


def open_ground_truth(path: str | os.PathLike):
    """The simulation ground truth stored with a plate, lazily, or None.

    Returns
    -------
    xarray.Dataset or None
        ``object`` and ``in_focus`` (well, field, c, y, x) float32, ``otf_radial``
        (z, freq) float64, with the plate's coordinates and ``freq`` in
        cycles/um; None when the plate has no ground truth.
    """
    import dask.array as da
    import xarray as xr

    plate = open_plate(path)
    root = open_root(path)
    if GROUND_TRUTH not in root:
        return None
    group = root[GROUND_TRUTH]
    variables = {}
    dims = {"object": ("well", "field", "c", "y", "x"), "in_focus": ("well", "field", "c", "y", "x"),
            "otf_radial": ("z", "freq")}
    for key, dim in dims.items():
        array = group[key]
        chunks = tuple(1 if d in ("well", "field", "c") else n for d, n in zip(dim, array.shape, strict=True))
        variables[key] = (dim, da.from_array(array, chunks=chunks, lock=False, inline_array=True))
    coords = {k: v for k, v in plate.coords.items() if set(v.dims) <= {"well", "field", "c", "z", "y", "x"}}
    coords["freq"] = ("freq", np.asarray(group["freq"][...], dtype=float), {"units": "cycles/um"})
    return xr.Dataset(variables, coords=coords, attrs={"source": str(path)})
