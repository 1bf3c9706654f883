"""Lazy views of a plate: :func:`open_plate` (one labelled Dask-backed array), the ground truth
of a simulated plate, and the planes that were missing at ingest.

All are built from a :class:`~plate_refocus.plate.read.PlateLayout`; pixels
are read only when the result is computed, through the per-process array
cache of :mod:`.pixels`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .ngff import GROUND_TRUTH, open_root
from .pixels import plate_array
from .read import PlateLayout, read_layout, warn_assumed_optics

__all__ = ["open_plate", "open_ground_truth", "missing_planes"]


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


def _lazy_field(layout: PlateLayout, well: int, field: int):
    """A dask (c, z, y, x) view of one field, one chunk per plane."""
    import dask.array as da
    from dask.base import tokenize

    array = plate_array(layout, layout.field_arrays[well][field])
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
