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

import logging
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IngestError, PlateNotFoundError
from .optics import Optics
from .outputs import prepare_output
from .plate import PLATE_FORMATS, row_name, well_name

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
]

log = logging.getLogger(__name__)

#: Plate formats (wells) tried, smallest first, when the format is inferred from the wells seen.
INFERRED_FORMATS = (96, 384, 1536)

# Field name -> the regular expression it matches unless the template gives one.
_FIELD_REGEX = {
    "well": r"[A-Za-z]{1,2}\d{1,3}",
    "row": r"[A-Za-z]{1,2}|\d{1,3}",
    "column": r"\d{1,3}",
    "site": r"\d+",
    "channel": r"[^/]+?",
    "z": r"\d+",
    "t": r"\d+",
}
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Preset:
    """A known acquisition layout: its file template and its metadata defaults.

    Parameters
    ----------
    name : str
        The name used as ``preset=`` / ``--preset``.
    template : str
        The file-name template (see the module docstring).
    pixel_size_um : float
        Pixel size at the sample in um.
    z_step_um : float
        Distance between consecutive planes in um.
    focal_plane : int or None
        The plane number (as in the file names) that is in focus.
    channel_names : dict of str to str
        Channel value in the file names -> channel name in the plate.
    bit_depth : int, optional
        The camera's bit depth (the data range of PSNR/SSIM); stored as the
        plate's camera metadata.
    """

    name: str
    template: str
    pixel_size_um: float
    z_step_um: float
    focal_plane: int | None
    channel_names: Mapping[str, str] = field(default_factory=dict)
    bit_depth: int | None = None


#: Known layouts. BBBC006v1 [1]_: one folder per z-plane, 2 um apart, plane 16
#: in focus; 20x objective and 6 um camera pixels, i.e. 0.3 um at the sample;
#: w1 Hoechst 33342 (nuclei), w2 phalloidin (actin). Each file name ends in a
#: uuid that differs between planes, matched by the ``*``.
PRESETS: dict[str, Preset] = {
    "bbbc006": Preset(
        name="bbbc006",
        template=r"BBBC006_v1_images_z_{z}/mcf-z-stacks-*_{well}_s{site}_w{channel:\d}*.tif",
        pixel_size_um=0.3,
        z_step_um=2.0,
        focal_plane=16,
        channel_names={"1": "Hoechst", "2": "phalloidin"},
        bit_depth=12,
    ),
}


# --- templates ----------------------------------------------------------------------------------


def compile_template(template: str) -> re.Pattern[str]:
    """Compile a file-name template into a regular expression.

    Parameters
    ----------
    template : str
        Path relative to the source folder with ``{field}`` or
        ``{field:regex}`` placeholders and ``*`` wildcards (see the module
        docstring).

    Returns
    -------
    re.Pattern
        Case-insensitive, to be used with ``fullmatch`` on the relative
        POSIX path; one named group per field.

    Raises
    ------
    ValueError
        For an unknown or repeated field, unbalanced braces, an invalid
        regex, or a template that locates no well.
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__} {template!r}")
    parts: list[str] = []
    seen: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char == "*":
            parts.append(r"[^/]*?")
            i += 1
        elif char == "{":
            depth, j = 1, i + 1
            while j < len(template) and depth:
                depth += {"{": 1, "}": -1}.get(template[j], 0)
                j += 1
            if depth:
                raise ValueError(f"unbalanced '{{' at position {i} in template {template!r}")
            name, _, regex = template[i + 1 : j - 1].partition(":")
            if name not in _FIELD_REGEX:
                raise ValueError(
                    f"unknown field {{{name}}} in template {template!r}; "
                    f"known fields are {', '.join('{' + f + '}' for f in _FIELD_REGEX)}"
                )
            if name in seen:
                raise ValueError(f"field {{{name}}} appears twice in template {template!r}")
            seen.append(name)
            parts.append(f"(?P<{name}>{regex or _FIELD_REGEX[name]})")
            i = j
        elif char == "}":
            raise ValueError(f"unbalanced '}}' at position {i} in template {template!r}")
        else:
            parts.append(re.escape(char))
            i += 1
    try:
        regex = re.compile("".join(parts), re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"template {template!r} has an invalid regular expression: {error}") from None
    _check_groups(regex, template)
    return regex


def _check_groups(regex: re.Pattern[str], shown: Any) -> None:
    groups = set(regex.groupindex)
    unknown = groups - set(_FIELD_REGEX)
    if unknown:
        raise ValueError(
            f"pattern {shown!r} has unknown named groups {sorted(unknown)}; "
            f"known are {sorted(_FIELD_REGEX)}"
        )
    if "well" in groups and groups & {"row", "column"}:
        raise ValueError(f"pattern {shown!r} gives both {{well}} and {{row}}/{{column}}; use one")
    if "well" not in groups and not {"row", "column"} <= groups:
        raise ValueError(
            f"pattern {shown!r} does not locate the well: it needs {{well}} (like 'a01') "
            "or both {row} and {column}"
        )


# --- wells --------------------------------------------------------------------------------------


def _row_number(text: str) -> int:
    """'A' -> 1, 'P' -> 16, 'AA' -> 27 (1536-well plates), '3' -> 3."""
    if text.isdigit():
        return int(text)
    text = text.upper()
    if len(text) == 1:
        return ord(text) - ord("A") + 1
    return 26 * (ord(text[0]) - ord("A") + 1) + ord(text[1]) - ord("A") + 1


def _natural_key(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text))


def _ranges(values: Sequence[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    out: list[str] = []
    values = sorted(values)
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(out)


# --- scanning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """What a source folder holds, as found by :func:`scan` (no pixels read).

    Attributes
    ----------
    source : Path
        The folder scanned.
    pattern : str
        The template (or regex) used.
    wells : tuple of str
        Wells seen, row-major (``"A01"``).
    sites : tuple of int
        Site numbers seen, ascending; field ``i`` of the plate is ``sites[i]``.
    channels : tuple of str
        Channel values seen in the file names, in natural order.
    planes : tuple of int
        Plane numbers from the lowest to the highest seen, ascending; plane
        ``i`` of the plate is ``planes[i]``.
    plate_format : int
        Wells on the plate (96, 384, 1536, ...).
    files : dict
        ``(well, site, channel, plane) -> Path`` of every file found.
    missing : tuple of tuple
        ``(well, site, channel, plane)`` of every plane with no file.
    unmatched : tuple of str
        TIFF files at the template's depth that the template does not match.
    timepoint : int or None
        The time point kept when the template has ``{t}``.
    """

    source: Path
    pattern: str
    wells: tuple[str, ...]
    sites: tuple[int, ...]
    channels: tuple[str, ...]
    planes: tuple[int, ...]
    plate_format: int
    files: dict[tuple[str, int, str, int], Path]
    missing: tuple[tuple[str, int, str, int], ...]
    unmatched: tuple[str, ...] = ()
    timepoint: int | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(well, field, c, z)``: the plate's grid of planes."""
        return (len(self.wells), len(self.sites), len(self.channels), len(self.planes))

    def paths(self) -> np.ndarray:
        """The files as a ``(well, field, c, z)`` object array of str, None where missing."""
        out = np.full(self.shape, None, dtype=object)
        index = [
            {v: i for i, v in enumerate(values)}
            for values in (self.wells, self.sites, self.channels, self.planes)
        ]
        for key, path in self.files.items():
            out[tuple(ix[k] for ix, k in zip(index, key, strict=True))] = os.fspath(path)
        return out

    def missing_summary(self, *, limit: int = 12) -> str:
        """The missing planes in one line: which wells, sites, channels and planes."""
        if not self.missing:
            return "no planes missing"
        total = int(np.prod(self.shape))
        lines: list[str] = []
        missing = set(self.missing)
        # planes missing everywhere
        everywhere = [
            z for z in self.planes
            if all((w, s, c, z) in missing for w in self.wells for s in self.sites for c in self.channels)
        ]
        if everywhere:
            lines.append(f"plane {_ranges(everywhere)} missing in every well")
        rest = [z for z in self.planes if z not in everywhere]
        keep = set(rest)
        order = {w: i for i, w in enumerate(self.wells)}
        by_field: dict[tuple[str, int], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for w, s, c, z in sorted(missing, key=lambda k: (order[k[0]], k[1], _natural_key(k[2]), k[3])):
            if z in keep:
                by_field[w, s][c].append(z)
        for (w, s), channels in by_field.items():
            if len(channels) == len(self.channels) and all(len(v) == len(rest) for v in channels.values()):
                lines.append(f"well {w} site {s}: no files")
                continue
            for c, zs in channels.items():
                what = "all planes" if len(zs) == len(rest) else f"plane {_ranges(zs)}"
                lines.append(f"well {w} site {s} channel {c}: {what}")
        shown = "; ".join(lines[:limit])
        if len(lines) > limit:
            shown += f"; ... and {len(lines) - limit} more"
        return f"{len(self.missing)} of {total} planes missing: {shown}"


def _resolve_pattern(preset: str | None, pattern: str | re.Pattern[str] | None) -> tuple[Preset | None, re.Pattern[str], str]:
    if preset is not None and not isinstance(preset, str):
        raise TypeError(f"preset must be a str or None, got {preset!r}")
    if preset is not None and preset.lower() not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets are {sorted(PRESETS)}")
    chosen = PRESETS[preset.lower()] if preset is not None else None
    if pattern is None and chosen is None:
        chosen = PRESETS["bbbc006"]
    if pattern is None:
        assert chosen is not None
        return chosen, compile_template(chosen.template), chosen.template
    if isinstance(pattern, re.Pattern):
        _check_groups(pattern, pattern.pattern)
        return chosen, pattern, pattern.pattern
    if isinstance(pattern, str):
        return chosen, compile_template(pattern), pattern
    raise TypeError(f"pattern must be a str template or a re.Pattern, got {pattern!r}")


def _depth(regex: re.Pattern[str]) -> int:
    """How many folders below the source a pattern's files are: its '/' outside [...] sets."""
    return re.sub(r"\[(?:\\.|[^\]])*\]", "", regex.pattern).count("/")


def preset_for(preset: str | None, pattern: str | re.Pattern[str] | None) -> Preset | None:
    """The preset whose metadata defaults apply: ``preset``, or BBBC006 when neither is given."""
    return _resolve_pattern(preset, pattern)[0]


def _files_at_depth(source: Path, depth: int) -> list[str]:
    """Relative POSIX paths of the files exactly ``depth`` folders below ``source``."""
    found: list[str] = []
    level = [""]
    for d in range(depth + 1):
        nxt: list[str] = []
        for rel in level:
            with os.scandir(source / rel) as entries:
                for entry in entries:
                    name = f"{rel}/{entry.name}" if rel else entry.name
                    if d < depth and entry.is_dir():
                        nxt.append(name)
                    elif d == depth and entry.is_file():
                        found.append(name)
        level = nxt
    return sorted(found)


def _infer_plate_format(rows: set[int], columns: set[int], given: int | None, pattern: str) -> int:
    if given is not None:
        if given not in PLATE_FORMATS:
            raise ValueError(f"plate_format must be one of {sorted(PLATE_FORMATS)}, got {given!r}")
        n_rows, n_cols = PLATE_FORMATS[given]
        outside = sorted(
            well_name(r - 1, c) for r in rows for c in columns if r > n_rows or c > n_cols
        )
        if max(rows) > n_rows or max(columns) > n_cols:
            raise IngestError(
                f"wells beyond a {given}-well plate ({n_rows} rows x {n_cols} columns) were found "
                f"(highest row {row_name(max(rows) - 1)}, highest column {max(columns)}, e.g. "
                f"{outside[:3]}); pass plate_format=None to infer it or a larger format"
            )
        return given
    for fmt in INFERRED_FORMATS:
        n_rows, n_cols = PLATE_FORMATS[fmt]
        if max(rows) <= n_rows and max(columns) <= n_cols:
            return fmt
    raise IngestError(
        f"wells up to row {max(rows)} and column {max(columns)} fit no plate format "
        f"{list(INFERRED_FORMATS)}; check the {{well}}/{{row}}/{{column}} fields of pattern {pattern!r}"
    )


def scan(
    source: str | os.PathLike[str],
    *,
    preset: str | None = None,
    pattern: str | re.Pattern[str] | None = None,
    plate_format: int | None = None,
    timepoint: int | None = None,
) -> Scan:
    """Find the TIFF files of a plate and work out its layout; reads no pixels.

    Parameters
    ----------
    source : path
        Folder holding the acquisition.
    preset : str, optional
        A known layout from :data:`PRESETS` (``"bbbc006"``). When neither
        ``preset`` nor ``pattern`` is given, ``"bbbc006"`` is used.
    pattern : str or re.Pattern, optional
        The file-name template (see the module docstring); overrides the
        preset's.
    plate_format : int, optional
        Wells on the plate, one of :data:`plate_refocus.plate.PLATE_FORMATS`
        (6 to 1536). Inferred as the smallest of 96, 384 and 1536 that holds
        every well seen.
    timepoint : int, optional
        With a ``{t}`` field: the time point to keep; required when several
        are found.

    Returns
    -------
    Scan

    Raises
    ------
    PlateNotFoundError
        ``source`` is not a folder.
    IngestError
        No file matches, two files claim the same plane, or the wells fit no
        plate format.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, got {source!r}")
    if plate_format is not None and plate_format not in PLATE_FORMATS:
        raise ValueError(f"plate_format must be one of {sorted(PLATE_FORMATS)} or None, got {plate_format!r}")
    if timepoint is not None and (not isinstance(timepoint, int) or isinstance(timepoint, bool)):
        raise TypeError(f"timepoint must be an int or None, got {timepoint!r}")
    _, regex, shown = _resolve_pattern(preset, pattern)
    source = Path(source)
    if not source.is_dir():
        raise PlateNotFoundError(f"source folder {os.fspath(source)!r} does not exist or is not a folder")

    depth = _depth(regex)
    candidates = _files_at_depth(source, depth)
    matches: dict[tuple[str, int, str, int, int | None], Path] = {}
    unmatched: list[str] = []
    for rel in candidates:
        m = regex.fullmatch(rel)
        if m is None:
            if rel.lower().endswith(_TIFF_SUFFIXES):
                unmatched.append(rel)
            continue
        g = m.groupdict()
        if "well" in g:
            wm = re.fullmatch(r"([A-Za-z]{1,2})(\d{1,3})", g["well"])
            if wm is None:
                raise IngestError(
                    f"{rel!r}: well {g['well']!r} is not a row letter and a column number like 'a01'; "
                    "give the {well} field its own regex or use {row} and {column}"
                )
            row, column = _row_number(wm[1]), int(wm[2])
        else:
            row, column = _row_number(g["row"]), int(g["column"])
        if row < 1 or column < 1:
            raise IngestError(f"{rel!r}: row {row} / column {column} must be 1-based")
        key = (
            well_name(row - 1, column),
            int(g["site"]) if g.get("site") is not None else 1,
            g["channel"] if g.get("channel") is not None else "0",
            int(g["z"]) if g.get("z") is not None else 0,
            int(g["t"]) if g.get("t") is not None else None,
        )
        if key in matches:
            raise IngestError(
                f"two files for well {key[0]} site {key[1]} channel {key[2]} plane {key[3]}: "
                f"{os.fspath(matches[key])!r} and {os.fspath(source / rel)!r}; "
                "make the pattern tell them apart or remove one"
            )
        matches[key] = source / rel

    if not matches:
        seen = [c for c in candidates if c.lower().endswith(_TIFF_SUFFIXES)][:3] or candidates[:3]
        raise IngestError(
            f"no file {depth} folder(s) below {os.fspath(source)!r} matches pattern {shown!r}"
            + (f"; files there look like {seen}" if seen else "; there are no files at that depth")
            + "; pass pattern= (--pattern) with the layout of your file names"
        )

    times = sorted({k[4] for k in matches if k[4] is not None})
    if times:
        if timepoint is None and len(times) > 1:
            raise IngestError(
                f"{len(times)} time points found ({_ranges(times)}); pass timepoint= to pick one"
            )
        keep = times[0] if timepoint is None else timepoint
        if keep not in times:
            raise IngestError(f"timepoint {timepoint!r} not found; time points are {_ranges(times)}")
        matches = {k: v for k, v in matches.items() if k[4] == keep}
    else:
        keep = None
        if timepoint is not None:
            raise ValueError(f"timepoint={timepoint!r} given but pattern {shown!r} has no {{t}} field")
    files = {k[:4]: v for k, v in matches.items()}

    rows = {_row_number(re.match(r"[A-Z]+", w)[0]) for w, *_ in files}
    columns = {int(re.search(r"\d+$", w)[0]) for w, *_ in files}
    fmt = _infer_plate_format(rows, columns, plate_format, shown)
    wells = tuple(sorted({k[0] for k in files}, key=lambda w: (len(w.rstrip("0123456789")), w)))
    sites = tuple(sorted({k[1] for k in files}))
    channels = tuple(sorted({k[2] for k in files}, key=_natural_key))
    found_planes = {k[3] for k in files}
    planes = tuple(range(min(found_planes), max(found_planes) + 1))
    missing = tuple(
        (w, s, c, z)
        for w in wells for s in sites for c in channels for z in planes
        if (w, s, c, z) not in files
    )
    if unmatched:
        log.warning(
            "%d TIFF file(s) under %s do not match pattern %r and are ignored, e.g. %s",
            len(unmatched), source, shown, unmatched[:3],
        )
    return Scan(
        source=source, pattern=shown, wells=wells, sites=sites, channels=channels, planes=planes,
        plate_format=fmt, files=files, missing=missing, unmatched=tuple(unmatched), timepoint=keep,
    )


# --- reading ------------------------------------------------------------------------------------


_FIX = "replace or remove it (with on_missing='fill' a removed file is written as zeros)"


class _BadFile(Exception):
    """Why one file cannot be used (wrapped into an IngestError that names the file)."""


def _as_plane_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    squeezed = tuple(n for n in shape if n != 1) if len(shape) > 2 else tuple(shape)
    if len(squeezed) < 2 and len(shape) >= 2:
        squeezed = tuple(shape[-2:])
    if len(squeezed) != 2:
        raise _BadFile(f"holds an array of shape {tuple(shape)}, not one 2-D plane "
                       "(ingest reads one plane per file)")
    return squeezed  # type: ignore[return-value]


def _check_plane(got_shape: tuple[int, int], got_dtype: np.dtype, shape: Any, dtype: Any) -> None:
    if shape is not None and got_shape != tuple(shape):
        raise _BadFile(f"has shape {got_shape}, but the plate's planes are {tuple(shape)} "
                       "(every file of a plate must have the same size)")
    if dtype is not None and got_dtype != np.dtype(dtype):
        raise _BadFile(f"has dtype {got_dtype}, but the plate's planes are {np.dtype(dtype)} "
                       "(every file of a plate must have the same pixel type)")


def _inspect(name: str) -> tuple[tuple[int, int], np.dtype]:
    """Shape and dtype from the TIFF header, and a check that the pixel data is all there."""
    import tifffile

    try:
        with tifffile.TiffFile(name) as tif:
            series = tif.series[0]
            shape, dtype = tuple(series.shape), np.dtype(series.dtype)
            size = tif.filehandle.size
            for page in tif.pages:
                ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
                if ends and max(ends) > size:
                    raise _BadFile(f"is truncated: its pixel data ends at byte {max(ends)} but the "
                                   f"file has {size} bytes")
    except _BadFile:
        raise
    except Exception as error:  # tifffile raises many kinds; say which file
        raise _BadFile(f"cannot be read: {type(error).__name__}: {error}") from error
    return _as_plane_shape(shape), dtype


def inspect_plane(path: str | os.PathLike[str], *, shape: tuple[int, int] | None = None,
                  dtype: Any = None) -> tuple[tuple[int, int], np.dtype]:
    """Check one TIFF plane from its header, without decoding the pixels.

    Parameters
    ----------
    path : path
        A TIFF file holding one 2-D image.
    shape : (2,) tuple of int, optional
        The ``(Y, X)`` shape every plane of the plate must have.
    dtype : dtype, optional
        The dtype every plane of the plate must have.

    Returns
    -------
    shape : (2,) tuple of int
    dtype : numpy.dtype

    Raises
    ------
    IngestError
        The file is not a TIFF, is truncated, is not one 2-D plane, or has
        another shape or dtype than expected; the message names the file.
    """
    name = os.fspath(path)
    try:
        found = _inspect(name)
        _check_plane(*found, shape, dtype)
    except _BadFile as error:
        raise IngestError(f"TIFF {name!r} {error}; {_FIX}") from error
    return found


def read_plane(path: str | os.PathLike[str], *, shape: tuple[int, int] | None = None,
               dtype: Any = None) -> np.ndarray:
    """Read one TIFF plane, checking it is the plane expected.

    Parameters
    ----------
    path : path
        A TIFF file holding one 2-D image (any compression tifffile and
        imagecodecs read: LZW, deflate, zstd, ...).
    shape : (2,) tuple of int, optional
        The ``(Y, X)`` shape every plane of the plate must have.
    dtype : dtype, optional
        The dtype every plane of the plate must have.

    Returns
    -------
    (Y, X) ndarray

    Raises
    ------
    IngestError
        The file cannot be read, is not a single 2-D plane, or has another
        shape or dtype than expected; the message names the file.
    """
    import tifffile

    name = os.fspath(path)
    try:
        try:
            with tifffile.TiffFile(name) as tif:
                data = tif.asarray(maxworkers=1)  # Dask parallelises over planes
        except Exception as error:  # tifffile and the codecs raise many kinds; say which file
            raise _BadFile(f"cannot be read: {type(error).__name__}: {error}") from error
        data = data.reshape(_as_plane_shape(data.shape))
        _check_plane(data.shape, data.dtype, shape, dtype)
    except _BadFile as error:
        raise IngestError(f"TIFF {name!r} {error}; {_FIX}") from error
    return data


def _inspect_batch(names: list[str]) -> list[tuple[str, Any]]:
    """Chunk function of :func:`check_files`: (name, (shape, dtype) or the reason it is bad)."""
    out: list[tuple[str, Any]] = []
    for name in names:
        try:
            out.append((name, _inspect(name)))
        except _BadFile as error:
            out.append((name, str(error)))
    return out


def check_files(found: Scan, *, client: Any = None, batch: int = 256,
                limit: int = 5) -> tuple[tuple[int, int], np.dtype]:
    """Check every file's header before anything is written, in parallel on Dask.

    Parameters
    ----------
    found : Scan
        From :func:`scan`.
    client : distributed.Client, optional
        Where to run; default: the current Dask scheduler.
    batch : int
        Files per task.
    limit : int
        Bad files named in the error (all are counted).

    Returns
    -------
    shape : (2,) tuple of int
        The plate's ``(Y, X)``: that of most files.
    dtype : numpy.dtype

    Raises
    ------
    IngestError
        Listing the files that cannot be read, are truncated, or differ from
        the others in shape or dtype.
    """
    import dask

    if not isinstance(found, Scan):
        raise TypeError(f"found must be a Scan from plate_refocus.ingest.scan, got {found!r}")
    names = sorted(os.fspath(p) for p in found.files.values())
    tasks = [dask.delayed(_inspect_batch, pure=True)(names[i : i + batch])
             for i in range(0, len(names), batch)]
    results = [r for part in dask.compute(*tasks, scheduler=client) for r in part]
    kinds: dict[tuple, int] = defaultdict(int)
    for _, result in results:
        if not isinstance(result, str):
            kinds[result[0], result[1].str] += 1
    bad = [(name, result) for name, result in results if isinstance(result, str)]
    shape, dtype = (None, None)
    if kinds:
        shape, dtype_str = max(kinds, key=kinds.__getitem__)
        dtype = np.dtype(dtype_str)
        for name, result in results:
            if not isinstance(result, str):
                try:
                    _check_plane(*result, shape, dtype)
                except _BadFile as error:
                    bad.append((name, str(error)))
    if bad:
        bad.sort()
        shown = "; ".join(f"{name!r} {why}" for name, why in bad[:limit])
        more = f"; ... and {len(bad) - limit} more" if len(bad) > limit else ""
        raise IngestError(
            f"{len(bad)} of {len(names)} TIFF files cannot be used: {shown}{more}; replace or "
            "remove them (with on_missing='fill' removed files are written as zeros)"
        )
    return shape, dtype


def _read_block(paths: np.ndarray, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    """Chunk function: a (1, 1, 1, 1) block of paths -> (1, 1, 1, 1, Y, X) pixels."""
    (path,) = paths.ravel()
    if path is None:
        plane = np.zeros(shape, dtype=dtype)
    else:
        plane = read_plane(path, shape=shape, dtype=dtype)
    return plane[None, None, None, None]


def lazy_planes(found: Scan, *, shape: tuple[int, int] | None = None, dtype: Any = None):
    """The plate's pixels as a lazy dask array, one task per TIFF plane.

    Parameters
    ----------
    found : Scan
        From :func:`scan`.
    shape, dtype : optional
        ``(Y, X)`` and dtype of the planes (from :func:`check_files`); read
        from the first file's header when not given.

    Returns
    -------
    (well, field, c, z, y, x) dask.array.Array
        Chunks of one plane; missing planes read as zeros. Reading a file
        that is unreadable or of another shape/dtype raises
        :class:`~plate_refocus.errors.IngestError` naming it.
    """
    import dask.array as da
    from dask.base import tokenize

    if not isinstance(found, Scan):
        raise TypeError(f"found must be a Scan from plate_refocus.ingest.scan, got {found!r}")
    paths = found.paths()
    if shape is None or dtype is None:
        first = next(p for p in paths.flat if p is not None)
        probe_shape, probe_dtype = inspect_plane(first)
        shape = probe_shape if shape is None else tuple(shape)
        dtype = probe_dtype if dtype is None else dtype
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    token = tokenize(paths.tolist(), shape, dtype.str)
    blocks = da.from_array(paths, chunks=1, name=f"ingest-paths-{token}", asarray=False)
    return blocks.map_blocks(
        _read_block,
        shape,
        dtype,
        new_axis=[4, 5],
        chunks=(1, 1, 1, 1, *shape),
        dtype=dtype,
        meta=np.empty((0,) * 6, dtype=dtype),
        name=f"ingest-read-{token}",
    )


# --- writing ------------------------------------------------------------------------------------


def _channel_names(channels: Sequence[str], given: Sequence[str] | Mapping[str, str] | None,
                   preset: Preset | None) -> list[str]:
    if given is None:
        mapping = dict(preset.channel_names) if preset is not None else {}
        names = [mapping.get(c, c) for c in channels]
    elif isinstance(given, Mapping):
        unknown = sorted(set(given) - set(channels), key=_natural_key)
        if unknown:
            raise IngestError(
                f"channel_names has channels {unknown} that are not in the files; "
                f"the channels found are {list(channels)}"
            )
        names = [str(given.get(c, c)) for c in channels]
    elif isinstance(given, Sequence) and not isinstance(given, str):
        if len(given) != len(channels):
            raise IngestError(
                f"channel_names has {len(given)} names {list(given)!r} for {len(channels)} "
                f"channels found {list(channels)}; give one name per channel, in that order"
            )
        names = [str(n) for n in given]
    else:
        raise TypeError(f"channel_names must be a sequence or a mapping of str, got {given!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"channel names must be unique, got {names!r}")
    return names


def _positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


def ingest(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    preset: str | None = None,
    pattern: str | re.Pattern[str] | None = None,
    plate_format: int | None = None,
    pixel_size_um: float | None = None,
    z_step_um: float | None = None,
    focal_plane: int | None = None,
    channel_names: Sequence[str] | Mapping[str, str] | None = None,
    optics: Optics | None = None,
    timepoint: int | None = None,
    on_missing: str = "fill",
    overwrite: bool = False,
    client: Any = None,
    progress: bool = False,
) -> Path:
    """Convert a folder of TIFF planes into an OME-Zarr HCS plate, streaming.

    Parameters
    ----------
    source : path
        Folder holding the acquisition (read only).
    out : path
        The plate to write (``.zarr``).
    preset : str, optional
        A known layout from :data:`PRESETS`; its template and metadata are
        the defaults. When neither ``preset`` nor ``pattern`` is given,
        ``"bbbc006"``.
    pattern : str or re.Pattern, optional
        File-name template (see the module docstring), e.g.
        ``"r{row}c{column}f{site}p{z}-ch{channel}sk1fk1fl1.tiff"``.
    plate_format : int, optional
        Wells on the plate (96, 384, 1536, ...); inferred from the wells
        seen when not given (the smallest of 96, 384, 1536 that fits).
    pixel_size_um : float, optional
        Pixel size at the sample in um; default ``optics``'s when given,
        else the preset's, else required.
    z_step_um : float, optional
        Distance between planes in um (preset's, else required when there
        is more than one plane).
    focal_plane : int, optional
        The in-focus plane number as in the file names (BBBC006: 16). The
        plate's ``z_um`` is then ``(plane - focal_plane) * z_step_um``, the
        defocus distance; without it, ``plane * z_step_um``.
    channel_names : sequence of str or mapping, optional
        Names for the channels found (in natural order), or a mapping from
        the channel value in the file names to a name (BBBC006 preset:
        ``{"1": "Hoechst", "2": "phalloidin"}``).
    optics : Optics, optional
        NA, wavelength and immersion index (default :class:`Optics`);
        ``pixel_size_um`` overrides its pixel size.
    timepoint : int, optional
        With a ``{t}`` field: the time point to keep.
    on_missing : {"fill", "refuse"}
        ``"fill"``: write missing planes as zeros, list them in the plate's
        metadata and warn; ``"refuse"``: raise, listing them.
    overwrite : bool
        Replace an existing ``out``.
    client : distributed.Client, optional
        Run on this cluster; default: Dask's current scheduler.
    progress : bool
        Show a progress bar while writing.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    IngestError
        Missing planes with ``on_missing="refuse"``, unreadable, truncated
        or mismatched files (all checked from their headers, and named,
        before anything is written), or a layout no plate can hold. A file
        whose compressed data is corrupt is found only when it is decoded,
        during writing; the error names it and the partial plate is removed.
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    PlateNotFoundError
        ``source`` is not a folder.

    Notes
    -----
    Every file's header is checked first (in parallel, no decoding). Then the
    files are read lazily, one Dask task per plane, and written plane by
    plane into arrays created up front by
    :func:`plate_refocus.plate.write_plate`, so memory use is bounded by a
    few planes per worker thread, not by the plate.
    """
    from . import plate as _plate

    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path, got {out!r}")
    if on_missing not in ("fill", "refuse"):
        raise ValueError(f"on_missing must be 'fill' or 'refuse', got {on_missing!r}")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
    if focal_plane is not None and (not isinstance(focal_plane, int) or isinstance(focal_plane, bool)):
        raise TypeError(f"focal_plane must be an int plane number or None, got {focal_plane!r}")
    if optics is not None and not isinstance(optics, Optics):
        raise TypeError(f"optics must be a plate_refocus.Optics, got {optics!r}")
    pixel_size_um = _positive("pixel_size_um", pixel_size_um)
    z_step_um = _positive("z_step_um", z_step_um)
    chosen, _, _ = _resolve_pattern(preset, pattern)
    sources = (source,) if isinstance(source, (str, os.PathLike)) else ()
    # Checked before the scan, which can take minutes; removed (if allowed) by write_plate.
    out = prepare_output(out, kind="plate", writer="ingest", inputs=sources, overwrite=overwrite,
                         remove=False)

    found = scan(source, preset=preset, pattern=pattern, plate_format=plate_format, timepoint=timepoint)

    # metadata: explicit arguments, then the preset's, then the optics'
    if pixel_size_um is None and chosen is not None and optics is None:
        pixel_size_um = chosen.pixel_size_um
    if pixel_size_um is None and optics is None:
        raise IngestError(
            "the pixel size is unknown: pass pixel_size_um= (--pixel-size) in um at the sample "
            "(camera pixel / magnification)"
        )
    base = optics if optics is not None else Optics()
    if pixel_size_um is not None:
        base = Optics(na=base.na, wavelength_um=base.wavelength_um,
                      immersion_index=base.immersion_index, pixel_size_um=pixel_size_um)
    if z_step_um is None and chosen is not None:
        z_step_um = chosen.z_step_um
    if z_step_um is None:
        if len(found.planes) > 1:
            raise IngestError(
                f"{len(found.planes)} planes found but the z step is unknown: pass z_step_um= "
                "(--z-step) in um"
            )
        z_step_um = 1.0
    if focal_plane is None and chosen is not None:
        focal_plane = chosen.focal_plane
    names = _channel_names(found.channels, channel_names, chosen)
    planes = np.asarray(found.planes)
    z_um = (planes - (focal_plane if focal_plane is not None else 0)) * z_step_um
    focal_index = found.planes.index(focal_plane) if focal_plane in found.planes else None

    if found.missing:
        summary = found.missing_summary()
        if on_missing == "refuse":
            raise IngestError(
                f"{summary} (under {os.fspath(found.source)!r}); add the files, or pass "
                "on_missing='fill' (--on-missing fill) to write them as zeros marked missing"
            )
        warnings.warn(f"{summary}; written as zeros and listed as missing in the plate metadata",
                      UserWarning, stacklevel=2)

    field_of = {s: i for i, s in enumerate(found.sites)}
    name_of = dict(zip(found.channels, names, strict=True))
    z_of = {p: i for i, p in enumerate(found.planes)}
    attrs = {
        "written_by": "ingest",
        "ingest": {
            "source": os.fspath(found.source.resolve()),
            "pattern": found.pattern,
            "preset": chosen.name if chosen is not None else None,
            "sites": list(found.sites),
            "channels": list(found.channels),
            "planes": list(found.planes),
            "focal_plane_number": focal_plane,
            "z_step_um": z_step_um,
            "timepoint": found.timepoint,
            "missing": [
                {"well": w, "field": field_of[s], "c": name_of[c], "z": z_of[p]}
                for w, s, c, p in found.missing
            ],
        }
    }
    n_rows, n_cols = PLATE_FORMATS[found.plate_format]
    shape, dtype = check_files(found, client=client)  # before anything is written
    images = lazy_planes(found, shape=shape, dtype=dtype)
    log.info("ingesting %d files from %s into %s: %s", len(found.files), found.source, out,
             dict(zip(("well", "field", "c", "z", "y", "x"), images.shape, strict=True)))
    return _plate.write_plate(
        out, images, list(found.wells), optics=base, z_um=z_um.tolist(), channel_names=names,
        plate_rows=n_rows, plate_columns=n_cols, focal_plane=focal_index, extra_attrs=attrs,
        camera={"bit_depth": chosen.bit_depth} if chosen is not None and chosen.bit_depth else None,
        overwrite=overwrite, inputs=sources, client=client, progress=progress,
    )
