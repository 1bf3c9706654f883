"""Converting a scanned folder into an OME-Zarr HCS plate: :func:`ingest`.

The plate's metadata comes from the arguments, then the preset, then the
optics; the files are checked (:func:`~plate_refocus.ingest.check_files`),
read lazily (:func:`~plate_refocus.ingest.lazy_planes`) and written plane by
plane by :func:`plate_refocus.plate.write_plate`.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IngestError
from ..optics import Optics
from ..outputs import prepare_output
from ..plate import PLATE_FORMATS
from .scanning import Scan, natural_key, scan
from .templates import Preset, resolve_pattern
from .tiff import check_files, lazy_planes

__all__ = ["ingest"]

log = logging.getLogger(__name__)


def _channel_names(channels: Sequence[str], given: Sequence[str] | Mapping[str, str] | None,
                   preset: Preset | None) -> list[str]:
    if given is None:
        mapping = dict(preset.channel_names) if preset is not None else {}
        names = [mapping.get(c, c) for c in channels]
    elif isinstance(given, Mapping):
        unknown = sorted(set(given) - set(channels), key=natural_key)
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
        File-name template (see the :mod:`plate_refocus.ingest` docstring), e.g.
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
    from .. import plate as _plate

    _check_arguments(out, on_missing, overwrite, focal_plane, optics)
    pixel_size_um = _positive("pixel_size_um", pixel_size_um)
    z_step_um = _positive("z_step_um", z_step_um)
    chosen, _, _ = resolve_pattern(preset, pattern)
    sources = (source,) if isinstance(source, (str, os.PathLike)) else ()
    # Checked before the scan, which can take minutes; removed (if allowed) by write_plate.
    out = prepare_output(out, kind="plate", writer="ingest", inputs=sources, overwrite=overwrite,
                         remove=False)

    found = scan(source, preset=preset, pattern=pattern, plate_format=plate_format, timepoint=timepoint)
    meta = _plate_metadata(found, chosen, optics=optics, pixel_size_um=pixel_size_um, z_step_um=z_step_um,
                           focal_plane=focal_plane, channel_names=channel_names)

    if found.missing:
        summary = found.missing_summary()
        if on_missing == "refuse":
            raise IngestError(
                f"{summary} (under {os.fspath(found.source)!r}); add the files, or pass "
                "on_missing='fill' (--on-missing fill) to write them as zeros marked missing"
            )
        warnings.warn(f"{summary}; written as zeros and listed as missing in the plate metadata",
                      UserWarning, stacklevel=2)

    n_rows, n_cols = PLATE_FORMATS[found.plate_format]
    shape, dtype = check_files(found, client=client)  # before anything is written
    images = lazy_planes(found, shape=shape, dtype=dtype)
    log.info("ingesting %d files from %s into %s: %s", len(found.files), found.source, out,
             dict(zip(("well", "field", "c", "z", "y", "x"), images.shape, strict=True)))
    return _plate.write_plate(
        out, images, list(found.wells), optics=meta.optics, z_um=meta.z_um, channel_names=meta.names,
        plate_rows=n_rows, plate_columns=n_cols, focal_plane=meta.focal_index,
        extra_attrs=_ingest_attrs(found, chosen, meta),
        camera={"bit_depth": chosen.bit_depth} if chosen is not None and chosen.bit_depth else None,
        overwrite=overwrite, inputs=sources, client=client, progress=progress,
    )


def _check_arguments(out: Any, on_missing: Any, overwrite: Any, focal_plane: Any, optics: Any) -> None:
    """The checks of :func:`ingest`'s arguments that need no file."""
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


@dataclass(frozen=True)
class _PlateMetadata:
    """What :func:`ingest` records about the plate beyond its pixels."""

    optics: Optics
    z_step_um: float
    focal_plane: int | None  # the in-focus plane number, as in the file names
    names: list[str]  # channel names, in the order of found.channels
    z_um: list[float]  # per plane
    focal_index: int | None  # the in-focus plane's index on z


def _plate_metadata(
    found: Scan,
    chosen: Preset | None,
    *,
    optics: Optics | None,
    pixel_size_um: float | None,
    z_step_um: float | None,
    focal_plane: int | None,
    channel_names: Sequence[str] | Mapping[str, str] | None,
) -> _PlateMetadata:
    """The plate's metadata: explicit arguments, then the preset's, then the optics'."""
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
    return _PlateMetadata(base, z_step_um, focal_plane, names, z_um.tolist(), focal_index)


def _ingest_attrs(found: Scan, chosen: Preset | None, meta: _PlateMetadata) -> dict[str, Any]:
    """The plate attributes that record the ingest: source, pattern, numbering and missing planes."""
    field_of = {s: i for i, s in enumerate(found.sites)}
    name_of = dict(zip(found.channels, meta.names, strict=True))
    z_of = {p: i for i, p in enumerate(found.planes)}
    return {
        "written_by": "ingest",
        "ingest": {
            "source": os.fspath(found.source.resolve()),
            "pattern": found.pattern,
            "preset": chosen.name if chosen is not None else None,
            "sites": list(found.sites),
            "channels": list(found.channels),
            "planes": list(found.planes),
            "focal_plane_number": meta.focal_plane,
            "z_step_um": meta.z_step_um,
            "timepoint": found.timepoint,
            "missing": [
                {"well": w, "field": field_of[s], "c": name_of[c], "z": z_of[p]}
                for w, s, c, p in found.missing
            ],
        }
    }
