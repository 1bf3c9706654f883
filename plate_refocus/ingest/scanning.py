"""Scanning a source folder: which TIFF files match a template, and the plate they make.

:func:`scan` lists the files at the template's depth, matches them, keeps
one time point, infers the plate format and returns a :class:`Scan`: the
wells, sites, channels and planes seen, the file of every plane and the
planes missing. No pixel is read.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import IngestError, PlateNotFoundError
from ..plate import PLATE_FORMATS, row_name, well_name
from .templates import resolve_pattern

__all__ = ["Scan", "scan", "natural_key", "INFERRED_FORMATS"]

log = logging.getLogger(__name__)

#: Plate formats (wells) tried, smallest first, when the format is inferred from the wells seen.
INFERRED_FORMATS = (96, 384, 1536)

_TIFF_SUFFIXES = (".tif", ".tiff")


# --- wells --------------------------------------------------------------------------------------


def _row_number(text: str) -> int:
    """'A' -> 1, 'P' -> 16, 'AA' -> 27 (1536-well plates), '3' -> 3."""
    if text.isdigit():
        return int(text)
    text = text.upper()
    if len(text) == 1:
        return ord(text) - ord("A") + 1
    return 26 * (ord(text[0]) - ord("A") + 1) + ord(text[1]) - ord("A") + 1


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers inside a name by value ('w2' before 'w10'), case-insensitive."""
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
        for w, s, c, z in sorted(missing, key=lambda k: (order[k[0]], k[1], natural_key(k[2]), k[3])):
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


def _depth(regex: re.Pattern[str]) -> int:
    """How many folders below the source a pattern's files are: its '/' outside [...] sets."""
    return re.sub(r"\[(?:\\.|[^\]])*\]", "", regex.pattern).count("/")


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
        The file-name template (see the :mod:`plate_refocus.ingest`
        docstring); overrides the preset's.
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
    _, regex, shown = resolve_pattern(preset, pattern)
    source = Path(source)
    if not source.is_dir():
        raise PlateNotFoundError(f"source folder {os.fspath(source)!r} does not exist or is not a folder")

    depth = _depth(regex)
    candidates = _files_at_depth(source, depth)
    matches, unmatched = _match_files(source, candidates, regex)
    if not matches:
        seen = [c for c in candidates if c.lower().endswith(_TIFF_SUFFIXES)][:3] or candidates[:3]
        raise IngestError(
            f"no file {depth} folder(s) below {os.fspath(source)!r} matches pattern {shown!r}"
            + (f"; files there look like {seen}" if seen else "; there are no files at that depth")
            + "; pass pattern= (--pattern) with the layout of your file names"
        )
    files, keep = _one_timepoint(matches, timepoint, shown)

    rows = {_row_number(re.match(r"[A-Z]+", w)[0]) for w, *_ in files}
    columns = {int(re.search(r"\d+$", w)[0]) for w, *_ in files}
    fmt = _infer_plate_format(rows, columns, plate_format, shown)
    wells = tuple(sorted({k[0] for k in files}, key=lambda w: (len(w.rstrip("0123456789")), w)))
    sites = tuple(sorted({k[1] for k in files}))
    channels = tuple(sorted({k[2] for k in files}, key=natural_key))
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


#: A matched file's place: (well, site, channel, plane, time point or None).
_Key = tuple[str, int, str, int, int | None]


def _match_files(
    source: Path, candidates: list[str], regex: re.Pattern[str]
) -> tuple[dict[_Key, Path], list[str]]:
    """The files among `candidates` that `regex` matches, by place, and the TIFFs it does not match."""
    matches: dict[_Key, Path] = {}
    unmatched: list[str] = []
    for rel in candidates:
        m = regex.fullmatch(rel)
        if m is None:
            if rel.lower().endswith(_TIFF_SUFFIXES):
                unmatched.append(rel)
            continue
        key = _file_key(rel, m.groupdict())
        if key in matches:
            raise IngestError(
                f"two files for well {key[0]} site {key[1]} channel {key[2]} plane {key[3]}: "
                f"{os.fspath(matches[key])!r} and {os.fspath(source / rel)!r}; "
                "make the pattern tell them apart or remove one"
            )
        matches[key] = source / rel
    return matches, unmatched


def _file_key(rel: str, g: dict[str, str | None]) -> _Key:
    """The place of the file `rel` from its template fields (absent fields: site 1, channel '0', plane 0)."""
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
    return (
        well_name(row - 1, column),
        int(g["site"]) if g.get("site") is not None else 1,
        g["channel"] if g.get("channel") is not None else "0",
        int(g["z"]) if g.get("z") is not None else 0,
        int(g["t"]) if g.get("t") is not None else None,
    )


def _one_timepoint(
    matches: dict[_Key, Path], timepoint: int | None, shown: str
) -> tuple[dict[tuple[str, int, str, int], Path], int | None]:
    """The files of one time point, keyed (well, site, channel, plane), and that time point (None without ``{t}``)."""
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
    return {k[:4]: v for k, v in matches.items()}, keep
