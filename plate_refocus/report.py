"""What a run found, at a glance: a self-contained HTML report of a results store.

:func:`depth_summary` reduces the small per-well variables (fitted defocus,
sharpness, PSNR/SSIM) to one row per depth; :func:`write_report` writes
``index.html`` (one file: figures embedded as PNG, no network, no scripts
beyond one line that marks the page ready) and ``summary.md``:

- the run's status (complete, or how many wells are done, failed, pending);
- plate heat maps on the physical plate's full layout (every row and column,
  empty wells blank, pending wells hatched, failed wells crossed) of the
  fitted |defocus| per depth and of the sharpness gain per depth;
- per-depth quality curves and the per-depth table;
- one well's recovered OTF profiles with the fit band (where the data carry
  signal) marked, and its PSFs;
- input beside refocused for the most and the least improved fields (against
  the other fields at the same depth) and for flagged fields (the input
  planes from the source plate, opened read-only; the refocused from the
  results);
- the wells table and the flagged fields (:mod:`plate_refocus.tables`).

Only the small variables and the few planes shown are read.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import (
    IncompleteResultsWarning,
    NotResultsError,
    PlateLayoutError,
    PlateRefocusError,
    ResultsIncompleteError,
    ResultsNotFoundError,
)

__all__ = [
    "DepthRow",
    "depth_summary",
    "format_summary",
    "open_for_report",
    "plate_layout",
    "progress_line",
    "write_report",
]

log = logging.getLogger(__name__)

#: Panels of the plate maps, at most: the depths are spread over them evenly.
MAX_MAP_PANELS = 12
#: Planes in each montage (most improved, least improved, flagged).
MONTAGE_PLANES = 4
#: Longest side of a montage tile, px: larger planes are shown 2x-mean downsampled.
MONTAGE_SIZE = 384

# The small variables the report reads (never the refocused pixels).
_SMALL = ("defocus_um", "defocus_err_um", "defocus_blind_um", "defocus_blind_err_um", "sharpness",
          "psnr", "ssim", "consistency", "plane_flags", "otf_radial", "psf", "well_status",
          "well_error")


@dataclass(frozen=True)
class DepthRow:
    """One depth of :func:`depth_summary`, averaged over wells (and fields)."""

    z_um: float
    wells: int  # wells with a fitted defocus at this depth
    defocus_um: float  # mean fitted |defocus| over wells
    defocus_sd_um: float  # its spread over wells
    sharpness_ratio: float  # median of refocused / input sharpness over planes
    psnr_gain_db: float  # mean PSNR(refocused) - PSNR(input); NaN without ground truth
    ssim_gain: float  # mean SSIM(refocused) - SSIM(input); NaN without ground truth


# --- opening and status -------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def open_for_report(results: str | os.PathLike | xr.Dataset) -> xr.Dataset:
    """A results dataset, or an error that says in one line why the path is not one.

    Parameters
    ----------
    results : path or xarray.Dataset
        A results store written by ``plate-refocus run`` (opened without Dask:
        the report reads a few small arrays), or the dataset itself.

    Raises
    ------
    ResultsNotFoundError
        Nothing at the path.
    NotResultsError
        Something that is not a results store (an input plate, another zarr
        store, a folder).
    """
    if isinstance(results, xr.Dataset):
        return results
    if not isinstance(results, (str, os.PathLike)):
        raise TypeError(f"results must be a path or an xarray.Dataset, got {type(results).__name__}")
    path = Path(results)
    if not path.exists():
        raise ResultsNotFoundError(
            f"no results store at {str(path)!r}; give the OUT of 'plate-refocus run PLATE OUT'"
        )
    from .plate.ngff import ome_metadata
    from .results import open_results

    try:
        # No Dask: whatever the calling process's default scheduler is (e.g. a closed client).
        return open_results(path, chunks=None)
    except PlateRefocusError:
        reason = None  # not one of ours: said below, with what it is instead
    except Exception as error:  # noqa: BLE001 - xarray raises many kinds for a broken store
        reason = _one_line(error)
    hint = "give the OUT of 'plate-refocus run PLATE OUT'"
    try:
        import zarr

        ome, _ = ome_metadata(zarr.open_group(str(path), mode="r").attrs.asdict())
        if "plate" in ome:
            hint = (f"it is an OME-Zarr plate: refocus it with 'plate-refocus run {path} OUT', "
                    "then report OUT")
    except Exception:  # noqa: BLE001 - only a better hint is lost
        pass
    raise NotResultsError(
        f"{str(path)!r} is not a results store of plate-refocus run"
        + (f" ({reason})" if reason else "") + f"; {hint}"
    ) from None


def _status(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    from .tables import well_status

    return well_status(ds)


def progress_line(ds: xr.Dataset, name: str = "results") -> str | None:
    """One line saying that a run is not finished, or None when every well is done."""
    status, _ = _status(ds)
    done, failed = int((status == "done").sum()), int((status == "failed").sum())
    if done == status.size:
        return None
    pending = status.size - done - failed
    return (f"{name}: run not finished: {done} of {status.size} wells done, {failed} failed, "
            f"{pending} pending (in progress, or interrupted: finish with "
            f"'plate-refocus run PLATE OUT --resume')")


# --- the per-depth summary ----------------------------------------------------------------------


def _gain(ds: xr.Dataset, name: str) -> np.ndarray:
    """Mean over wells and fields of ``refocused - input`` per depth (NaN when absent)."""
    if name not in ds:
        return np.full(ds.sizes["z"], np.nan)
    values = ds[name].transpose("well", "field", "z", "stage").values
    with np.errstate(invalid="ignore"):
        diff = values[..., 1] - values[..., 0]
    return _nan_reduce(np.nanmean, diff.reshape(-1, diff.shape[-1]))


def _nan_reduce(func: Any, values: np.ndarray) -> np.ndarray:
    """``func(values, axis=0)`` with NaN, not a warning, for all-NaN columns."""
    out = np.full(values.shape[-1], np.nan)
    present = np.isfinite(values).any(axis=0)
    if present.any():
        out[present] = func(values[:, present], axis=0)
    return out


def _done(ds: xr.Dataset) -> xr.Dataset:
    status, _ = _status(ds)
    return ds.isel(well=np.flatnonzero(status == "done"))


def depth_summary(results: str | os.PathLike | xr.Dataset) -> list[DepthRow]:
    """One row per depth: the fitted defocus over wells and the image-quality gains.

    Parameters
    ----------
    results : path or xarray.Dataset
        A results store written by ``plate-refocus run`` (or it opened).

    Returns
    -------
    list of DepthRow
        In the store's ``z`` order. Wells not done (pending or failed) are
        left out, so a partial run summarises what it has.
    """
    ds = _done(open_for_report(results))
    fit = ds["defocus_um"].transpose("well", "z").values.reshape(-1, ds.sizes["z"])
    sharp = ds["sharpness"].transpose("well", "field", "z", "stage").values
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (sharp[..., 1] / sharp[..., 0]).reshape(-1, ds.sizes["z"])
    mean, sd = _nan_reduce(np.nanmean, fit), _nan_reduce(np.nanstd, fit)
    median_ratio = _nan_reduce(np.nanmedian, ratio)
    psnr, ssim = _gain(ds, "psnr"), _gain(ds, "ssim")
    return [
        DepthRow(
            z_um=float(z_um),
            wells=int(np.isfinite(fit[:, i]).sum()),
            defocus_um=float(mean[i]),
            defocus_sd_um=float(sd[i]),
            sharpness_ratio=float(median_ratio[i]),
            psnr_gain_db=float(psnr[i]),
            ssim_gain=float(ssim[i]),
        )
        for i, z_um in enumerate(ds["z_um"].values)
    ]


def format_summary(rows: list[DepthRow]) -> str:
    """The summary as a Markdown table (what ``plate-refocus report`` prints)."""
    lines = [
        "| z (um) | wells | fitted \\|defocus\\| (um) | sharpness refocused / input "
        "| PSNR gain (dB) | SSIM gain |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.z_um:g} | {row.wells} | {row.defocus_um:.2f} +- {row.defocus_sd_um:.2f} "
            f"| {row.sharpness_ratio:.2f} | {row.psnr_gain_db:+.2f} | {row.ssim_gain:+.3f} |"
        )
    return "\n".join(lines).replace("nan +- nan", "-").replace("+nan", "-").replace("| nan |", "| - |")


def _spread(n: int, k: int) -> np.ndarray:
    """At most `k` indices spread evenly over ``0 .. n - 1``, ends included (the depths drawn)."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


# --- the plate layout ---------------------------------------------------------------------------


def _axis_names(value: Any, kind: str) -> list[str] | None:
    from .plate import row_name

    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
        return [row_name(i) for i in range(value)] if kind == "rows" else [str(i + 1) for i in range(value)]
    if isinstance(value, (list, tuple)) and value:
        return [str(v["name"]) if isinstance(v, dict) else str(v) for v in value]
    return None


def plate_layout(ds: xr.Dataset) -> tuple[list[str], list[str]]:
    """Row and column names of the physical plate the results come from.

    In order of trust: the results' ``plate_rows``/``plate_columns``
    attributes (counts or name lists; the run should store them), the source
    plate's NGFF plate metadata (read-only, metadata only), else the smallest
    standard plate (96, 384, 1536 wells) that holds every well.

    Returns
    -------
    rows, columns : list of str
        ``["A", ..., "H"]`` and ``["1", ..., "12"]`` for a 96-well plate.
    """
    from .plate import PLATE_FORMATS, parse_well
    from .plate.ngff import ome_metadata

    rows = _axis_names(ds.attrs.get("plate_rows"), "rows")
    columns = _axis_names(ds.attrs.get("plate_columns"), "columns")
    if rows and columns:
        return rows, columns
    source = ds.attrs.get("source_plate")
    if source and Path(str(source)).exists():
        try:
            import zarr

            ome, _ = ome_metadata(zarr.open_group(str(source), mode="r").attrs.asdict())
            rows = _axis_names(ome["plate"]["rows"], "rows")
            columns = _axis_names(ome["plate"]["columns"], "columns")
            if rows and columns:
                return rows, columns
        except Exception as error:  # noqa: BLE001 - fall back to the standard formats
            log.info("plate layout not read from %s (%s); inferring it", source, error)
    positions = [parse_well(str(w)) for w in ds["well"].values]
    need_rows = max(r for r, _ in positions) + 1
    need_columns = max(c for _, c in positions)
    for wells in (96, 384, 1536):
        n_rows, n_columns = PLATE_FORMATS[wells]
        if need_rows <= n_rows and need_columns <= n_columns:
            break
    return _axis_names(n_rows, "rows"), _axis_names(n_columns, "columns")


def _grids(ds: xr.Dataset, rows: list[str], columns: list[str], status: np.ndarray):
    """Where each well sits on the plate, and the plate's state grid."""
    from .figures import WELL_STATE
    from .plate import row_name

    r_index = {name: i for i, name in enumerate(rows)}
    c_index = {name: i for i, name in enumerate(columns)}
    where = []
    for row, column in zip(ds["row"].values, ds["column"].values, strict=True):
        r, c = r_index.get(str(row)), c_index.get(str(int(column)))
        if r is None or c is None:
            raise PlateLayoutError(
                f"well {row}{int(column):02d} lies outside the plate layout of {len(rows)} rows x "
                f"{len(columns)} columns ({row_name(0)}..{rows[-1]}, 1..{columns[-1]}); store the "
                f"right plate_rows/plate_columns in the results' attributes"
            )
        where.append((r, c))
    state = np.full((len(rows), len(columns)), WELL_STATE["empty"])
    for (r, c), s in zip(where, status, strict=True):
        state[r, c] = WELL_STATE.get(str(s), WELL_STATE["pending"])
    return where, state


def _on_plate(values: np.ndarray, where: list[tuple[int, int]], shape: tuple[int, int],
              status: np.ndarray) -> np.ndarray:
    """(well, P) values -> (P, R, C) grids, NaN where no well or not done."""
    out = np.full((values.shape[1], *shape), np.nan)
    for (r, c), v, s in zip(where, values, status, strict=True):
        if s == "done":
            out[:, r, c] = v
    return out


# --- montages -----------------------------------------------------------------------------------


def _pick_planes(fields: Any) -> dict[str, Any]:
    """Rows of the fields table to show: most/least improved against their depth, flagged."""
    done = fields[(fields["status"] == "done") & np.isfinite(fields["sharpness_gain"])
                  & (fields["sharpness_gain"] > 0)].copy()
    if not len(done):
        return {}
    psnr = np.isfinite(done["psnr_gain_db"]).all()
    score = done["psnr_gain_db"] if psnr else np.log2(done["sharpness_gain"])
    done["score"] = score - score.groupby(done["z"]).transform("median")
    measure = "PSNR gain" if psnr else "sharpness gain"
    ranked = done.sort_values("score", kind="stable")
    top = ranked.iloc[::-1].head(MONTAGE_PLANES)
    bottom = ranked.head(MONTAGE_PLANES)
    flagged = done[done["flagged"]].sort_values("score", kind="stable").head(MONTAGE_PLANES)
    return {
        f"most improved ({measure}, against the other fields at the same depth)": top,
        f"least improved ({measure}, against the other fields at the same depth)": bottom,
        "flagged fields": flagged,
    }


def _small(image: np.ndarray) -> np.ndarray:
    from .plate import downsample_2x

    image = np.asarray(image, dtype=np.float32)
    while max(image.shape) > MONTAGE_SIZE:
        image = downsample_2x(image)
    return image


def _plane_readers(ds: xr.Dataset):
    """Functions (well, field, z) -> (Y, X) plane or None, for input and refocused; and notes."""
    notes = []
    source = ds.attrs.get("source_plate")
    read_input = None
    if source and Path(str(source)).exists():
        from .plate import open_plate

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a plate without optics: not the report's news
            plate = open_plate(str(source))
        channel = ds.attrs.get("channel")
        channels = [str(c) for c in plate["c"].values]
        plate = plate.sel(c=channel) if channel in channels else plate.isel(c=0)

        def read_input(well, field, z):
            # one plane, read here: never through whatever default scheduler the caller has
            return plate.sel(well=well, field=field, z=z).compute(scheduler="synchronous").values
    else:
        notes.append(f"input planes not shown: the source plate {source!r} is not found here")
    refocused = None
    if "refocused" in ds:
        refocused = ds["refocused"]
    elif ds.attrs.get("refocused_plate"):
        from .plate import open_refocused

        refocused = open_refocused(str(ds.attrs["refocused_plate"]))
    else:
        notes.append("refocused planes not shown: the results hold no refocused images")

    read_refocused = None
    if refocused is not None:
        def read_refocused(well, field, z):
            return refocused.sel(well=well, field=field, z=z).compute(scheduler="synchronous").values

    return read_input, read_refocused, notes


def _montages(ds: xr.Dataset, fields: Any) -> tuple[list[tuple[str, bytes]], list[str]]:
    from .figures import montage

    picks = _pick_planes(fields)
    read_input, read_refocused, notes = _plane_readers(ds)
    figures: list[tuple[str, bytes]] = []
    if read_input is None and read_refocused is None:
        return figures, notes
    for title, rows in picks.items():
        if not len(rows):
            notes.append(f"{title}: none")
            continue
        pairs = []
        for row in rows.itertuples():
            key = (row.well, int(row.field), int(row.z))
            before = _small(read_input(*key)) if read_input is not None else None
            after = _small(read_refocused(*key)) if read_refocused is not None else None
            psnr = f", PSNR {row.psnr_gain_db:+.1f} dB" if np.isfinite(row.psnr_gain_db) else ""
            where = f"{row.well} field {row.field}, z {row.z_um:g} um"
            gains = f"sharpness {row.sharpness_gain:.2f}x{psnr}" + (f"\n{row.flags}" if row.flags else "")
            pairs.append((where, gains, before, after))
        figures.append((title, montage(pairs)))
    return figures, notes


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
.banner { padding: 8px 12px; border-radius: 4px; margin: 10px 0; font-weight: 600; }
.complete { background: #e3f4e3; border: 1px solid #7bbf7b; }
.incomplete { background: #fff1d6; border: 1px solid #e0a030; }
.note { color: #666; font-size: 12px; } img { max-width: 100%; display: block; margin: 6px 0; }
.scroll { max-height: 480px; overflow: auto; display: inline-block; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str] | None, rows: list[list[Any]], text_columns: int = 1) -> str:
    def cell(value: Any, tag: str, i: int) -> str:
        cls = ' class="text"' if i < text_columns else ""
        return f"<{tag}{cls}>{html.escape(str(value))}</{tag}>"

    head = "" if header is None else (
        "<thead><tr>" + "".join(cell(h, "th", i) for i, h in enumerate(header)) + "</tr></thead>")
    body = "".join("<tr>" + "".join(cell(v, "td", i) for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f'<div class="scroll"><table>{head}<tbody>{body}</tbody></table></div>'


def _fmt(value: float, spec: str = ".2f") -> str:
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def _wells_html(wells: Any, z_um: np.ndarray) -> str:
    """One row per well: fitted |defocus| +- error per depth, sharpness gain, status."""
    header = ["well", "status"] + [f"{z:g} um" for z in z_um] + ["sharpness gain (median)", "error"]
    rows = []
    for name, group in wells.groupby("well", sort=False):
        group = group.sort_values("z")
        fits = [f"{_fmt(f, '.1f')} ± {_fmt(e, '.1f')}" if np.isfinite(f) else "-"
                for f, e in zip(group["defocus_um"], group["defocus_err_um"], strict=True)]
        gain = np.nanmedian(group["sharpness_gain_median"]) if group["sharpness_gain_median"].notna().any() else np.nan
        rows.append([name, group["status"].iat[0], *fits, _fmt(gain) + ("x" if np.isfinite(gain) else ""),
                     group["error"].iat[0]])
    return _table(header, rows, text_columns=2)


def _flagged_html(fields: Any) -> str:
    flagged = fields[fields["flagged"]]
    if not len(flagged):
        return '<p class="note">no field is flagged</p>'
    header = ["well", "field", "z (um)", "flags", "sharpness gain", "PSNR gain (dB)", "consistency"]
    rows = [[r.well, r.field, f"{r.z_um:g}", r.flags, _fmt(r.sharpness_gain), _fmt(r.psnr_gain_db),
             _fmt(r.consistency, ".3f")] for r in flagged.itertuples()]
    return _table(header, rows, text_columns=4)


def _summary_html(rows: list[DepthRow]) -> str:
    header = ["z (um)", "wells", "fitted |defocus| (um)", "sharpness refocused / input",
              "PSNR gain (dB)", "SSIM gain"]
    body = [[f"{r.z_um:g}", r.wells, f"{_fmt(r.defocus_um)} ± {_fmt(r.defocus_sd_um)}",
             _fmt(r.sharpness_ratio), _fmt(r.psnr_gain_db, "+.2f"), _fmt(r.ssim_gain, "+.3f")]
            for r in rows]
    return _table(header, body, text_columns=0)


def _optics(ds: xr.Dataset):
    from .optics import Optics

    raw = ds.attrs.get("optics")
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        return Optics.from_dict(data) if data else None
    except (TypeError, ValueError):
        return None


def _band(freq: np.ndarray, optics) -> tuple[float, float] | None:
    """The frequencies the |defocus| fit uses (where a relative OTF carries signal)."""
    if optics is None:
        return None
    from .psf import fit_band

    band = fit_band(freq, optics, "in-focus")
    return (float(freq[band].min()), float(freq[band].max())) if band.any() else None


def write_report(
    results: str | os.PathLike | xr.Dataset,
    out_dir: str | os.PathLike,
    *,
    well: str | None = None,
) -> dict[str, Path]:
    """Write ``index.html`` (self-contained) and ``summary.md`` of a results store into `out_dir`.

    Parameters
    ----------
    results : path or xarray.Dataset
        A results store written by ``plate-refocus run`` (never modified), or it opened.
    out_dir : path
        Folder for ``index.html`` and ``summary.md``: created, or replaced when it
        is an earlier report (it holds :data:`~plate_refocus.outputs.REPORT_MARKER`)
        or empty; a folder holding anything else is refused, and it may not be
        inside the results store.
    well : str, optional
        The well whose OTF profiles and PSFs are drawn; the first done well by default.

    Returns
    -------
    dict of str to Path
        ``{"index": .../index.html, "summary": .../summary.md}`` and the tables
        (``.../tables/wells.parquet``, ``fields.parquet``) under their names.

    Raises
    ------
    ResultsNotFoundError, NotResultsError
        ``results`` is not a results store (one line says what it is).
    ResultsIncompleteError
        No well is done yet (the run is in progress or stopped before one finished).
    PlateLayoutError
        ``well`` is not in the results, or not done.

    Warns
    -----
    IncompleteResultsWarning
        Some wells are not done: the report covers the done ones and says so
        at its top (:func:`progress_line`).
    """
    from . import figures
    from .tables import fields_table, wells_table, write_tables

    ds = open_for_report(results)
    name = str(results) if not isinstance(results, xr.Dataset) else "results"
    status, _ = _status(ds)
    done = status == "done"
    if not done.any():
        raise ResultsIncompleteError(
            f"no well of {name!r} is done yet ({int((status == 'failed').sum())} failed): the run is "
            f"in progress, or stopped before a well finished; wait for it, or finish it with "
            f"'plate-refocus run PLATE OUT --resume'"
        )
    names = [str(w) for w in ds["well"].values]
    if well is None:
        well = names[int(np.flatnonzero(done)[0])]
    elif well not in names:
        raise PlateLayoutError(f"well {well!r} is not in the results; it has {names!r}")
    elif not done[names.index(well)]:
        raise PlateLayoutError(f"well {well!r} is not done yet; choose a done well or --resume the run")
    line = progress_line(ds, name)
    if line:
        warnings.warn(line, IncompleteResultsWarning, stacklevel=2)
    from .outputs import REPORT_MARKER, prepare_output

    inputs = () if isinstance(results, xr.Dataset) else (results,)
    out = prepare_output(out_dir, kind="report", inputs=inputs, overwrite=True)
    out.mkdir(parents=True)
    (out / REPORT_MARKER).write_text("made by plate-refocus report\n")

    small = ds[[v for v in _SMALL if v in ds]].load()
    rows = depth_summary(small)
    summary = out / "summary.md"
    summary.write_text(format_summary(rows) + "\n")
    fields = fields_table(small)
    wells = wells_table(small, fields)
    z_um = small["z_um"].values
    plate_rows, plate_columns = plate_layout(ds)
    where, state = _grids(small, plate_rows, plate_columns, status)
    picks = _spread(small.sizes["z"], MAX_MAP_PANELS)
    titles = [f"z = {z_um[i]:g} um" for i in picks]
    fit = small["defocus_um"].transpose("well", "z").values[:, picks]
    gain = (wells.pivot(index="well", columns="z", values="sharpness_gain_median")
            .reindex(index=names).to_numpy()[:, picks])
    shape = (len(plate_rows), len(plate_columns))
    sections = []
    sections.append(("Focus map: fitted |defocus| per well", _img(figures.plate_maps(
        _on_plate(fit, where, shape, status), state, plate_rows, plate_columns, titles,
        title="fitted |defocus| per well (blank: no well; hatched: pending; x: failed)",
        label="fitted |defocus| (um)"), "focus map")))
    sections.append(("Sharpness gain per well", _img(figures.plate_maps(
        _on_plate(gain, where, shape, status), state, plate_rows, plate_columns, titles,
        title="sharpness refocused / input, median over fields", label="sharpness gain",
        kind="ratio"), "sharpness gain map")))
    blind = None
    if "defocus_blind_um" in small:
        blind = np.nanmean(_done(small)["defocus_blind_um"].transpose("well", "z").values, axis=0)
    sections.append(("Quality per depth", _img(figures.quality_curves(
        z_um, np.array([r.defocus_um for r in rows]), np.array([r.defocus_sd_um for r in rows]),
        np.array([r.sharpness_ratio for r in rows]), np.array([r.psnr_gain_db for r in rows]),
        np.array([r.ssim_gain for r in rows]), blind), "quality curves") + _summary_html(rows)))
    one = small.sel(well=well)
    optics = _optics(ds)
    freq = small["freq"].values
    band = _band(freq, optics)
    note = ("shaded: the band the |defocus| fit uses, where the relative OTF carries signal; "
            "dashed: the incoherent cutoff 2 NA / lambda" if band is not None else
            "no optics in the results' attributes: the fit band and the cutoff are not marked")
    sections.append((f"OTF profiles and PSFs of well {well}", _img(figures.otf_profiles(
        freq, one["otf_radial"].transpose("z", "freq").values, z_um,
        one["defocus_um"].values, one["psf"].transpose("z", ...).values, well=well, band=band,
        cutoff=None if optics is None else optics.cutoff), f"OTF profiles of {well}")
        + f'<p class="note">{html.escape(note)}</p>'))
    montages, notes = _montages(ds, fields)
    body = "".join(f"<h3>{html.escape(t)}</h3>{_img(png, t)}" for t, png in montages)
    body += "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    sections.append(("Input and refocused", body))
    sections.append(("Wells", _wells_html(wells, z_um)))
    sections.append(("Flagged fields", _flagged_html(fields)))
    page = _page(ds, name, status, line, sections)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    log.info("wrote %s", index)
    # The tables again, beside the page (the results store itself is never written to).
    tables = write_tables(small, out)
    return {"index": index, "summary": summary, **tables}


def _page(ds: xr.Dataset, name: str, status: np.ndarray, line: str | None,
          sections: list[tuple[str, str]]) -> str:
    attrs = ds.attrs
    banner = (f'<div class="banner incomplete">{html.escape(line)}</div>' if line else
              f'<div class="banner complete">run complete: all {status.size} wells done</div>')
    meta = [
        ("results", name), ("source plate", attrs.get("source_plate", "-")),
        ("channel", attrs.get("channel", "-")), ("reference", attrs.get("reference", "-")),
        ("method", attrs.get("method", "unet")),
        ("model", f"{attrs.get('model_name', '-')} {str(attrs.get('model_sha256', ''))[:12]}"),
        ("optics", attrs.get("optics", "-")), ("created", attrs.get("created", "-")),
        ("wells", f"{ds.sizes['well']} ({int((status == 'done').sum())} done)"),
        ("fields per well", ds.sizes.get("field", "-")), ("depths", ds.sizes.get("z", "-")),
        ("report written", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>plate_refocus report: {html.escape(Path(name).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>plate_refocus report: {html.escape(Path(name).name)}</h1>",
        banner,
        _table(None, [[k, v] for k, v in meta], text_columns=2),
    ]
    for title, content in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>{content}")
    parts.append('<script>document.body.setAttribute("data-report", "ready");</script>')
    parts.append("</body></html>")
    return "\n".join(parts)
