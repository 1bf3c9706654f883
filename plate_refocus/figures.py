"""The report's figures, drawn from plain arrays into PNG bytes.

Every function takes NumPy arrays and labels (no xarray, no stores) and
returns the PNG as ``bytes``, ready to embed in HTML. Figures are drawn with
matplotlib's ``Figure`` (no pyplot): no display and no backend switch, so this
runs on a batch node and inside a notebook alike.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

__all__ = ["WELL_STATE", "plate_maps", "quality_curves", "otf_profiles", "montage"]

#: Codes of a plate position in :func:`plate_maps`' ``state`` grid.
WELL_STATE = {"empty": 0, "done": 1, "pending": 2, "failed": 3}

_DPI = 96


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _panel(ax, grid: np.ndarray, state: np.ndarray, rows: Sequence[str], columns: Sequence[str],
           cmap, norm):
    """One plate: values where done, empty wells blank, pending hatched, failed crossed."""
    from matplotlib.patches import Rectangle

    colours = cmap.with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=colours, norm=norm, aspect="equal",
                      interpolation="nearest")
    n_rows, n_columns = grid.shape
    for r, c in zip(*np.nonzero(state == WELL_STATE["pending"]), strict=True):
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="////",
                               edgecolor="0.55", linewidth=0))
    failed = np.nonzero(state == WELL_STATE["failed"])
    ax.plot(failed[1], failed[0], "x", color="crimson", markersize=5, markeredgewidth=1.5)
    blank = np.nonzero((state == WELL_STATE["done"]) & ~np.isfinite(grid))
    ax.plot(blank[1], blank[0], "_", color="0.4", markersize=4)
    ax.set_xticks(np.arange(n_columns + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.85", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    step = 1 if n_columns <= 12 else 2 if n_columns <= 24 else 4
    ax.set_xticks(range(0, n_columns, step), [columns[i] for i in range(0, n_columns, step)], fontsize=6)
    ax.set_yticks(range(n_rows), rows, fontsize=6 if n_rows <= 16 else 4)
    ax.tick_params(which="major", length=0, pad=1)
    return image


def plate_maps(
    values: np.ndarray,
    state: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    titles: Sequence[str],
    *,
    title: str,
    label: str,
    kind: str = "linear",
) -> bytes:
    """One plate heat map per panel, on the physical plate's full layout.

    Parameters
    ----------
    values : (P, R, C) ndarray of float
        One grid per panel (e.g. per depth); NaN where there is no value.
    state : (R, C) ndarray of int
        :data:`WELL_STATE` codes: empty wells stay blank, pending wells are
        hatched, failed wells crossed.
    rows, columns : sequence of str
        Labels of the plate's R rows and C columns.
    titles : sequence of str
        One per panel.
    title, label : str
        Figure title and colour-bar label.
    kind : {"linear", "ratio"}
        ``"linear"``: viridis from 0 to the largest value. ``"ratio"``: a
        diverging log2 scale centred on 1 (red below, blue above).
    """
    from matplotlib import colormaps
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    values = np.asarray(values, dtype=float)
    n_panels, n_rows, n_columns = values.shape
    finite = values[np.isfinite(values)]
    if kind == "ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.log2(np.where(values > 0, values, np.nan))
        finite = values[np.isfinite(values)]
        top = max(float(np.abs(finite).max()) if finite.size else 1.0, 0.5)
        norm, cmap = Normalize(-top, top), colormaps["RdBu"]
    else:
        norm = Normalize(0, float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
        cmap = colormaps["viridis"]
    per_row = 4 if n_columns <= 12 else 2 if n_columns <= 24 else 1
    n_fig_rows = int(np.ceil(n_panels / per_row))
    width = min(n_panels, per_row) * (0.28 * n_columns + 0.7) + 1.2
    height = n_fig_rows * (0.28 * n_rows + 0.8) + 0.6
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(n_fig_rows, min(n_panels, per_row), squeeze=False)
    image = None
    for k, ax in enumerate(axes.flat):
        if k >= n_panels:
            ax.axis("off")
            continue
        image = _panel(ax, values[k], state, rows, columns, cmap, norm)
        ax.set_title(titles[k], fontsize=8)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.8, label=label)
        if kind == "ratio":
            ticks = [t for t in range(-8, 9) if norm.vmin <= t <= norm.vmax]
            bar.set_ticks(ticks, labels=[f"{2.0 ** t:g}x" for t in ticks])
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def quality_curves(z_um: np.ndarray, fit_mean: np.ndarray, fit_sd: np.ndarray,
                   sharpness_ratio: np.ndarray, psnr_gain_db: np.ndarray, ssim_gain: np.ndarray,
                   blind_mean: np.ndarray | None = None) -> bytes:
    """Per-depth curves: fitted |defocus| against nominal |z|, sharpness ratio, PSNR/SSIM gains.

    Parameters
    ----------
    z_um : (Z,) ndarray
    fit_mean, fit_sd : (Z,) ndarray
        Fitted |defocus| over wells (mean and spread), um.
    sharpness_ratio : (Z,) ndarray
        Median refocused / input sharpness.
    psnr_gain_db, ssim_gain : (Z,) ndarray
        NaN without ground truth (the panel then says so).
    blind_mean : (Z,) ndarray, optional
        Blind |defocus| over wells, drawn beside the fit.
    """
    from matplotlib.figure import Figure

    z = np.asarray(z_um, dtype=float)
    fig = Figure(figsize=(13, 3.3), layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].errorbar(np.abs(z), fit_mean, yerr=fit_sd, marker="o", ls="none", label="fitted")
    if blind_mean is not None and np.isfinite(blind_mean).any():
        axes[0].plot(np.abs(z), blind_mean, marker="s", ls="none", mfc="none", label="blind")
    top = float(np.nanmax(np.abs(z))) if z.size else 1.0
    axes[0].plot([0, top], [0, top], color="0.6", lw=0.8, label="nominal |z|")
    axes[0].set_xlabel("nominal |z| (um)")
    axes[0].set_ylabel("|defocus| over wells (um)")
    axes[0].legend(fontsize=7)
    axes[1].plot(z, sharpness_ratio, marker="o")
    axes[1].axhline(1, color="0.6", lw=0.8)
    finite = np.asarray(sharpness_ratio)[np.isfinite(sharpness_ratio)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 4:
        axes[1].set_yscale("log")  # a ratio: 0.5x and 2x are as far from 1
    axes[1].set_xlabel("z (um)")
    axes[1].set_ylabel("sharpness refocused / input (median)")
    if np.isfinite(psnr_gain_db).any():
        axes[2].plot(z, psnr_gain_db, marker="o", label="PSNR gain (dB)")
        twin = axes[2].twinx()
        twin.plot(z, ssim_gain, marker="s", color="tab:orange", label="SSIM gain")
        twin.set_ylabel("SSIM gain", color="tab:orange")
        axes[2].axhline(0, color="0.6", lw=0.8)
        axes[2].set_ylabel("PSNR gain (dB)")
    else:
        axes[2].text(0.5, 0.5, "no ground truth:\nPSNR/SSIM not measured", ha="center",
                     va="center", transform=axes[2].transAxes, color="0.4")
        axes[2].set_yticks([])
    axes[2].set_xlabel("z (um)")
    return _png(fig)


def otf_profiles(freq: np.ndarray, otf: np.ndarray, z_um: np.ndarray, fit_um: np.ndarray,
                 psf: np.ndarray, *, well: str, band: tuple[float, float] | None = None,
                 cutoff: float | None = None) -> bytes:
    """A well's recovered OTF profiles per depth, the fit band marked, and its PSFs.

    Parameters
    ----------
    freq : (F,) ndarray
        Radial frequency, cycles/um.
    otf : (Z, F) ndarray
    z_um, fit_um : (Z,) ndarray
        Nominal depth and fitted |defocus| per profile.
    psf : (Z, P, P) ndarray
    well : str
    band : (float, float), optional
        The frequencies where the data carry signal (the fit band), shaded.
    cutoff : float, optional
        The incoherent cutoff 2 NA / lambda, drawn as a line.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    n_z = otf.shape[0]
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    grid = fig.add_gridspec(2, 7)
    ax = fig.add_subplot(grid[:, :4])
    colours = colormaps["viridis"](np.linspace(0, 1, max(n_z, 2)))
    if band is not None:
        ax.axvspan(*band, color="gold", alpha=0.2, label="fit band (signal)")
    if cutoff is not None:
        ax.axvline(cutoff, color="0.4", ls="--", lw=0.8, label="cutoff 2 NA / lambda")
    for i in range(n_z):
        ax.plot(freq, otf[i], color=colours[i], lw=1.2,
                label=f"{float(z_um[i]):g} um: fit {float(fit_um[i]):.1f}")
    ax.axhline(0, color="0.6", lw=0.5)
    support = np.flatnonzero(np.nan_to_num(np.abs(otf)).max(axis=0) > 0)
    right = float(freq[support[-1]]) if support.size else float(freq[-1])
    if cutoff is not None:
        right = max(right, cutoff)
    ax.set_xlim(0, 1.05 * right)
    ax.set_xlabel("spatial frequency (cycles/um)")
    ax.set_ylabel("recovered OTF profile")
    ax.set_title(f"well {well}: recovered OTF profiles", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    picks = np.unique(np.linspace(0, n_z - 1, min(n_z, 6)).round().astype(int))
    for k, i in enumerate(picks):
        sub = fig.add_subplot(grid[k // 3, 4 + k % 3])
        sub.imshow(psf[i], cmap="magma")
        sub.set_title(f"PSF {float(z_um[i]):g} um", fontsize=7)
        sub.axis("off")
    return _png(fig)


def _display_range(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.8])
    return float(lo), float(hi if hi > lo else lo + 1)


def montage(pairs: Sequence[tuple[str, str, np.ndarray | None, np.ndarray | None]],
            *, per_row: int = 2) -> bytes:
    """Input beside refocused, ``per_row`` pairs to a row.

    Parameters
    ----------
    pairs : sequence of (str, str, (Y, X) ndarray or None, (Y, X) ndarray or None)
        Captions of the input and of the refocused tile, the input plane and
        the refocused plane (None when not available: the tile says so). Each image is shown on its own
        0.5-99.8 percentile range.
    per_row : int
    """
    from matplotlib.figure import Figure

    n = max(len(pairs), 1)
    n_rows, n_columns = int(np.ceil(n / per_row)), min(n, per_row)
    fig = Figure(figsize=(6.2 * n_columns, 3.2 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, 2 * n_columns, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for k, (caption, caption_after, before, after) in enumerate(pairs):
        row = axes[k // per_row, 2 * (k % per_row):2 * (k % per_row) + 2]
        for ax, image, name in ((row[0], before, "input"), (row[1], after, "refocused")):
            ax.set_frame_on(True)
            if image is None:
                ax.text(0.5, 0.5, f"{name}: not available", ha="center", va="center",
                        transform=ax.transAxes, color="0.4", fontsize=8)
                continue
            lo, hi = _display_range(image)
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        row[0].set_title(f"input: {caption}", fontsize=8)
        row[1].set_title(f"refocused: {caption_after}", fontsize=8)
    return _png(fig)
