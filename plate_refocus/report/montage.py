"""Input beside refocused: which planes a report shows, and reading just those planes.

:func:`montages` picks the most and the least improved fields (against the
other fields at the same depth) and the flagged ones, reads their input
planes from the source plate (read-only) and their refocused planes from the
results, and draws each group as one montage.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["MONTAGE_PLANES", "MONTAGE_SIZE", "montages"]

#: Planes in each montage (most improved, least improved, flagged).
MONTAGE_PLANES = 4
#: Longest side of a montage tile, px: larger planes are shown 2x-mean downsampled.
MONTAGE_SIZE = 384


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
    from ..plate import downsample_2x

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
        from ..plate import open_plate

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
        from ..plate import open_refocused

        refocused = open_refocused(str(ds.attrs["refocused_plate"]))
    else:
        notes.append("refocused planes not shown: the results hold no refocused images")

    read_refocused = None
    if refocused is not None:
        def read_refocused(well, field, z):
            return refocused.sel(well=well, field=field, z=z).compute(scheduler="synchronous").values

    return read_input, read_refocused, notes


def montages(ds: xr.Dataset, fields: Any) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Montages of input beside refocused as (title, PNG) pairs, and notes on what is not shown."""
    from ..figures import montage

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
