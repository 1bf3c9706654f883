"""What a run found, at a glance: a per-depth summary table and figures of a results store.

:func:`depth_summary` reduces the small per-well variables of a results store
(fitted defocus, sharpness, PSNR/SSIM) to one row per depth;
:func:`write_report` draws the plate's focus map, one well's OTF profiles and
PSFs, and the image-quality curves into PNG files. Only the small variables
are read: the refocused planes stay on disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["DepthRow", "depth_summary", "format_summary", "write_report"]

#: Panels of the focus map, at most: the depths are spread over them evenly.
MAX_MAP_PANELS = 12


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


def _open(results: str | os.PathLike | xr.Dataset) -> xr.Dataset:
    if isinstance(results, xr.Dataset):
        return results
    from .results import open_results

    # No Dask: the summary reads a few small arrays, and must work whatever the
    # default scheduler of the calling process is (e.g. a client already closed).
    return open_results(results, chunks=None)


def _gain(ds: xr.Dataset, name: str) -> np.ndarray:
    """Mean over wells and fields of ``refocused - input`` per depth (NaN when absent)."""
    if name not in ds:
        return np.full(ds.sizes["z"], np.nan)
    values = ds[name].values  # (well, field, z, stage)
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


def depth_summary(results: str | os.PathLike | xr.Dataset) -> list[DepthRow]:
    """One row per depth: the fitted defocus over wells and the image-quality gains.

    Parameters
    ----------
    results : path or xarray.Dataset
        A results store written by ``plate-refocus run`` (or it opened).

    Returns
    -------
    list of DepthRow
        In the store's ``z`` order. Wells not yet done (``well_status != 1``)
        are left out, so a partial run summarises what it has.
    """
    ds = _open(results)
    done = ds["well_status"].values == 1
    ds = ds.isel(well=np.flatnonzero(done))
    fit = ds["defocus_um"].values.reshape(-1, ds.sizes["z"])  # (well, z)
    sharp = ds["sharpness"].values  # (well, field, z, stage)
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


def _plate_grid(ds: xr.Dataset, values: np.ndarray) -> tuple[np.ndarray, list[str], list[int]]:
    """``values`` (per well) laid out as the plate: rows x columns, NaN where no well."""
    rows = sorted({str(r) for r in ds["row"].values}, key=lambda r: (len(r), r))
    columns = sorted({int(c) for c in ds["column"].values})
    grid = np.full((len(rows), len(columns)), np.nan)
    for value, row, column in zip(values, ds["row"].values, ds["column"].values, strict=True):
        grid[rows.index(str(row)), columns.index(int(column))] = value
    return grid, rows, columns


def _plot_focus_map(ds: xr.Dataset, path: Path) -> Path:
    from matplotlib.figure import Figure

    n_z = ds.sizes["z"]
    picks = _spread(n_z, MAX_MAP_PANELS)
    fit = ds["defocus_um"].values
    vmax = float(np.nanmax(fit)) if np.isfinite(fit).any() else 1.0
    cols = min(4, len(picks))
    nrows = int(np.ceil(len(picks) / cols))
    fig = Figure(figsize=(3.6 * cols, 2.8 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    image = None
    for ax, i in zip(axes.flat, picks, strict=False):
        grid, rows, columns = _plate_grid(ds, fit[:, i])
        image = ax.imshow(grid, vmin=0, vmax=vmax, cmap="viridis")
        ax.set_title(f"z = {float(ds['z_um'][i]):g} um")
        ax.set_xticks(range(len(columns)), [str(c) for c in columns], fontsize=6)
        ax.set_yticks(range(len(rows)), rows, fontsize=6)
    for ax in list(axes.flat)[len(picks):]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes, label="fitted |defocus| (um)", shrink=0.8)
    fig.suptitle("focus map: fitted |defocus| per well")
    fig.savefig(path, dpi=110)
    return path


def _plot_well(ds: xr.Dataset, well: str, path: Path) -> Path:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    w = ds.sel(well=well)
    n_z = ds.sizes["z"]
    fig = Figure(figsize=(12, 4.2))
    ax = fig.add_subplot(1, 2, 1)
    colours = colormaps["viridis"](np.linspace(0, 1, n_z))
    for i in range(n_z):
        label = f"{float(ds['z_um'][i]):g} um: fit {float(w['defocus_um'][i]):.1f}"
        ax.plot(ds["freq"].values, w["otf_radial"].values[i], color=colours[i], label=label)
    ax.axhline(0, color="0.6", lw=0.5)
    support = np.flatnonzero(np.nan_to_num(np.abs(w["otf_radial"].values)).max(axis=0) > 0)
    if support.size:  # zero beyond the support prior: draw up to just past it
        ax.set_xlim(0, 1.05 * float(ds["freq"].values[support[-1]]))
    ax.set_xlabel("spatial frequency (cycles/um)")
    ax.set_ylabel("otf_radial")
    ax.set_title(f"well {well}: recovered OTF profiles")
    ax.legend(fontsize=6, ncol=2)
    picks = _spread(n_z, 6)
    for k, i in enumerate(picks):
        sub = fig.add_subplot(2, 6, 4 + k + (3 if k >= 3 else 0))
        sub.imshow(w["psf"].values[i], cmap="magma")
        sub.set_title(f"PSF {float(ds['z_um'][i]):g} um", fontsize=7)
        sub.axis("off")
    fig.savefig(path, dpi=110)
    return path


def _plot_quality(rows: list[DepthRow], path: Path) -> Path:
    from matplotlib.figure import Figure

    z = np.array([r.z_um for r in rows])
    fig = Figure(figsize=(12, 3.4), layout="tight")
    axes = fig.subplots(1, 3)
    fit = np.array([r.defocus_um for r in rows])
    sd = np.array([r.defocus_sd_um for r in rows])
    axes[0].errorbar(np.abs(z), fit, yerr=sd, marker="o", ls="none", label="fitted")
    top = float(np.nanmax(np.abs(z))) if z.size else 1.0
    axes[0].plot([0, top], [0, top], color="0.6", lw=0.8, label="nominal |z|")
    axes[0].set_xlabel("nominal |z| (um)")
    axes[0].set_ylabel("fitted |defocus| (um)")
    axes[0].legend(fontsize=7)
    axes[1].plot(z, [r.sharpness_ratio for r in rows], marker="o")
    axes[1].axhline(1, color="0.6", lw=0.8)
    axes[1].set_yscale("log")  # a ratio: 0.5x and 2x are as far from 1
    axes[1].set_xlabel("z (um)")
    axes[1].set_ylabel("sharpness refocused / input (median)")
    axes[2].plot(z, [r.psnr_gain_db for r in rows], marker="o")
    axes[2].axhline(0, color="0.6", lw=0.8)
    axes[2].set_xlabel("z (um)")
    axes[2].set_ylabel("PSNR gain (dB; needs ground truth)")
    fig.savefig(path, dpi=110)
    return path


def write_report(
    results: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    well: str | None = None,
) -> dict[str, Path]:
    """Write the summary table and the figures of a results store into `out_dir`.

    Parameters
    ----------
    results : path
        A results store written by ``plate-refocus run``; never modified.
    out_dir : path
        Folder for ``summary.md``, ``focus_map.png``, ``well_<WELL>.png`` and
        ``quality.png`` (created if needed; existing files of these names are replaced).
    well : str, optional
        The well whose OTF profiles and PSFs are drawn; the first done well by default.

    Returns
    -------
    dict of str to Path
        ``{"summary": ..., "focus_map": ..., "well": ..., "quality": ...}``.
    """
    from .errors import PlateLayoutError

    ds = _open(results)
    done = ds["well_status"].values == 1
    if not done.any():
        raise PlateLayoutError(
            f"no well of {str(results)!r} is done yet; finish the run with "
            "'plate-refocus run PLATE OUT --resume' first"
        )
    names = [str(w) for w in ds["well"].values]
    if well is None:
        well = names[int(np.flatnonzero(done)[0])]
    elif well not in names:
        raise PlateLayoutError(f"well {well!r} is not in the results; it has {names!r}")
    elif not done[names.index(well)]:
        raise PlateLayoutError(f"well {well!r} is not done yet; choose a done well or --resume the run")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = depth_summary(ds)
    summary = out / "summary.md"
    summary.write_text(format_summary(rows) + "\n")
    # Figures are drawn with matplotlib's Figure (no pyplot): no display and no
    # backend switch, so this also runs on a batch node and inside a notebook.
    small = ds.isel(well=np.flatnonzero(done))[["defocus_um", "otf_radial", "psf"]].load()
    return {
        "summary": summary,
        "focus_map": _plot_focus_map(small, out / "focus_map.png"),
        "well": _plot_well(small, well, out / f"well_{well}.png"),
        "quality": _plot_quality(rows, out / "quality.png"),
    }
