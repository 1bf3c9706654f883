"""Writing OME-Zarr HCS plates: the layout first, then the pixels through Dask."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..cluster import compute
from ..optics import Optics
from ..outputs import prepare_output
from .names import parse_well, plate_axis
from .ngff import (
    ATTRS_KEY,
    GROUND_TRUTH,
    METADATA_VERSION,
    compressor,
    multiscales,
    omero,
    wrap_ome,
    z_step,
)

__all__ = ["write_plate", "create_plate", "PlateTargets"]

log = logging.getLogger(__name__)


def _as_dask(array: Any, name: str):
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    if isinstance(array, np.ndarray):
        return da.from_array(array, chunks=array.shape)
    raise TypeError(f"{name} must be a NumPy or Dask array, got {type(array).__name__}")



def _ground_truth_arrays(ground_truth: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    """``object``, ``in_focus``, ``otf_radial``, ``freq`` from a Mapping or xarray Dataset."""
    if ground_truth is None:
        return {}
    if not isinstance(ground_truth, Mapping) and not hasattr(ground_truth, "data_vars"):
        raise TypeError(f"ground_truth must be a Mapping or xarray.Dataset, got {type(ground_truth).__name__}")
    missing = [k for k in ("object", "in_focus", "otf_radial", "freq") if k not in ground_truth]
    if missing:
        raise ValueError(
            f"ground_truth lacks {missing!r}; it needs object and in_focus (well, field, c, y, x), "
            f"otf_radial (z, freq) and freq (freq,)"
        )
    out = {k: getattr(ground_truth[k], "data", ground_truth[k]) for k in ("object", "in_focus", "otf_radial", "freq")}
    w, f, c, z, y, x = shape
    for key in ("object", "in_focus"):
        if tuple(out[key].shape) != (w, f, c, y, x):
            raise ValueError(f"ground_truth[{key!r}] must have shape {(w, f, c, y, x)!r}, got {tuple(out[key].shape)!r}")
    freq = np.asarray(out["freq"], dtype=float)
    out["freq"] = freq
    if tuple(out["otf_radial"].shape) != (z, freq.size):
        raise ValueError(
            f"ground_truth['otf_radial'] must have shape {(z, freq.size)!r} (z, freq), got "
            f"{tuple(out['otf_radial'].shape)!r}"
        )
    return out


def write_plate(
    path: str | Path,
    images: Any,
    wells: Sequence[str],
    *,
    optics: Optics,
    z_um: Sequence[float],
    channel_names: Sequence[str],
    plate_rows: int | Sequence[str],
    plate_columns: int | Sequence[str],
    focal_plane: int | None = None,
    camera: Any = None,
    ngff_version: str = "0.5",
    ground_truth: Any = None,
    extra_attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    inputs: Sequence[str | Path] = (),
    client: Any = None,
    progress: bool = False,
) -> Path:
    """Write an OME-Zarr HCS plate (and its ground truth) through Dask.

    All groups and arrays are created first; then one ``dask.array.store``
    writes every field (and the ground truth) in parallel on the current Dask
    scheduler (the default distributed client, if there is one). Each task
    writes the planes of one source chunk, so memory stays bounded by the
    chunks of ``images``, not the plate.

    Parameters
    ----------
    path : str or Path
        The new store (a local folder).
    images : (well, field, c, z, y, x) dask or numpy array
        Integer or float pixels; chunks should not span fields (one chunk per
        field or per plane is ideal).
    wells : sequence of str
        Well names like ``"A01"``, one per entry of the first axis.
    optics : Optics
    z_um : sequence of float
        Depth of every plane, in um.
    channel_names : sequence of str
    plate_rows, plate_columns : int or sequence of str
        The physical plate (8 and 12 for a 96-well plate); every row and column
        is listed in the plate metadata, the wells only where acquired.
    focal_plane : int, optional
        Index of the in-focus plane, if known.
    camera : Camera or Mapping, optional
        Stored as metadata (``to_dict()``, or the mapping's ``bit_depth``,
        ``offset``, ``read_noise`` as known); the bit depth sets the data range.
    ngff_version : {"0.5", "0.4"}
        0.5 writes zarr v3, 0.4 writes zarr v2 (for older readers).
    ground_truth : Mapping or xarray.Dataset, optional
        ``object`` and ``in_focus`` (well, field, c, y, x), ``otf_radial``
        (z, freq), ``freq`` (freq,): written to the ``ground_truth`` group.
    extra_attrs : Mapping, optional
        JSON-able items added to the ``plate_refocus`` metadata; ``written_by``
        (default ``"write_plate"``) names the command that wrote the plate.
    overwrite : bool
        Replace an existing plate at ``path`` written by the same command, or an
        empty folder; never anything else (see :mod:`plate_refocus.outputs`).
    inputs : sequence of path
        What the plate is made from: ``path`` may not be, contain or lie inside them.
    client : distributed.Client, optional
        Where to compute; default: the current Dask scheduler.
    progress : bool
        Show a text progress bar (and the dashboard link on a distributed
        client) while writing.

    Returns
    -------
    Path
        If writing fails or is interrupted, the partial store is removed.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    import dask.array as da

    images = _as_dask(images, "images")
    if images.ndim != 6:
        raise ValueError(f"images must be 6-D (well, field, c, z, y, x), got shape {images.shape!r}")
    n_wells, n_fields = images.shape[:2]
    gt = _ground_truth_arrays(ground_truth, images.shape)
    plan = create_plate(
        path, images.shape, images.dtype, wells, optics=optics, z_um=z_um, channel_names=channel_names,
        plate_rows=plate_rows, plate_columns=plate_columns, focal_plane=focal_plane, camera=camera,
        ngff_version=ngff_version, ground_truth={k: v.shape for k, v in gt.items()} if gt else None,
        extra_attrs=extra_attrs, overwrite=overwrite, inputs=inputs,
    )
    path = plan.path
    sources, targets = [], []
    for w in range(n_wells):
        for f in range(n_fields):
            sources.append(images[w, f])
            targets.append(plan.fields[w][f])
    for key, target in plan.ground_truth.items():
        data = gt[key]
        data = data if isinstance(data, da.Array) else da.from_array(np.asarray(data))
        sources.append(data.astype(target.dtype))
        targets.append(target)

    log.info("writing %d fields of %d wells to %s", n_wells * n_fields, n_wells, path)
    try:
        stored = da.store(sources, targets, lock=False, compute=False)
        compute(stored, client=client, progress=progress)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # never leave a half-written plate behind
        raise
    return path


class PlateTargets(NamedTuple):
    path: Path
    fields: list[list[Any]]  # [well][field] -> zarr array (c, z, y, x)
    ground_truth: dict[str, Any]  # object, in_focus, otf_radial, freq -> zarr array


def create_plate(
    path: str | Path,
    shape: tuple[int, ...],
    dtype: Any,
    wells: Sequence[str],
    *,
    optics: Optics,
    z_um: Sequence[float],
    channel_names: Sequence[str],
    plate_rows: int | Sequence[str],
    plate_columns: int | Sequence[str],
    focal_plane: int | None,
    camera: Any,
    ngff_version: str,
    ground_truth: Mapping[str, tuple[int, ...]] | None,
    extra_attrs: Mapping[str, Any] | None,
    overwrite: bool,
    inputs: Sequence[str | Path] = (),
) -> PlateTargets:
    """Check the layout and create every group and (empty) array of a plate.

    ``shape`` is (well, field, c, z, y, x); ``ground_truth`` maps object, in_focus,
    otf_radial and freq to their shapes. Nothing is written into the arrays.
    """

    if ngff_version not in ("0.5", "0.4"):
        raise ValueError(f"ngff_version must be '0.5' (zarr v3) or '0.4' (zarr v2), got {ngff_version!r}")
    if not isinstance(optics, Optics):
        raise TypeError(f"optics must be an Optics, got {optics!r}")
    n_wells, n_fields, n_c, n_z, ny, nx = shape
    dtype = np.dtype(dtype)
    wells = list(wells) if not isinstance(wells, str) else [wells]
    if len(wells) != n_wells:
        raise ValueError(f"{len(wells)} well names for {n_wells} wells in images; give one name per well")
    positions = [parse_well(w) for w in wells]
    if len(set(positions)) != len(positions):
        raise ValueError(f"well names repeat: {wells!r}")
    z_um = [float(z) for z in z_um]
    if len(z_um) != n_z:
        raise ValueError(f"z_um has {len(z_um)} depths for {n_z} planes in images")
    channel_names = [str(c) for c in channel_names]
    if len(channel_names) != n_c:
        raise ValueError(f"channel_names has {len(channel_names)} names for {n_c} channels in images")
    if focal_plane is not None and not (isinstance(focal_plane, (int, np.integer)) and 0 <= focal_plane < n_z):
        raise ValueError(f"focal_plane must be a plane index in 0..{n_z - 1} or None, got {focal_plane!r}")
    rows = plate_axis(plate_rows, "rows")
    columns = plate_axis(plate_columns, "columns")
    for well, (r, c) in zip(wells, positions, strict=True):
        if r >= len(rows) or str(c) not in columns:
            raise ValueError(
                f"well {well!r} is outside a plate of {len(rows)} rows x {len(columns)} columns; "
                f"pass larger plate_rows/plate_columns (e.g. 16 x 24 for 384 wells)"
            )
    if not np.issubdtype(dtype, np.number):
        raise TypeError(f"images must be numeric, got {dtype}")
    gt = ground_truth or {}
    writer = str(dict(extra_attrs or {}).get("written_by", "write_plate"))
    path = prepare_output(path, kind="plate", writer=writer, inputs=inputs, overwrite=overwrite)
    try:
        return _create_groups_and_arrays(
            path, shape, dtype, wells, positions, rows, columns, optics=optics, z_um=z_um,
            channel_names=channel_names, focal_plane=focal_plane, camera=camera,
            ngff_version=ngff_version, gt=gt, extra_attrs=extra_attrs,
        )
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def _create_groups_and_arrays(path, shape, dtype, wells, positions, rows, columns, *, optics, z_um,
                              channel_names, focal_plane, camera, ngff_version, gt, extra_attrs):
    """The plate group with its metadata, then each field's array, then the ground truth."""
    import zarr

    fmt = 3 if ngff_version == "0.5" else 2
    camera = camera.to_dict() if hasattr(camera, "to_dict") else (dict(camera) if camera else None)
    plate_meta = _plate_metadata(path, positions, rows, columns, shape[1], ngff_version)
    ours: dict[str, Any] = {
        "metadata_version": METADATA_VERSION,
        "optics": optics.to_dict(),
        "camera": camera,
        "focal_plane": None if focal_plane is None else int(focal_plane),
        "z_um": z_um,
        "channel_names": channel_names,
        "ground_truth": GROUND_TRUTH if gt else None,
        "written_by": "write_plate",
        **dict(extra_attrs or {}),
    }
    root = zarr.open_group(zarr.storage.LocalStore(path), mode="w-", zarr_format=fmt,
                           attributes={**wrap_ome({"plate": plate_meta}, ngff_version), ATTRS_KEY: ours})
    fields = _field_arrays(root, shape, dtype, wells, positions, rows, optics=optics, z_um=z_um,
                           channel_names=channel_names, camera=camera, ngff_version=ngff_version)
    gt_targets = _ground_truth_targets(root, gt, shape, wells, channel_names, z_um, fmt) if gt else {}
    return PlateTargets(path, fields, gt_targets)


def _plate_metadata(path: Path, positions, rows, columns, n_fields: int, ngff_version: str) -> dict:
    """The NGFF ``plate`` metadata: every row and column of the physical plate, the wells."""
    plate_meta: dict[str, Any] = {
        "name": path.stem,
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in columns],
        "wells": [
            {"path": f"{rows[r]}/{c}", "rowIndex": r, "columnIndex": columns.index(str(c))}
            for r, c in positions
        ],
        "field_count": n_fields,
        "acquisitions": [{"id": 0, "maximumfieldcount": n_fields}],
    }
    # NGFF 0.5 moved the version to the "ome" key; ome-zarr-models still warns when the plate
    # itself lacks one, and readers ignore it, so it is written in both layouts.
    plate_meta["version"] = ngff_version
    return plate_meta


def _array_kwargs(fmt: int, dims: list[str]) -> dict[str, Any]:
    """Compression and chunk-key encoding of an array, with its dimension names on zarr v3."""
    kwargs: dict[str, Any] = {"compressors": compressor(fmt)}
    if fmt == 2:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        kwargs["dimension_names"] = dims
    return kwargs


def _field_arrays(root, shape, dtype, wells, positions, rows, *, optics, z_um, channel_names,
                  camera, ngff_version) -> list[list[Any]]:
    """Each well's group and, in it, each field's image group and empty (c, z, y, x) array."""
    _, n_fields, n_c, n_z, ny, nx = shape
    fmt = 3 if ngff_version == "0.5" else 2
    step = z_step(z_um)
    bits = (camera or {}).get("bit_depth")
    max_value = 2 ** int(bits) - 1 if bits else (
        np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0)
    array_kwargs = _array_kwargs(fmt, ["c", "z", "y", "x"])
    fields: list[list[Any]] = []
    for w, (well, (r, c)) in enumerate(zip(wells, positions, strict=True)):
        row_group = root.require_group(rows[r])
        well_attrs = {"images": [{"path": str(f), "acquisition": 0} for f in range(n_fields)]}
        if ngff_version == "0.4":
            well_attrs["version"] = "0.4"
        well_group = row_group.create_group(str(c), attributes=wrap_ome({"well": well_attrs}, ngff_version))
        fields.append([])
        for f in range(n_fields):
            attrs = {"multiscales": multiscales(f"{well} field {f}", optics.pixel_size_um, step, ngff_version),
                     "omero": omero(channel_names, max_value)}
            field_group = well_group.create_group(str(f), attributes=wrap_ome(attrs, ngff_version))
            target = field_group.create_array(
                "0", shape=(n_c, n_z, ny, nx), chunks=(1, 1, ny, nx), dtype=dtype,
                fill_value=0, **array_kwargs,
            )
            fields[w].append(target)
    return fields


def _ground_truth_targets(root, gt, shape, wells, channel_names, z_um, fmt: int) -> dict[str, Any]:
    """The ground-truth group's empty arrays: object, in_focus, otf_radial, freq."""
    ny, nx = shape[-2:]
    gt_group = root.create_group(GROUND_TRUTH, attributes={
        "description": "simulation ground truth: object and in-focus image per field, true OTF per depth",
        "wells": wells, "channel_names": channel_names, "z_um": z_um,
    })
    gt_targets: dict[str, Any] = {}
    for key, dims, chunks in (
        ("object", ["well", "field", "c", "y", "x"], (1, 1, 1, ny, nx)),
        ("in_focus", ["well", "field", "c", "y", "x"], (1, 1, 1, ny, nx)),
        ("otf_radial", ["z", "freq"], None),
        ("freq", ["freq"], None),
    ):
        gt_dtype = np.float64 if key in ("otf_radial", "freq") else np.float32
        gt_targets[key] = gt_group.create_array(
            key, shape=tuple(gt[key]), chunks=chunks or tuple(gt[key]), dtype=gt_dtype,
            fill_value=0, attributes={"_ARRAY_DIMENSIONS": dims} if fmt == 2 else None,
            **_array_kwargs(fmt, dims),
        )
    return gt_targets


