"""The report's page: ``index.html`` (self-contained) and ``summary.md`` of a results store.

:func:`write_report` checks the store, then builds the page section by
section (plate maps, quality per depth, one well's OTF profiles and PSFs,
input beside refocused, the wells and flagged fields) from the small
variables and the few planes shown.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import IncompleteResultsWarning, PlateLayoutError, ResultsIncompleteError
from .layout import MAX_MAP_PANELS, on_plate, plate_grids, plate_layout, spread
from .montage import montages
from .summary import (
    SMALL_VARIABLES,
    DepthRow,
    depth_summary,
    done_wells,
    format_summary,
    open_for_report,
    progress_line,
)

__all__ = ["write_report"]

log = logging.getLogger(__name__)


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
    from ..optics import Optics

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
    from ..psf import fit_band

    band = fit_band(freq, optics, "in-focus")
    return (float(freq[band].min()), float(freq[band].max())) if band.any() else None


# --- the page and its sections ------------------------------------------------------------------


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
    from ..tables import fields_table, well_status, wells_table, write_tables

    ds = open_for_report(results)
    name = str(results) if not isinstance(results, xr.Dataset) else "results"
    status, _ = well_status(ds)
    well = _chosen_well(ds, name, status, well)
    line = progress_line(ds, name)
    if line:
        warnings.warn(line, IncompleteResultsWarning, stacklevel=2)
    out = _report_folder(results, out_dir)

    small = ds[[v for v in SMALL_VARIABLES if v in ds]].load()
    rows = depth_summary(small)
    summary = out / "summary.md"
    summary.write_text(format_summary(rows) + "\n")
    fields = fields_table(small)
    wells = wells_table(small, fields)
    sections = [
        *_map_sections(ds, small, wells, status),
        _quality_section(small, rows),
        _otf_section(ds, small, well),
        _montage_section(ds, fields),
        ("Wells", _wells_html(wells, small["z_um"].values)),
        ("Flagged fields", _flagged_html(fields)),
    ]
    index = out / "index.html"
    index.write_text(_page(ds, name, status, line, sections), encoding="utf-8")
    log.info("wrote %s", index)
    # The tables again, beside the page (the results store itself is never written to).
    tables = write_tables(small, out)
    return {"index": index, "summary": summary, **tables}


def _chosen_well(ds: xr.Dataset, name: str, status: np.ndarray, well: str | None) -> str:
    """The well whose OTFs and PSFs are drawn (the first done by default), checked to be done."""
    done = status == "done"
    if not done.any():
        raise ResultsIncompleteError(
            f"no well of {name!r} is done yet ({int((status == 'failed').sum())} failed): the run is "
            f"in progress, or stopped before a well finished; wait for it, or finish it with "
            f"'plate-refocus run PLATE OUT --resume'"
        )
    names = [str(w) for w in ds["well"].values]
    if well is None:
        return names[int(np.flatnonzero(done)[0])]
    if well not in names:
        raise PlateLayoutError(f"well {well!r} is not in the results; it has {names!r}")
    if not done[names.index(well)]:
        raise PlateLayoutError(f"well {well!r} is not done yet; choose a done well or --resume the run")
    return well


def _report_folder(results: str | os.PathLike | xr.Dataset, out_dir: str | os.PathLike) -> Path:
    """The report's folder, made afresh and marked as a report (an earlier one is replaced)."""
    from ..outputs import REPORT_MARKER, prepare_output

    inputs = () if isinstance(results, xr.Dataset) else (results,)
    out = prepare_output(out_dir, kind="report", inputs=inputs, overwrite=True)
    out.mkdir(parents=True)
    (out / REPORT_MARKER).write_text("made by plate-refocus report\n")
    return out


def _map_sections(ds: xr.Dataset, small: xr.Dataset, wells: Any,
                  status: np.ndarray) -> list[tuple[str, str]]:
    """The plate heat maps of the fitted |defocus| and of the sharpness gain, per depth."""
    from .. import figures

    names = [str(w) for w in ds["well"].values]
    z_um = small["z_um"].values
    plate_rows, plate_columns = plate_layout(ds)
    where, state = plate_grids(small, plate_rows, plate_columns, status)
    picks = spread(small.sizes["z"], MAX_MAP_PANELS)
    titles = [f"z = {z_um[i]:g} um" for i in picks]
    fit = small["defocus_um"].transpose("well", "z").values[:, picks]
    gain = (wells.pivot(index="well", columns="z", values="sharpness_gain_median")
            .reindex(index=names).to_numpy()[:, picks])
    shape = (len(plate_rows), len(plate_columns))
    return [
        ("Focus map: fitted |defocus| per well", _img(figures.plate_maps(
            on_plate(fit, where, shape, status), state, plate_rows, plate_columns, titles,
            title="fitted |defocus| per well (blank: no well; hatched: pending; x: failed)",
            label="fitted |defocus| (um)"), "focus map")),
        ("Sharpness gain per well", _img(figures.plate_maps(
            on_plate(gain, where, shape, status), state, plate_rows, plate_columns, titles,
            title="sharpness refocused / input, median over fields", label="sharpness gain",
            kind="ratio"), "sharpness gain map")),
    ]


def _quality_section(small: xr.Dataset, rows: list[DepthRow]) -> tuple[str, str]:
    """Quality curves per depth (with the blind fit when there is one) and the per-depth table."""
    from .. import figures

    blind = None
    if "defocus_blind_um" in small:
        blind = np.nanmean(done_wells(small)["defocus_blind_um"].transpose("well", "z").values, axis=0)
    curves = figures.quality_curves(
        small["z_um"].values, np.array([r.defocus_um for r in rows]),
        np.array([r.defocus_sd_um for r in rows]), np.array([r.sharpness_ratio for r in rows]),
        np.array([r.psnr_gain_db for r in rows]), np.array([r.ssim_gain for r in rows]), blind)
    return "Quality per depth", _img(curves, "quality curves") + _summary_html(rows)


def _otf_section(ds: xr.Dataset, small: xr.Dataset, well: str) -> tuple[str, str]:
    """One well's recovered OTF profiles, with the fit band and the cutoff marked, and its PSFs."""
    from .. import figures

    one = small.sel(well=well)
    optics = _optics(ds)
    freq = small["freq"].values
    band = _band(freq, optics)
    note = ("shaded: the band the |defocus| fit uses, where the relative OTF carries signal; "
            "dashed: the incoherent cutoff 2 NA / lambda" if band is not None else
            "no optics in the results' attributes: the fit band and the cutoff are not marked")
    png = figures.otf_profiles(
        freq, one["otf_radial"].transpose("z", "freq").values, small["z_um"].values,
        one["defocus_um"].values, one["psf"].transpose("z", ...).values, well=well, band=band,
        cutoff=None if optics is None else optics.cutoff)
    return (f"OTF profiles and PSFs of well {well}",
            _img(png, f"OTF profiles of {well}") + f'<p class="note">{html.escape(note)}</p>')


def _montage_section(ds: xr.Dataset, fields: Any) -> tuple[str, str]:
    """Input beside refocused for the most and least improved and the flagged fields."""
    pictures, notes = montages(ds, fields)
    body = "".join(f"<h3>{html.escape(t)}</h3>{_img(png, t)}" for t, png in pictures)
    body += "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    return "Input and refocused", body


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
