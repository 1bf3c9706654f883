"""The in-focus plane of a stack: a focus measure from ring power, confirmed by the blind estimates."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..optics import Optics
from .blind import BlindDefocus
from .spectra import MIN_RING, PowerSpectra, ring_geometry


@dataclass(frozen=True)
class FocusPlane:
    """The plane of a stack found in focus, and how sure that is.

    Attributes
    ----------
    index : int
        Plane index in the stack.
    z_um : float
        Its position (the stack's coordinate).
    measure : (Z,) ndarray of float64
        :func:`focus_measure` of every plane.
    prominence : float
        ``(measure[index] - min(measure)) / measure[index]``: 0 for a flat
        curve, near 1 for a sharp peak (NaN for a single plane).
    focus_um : float
        Where the focus lies between the planes, from the planes' blind
        ``|z|`` (NaN without them or with fewer than two informative planes).
    focus_err_um : float
        Its standard error.
    """

    index: int
    z_um: float
    measure: np.ndarray = field(repr=False)
    prominence: float
    focus_um: float = math.nan
    focus_err_um: float = math.nan


#: A focus curve whose peak stands less than this (relative) above its minimum is not convincing.
MIN_PROMINENCE = 0.25


def focus_measure(spectra: PowerSpectra, optics: Optics) -> float:
    """A focus measure from ring power: the share of the signal power at mid frequencies.

    ``sum (P - N)+`` over ``0.25 - 0.75 x cutoff`` divided by the same over
    ``f_min - 0.75 x cutoff``, with ``N`` the median power beyond the cutoff
    (or of the outermost rings when the camera undersamples the optics).
    Independent of intensity scale and offset; defocus removes mid
    frequencies first, so it peaks at focus.
    """
    if not isinstance(spectra, PowerSpectra):
        raise TypeError(f"spectra must be a PowerSpectra (from power_spectrum), got {type(spectra).__name__}")
    freq, power = spectra.freq, spectra.mean
    _, _, weight, _ = ring_geometry(spectra.shape, spectra.pixel_size_um)
    beyond = (freq > optics.cutoff) & (weight > 0)
    if beyond.sum() < 3:
        beyond = freq >= freq[weight > 0][-max(3, freq.size // 20)]
    noise = float(np.median(power[beyond]))
    signal = np.clip(power - noise, 0.0, None) * weight
    low = freq >= MIN_RING * freq[1]
    top = freq <= 0.75 * optics.cutoff
    total = float(signal[low & top].sum())
    if total <= 0:
        return 0.0
    return float(signal[(freq >= 0.25 * optics.cutoff) & top].sum()) / total


def find_focus(
    z_um: Any,
    spectra: Any,
    optics: Optics,
    *,
    blind: Any = None,
    min_prominence: float = MIN_PROMINENCE,
) -> FocusPlane | None:
    """The in-focus plane of a stack, or ``None`` when no plane is convincingly in focus.

    Parameters
    ----------
    z_um : (Z,) array_like of float
        Plane positions (um), in stack order.
    spectra : sequence of PowerSpectra
        Pooled ring power of each plane (over the well's fields).
    optics : Optics
    blind : sequence of BlindDefocus, optional
        :func:`~plate_refocus.focus.blind_defocus` of each plane. With them the chosen plane must
        also be plausibly at ``|z| = 0`` (its interval starts at 0), and where
        two or more planes are far enough from focus to be identifiable, the
        focus position is fitted from their ``|z|`` (``|z_i - z_f| = z_hat_i``),
        and must lie within half a plane spacing (or two standard errors) of
        the chosen plane.
    min_prominence : float
        Least relative prominence of the focus curve's peak.

    Returns
    -------
    FocusPlane or None
        ``None`` when the curve is flat, peaks at the end of the stack without
        the blind estimate confirming focus there, the blind estimate puts the
        plane away from focus, or the fitted focus lies nearer another plane.
        A single plane is returned only when its blind interval reaches 0.
    """
    z = np.asarray(z_um, dtype=np.float64).ravel()
    spectra = list(spectra)
    if len(spectra) != z.size or z.size == 0:
        raise ValueError(f"find_focus needs one PowerSpectra per plane: {z.size} positions, {len(spectra)} spectra")
    if blind is not None:
        blind = list(blind)
        if len(blind) != z.size:
            raise ValueError(f"blind needs one BlindDefocus per plane: {z.size} positions, {len(blind)} estimates")
    measure = np.array([focus_measure(s, optics) for s in spectra])
    best = int(np.argmax(measure))

    def near_focus(i: int) -> bool:
        return blind is None or blind[i].interval_um[0] <= 0.0

    if z.size == 1:
        if blind is None or not near_focus(0):
            return None
        return FocusPlane(0, float(z[0]), measure, math.nan)
    prominence = float((measure[best] - measure.min()) / measure[best]) if measure[best] > 0 else 0.0
    if prominence < min_prominence or not near_focus(best):
        return None
    at_end = best in (0, z.size - 1)
    if at_end and blind is None:
        return None  # the focus may lie beyond the stack
    focus = err = math.nan
    if blind is not None:
        focus, err = _fit_focus(z, blind)
        spacing = float(np.median(np.abs(np.diff(z))))
        if math.isfinite(focus) and abs(z[best] - focus) > max(0.5 * spacing, 2.0 * err):
            return None
    return FocusPlane(best, float(z[best]), measure, prominence, focus, err)


def _fit_focus(z: np.ndarray, blind: list[BlindDefocus]) -> tuple[float, float]:
    """Least squares ``|z_i - z_f| = z_hat_i`` over planes whose interval does not reach 0."""
    keep = [i for i, b in enumerate(blind) if b.interval_um[0] > 0 and math.isfinite(b.defocus_err_um)]
    if len(keep) < 2:
        return math.nan, math.nan
    zi = z[keep]
    d = np.array([blind[i].defocus_um for i in keep])
    s = np.array([max(blind[i].defocus_err_um, 1e-3) for i in keep])
    span = float(d.max())
    grid = np.linspace(zi.min() - span, zi.max() + span, 4001)
    cost = (((np.abs(zi[None, :] - grid[:, None]) - d[None, :]) / s[None, :]) ** 2).sum(axis=1)
    j = int(np.argmin(cost))
    # standard error from the curvature of the cost at its minimum
    h = grid[1] - grid[0]
    lo, hi = max(j - 1, 0), min(j + 1, grid.size - 1)
    curvature = (cost[hi] - 2 * cost[j] + cost[lo]) / (h * h) if hi > lo + 1 else 0.0
    err = math.sqrt(2.0 / curvature) if curvature > 0 else math.inf
    return float(grid[j]), err
