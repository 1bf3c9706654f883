"""What ``plate-refocus info`` says about a plate: a summary from its metadata."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .ngff import bytes_on_disk, local_path, z_step
from .read import read_layout, warn_assumed_optics

__all__ = ["plate_info", "format_info"]


def plate_info(path: str | os.PathLike, *, z_step_um: float | None = None) -> dict[str, Any]:
    """A summary of a plate from its metadata (no pixels are read).

    Returns
    -------
    dict
        ``path``, ``ngff_version``, ``zarr_format``, ``wells`` (count),
        ``well_names``, ``plate_format`` (rows x columns of the physical plate),
        ``fields``, ``channels`` (names), ``planes``, ``z_um``, ``focal_plane``,
        ``shape`` (well, field, c, z, y, x), ``image_shape`` (y, x), ``dtype``,
        ``pixel_size_um``, ``z_step_um`` (smallest step, None for one plane),
        ``bytes_on_disk`` (None for remote stores), ``ground_truth`` (bool),
        ``optics`` (dict) and ``optics_recorded`` (False: defaults assumed).
    """
    layout = read_layout(path, z_step_um=z_step_um)
    warn_assumed_optics(layout)
    local = local_path(os.fspath(path))
    z_um = list(layout.z_um)
    return {
        "path": str(path),
        "ngff_version": layout.ngff_version,
        "zarr_format": layout.zarr_format,
        "wells": layout.n_wells,
        "well_names": list(layout.wells),
        "plate_format": (len(layout.plate_rows), len(layout.plate_columns)),
        "fields": layout.n_fields,
        "channels": list(layout.channels),
        "planes": layout.n_z,
        "z_um": z_um,
        "focal_plane": layout.focal_plane,
        "shape": (layout.n_wells, layout.n_fields, len(layout.channels), layout.n_z, *layout.shape),
        "image_shape": tuple(layout.shape),
        "dtype": layout.dtype,
        "pixel_size_um": layout.optics.pixel_size_um,
        "z_step_um": z_step(z_um) if len(z_um) > 1 else None,
        "bytes_on_disk": bytes_on_disk(local) if local is not None else None,
        "ground_truth": layout.ground_truth,
        "optics": layout.optics.to_dict(),
        "optics_recorded": layout.optics_recorded,
    }


def _format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def format_info(info: Mapping[str, Any]) -> str:
    """The text ``plate-refocus info`` prints for :func:`plate_info`."""
    wells = info["well_names"]
    shown = ", ".join(wells[:8]) + (f", ... ({len(wells)} in all)" if len(wells) > 8 else "")
    rows, columns = info["plate_format"]
    z = ", ".join(f"{v:g}" for v in info["z_um"])
    focal = info["focal_plane"]
    size = info["bytes_on_disk"]
    lines = [
        f"plate        {info['path']} (OME-NGFF {info['ngff_version']}, zarr v{info['zarr_format']})",
        f"plate format {rows * columns}-well ({rows} rows x {columns} columns)",
        f"wells        {info['wells']}: {shown}",
        f"fields       {info['fields']} per well",
        f"channels     {len(info['channels'])}: {', '.join(info['channels'])}",
        f"planes       {info['planes']} at z = {z} um" + (f" (in focus: plane {focal})" if focal is not None else ""),
        f"image        {info['image_shape'][0]} x {info['image_shape'][1]} px, {info['dtype']}",
        f"shape        {info['shape']} (well, field, c, z, y, x)",
        f"pixel size   {info['pixel_size_um']:g} um",
        "z step       " + ("-" if info["z_step_um"] is None else f"{info['z_step_um']:g} um"
                          + ("" if _even(info["z_um"]) else " (smallest; planes unevenly spaced)")),
        "size on disk " + ("unknown (remote store)" if size is None else _format_bytes(size)),
        f"ground truth {'yes' if info['ground_truth'] else 'no'}",
    ]
    return "\n".join(lines)


def _even(z_um: Sequence[float]) -> bool:
    steps = np.diff(np.asarray(z_um, dtype=float))
    return steps.size == 0 or bool(np.allclose(steps, steps[0]))

