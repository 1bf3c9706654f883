"""Per-well and per-field tables of a results dataset, for pandas, Parquet and CSV.

:func:`fields_table` has one row per ``(well, field, depth)``, :func:`wells_table`
one row per ``(well, depth)``; :func:`write_tables` writes both as
``OUT/tables/fields.parquet`` and ``OUT/tables/wells.parquet`` (and ``.csv``
beside them when asked). Every well of the results is in both tables, with a
``status`` column (``done``, ``pending``, ``failed``): the numbers of a well
not done are NaN, and each table's ``attrs`` (kept in the Parquet file, read
back by ``pandas.read_parquet``) say whether the run was ``complete``, so an
interrupted run's tables never look finished. The column schema is the same
for every run: a value the run did not compute (PSNR without ground truth,
the blind estimate before it exists) is NaN, never a missing column.

Only the small variables of the results are read (never the refocused pixels).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FIELD_COLUMNS",
    "WELL_COLUMNS",
    "OUTLIER_Z",
    "MIN_OUTLIER_RATIO",
    "SHARPNESS_DROP",
    "fields_table",
    "wells_table",
    "well_status",
    "write_tables",
]

log = logging.getLogger(__name__)

#: Robust z-score beyond which a field's value is an outlier among the plate's fields at that
#: depth (|x - median| / (1.4826 MAD), Iglewicz & Hoaglin's 3.5).
OUTLIER_Z = 3.5
#: A refocused plane this much less sharp than its input (refocused / input below it) is
#: flagged ``sharpness_drop``; small drops are normal where the input was in focus (the
#: network removes noise and some fine texture).
SHARPNESS_DROP = 0.8
#: ... and a sharpness gain this many times above or below the depth's median: at the focal
#: plane every gain is ~1.0 with a tiny spread, where 1.04 is "3.5 MADs" off and means nothing.
MIN_OUTLIER_RATIO = 1.5
#: Fewest fields at one depth for the outlier flags to be computed.
_MIN_FOR_OUTLIERS = 5

#: Columns of :func:`fields_table`, in order, with what each holds.
FIELD_COLUMNS: dict[str, str] = {
    "well": "well name, e.g. A01",
    "row": "plate row, e.g. A",
    "column": "plate column, 1-based",
    "field": "field (site) index in the well, 0-based",
    "z": "plane index",
    "z_um": "nominal depth of the plane, um",
    "image_path": "the field's image group in the refocused OME-Zarr plate, e.g. A/1/0",
    "status": "the well's status: done, pending (not computed yet) or failed",
    "sharpness_input": "no-reference focus measure of the input plane (higher is sharper)",
    "sharpness_refocused": "the same of the refocused plane",
    "sharpness_gain": "sharpness_refocused / sharpness_input",
    "psnr_input": "PSNR of the input against the ground truth, dB (NaN without ground truth)",
    "psnr_refocused": "PSNR of the refocused plane against the ground truth, dB",
    "psnr_gain_db": "psnr_refocused - psnr_input",
    "ssim_input": "SSIM of the input against the ground truth (NaN without ground truth)",
    "ssim_refocused": "SSIM of the refocused plane against the ground truth",
    "ssim_gain": "ssim_refocused - ssim_input",
    "consistency": "how well the refocused plane, re-blurred by the well's OTF, explains the "
                   "input (NaN when the run did not compute it)",
    "plane_flags": "the run's plane_flags bits: 1 missing at ingest, 2 NaN/infinite pixels, "
                   "4 no signal above the noise, 8 no usable reference, 16 restoration inconsistent with the "
                   "plane, left as it is (0 when none)",
    "flags": "';'-separated: missing, no_signal, no_reference, inconsistent, sharpness_drop (gain < 0.8), "
             "sharpness_outlier, consistency_outlier, psnr_drop (empty when none)",
    "flagged": "True when flags is not empty",
}

#: Columns of :func:`wells_table`, in order, with what each holds.
WELL_COLUMNS: dict[str, str] = {
    "well": "well name, e.g. A01",
    "row": "plate row",
    "column": "plate column, 1-based",
    "z": "plane index",
    "z_um": "nominal depth of the plane, um",
    "status": "done, pending (not computed yet) or failed",
    "error": "why the well failed (empty otherwise)",
    "defocus_um": "fitted |defocus| against the reference, um",
    "defocus_err_um": "its uncertainty, um",
    "defocus_blind_um": "blind |defocus| from the pooled power spectra alone, um (NaN when not computed)",
    "defocus_blind_err_um": "its uncertainty, um",
    "fields": "fields measured at this depth",
    "fields_flagged": "of those, fields with a flag in the fields table",
    "sharpness_gain_median": "median over fields of sharpness_refocused / sharpness_input",
    "sharpness_gain_min": "smallest of those ratios",
    "psnr_gain_db": "mean over fields of the PSNR gain, dB (NaN without ground truth)",
    "ssim_gain": "mean over fields of the SSIM gain",
    "consistency_median": "median over fields of consistency (NaN when not computed)",
    "reference": "the sharp reference of the PSF fit (the results' reference attribute)",
    "method": "the refocusing method (the results' method attribute; unet when not recorded)",
}

_FLAGS = ("missing", "no_signal", "no_reference", "inconsistent", "sharpness_drop", "sharpness_outlier",
          "consistency_outlier", "psnr_drop")


def well_status(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    """Status and error message of every well of a results dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        Results with ``well_status`` (well; 0 pending, 1 done, 2 failed, as
        :data:`plate_refocus.results.WELL_DONE` etc.) and ``well_error`` (well).

    Returns
    -------
    status : (well,) ndarray of str
        ``"pending"``, ``"done"`` or ``"failed"`` (``"status N"`` for a code
        this version does not know).
    error : (well,) ndarray of str
        Why a well failed; empty strings when the results carry no ``well_error``.

    Raises
    ------
    NotResultsError
        ``ds`` has no ``well_status``: it is not a results dataset.
    """
    from .errors import NotResultsError
    from .results import WELL_DONE, WELL_FAILED, WELL_PENDING

    if "well_status" not in ds:
        raise NotResultsError(
            "the dataset has no well_status, so it is not the results of 'plate-refocus run'; "
            "open a results store with plate_refocus.open_results"
        )
    names = {WELL_PENDING: "pending", WELL_DONE: "done", WELL_FAILED: "failed"}
    codes = np.asarray(ds["well_status"].values).astype(int)
    status = np.array([names.get(int(c), f"status {int(c)}") for c in codes], dtype=object)
    error = np.full(ds.sizes["well"], "", dtype=object)
    if "well_error" in ds:
        error = np.array(["" if e is None else str(e) for e in np.asarray(ds["well_error"].values)],
                         dtype=object)
    return _text(status), _text(error)


def _text(values: Any) -> np.ndarray:
    """Labels as an object array of Python str (zarr gives NumPy 2 StringDType, which
    ``astype(str)`` cannot size)."""
    return np.array([str(v) for v in np.asarray(values).reshape(-1)], dtype=object).reshape(
        np.shape(values))


def _values(ds: Any, name: str, dims: tuple[str, ...]) -> np.ndarray:
    """``ds[name]`` as float64 in ``dims`` order, or NaN of that shape when the run lacks it."""
    shape = tuple(ds.sizes[d] for d in dims)
    if name not in ds:
        return np.full(shape, np.nan)
    return np.asarray(ds[name].transpose(*dims).values, dtype=np.float64)


def _robust_z(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column (axis 1): ``x - median`` and ``(x - median) / (1.4826 MAD)``.

    Both NaN in a column with fewer than 5 finite values; the z-score NaN where MAD is 0.
    """
    z = np.full(values.shape, np.nan)
    deviation = np.full(values.shape, np.nan)
    for j in range(values.shape[1]):
        column = values[:, j]
        finite = np.isfinite(column)
        if finite.sum() < _MIN_FOR_OUTLIERS:
            continue
        median = np.median(column[finite])
        deviation[:, j] = column - median
        mad = 1.4826 * np.median(np.abs(column[finite] - median))
        if mad > 0:
            z[:, j] = deviation[:, j] / mad
    return deviation, z


def _image_paths(ds: Any) -> np.ndarray:
    rows = [str(r) for r in ds["row"].values]
    columns = [int(c) for c in ds["column"].values]
    fields = [int(f) for f in ds["field"].values]
    return np.array([[f"{r}/{c}/{f}" for f in fields] for r, c in zip(rows, columns, strict=True)],
                    dtype=object)


def _table_attrs(ds: Any, status: np.ndarray, columns: dict[str, str]) -> dict[str, Any]:
    done = int((status == "done").sum())
    failed = int((status == "failed").sum())
    return {
        "complete": bool(done == status.size),
        "wells_total": int(status.size),
        "wells_done": done,
        "wells_failed": failed,
        "source_plate": str(ds.attrs.get("source_plate", "")),
        "reference": str(ds.attrs.get("reference", "")),
        "method": str(ds.attrs.get("method", "unet")),
        "results_created": str(ds.attrs.get("created", "")),
        "columns": dict(columns),
    }


def _done_only(ds: Any, status: np.ndarray, values: np.ndarray) -> np.ndarray:
    """NaN for the wells not done (axis 0 is well): a pending well's zeros are not results."""
    out = np.array(values, dtype=np.float64, copy=True)
    out[status != "done"] = np.nan
    return out


def fields_table(ds: Any):
    """One row per (well, field, depth) of a results dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        Results: ``sharpness`` (well, field, z, stage), ``well_status`` and
        ``well_error`` (well); ``psnr``, ``ssim`` (well, field, z, stage),
        ``plane_flags`` and ``consistency`` (well, field, z) when present.
        Only these small variables are read.

    Returns
    -------
    pandas.DataFrame
        Rows in plate order (row, column), then field, then z. Columns
        (:data:`FIELD_COLUMNS`):

        ======================  ==================================================
        well, row, column       ``"A01"``, ``"A"``, 1
        field, z, z_um          field index, plane index, nominal depth (um)
        image_path              the field in the refocused plate, ``"A/1/0"``
        status                  the well's: done, pending or failed
        sharpness_input         focus measure of the input plane
        sharpness_refocused     the same of the refocused plane
        sharpness_gain          refocused / input
        psnr_input, _refocused  against the ground truth, dB (NaN without it)
        psnr_gain_db            refocused - input
        ssim_input, _refocused  against the ground truth (NaN without it)
        ssim_gain               refocused - input
        consistency             re-blurred output vs input (NaN when not computed)
        plane_flags             the run's bits: 1 missing, 2 NaN pixels, 4 no signal, 8 no reference
        flags                   ``;``-separated flag names, ``""`` when none
        flagged                 ``flags != ""``
        ======================  ==================================================

        Flags (done wells only): ``missing`` (no measurement, or the plane
        missing at ingest or with NaN pixels), ``no_signal`` and
        ``no_reference`` (from ``plane_flags``: left out of the PSF), ``inconsistent`` (from
        ``plane_flags``: the restoration did not explain the plane, left as it is), ``sharpness_drop`` (the refocused plane is less sharp than the
        input by more than :data:`SHARPNESS_DROP`), ``sharpness_outlier`` and ``consistency_outlier`` (robust
        z-score of log sharpness gain, or of consistency, beyond
        :data:`OUTLIER_Z` among the done fields at that depth; needs 5 of
        them; a sharpness gain must also differ from the depth's median by
        :data:`MIN_OUTLIER_RATIO` times), ``psnr_drop`` (PSNR fell, with ground truth). ``attrs`` holds
        ``complete`` (every well done), ``wells_total``, ``wells_done``,
        ``wells_failed``, ``source_plate``, ``reference``, ``method`` and
        ``columns`` (these descriptions).
    """
    import pandas as pd

    from .results import (
        PLANE_INCONSISTENT,
        PLANE_MISSING,
        PLANE_NO_REFERENCE,
        PLANE_NO_SIGNAL,
        PLANE_NONFINITE,
    )

    status, _ = well_status(ds)
    n_w, n_f, n_z = ds.sizes["well"], ds.sizes["field"], ds.sizes["z"]
    dims = ("well", "field", "z", "stage")
    sharp = _done_only(ds, status, _values(ds, "sharpness", dims))
    psnr = _done_only(ds, status, _values(ds, "psnr", dims))
    ssim = _done_only(ds, status, _values(ds, "ssim", dims))
    consistency = _done_only(ds, status, _values(ds, "consistency", ("well", "field", "z")))
    plane_flags = (np.asarray(ds["plane_flags"].transpose("well", "field", "z").values, dtype=np.int64)
                   if "plane_flags" in ds else np.zeros((n_w, n_f, n_z), dtype=np.int64))
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = sharp[..., 1] / sharp[..., 0]
        log_gain = np.log(np.where(gain > 0, gain, np.nan))
    flat = (n_w * n_f, n_z)
    gain_off, gain_z = (a.reshape(gain.shape) for a in _robust_z(log_gain.reshape(flat)))
    _, consistency_z = (a.reshape(gain.shape) for a in _robust_z(consistency.reshape(flat)))
    flags = {
        "missing": ~np.isfinite(sharp).all(axis=-1)
        | ((plane_flags & (PLANE_MISSING | PLANE_NONFINITE)) > 0),
        "no_signal": (plane_flags & PLANE_NO_SIGNAL) > 0,
        "no_reference": (plane_flags & PLANE_NO_REFERENCE) > 0,
        "inconsistent": (plane_flags & PLANE_INCONSISTENT) > 0,
        "sharpness_drop": gain < SHARPNESS_DROP,
        "sharpness_outlier": (np.abs(gain_z) > OUTLIER_Z)
        & (np.abs(gain_off) > np.log(MIN_OUTLIER_RATIO)),
        "consistency_outlier": np.abs(consistency_z) > OUTLIER_Z,
        "psnr_drop": psnr[..., 1] < psnr[..., 0],
    }
    text = np.full(gain.shape, "", dtype=object)
    done = (status == "done")[:, None, None]  # a well not done is told by its status, not flags
    for name in _FLAGS:
        text = np.where(flags[name] & done, np.where(text == "", name, text + ";" + name), text)

    def per_field(values: np.ndarray) -> np.ndarray:
        return np.broadcast_to(values, (n_w, n_f, n_z)).reshape(-1)

    row = _text(ds["row"].values)[:, None, None]
    column = np.asarray(ds["column"].values).astype(np.int64)[:, None, None]
    columns = {
        "well": per_field(_text(ds["well"].values)[:, None, None]),
        "row": per_field(row),
        "column": per_field(column),
        "field": per_field(np.asarray(ds["field"].values).astype(np.int64)[None, :, None]),
        "z": per_field(np.asarray(ds["z"].values).astype(np.int64)[None, None, :]),
        "z_um": per_field(np.asarray(ds["z_um"].values, dtype=np.float64)[None, None, :]),
        "image_path": per_field(_image_paths(ds)[:, :, None]),
        "status": per_field(status[:, None, None]),
        "sharpness_input": sharp[..., 0].reshape(-1),
        "sharpness_refocused": sharp[..., 1].reshape(-1),
        "sharpness_gain": gain.reshape(-1),
        "psnr_input": psnr[..., 0].reshape(-1),
        "psnr_refocused": psnr[..., 1].reshape(-1),
        "psnr_gain_db": (psnr[..., 1] - psnr[..., 0]).reshape(-1),
        "ssim_input": ssim[..., 0].reshape(-1),
        "ssim_refocused": ssim[..., 1].reshape(-1),
        "ssim_gain": (ssim[..., 1] - ssim[..., 0]).reshape(-1),
        "consistency": consistency.reshape(-1),
        "plane_flags": plane_flags.reshape(-1),
        "flags": _text(text.reshape(-1)),
        "flagged": (text != "").reshape(-1),
    }
    table = pd.DataFrame({k: np.asarray(v) for k, v in columns.items()})
    table = _plate_order(table, ["field", "z"])
    table.attrs = _table_attrs(ds, status, FIELD_COLUMNS)
    return table


def _plate_order(table, then: list[str]):
    """Rows sorted as the plate reads: row (A..Z, then AA..), column, then ``then``."""
    keyed = table.assign(_row_length=table["row"].str.len())
    order = keyed.sort_values(["_row_length", "row", "column", *then], kind="stable").index
    return table.loc[order].reset_index(drop=True)


def wells_table(ds: Any, fields: Any = None):
    """One row per (well, depth) of a results dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        Results: ``defocus_um``, ``defocus_err_um`` (well, z), ``well_status``;
        ``defocus_blind_um``, ``defocus_blind_err_um`` (well, z) and the
        variables :func:`fields_table` reads when present.
    fields : pandas.DataFrame, optional
        :func:`fields_table` of ``ds`` when already made (its flags are counted).

    Returns
    -------
    pandas.DataFrame
        Rows in plate order, then z. Columns (:data:`WELL_COLUMNS`):

        =====================  ===================================================
        well, row, column      ``"A01"``, ``"A"``, 1
        z, z_um                plane index, nominal depth (um)
        status, error          done, pending or failed; why it failed
        defocus_um             fitted \\|defocus\\| against the reference (um)
        defocus_err_um         its uncertainty (um)
        defocus_blind_um       blind \\|defocus\\| from power spectra (NaN if absent)
        defocus_blind_err_um   its uncertainty (um)
        fields                 fields measured at this depth
        fields_flagged         of those, flagged in the fields table
        sharpness_gain_median  median over fields of refocused / input sharpness
        sharpness_gain_min     the smallest of those ratios
        psnr_gain_db           mean PSNR gain over fields (NaN without ground truth)
        ssim_gain              mean SSIM gain over fields
        consistency_median     median consistency over fields (NaN if absent)
        reference, method      the results' ``reference`` and ``method`` attributes
        =====================  ===================================================

        A well not done has NaN numbers. ``attrs`` as :func:`fields_table`'s.
    """
    import pandas as pd

    if fields is None:
        fields = fields_table(ds)
    status, error = well_status(ds)
    dims = ("well", "z")
    fit = {name: _done_only(ds, status, _values(ds, name, dims)).reshape(-1)
           for name in ("defocus_um", "defocus_err_um", "defocus_blind_um", "defocus_blind_err_um")}
    measured = fields[fields["status"] == "done"]
    grouped = measured.groupby(["well", "z"], sort=False)
    with np.errstate(all="ignore"):
        summary = grouped.agg(
            fields=("sharpness_gain", lambda s: int(np.isfinite(s).sum())),
            fields_flagged=("flagged", "sum"),
            sharpness_gain_median=("sharpness_gain", "median"),
            sharpness_gain_min=("sharpness_gain", "min"),
            psnr_gain_db=("psnr_gain_db", "mean"),
            ssim_gain=("ssim_gain", "mean"),
            consistency_median=("consistency", "median"),
        )
    n_z = ds.sizes["z"]

    def per_well(values: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(values), n_z)

    table = pd.DataFrame({
        "well": per_well(_text(ds["well"].values)),
        "row": per_well(_text(ds["row"].values)),
        "column": per_well(np.asarray(ds["column"].values).astype(np.int64)),
        "z": np.tile(np.asarray(ds["z"].values).astype(np.int64), ds.sizes["well"]),
        "z_um": np.tile(np.asarray(ds["z_um"].values, dtype=np.float64), ds.sizes["well"]),
        "status": per_well(status),
        "error": per_well(error),
        **fit,
    })
    table = table.join(summary, on=["well", "z"])
    table["fields"] = table["fields"].fillna(0).astype(np.int64)
    table["fields_flagged"] = table["fields_flagged"].fillna(0).astype(np.int64)
    attrs = _table_attrs(ds, status, WELL_COLUMNS)
    table["reference"] = attrs["reference"]
    table["method"] = attrs["method"]
    table = _plate_order(table[list(WELL_COLUMNS)], ["z"])
    table.attrs = attrs
    return table


def write_tables(ds: Any, out_dir: str | os.PathLike, *, csv: bool = False) -> dict[str, Path]:
    """Write ``OUT/tables/wells.parquet`` and ``OUT/tables/fields.parquet`` (and CSV).

    Parameters
    ----------
    ds : xarray.Dataset
        A results dataset (e.g. ``open_results(path)``); only its small
        variables are read.
    out_dir : path
        ``OUT``; the ``tables`` folder is made in it (files of these names are replaced).
    csv : bool
        Also write ``wells.csv`` and ``fields.csv`` (the same columns; CSV
        keeps no ``attrs``: read ``status`` there).

    Returns
    -------
    dict of str to Path
        ``{"wells": ..., "fields": ...}`` (plus ``"wells_csv"``, ``"fields_csv"``).

    Notes
    -----
    The Parquet files keep each table's ``attrs`` (``complete``,
    ``wells_done``, ``wells_total``, ...; ``pandas.read_parquet`` gives them
    back), and the tables of a run not complete are logged as such.
    """
    folder = Path(out_dir) / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    fields = fields_table(ds)
    wells = wells_table(ds, fields)
    attrs = wells.attrs
    if not attrs["complete"]:
        log.warning("tables of an incomplete run: %d of %d wells done (%d failed); rows of the "
                    "others have status pending/failed and NaN numbers",
                    attrs["wells_done"], attrs["wells_total"], attrs["wells_failed"])
    written = {}
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for name, table in (("wells", wells), ("fields", fields)):
        table.attrs = {**table.attrs, "written": stamp}
        path = folder / f"{name}.parquet"
        table.to_parquet(path, index=False)
        written[name] = path
        if csv:
            path = folder / f"{name}.csv"
            table.to_csv(path, index=False)
            written[f"{name}_csv"] = path
    log.info("wrote %s", ", ".join(str(p) for p in written.values()))
    return written

