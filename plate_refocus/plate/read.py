"""Reading an OME-Zarr HCS plate's metadata: the layout once, no pixels.

:func:`read_layout` reads every piece of metadata a run needs (wells, fields,
channels, z positions, optics, camera, focal plane, where each field's
pixels live, which planes were missing at ingest) into one small, picklable
:class:`PlateLayout`; :func:`read_plate_grid` reads only the physical plate's
rows and columns. Workers read pixels from the layout with
:func:`~plate_refocus.plate.pixels.read_plane`;
:func:`~plate_refocus.plate.views.open_plate` wraps it as a lazy
``xarray.DataArray``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import NotAPlateError, PlateLayoutError, PlateRefocusError
from ..optics import Optics
from .ngff import ATTRS_KEY, GROUND_TRUTH, local_path, ome_metadata, open_root

__all__ = [
    "PlateLayout",
    "data_range",
    "read_layout",
    "read_plate_grid",
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


def _plate_metadata(root, name: str) -> tuple[dict[str, Any], Mapping[str, Any], str | None]:
    """The root group's attributes, its NGFF ``plate`` metadata and the NGFF version."""
    attrs = root.attrs.asdict()
    ome, version = ome_metadata(attrs)
    plate = ome.get("plate")
    if not isinstance(plate, Mapping):
        raise NotAPlateError(
            f"{name!r} is a zarr group but not an OME-Zarr HCS plate (no 'plate' metadata); open "
            "single images with zarr or xarray, or make a plate with `plate-refocus ingest`"
        )
    return attrs, plate, version


def _plate_axes(plate_meta: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Row and column names of the physical plate, as its NGFF ``plate`` metadata lists them."""
    rows = [str(r["name"]) for r in plate_meta.get("rows") or []]
    columns = [str(c["name"]) for c in plate_meta.get("columns") or []]
    return rows, columns


def _wells(root, plate_meta: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Per acquired well: name, row, column, field array paths; checks that fields agree."""
    wells_meta = plate_meta.get("wells") or []
    if not isinstance(wells_meta, list) or not wells_meta:
        raise PlateLayoutError(f"plate {name!r} lists no wells; it holds no images to open")
    rows, columns = _plate_axes(plate_meta)
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
        raise _malformed(name, error) from None


def read_plate_grid(path: str | os.PathLike) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Row and column names of the physical plate, from the plate group's metadata only.

    Reads the root group's attributes: no well, field or array is opened.

    Parameters
    ----------
    path : str or path-like
        The plate's root folder (NGFF 0.5 / zarr v3 or NGFF 0.4 / zarr v2).

    Returns
    -------
    rows, columns : tuple of str
        Every row and column of the physical plate, in order: ``("A", ..., "H")``
        and ``("1", ..., "12")`` for a 96-well plate; empty when the metadata
        lists none.

    Raises
    ------
    PlateNotFoundError, NotAPlateError
        Nothing at the path, not a zarr group, no ``plate`` metadata, or its
        rows or columns are malformed.
    """
    path = os.fspath(path) if isinstance(path, os.PathLike) else path
    root = open_root(path)
    name = str(path)
    try:
        _, plate, _ = _plate_metadata(root, name)
        rows, columns = _plate_axes(plate)
    except PlateRefocusError:
        raise
    except _MALFORMED as error:
        raise _malformed(name, error) from None
    return tuple(rows), tuple(columns)


def _malformed(name: str, error: Exception) -> NotAPlateError:
    return NotAPlateError(
        f"plate {name!r} has malformed OME-Zarr metadata ({type(error).__name__}: {error}); "
        "check its plate, well and multiscales metadata against the NGFF spec, or rewrite it "
        "with `plate-refocus ingest`"
    )


def _layout(root, name: str, z_step_um: float | None) -> PlateLayout:
    attrs, plate, version = _plate_metadata(root, name)
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
