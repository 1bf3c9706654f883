"""OME-Zarr HCS plates: the only code that knows where a plate's pixels live.

Layout written by :func:`write_plate` (NGFF 0.5 on zarr v3 by default; NGFF
0.4 on zarr v2 with ``ngff_version="0.4"``)::

    plate.zarr/                 plate group: "ome" -> "plate" (every row and column of
                                the physical plate, the acquired wells, field_count),
                                "plate_refocus" -> our metadata (see below)
      A/1/                      well group: "ome" -> "well" -> images [{"path": "0"}, ...]
      A/1/0/                    image group (one field): "ome" -> "multiscales" (one level)
      A/1/0/0                   array (c, z, y, x), one (y, x) plane per chunk
      ground_truth/             optional, ignored by NGFF tools: object, in_focus
                                (well, field, c, y, x), otf_radial (z, freq), freq (freq,)

Axes are ``c, z, y, x`` with units of micrometer; the ``scale`` transform
carries ``(1, dz, dy, dx)``. NGFF can only describe evenly spaced planes, so
when the depths are not evenly spaced (the report's 0, 2, ..., 10, 15, ...,
40 um) the scale holds the *smallest* step and the exact positions are in
``plate_refocus.z_um``; the reader uses the exact positions when they are
there. Our own metadata, under the ``"plate_refocus"`` attribute key of the
plate group: ``optics`` (:meth:`Optics.to_dict`), ``camera`` (or null),
``focal_plane`` (plane index or null), ``z_um``, ``channel_names``,
``ground_truth`` (group name or null), ``written_by`` (the command) and
anything passed as ``extra_attrs``.

Modules: :mod:`.names` (plate formats and well names), :mod:`.ngff` (store
conventions), :mod:`.write` (writing), :mod:`.read` (the metadata:
:class:`PlateLayout`, :func:`read_layout`, :func:`read_plate_grid`), :mod:`.pixels`
(:func:`read_plane`, :func:`truth_plane`, the per-process array cache), :mod:`.views`
(lazy: :func:`open_plate`, :func:`open_ground_truth`, :func:`missing_planes`),
:mod:`.info` (summaries), :mod:`.refocused` and :mod:`.refocused_write` (a run's
refocused plate: pyramids, uint16 or float32, shards; read back lazily by
:func:`open_refocused`).
"""

from __future__ import annotations

from .info import format_info, plate_info
from .names import (
    PLATE_FORMATS,
    check_plate_format,
    format_for,
    parse_well,
    plate_axis,
    row_index,
    row_name,
    well_name,
    wells_for,
)
from .ngff import ATTRS_KEY, GROUND_TRUTH, compressor
from .override import override_layout
from .pixels import read_plane, truth_plane
from .read import PlateLayout, data_range, read_layout, read_plate_grid, warn_assumed_optics
from .refocused import (
    MISSING_UINT16,
    RefocusedPlate,
    decode,
    downsample_2x,
    encode,
    level_shapes,
    open_refocused,
    refocused_plate,
)
from .refocused_write import create_refocused_plate, write_field, write_pyramid
from .views import missing_planes, open_ground_truth, open_plate
from .write import PlateTargets, create_plate, write_plate

__all__ = [
    "MISSING_UINT16",
    "RefocusedPlate",
    "create_refocused_plate",
    "decode",
    "downsample_2x",
    "encode",
    "level_shapes",
    "open_refocused",
    "override_layout",
    "refocused_plate",
    "write_field",
    "write_pyramid",
    "ATTRS_KEY",
    "GROUND_TRUTH",
    "PLATE_FORMATS",
    "PlateLayout",
    "PlateTargets",
    "check_plate_format",
    "compressor",
    "create_plate",
    "data_range",
    "format_for",
    "format_info",
    "missing_planes",
    "open_ground_truth",
    "open_plate",
    "parse_well",
    "plate_axis",
    "plate_info",
    "read_layout",
    "read_plane",
    "read_plate_grid",
    "row_index",
    "row_name",
    "truth_plane",
    "warn_assumed_optics",
    "well_name",
    "wells_for",
    "write_plate",
]
