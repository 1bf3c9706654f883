"""Reading and checking TIFF planes: one file, every file of a scan (on Dask), and the lazy plate.

:func:`inspect_plane` checks a file from its header, :func:`read_plane`
reads it, :func:`check_files` checks every file of a :class:`Scan` in
parallel before anything is written, and :func:`lazy_planes` is the plate as
a dask array with one task per plane. Every bad file is named in an
:class:`~plate_refocus.errors.IngestError`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import numpy as np

from ..errors import IngestError
from .scanning import Scan

__all__ = ["inspect_plane", "read_plane", "check_files", "lazy_planes"]


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
