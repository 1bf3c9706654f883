"""The per-depth summary of a results store, and opening a store for a report.

:func:`open_for_report` opens a results store (or says in one line why a
path is not one), :func:`progress_line` says whether the run is finished,
:func:`depth_summary` reduces the small per-well variables to one
:class:`DepthRow` per depth and :func:`format_summary` prints them as Markdown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import NotResultsError, PlateRefocusError, ResultsNotFoundError

__all__ = [
    "DepthRow",
    "SMALL_VARIABLES",
    "depth_summary",
    "done_wells",
    "format_summary",
    "open_for_report",
    "progress_line",
]

#: The small variables a report reads (never the refocused pixels).
SMALL_VARIABLES = ("defocus_um", "defocus_err_um", "defocus_blind_um", "defocus_blind_err_um",
                   "sharpness", "psnr", "ssim", "consistency", "plane_flags", "otf_radial", "psf",
                   "well_status", "well_error")


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
    from ..plate import read_plate_grid
    from ..results import open_results

    try:
        # No Dask: whatever the calling process's default scheduler is (e.g. a closed client).
        return open_results(path, chunks=None)
    except PlateRefocusError:
        reason = None  # not one of ours: said below, with what it is instead
    except Exception as error:  # noqa: BLE001 - xarray raises many kinds for a broken store
        reason = _one_line(error)
    hint = "give the OUT of 'plate-refocus run PLATE OUT'"
    try:
        read_plate_grid(path)  # metadata only: is it an OME-Zarr plate?
        hint = (f"it is an OME-Zarr plate: refocus it with 'plate-refocus run {path} OUT', "
                "then report OUT")
    except Exception:  # noqa: BLE001 - only a better hint is lost
        pass
    raise NotResultsError(
        f"{str(path)!r} is not a results store of plate-refocus run"
        + (f" ({reason})" if reason else "") + f"; {hint}"
    ) from None


def _status(ds: xr.Dataset) -> np.ndarray:
    from ..tables import well_status

    status, _ = well_status(ds)
    return status


def progress_line(ds: xr.Dataset, name: str = "results") -> str | None:
    """One line saying that a run is not finished, or None when every well is done."""
    status = _status(ds)
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


def done_wells(ds: xr.Dataset) -> xr.Dataset:
    """The wells of a results dataset that are done (pending and failed ones left out)."""
    return ds.isel(well=np.flatnonzero(_status(ds) == "done"))


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
    ds = done_wells(open_for_report(results))
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
