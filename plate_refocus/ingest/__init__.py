"""Turn a folder of TIFFs from a microscope into an OME-Zarr HCS plate.

A screen usually arrives as one TIFF per image plane, with the well, the
site (field), the channel and the z-plane encoded in the folder and file
names. :func:`scan` finds the files with a *file-name template*, works out
the plate (wells, fields, channels, planes) and which planes are missing;
:func:`lazy_planes` turns the files into a dask array
``(well, field, c, z, y, x)`` with one task per plane; :func:`ingest` writes
that array through :func:`plate_refocus.plate.write_plate`, which stores it
plane by plane, so a plate larger than memory converts in bounded memory.

Templates
---------
A template is the path of a file relative to the source folder, with the
parts that vary written as fields in braces::

    BBBC006_v1_images_z_{z}/mcf-z-stacks-03212011_{well}_s{site}_w{channel:\\d}*.tif

``{well}`` (``a01``, ``B3``, ``AF48``) or ``{row}`` and ``{column}`` (row as
letters or a 1-based number) locate the well and are required; ``{site}``,
``{channel}``, ``{z}`` and ``{t}`` are optional (absent: one field, one
channel, one plane, one time point). ``{name:regex}`` gives a field its own
regular expression, ``*`` matches anything within one folder or file name,
and everything else is literal (case-insensitive). The number of ``/`` in
the template says how deep below the source the files are. A compiled
:class:`re.Pattern` with the same named groups may be given instead.

Missing planes are the holes in the grid of wells seen x sites seen x
channels seen x planes from the lowest to the highest plane number seen (a
gap in the plane numbers is a missing plane). They are either written as
zeros and listed in the plate metadata, or refused.

References
----------
.. [1] V. Ljosa, K. L. Sokolnicki and A. E. Carpenter, "Annotated
   high-throughput microscopy image sets for validation", Nature Methods
   9(7):637, 2012 (image set BBBC006v1, Broad Bioimage Benchmark Collection).
"""
from __future__ import annotations

from .convert import ingest
from .scanning import INFERRED_FORMATS, Scan, scan
from .templates import PRESETS, Preset, compile_template, preset_for
from .tiff import check_files, inspect_plane, lazy_planes, read_plane

__all__ = [
    "PRESETS",
    "Preset",
    "Scan",
    "compile_template",
    "preset_for",
    "scan",
    "read_plane",
    "inspect_plane",
    "check_files",
    "lazy_planes",
    "ingest",
    "INFERRED_FORMATS",
]
