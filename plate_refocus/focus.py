"""Blind defocus per well, and the in-focus plane of a stack, from power spectra alone.

A defocused image is ``g = o conv k_z + noise``; without a sharp reference
only its power spectrum is observable. Pooled over a well's fields at one
depth and averaged over rings, the windowed periodogram is modelled as

    P(f) = A [ |W|^2 * sum_m S(|nu + m / dx|) |K_z(|nu + m / dx|)|^2 ](f) + N

with ``S(f) = f**-beta exp(-gamma (f / cutoff)**2)`` the object spectrum (a
power law, ``beta <= 5``, with a soft roll-off; free amplitude ``A``),
``K_z`` the model OTF (:func:`plate_refocus.optics.radial_otf`), ``N`` a
flat noise floor (read and shot noise are white), ``|W|^2 *`` the smoothing
by the window's spectral taps and the sum over ``m`` the copies a camera folds
back when it undersamples the optics. ``|z|`` is fitted by the Whittle
likelihood of an averaged periodogram, on a grid of ``|z|`` (the cost has many
local minima) then refined, and its interval is read off the profile
likelihood, widened for smooth misfit and, where ``|K_z|^2`` has no notch
above the noise, opened down to 0: without a notch the object's shape can
mimic the defocus, so the data cannot say how far from focus the plane is.

The partial sums (:class:`PowerSpectra`) add up over fields like
:class:`plate_refocus.psf.FieldSpectra`, and are taken from the same
windowed FFT (:func:`plate_refocus.psf.windowed_spectrum`).

Per (well, depth), the pipeline would call::

    spectra = sum(power_spectrum(plane, dx, background=offset) for plane in fields)  # or radial_power(fft)
    estimate = blind_defocus(spectra, optics)          # ~10-20 ms at 520 x 696, cached per shape
    z_restore = restoration_depth(estimate)            # for Wiener / RL (plate_refocus.deconvolve)

and, for a stack without a recorded focal plane, ``find_focus(z_um,
[spectra per plane], optics, blind=[estimate per plane])``.

References
----------
.. [1] P. Whittle, "Curve and periodogram smoothing", J. R. Stat. Soc. B 19,
   38-63 (1957): the likelihood of a periodogram.
.. [2] P. McCullagh and J. A. Nelder, *Generalized Linear Models*, 2nd ed.,
   ch. 8 (gamma errors, dispersion estimated from Pearson's statistic).
.. [3] Y. Pawitan, *In All Likelihood*, ch. 2.6 and 3.4 (profile-likelihood intervals).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import scipy.sparse
import scipy.stats

from .optics import Optics, frequency_grid, radial_frequencies, radial_otf
from .psf import window_weights, windowed_spectrum
from .xp import get_xp, to_numpy

__all__ = [
    "PowerSpectra",
    "BlindDefocus",
    "ObjectSpectrum",
    "FocusPlane",
    "power_spectrum",
    "radial_power",
    "blind_defocus",
    "fit_object_spectrum",
    "focus_measure",
    "find_focus",
    "ring_dof",
    "restoration_depth",
]

logger = logging.getLogger(__name__)

Aliasing = Literal["fold", "exclude"]
_ALIASING = ("fold", "exclude")

#: Exponents ``beta`` of the object spectrum ``f**-beta exp(-gamma (f / cutoff)**2)`` on the coarse grid.
BETA_GRID: tuple[float, ...] = tuple(float(b) for b in np.arange(0.0, 5.01, 0.5))
#: Exponents of the coarse scan (the parabola and local grids refine them).
SCAN_BETAS: tuple[float, ...] = tuple(float(b) for b in np.arange(0.0, 5.01, 1.0))
#: The steepest power law allowed: ``f**-5`` is an object whose edges are continuous
#: but not smooth; steeper falls at the optics' scale are the roll-off's job. Without
#: the bound, a steep object without defocus explained three of six real BBBC006
#: fields 32 um from focus better than the defocus did.
BETA_MAX = 5.0
#: Roll-offs ``gamma`` of the object spectrum on the coarse grid (soft edges, fine texture).
GAMMA_GRID: tuple[float, ...] = (0.0, 0.75, 1.5, 3.0, 4.5, 6.0, 10.0, 20.0, 40.0, 80.0)
#: ``|K_z|^2`` must rise again by this factor after a dip, inside the band where the
#: signal exceeds the noise, before ``|z|`` counts as identifiable (see :func:`blind_defocus`).
NOTCH_CONTRAST = 1.25
#: Bartlett bandwidth (rings) of the long-run variance that scales the profile likelihood.
BANDWIDTH_RINGS = 16
#: Lowest ring fitted, in units of the ring spacing: below it the window's
#: mean removal and non-uniform backgrounds dominate.
MIN_RING = 4
#: Variance inflation of a ring average of Hann-windowed periodograms over
#: independent frequencies: neighbours along the ring share the window's main
#: lobe (``35/18`` for the Hann window along one axis; rings one bin wide
#: see mostly that direction). Measured on white noise (128 x 128 and
#: 256 x 320): 1.93-2.05.
HANN_INFLATION = 35.0 / 18.0


# --------------------------------------------------------------------------- partial sums


@dataclass(frozen=True, eq=False)
class PowerSpectra:
    """Ring averages of windowed periodograms, summed over some fields of one depth.

    Parameters
    ----------
    power : (B,) ndarray of float64
        ``sum_i p_i`` over the fields, ``p_i[b]`` the mean of
        ``|G_w,i(nu)|**2 / sum(w**2)`` over the ring ``b`` (white noise of
        variance ``s**2`` per pixel gives ``s**2``).
    square : (B,) ndarray of float64
        ``sum_i p_i**2``: the field-to-field scatter.
    count : int
        Number of fields summed.
    shape : (int, int)
        Image shape ``(Y, X)`` of the fields.
    pixel_size_um : float
    window : str
        The border treatment, ``"taper:0.5"``, ``"periodic"`` or ``"none"``:
        only sums with the same one add.

    Notes
    -----
    ``a + b`` adds the sums and ``0 + a`` is ``a``, so ``sum`` and a Dask
    reduction combine them; a few kB cross the network per field.
    """

    power: np.ndarray
    square: np.ndarray
    count: int
    shape: tuple[int, int]
    pixel_size_um: float
    window: str = "taper:0.5"

    def __post_init__(self) -> None:
        power = np.asarray(self.power, dtype=np.float64)
        square = np.asarray(self.square, dtype=np.float64)
        if power.ndim != 1 or power.shape != square.shape:
            raise ValueError(f"PowerSpectra needs 1-D power and square of one length, got {power.shape!r}, {square.shape!r}")
        if not isinstance(self.count, (int, np.integer)) or self.count < 0:
            raise ValueError(f"PowerSpectra.count must be a non-negative int, got {self.count!r}")
        object.__setattr__(self, "power", power)
        object.__setattr__(self, "square", square)
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        object.__setattr__(self, "pixel_size_um", float(self.pixel_size_um))

    @property
    def freq(self) -> np.ndarray:
        """Ring centres in cycles/um (:func:`plate_refocus.psf.radial_frequencies`)."""
        return radial_frequencies(self.shape, self.pixel_size_um)

    @property
    def mean(self) -> np.ndarray:
        """The pooled ring power, ``power / count``."""
        return self.power / max(self.count, 1)

    def __add__(self, other: Any) -> PowerSpectra:
        if isinstance(other, (int, float)) and other == 0:
            return self
        if not isinstance(other, PowerSpectra):
            return NotImplemented
        key = (self.shape, self.pixel_size_um, self.window)
        if (other.shape, other.pixel_size_um, other.window) != key:
            raise ValueError(
                f"cannot add PowerSpectra of {key!r} and {(other.shape, other.pixel_size_um, other.window)!r}: "
                "pool only fields of one shape, pixel size and border treatment"
            )
        return PowerSpectra(self.power + other.power, self.square + other.square, self.count + other.count,
                            self.shape, self.pixel_size_um, self.window)

    __radd__ = __add__


def _window_key(edges: str, taper: float) -> str:
    return f"taper:{float(taper):g}" if edges == "taper" else edges


@lru_cache(maxsize=8)
def _rings(shape: tuple[int, int], pixel_size_um: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ring of every ``rfft2`` half-plane frequency, its Hermitian multiplicity, ring weights and dof.

    Returns ``(index, mult, weight, dof)``: ``index`` (Y * (X//2+1),) the ring
    (nearest :func:`radial_frequencies` sample), ``mult`` 1 or 2 per point,
    ``weight`` (B,) ``sum mult`` per ring, ``dof`` (B,) the number of
    independent complex frequencies per ring (``weight / 2``).
    """
    freq = radial_frequencies(shape, pixel_size_um)
    _, _, rho = frequency_grid(shape, pixel_size_um, real=True)
    index = np.rint(rho / freq[1]).astype(np.int64).ravel()
    nx_half = shape[1] // 2 + 1
    mult = np.full(nx_half, 2.0)
    mult[0] = 1.0
    if shape[1] % 2 == 0:
        mult[-1] = 1.0
    mult = np.broadcast_to(mult, (shape[0], nx_half)).ravel().copy()
    weight = np.bincount(index, weights=mult, minlength=freq.size)
    dof = weight / 2.0
    for a in (index, mult, weight, dof):
        a.flags.writeable = False
    return index, mult, weight, dof


def ring_dof(spectra: PowerSpectra) -> np.ndarray:
    """Independent frequencies behind each pooled ring value, ``nu``: its variance is ``mean**2 / nu``.

    The number of independent complex frequencies in the ring times the
    fields, over :data:`HANN_INFLATION` for the Hann window.
    """
    _, _, _, dof = _rings(spectra.shape, spectra.pixel_size_um)
    inflation = HANN_INFLATION if spectra.window.startswith("taper") else 1.0
    return dof * spectra.count / inflation


def radial_power(
    spectrum: Any,
    shape: tuple[int, int],
    pixel_size_um: float,
    *,
    edges: str = "taper",
    taper: float = 0.5,
) -> PowerSpectra:
    """Ring-averaged power of already transformed planes (the FFT of the pooled PSF estimate).

    Parameters
    ----------
    spectrum : (Y, X // 2 + 1) or (F, Y, X // 2 + 1) array of complex
        :func:`plate_refocus.psf.windowed_spectrum` of the plane(s), NumPy or CuPy.
    shape : (int, int)
        Image shape ``(Y, X)``.
    pixel_size_um : float
    edges, taper
        The border treatment the spectrum was taken with.

    Returns
    -------
    PowerSpectra
        One field per plane given.
    """
    shape = (int(shape[0]), int(shape[1]))
    half = (shape[0], shape[1] // 2 + 1)
    if tuple(spectrum.shape[-2:]) != half or spectrum.ndim not in (2, 3):
        raise ValueError(f"spectrum must have shape {half!r} or (F, *{half!r}) for images {shape!r}, got {spectrum.shape!r}")
    xp = _module_of(spectrum)
    index, mult, weight, _ = _rings(shape, float(pixel_size_um))
    norm = float(np.sum(window_weights(shape, edges=edges, taper=taper) ** 2))
    stack = spectrum.reshape(-1, half[0] * half[1])
    nbins = weight.size
    power = (stack.real**2 + stack.imag**2) * xp.asarray(mult / norm)
    offsets = xp.asarray(index)[None, :] + nbins * xp.arange(stack.shape[0])[:, None]
    sums = xp.bincount(offsets.ravel(), weights=power.ravel(), minlength=nbins * stack.shape[0])
    rings = to_numpy(sums).reshape(stack.shape[0], nbins) / np.where(weight > 0, weight, 1.0)
    if not np.all(np.isfinite(rings)):
        raise ValueError("radial_power got NaN or inf in the spectrum; mask or fill missing pixels first")
    return PowerSpectra(rings.sum(axis=0), (rings**2).sum(axis=0), rings.shape[0], shape,
                        float(pixel_size_um), _window_key(edges, taper))


def power_spectrum(
    images: Any,
    pixel_size_um: float,
    *,
    background: float | np.ndarray = 0.0,
    edges: str = "taper",
    taper: float = 0.5,
    backend: str = "auto",
    workers: int | None = None,
) -> PowerSpectra:
    """Ring-averaged windowed power of one plane or of a well's fields at one depth.

    Parameters
    ----------
    images : (Y, X) or (F, Y, X) array_like of real
        Planes of one depth (camera counts or any linear intensity).
    pixel_size_um : float
    background : float or array
        Subtracted first (the camera offset); it only changes the zero
        frequency, which the fit does not use.
    edges, taper, backend, workers
        As in :func:`plate_refocus.psf.field_spectra` (the same window and mean
        removal, so one FFT serves both).

    Returns
    -------
    PowerSpectra
        Summable over fields (``sum(...)``).
    """
    images = images if hasattr(images, "shape") and hasattr(images, "dtype") else np.asarray(images)
    spectrum = windowed_spectrum(images, background=background, edges=edges, taper=taper,
                                 backend=backend, workers=workers)
    return radial_power(spectrum, tuple(images.shape[-2:]), pixel_size_um, edges=edges, taper=taper)


def _module_of(array: Any) -> Any:
    if type(array).__module__.startswith("cupy"):
        return get_xp("cupy")[0]
    return np


@dataclass(frozen=True)
class ObjectSpectrum:
    """A fitted object power spectrum and noise floor, ``P(f) = S(f) |K(f)|^2 + N``.

    ``S(f) = amplitude * exp(-exponent log max(f, f_min) - rolloff (f / cutoff)**2)``,
    in the units of :class:`PowerSpectra` (per-pixel variance), so ``N / S`` is
    the noise-to-signal ratio a Wiener filter needs at each frequency.

    Attributes
    ----------
    amplitude, exponent, rolloff : float
    cutoff : float
        The incoherent cutoff the roll-off is scaled by (cycles/um).
    f_min : float
        Below it ``S`` is held constant (the ring spacing, cycles/um).
    noise : float
        Flat noise floor, per-pixel variance in image units squared.
    """

    amplitude: float
    exponent: float
    rolloff: float
    cutoff: float
    f_min: float
    noise: float

    def signal(self, freq: np.ndarray) -> np.ndarray:
        """``S(f)`` at radial frequencies `freq` (cycles/um), same shape."""
        f = np.maximum(np.asarray(freq, dtype=np.float64), self.f_min)
        return self.amplitude * np.exp(-self.exponent * np.log(f) - self.rolloff * (f / self.cutoff) ** 2)


# --------------------------------------------------------------------------- the model


@lru_cache(maxsize=8)
def _window_taps(shape: tuple[int, int], window: str) -> tuple[tuple[int, int, float], ...]:
    """Spectral taps ``(cy, cx, |W(c)|**2)`` of the window, normalised to sum 1 (3 x 3 for Hann)."""
    if window in ("periodic", "none"):
        return ((0, 0, 1.0),)
    taper = float(window.split(":")[1])
    power = np.abs(np.fft.fft2(window_weights(shape, edges="taper", taper=taper))) ** 2
    power /= power.sum()
    keep = np.argwhere(power > 1e-4 * power.max())
    taps = []
    for ky, kx in keep:
        cy = ky - shape[0] if ky > shape[0] // 2 else ky
        cx = kx - shape[1] if kx > shape[1] // 2 else kx
        taps.append((int(cy), int(cx), float(power[ky, kx])))
    total = sum(t[2] for t in taps)
    return tuple((cy, cx, w / total) for cy, cx, w in taps)


@lru_cache(maxsize=8)
def _ring_operator(
    shape: tuple[int, int], pixel_size_um: float, support: float, fold: bool, window: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(axis, A)``: ring averages of the windowed, folded model from a profile on `axis`.

    ``A`` (B, K) maps a radial profile ``q`` sampled on ``axis`` (K,) (the
    ring spacing, out past the grid's corner and the support) to
    ``sum_c |W(c)|^2 sum_m q(|nu - c + m / dx|)`` averaged over each ring,
    with linear interpolation in the radius; copies ``m != 0`` only where they
    land inside `support` (with `fold`).
    """
    index, mult, weight, _ = _rings(shape, pixel_size_um)
    freq = radial_frequencies(shape, pixel_size_um)
    step = float(freq[1])
    nbins = freq.size
    fy, fx, _ = frequency_grid(shape, pixel_size_um, real=True)
    period = 1.0 / pixel_size_um
    ny, nx = shape
    corner = math.hypot(0.5 * period + 2 * step, 0.5 * period + 2 * step)
    naxis = int(math.ceil(max(corner, support) / step)) + 3
    axis = np.arange(naxis) * step
    copies = [(0, 0)]
    if fold:
        copies += [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
    operator = np.zeros(nbins * naxis)
    for cy, cx, tap in _window_taps(shape, window):
        for my, mx in copies:
            rho = np.hypot(fy - cy / (ny * pixel_size_um) + my * period,
                           fx - cx / (nx * pixel_size_um) + mx * period).ravel()
            keep = slice(None) if (my, mx) == (0, 0) else rho < support
            pos = rho[keep] / step
            lo = np.minimum(np.floor(pos).astype(np.int64), naxis - 2)
            t = pos - lo
            rows = index[keep] * naxis
            w = mult[keep] * tap
            operator += np.bincount(rows + lo, weights=w * (1 - t), minlength=nbins * naxis)
            operator += np.bincount(rows + lo + 1, weights=w * t, minlength=nbins * naxis)
    operator = operator.reshape(nbins, naxis) / np.where(weight > 0, weight, 1.0)[:, None]
    axis.flags.writeable = False
    operator.flags.writeable = False
    return axis, operator


def _z_step(optics: Optics) -> float:
    """Coarse ``|z|`` step: a tenth of the wave-optical depth ``lambda / (n - sqrt(n^2 - NA^2))``, at most 1 um."""
    n = optics.immersion_index
    depth = optics.wavelength_um / (n - math.sqrt(n * n - optics.na**2))
    return max(0.05, min(1.0, depth / 10.0))


def _fit_band(spectra: PowerSpectra, optics: Optics, aliasing: str, min_freq: float | None) -> np.ndarray:
    freq = spectra.freq
    _, _, weight, _ = _rings(spectra.shape, spectra.pixel_size_um)
    step = freq[1]
    lowest = MIN_RING * step if min_freq is None else max(float(min_freq), step)
    band = (freq >= lowest) & (weight > 0)
    period = 1.0 / spectra.pixel_size_um
    undersampled = optics.cutoff > 0.5 * period  # an aliased copy reaches inside Nyquist
    if aliasing == "exclude" and undersampled:
        # keep what no aliased copy reaches (below 1/dx - cutoff) and what is noise only
        band &= (freq <= period - optics.cutoff - step) | (freq > optics.cutoff + step)
    return band


def _object_law(axis: np.ndarray, betas: np.ndarray, gammas: np.ndarray, cutoff: float) -> np.ndarray:
    """``S(f) = f**-beta exp(-gamma (f / cutoff)**2)`` on `axis` for every pair: (nbeta, ngamma, K)."""
    f = np.maximum(axis, axis[1])
    log_s = -np.asarray(betas, float)[:, None, None] * np.log(f)[None, None, :]
    log_s = log_s - np.asarray(gammas, float)[None, :, None] * ((f / cutoff) ** 2)[None, None, :]
    return np.exp(log_s - log_s.max(axis=-1, keepdims=True))


def _design(operator_band: np.ndarray, law: np.ndarray, k2: np.ndarray, *, paired: bool = False) -> np.ndarray:
    """``T[z, ..., b] = (A (S K_z^2))_b``, every row scaled to maximum 1.

    `law` (..., K), or (Z, ..., K) with `paired` (one set of shapes per ``z``),
    and `k2` (Z, K); returns ``(T, scale)`` with ``T`` (Z, ..., B).
    """
    shaped = k2.reshape(k2.shape[0], *([1] * (law.ndim - 1 - paired)), k2.shape[1])
    vectors = shaped * (law if paired else law[None])
    flat = vectors.reshape(-1, vectors.shape[-1])
    design = np.asarray((operator_band @ flat.T).T).reshape(*vectors.shape[:-1], operator_band.shape[0])
    scale = design.max(axis=-1, keepdims=True)
    scale[~(scale > 0)] = 1.0
    return design / scale, scale[..., 0]


def _neyman(design: np.ndarray, squared: np.ndarray, power: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Neyman's chi-square ``sum w (P - aT - N)**2``, ``w = dof / P**2``, minimised over ``a, N``.

    Closed form from five weighted sums, so every model (a row of `design`,
    `squared` its square) costs three dot products: the coarse scan.
    """
    w = dof / power**2
    stt = squared @ w
    st1, stp = (design @ np.stack([w, w * power], axis=1)).T
    s11, s1p, spp = float(w.sum()), float(w @ power), float(w @ power**2)
    det = stt * s11 - st1 * st1
    det = np.where(det > 0, det, np.inf)
    a = np.maximum((stp * s11 - st1 * s1p) / det, 0.0)
    n = (s1p - a * st1) / s11
    chi2 = spp - 2 * a * stp - 2 * n * s1p + a * a * stt + 2 * a * n * st1 + n * n * s11
    return chi2


def _fit_linear(design: np.ndarray, power: np.ndarray, dof: np.ndarray, iterations: int = 2):
    """Whittle fit of ``M = a T + N`` (``a >= 0``, ``N > 0``) for every row of `design`.

    Iteratively reweighted least squares of the gamma model with identity
    link (weights ``dof / M**2``), started from the data's own weights.
    Returns ``(nll, a, noise, model)``, ``nll = sum dof (P / M + log M)``.
    """
    shape = design.shape[:-1]
    t = design.reshape(-1, design.shape[-1])
    floor = 1e-9 * float(np.median(power))
    w = np.broadcast_to(dof / power**2, t.shape)
    for _ in range(iterations):
        wt = w * t
        stt = (wt * t).sum(axis=1)
        st1 = wt.sum(axis=1)
        stp = wt @ power
        s11 = w.sum(axis=1)
        s1p = w @ power
        det = stt * s11 - st1 * st1
        det = np.where(det > 0, det, np.inf)
        a = (stp * s11 - st1 * s1p) / det
        n = (stt * s1p - st1 * stp) / det
        low_n = n < floor
        a = np.where(low_n, (stp - floor * st1) / np.where(stt > 0, stt, np.inf), a)
        n = np.where(low_n, floor, n)
        low_a = a <= 0
        a = np.where(low_a, 0.0, a)
        n = np.where(low_a, np.maximum(s1p / s11, floor), n)
        model = a[:, None] * t + n[:, None]
        w = dof / model**2
    nll = (dof * (power / model + np.log(model))).sum(axis=1)
    return nll.reshape(shape), a.reshape(shape), n.reshape(shape), model.reshape(*shape, -1)


def _long_run_variance(residual: np.ndarray, bandwidth: int) -> float:
    """Bartlett-weighted long-run variance of standardised residuals ordered by frequency.

    1 for white residuals of unit variance; large when the misfit is smooth
    across rings, which is what a smooth change of the model (a shift of
    ``|z|``) can absorb: the heteroscedasticity-and-autocorrelation
    consistent scale of the deviance (Newey & West 1987).
    """
    r = residual - residual.mean()
    n = r.size
    total = float(r @ r) / n
    for k in range(1, min(bandwidth, n - 1) + 1):
        total += 2.0 * (1.0 - k / (bandwidth + 1.0)) * float(r[:-k] @ r[k:]) / n
    return total


# --------------------------------------------------------------------------- blind fit


@dataclass(frozen=True)
class BlindDefocus:
    """The ``|z|`` of one well and depth from its pooled power spectrum alone.

    Attributes
    ----------
    defocus_um : float
        Maximum-likelihood ``|z|``.
    defocus_err_um : float
        Standard-error equivalent: the interval's width over
        ``2 Phi^-1((1 + confidence) / 2)`` (3.92 at 95 %).
    interval_um : (float, float)
        Profile-likelihood interval at `confidence`: the hull of every ``|z|``
        whose scaled deviance is within ``chi2_1(confidence) / 2`` (a profile
        with two minima gives one wide interval, not a confident wrong value).
    confidence : float
    identifiable : bool
        Whether ``|K_z|^2`` at the estimate has a notch where the signal stands
        above the noise (see Notes of :func:`blind_defocus`); when not, the
        interval starts at 0 and the estimate is a weak guess.
    spectrum : ObjectSpectrum
        The fitted object spectrum and noise floor at ``defocus_um`` (what a
        Wiener filter at that depth needs).
    dispersion : float
        Long-run variance of the standardised residuals (1 when the model
        explains the rings to their noise); the deviance is divided by
        ``max(1, dispersion)``.
    count : int
        Fields pooled.
    freq, power, model : (B,) ndarray of float64
        Ring frequencies (cycles/um), pooled ring power and fitted model
        (NaN outside `band`).
    band : (B,) ndarray of bool
        Rings fitted.
    z_grid, profile : (G,) ndarray of float64
        ``|z|`` values evaluated and the scaled profile deviance there.
    """

    defocus_um: float
    defocus_err_um: float
    interval_um: tuple[float, float]
    confidence: float
    identifiable: bool
    spectrum: ObjectSpectrum
    dispersion: float
    count: int
    freq: np.ndarray = field(repr=False)
    power: np.ndarray = field(repr=False)
    model: np.ndarray = field(repr=False)
    band: np.ndarray = field(repr=False)
    z_grid: np.ndarray = field(repr=False)
    profile: np.ndarray = field(repr=False)


def _radius(optics: Optics, max_defocus_um: float) -> float:
    return max(60.0, 1.5 * optics.blur_radius_um(max_defocus_um) + 30.0)


@dataclass(frozen=True, eq=False)
class _Problem:
    """The cached part of the blind fit for one shape, optics and band (see :func:`_coarse`)."""

    axis: np.ndarray  # (K,) radial axis of the model profiles
    operator: scipy.sparse.csr_matrix  # (B', K) ring model rows: signal rings, then one noise ring
    signal: np.ndarray  # (B,) bool, rings of the band the optics can reach
    noise: np.ndarray  # (B,) bool, rings of the band beyond every copy of the support
    zs: np.ndarray  # (Z,) coarse |z|
    k2: np.ndarray  # (Z, K) squared model OTFs on zs
    fine: np.ndarray  # (Zf,) fine |z|, a fifth of the coarse step
    k2_fine: np.ndarray  # (Zf, K)
    design: np.ndarray  # (Z * nbeta * ngamma, B'') float32 scan designs on merged ring pairs
    squared: np.ndarray  # design**2
    merge: np.ndarray  # (B'', B') dof weights of the ring pairs merged for the scan (rows sum to 1)


@lru_cache(maxsize=4)
def _coarse(shape, pixel_size_um, optics, window, aliasing, band_key, max_defocus_um) -> _Problem:
    """The cached problem: ring operator, model OTFs on the coarse and fine grids, scan designs.

    Rings of the band that no copy of the support reaches hold only noise;
    they are merged into one ring (their dof-weighted mean), which the model
    fits with the noise floor alone.
    """
    axis, operator = _ring_operator(shape, pixel_size_um, optics.cutoff, aliasing == "fold", window)
    band = np.frombuffer(band_key, dtype=bool)
    reaches = np.asarray((operator[:, axis < optics.cutoff] != 0).any(axis=1)).ravel()
    signal, noise = band & reaches, band & ~reaches
    rows = operator[signal]
    if noise.any():
        rows = np.vstack([rows, np.zeros((1, axis.size))])
    operator_band = scipy.sparse.csr_matrix(rows)
    step = _z_step(optics)
    fine = 0.2 * step * np.arange(int(math.ceil(max_defocus_um / step)) * 5 + 1)
    k2_fine = _squared_model(axis, fine, optics, max_defocus_um)
    zs, k2 = fine[::5], k2_fine[::5]
    law = _object_law(axis, np.asarray(SCAN_BETAS), np.asarray(GAMMA_GRID), optics.cutoff)
    design, _ = _design(operator_band, law, k2)
    # the scan only finds candidates: neighbouring rings merged in pairs halve its cost
    _, _, _, ring_dof = _rings(shape, pixel_size_um)
    weights = np.append(ring_dof[signal], ring_dof[noise].sum()) if noise.any() else ring_dof[signal].copy()
    n = weights.size
    group = np.minimum(np.arange(n) // 2, (n - 1) // 2) if not noise.any() else np.append(
        np.arange(n - 1) // 2, (n - 2) // 2 + 1)
    merge = np.zeros((group.max() + 1, n))
    merge[group, np.arange(n)] = weights
    merge /= merge.sum(axis=1, keepdims=True)
    design = (design.reshape(-1, n) @ merge.T).astype(np.float32)
    squared = design * design
    for arr in (signal, noise, zs, k2, fine, k2_fine, design, squared, merge):
        arr.flags.writeable = False
    return _Problem(axis, operator_band, signal, noise, zs, k2, fine, k2_fine, design, squared, merge)


def _squared_model(axis: np.ndarray, zs: np.ndarray, optics: Optics, max_defocus_um: float) -> np.ndarray:
    """``|K_z|^2`` on `axis` for `zs`, (Z, K), with the Hankel grid of the whole search.

    ``radial_otf`` sizes its quadrature by the largest ``|z|`` asked for;
    appending ``max_defocus_um`` keeps one size, whose cached kernels the scan built.
    """
    radius = _radius(optics, max_defocus_um)
    otf = radial_otf(axis, np.append(zs, max_defocus_um), optics, max_radius_um=radius)
    return otf[:-1] ** 2


def _vertex(x: np.ndarray, y: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Abscissa of the parabola through ``i - 1, i, i + 1`` of each row of `y`, within those points."""
    i = np.clip(i, 1, x.size - 2)
    rows = np.arange(y.shape[0])
    y0, y1, y2 = y[rows, i - 1], y[rows, i], y[rows, i + 1]
    denom = y0 - 2 * y1 + y2
    shift = np.where(denom > 0, 0.5 * (y0 - y2) / np.where(denom > 0, denom, 1.0), 0.0)
    return x[i] + (x[1] - x[0]) * np.clip(shift, -1.0, 1.0)


def blind_defocus(
    spectra: PowerSpectra,
    optics: Optics,
    *,
    max_defocus_um: float = 60.0,
    aliasing: Aliasing = "fold",
    confidence: float = 0.95,
    min_freq: float | None = None,
) -> BlindDefocus:
    """``|z|`` of a well at one depth from its fields' pooled power, with no reference.

    Parameters
    ----------
    spectra : PowerSpectra
        Pooled over the well's fields at this depth (:func:`power_spectrum`,
        summed). One field works; more narrow the interval.
    optics : Optics
        The microscope; the pixel size is taken from `spectra`.
    max_defocus_um : float
        Upper end of the search.
    aliasing : {"fold", "exclude"}
        When the camera undersamples the optics (``2 NA / lambda > 1 / (2 dx)``):
        ``"fold"`` models the aliased power ``sum_m S |K|^2 (nu + m / dx)`` (a
        continuous object, as a camera sees it); ``"exclude"`` fits only the
        rings no copy reaches (below ``1/dx - cutoff``) and the noise-only
        rings beyond the cutoff. No effect on well-sampled optics.
    confidence : float
        Level of the profile-likelihood interval.
    min_freq : float, optional
        Lowest ring fitted (cycles/um); default :data:`MIN_RING` rings.

    Returns
    -------
    BlindDefocus

    Notes
    -----
    The model of the pooled ring power is ``a (A (S K_z^2)) + N`` with ``A``
    the ring average of the window's spectral taps and the aliased copies,
    ``S = f**-beta exp(-gamma (f / cutoff)**2)``: a power law with a soft
    roll-off (edges and texture finer than the optics resolve). The fit:

    1. a scan of every ``|z|`` (a tenth of the wave-optical depth
       ``lambda / (n - sqrt(n^2 - NA^2))`` apart, at most 1 um), ``beta`` of
       :data:`SCAN_BETAS` and ``gamma`` of :data:`GAMMA_GRID` by Neyman's
       chi-square (amplitude and noise in closed form; cached designs);
    2. per ``|z|``, the best shape refined by a parabola in ``beta`` and scored
       by the Whittle likelihood of a ring average of ``nu`` independent
       periodogram values, ``P ~ M Gamma(nu) / nu`` (``nu`` the ring's
       independent frequencies times the fields over :data:`HANN_INFLATION`),
       fitted by iteratively reweighted least squares: the profile likelihood;
    3. the best ``|z|`` refined on a local grid a fifth of a step apart and by
       a parabola.

    The interval is where the profile deviance, divided by ``max(1, D)``, stays
    below ``chi2_1(confidence) / 2``; ``D`` is the long-run (Bartlett,
    :data:`BANDWIDTH_RINGS`) variance of the standardised residuals in the
    rings that hold signal. A smooth misfit of the object model, which a
    shift of ``|z|`` can absorb, raises ``D`` and widens the interval; near
    focus the OTF changes slowly with ``|z|`` and trades off against the
    object's shape, so the interval is wide there.
    """
    if not isinstance(spectra, PowerSpectra):
        raise TypeError(f"spectra must be a PowerSpectra (from power_spectrum), got {type(spectra).__name__}")
    if not isinstance(optics, Optics):
        raise TypeError(f"optics must be an Optics, got {type(optics).__name__}")
    if aliasing not in _ALIASING:
        raise ValueError(f"aliasing must be one of {_ALIASING!r}, got {aliasing!r}")
    if isinstance(max_defocus_um, bool) or not isinstance(max_defocus_um, (int, float)) or not 0 < max_defocus_um <= 500:
        raise ValueError(f"max_defocus_um must be a number in (0, 500], got {max_defocus_um!r}")
    if not isinstance(confidence, float) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a float in (0, 1), got {confidence!r}")
    if spectra.count == 0:
        raise ValueError("spectra hold no fields (count == 0); sum power_spectrum over fields first")
    if not math.isclose(optics.pixel_size_um, spectra.pixel_size_um, rel_tol=1e-9):
        import dataclasses

        optics = dataclasses.replace(optics, pixel_size_um=spectra.pixel_size_um)
    band = _fit_band(spectra, optics, aliasing, min_freq)
    if band.sum() < 8:
        raise ValueError(f"only {int(band.sum())} rings to fit for images of {spectra.shape!r}; use larger images")
    power_all = spectra.mean
    if not np.all(power_all[band] > 0):
        raise ValueError("the pooled power is zero in some rings: are the images constant?")
    _, _, _, ring_dof = _rings(spectra.shape, spectra.pixel_size_um)
    inflation = HANN_INFLATION if spectra.window.startswith("taper") else 1.0
    problem = _coarse(spectra.shape, spectra.pixel_size_um, optics, spectra.window, aliasing,
                      band.tobytes(), float(max_defocus_um))
    axis, operator_band, zs, k2 = problem.axis, problem.operator, problem.zs, problem.k2
    power = power_all[problem.signal]
    dof = ring_dof[problem.signal] * spectra.count / inflation
    if problem.noise.any():
        noise_dof = ring_dof[problem.noise] * spectra.count / inflation
        power = np.append(power, noise_dof @ power_all[problem.noise] / noise_dof.sum())
        dof = np.append(dof, noise_dof.sum())
    betas, gammas = np.asarray(SCAN_BETAS), np.asarray(GAMMA_GRID)

    # 1. scan by Neyman's chi-square
    merged_power = problem.merge @ power
    merged_dof = (problem.merge > 0) @ dof
    chi2 = _neyman(problem.design, problem.squared, merged_power.astype(np.float32), merged_dof.astype(np.float32))
    chi2 = chi2.astype(np.float64).reshape(zs.size, betas.size, gammas.size)
    # 2. the likelihood where the scan is close to its best: per |z| the best shape, refined by
    #    parabolas in beta and gamma; elsewhere half the scan's excess (beyond any threshold)
    shapes = _shape_candidates(chi2, betas, gammas)  # (Z, C, 2)
    scan = chi2.reshape(zs.size, -1).min(axis=1)
    j0 = int(np.argmin(scan))
    nll0, shape0 = _profile(axis, operator_band, k2[j0 : j0 + 1], shapes[j0 : j0 + 1], power, dof, optics.cutoff)
    model0 = _best_model(axis, operator_band, k2[j0], shape0[0], power, dof, optics.cutoff)
    scale = max(1.0, _dispersion(power, dof, *model0))
    threshold = 0.5 * float(scipy.stats.chi2.ppf(confidence, 1))
    margin = 8.0 * threshold + 4.0
    near = np.flatnonzero(0.5 * (scan - scan[j0]) / scale <= margin)
    profile = float(nll0[0]) + 0.5 * (scan - scan[j0])
    shape_z = shapes[:, 1].copy()
    profile[near], shape_z[near] = _profile(axis, operator_band, k2[near], shapes[near], power, dof, optics.cutoff)
    # 3. where the profile is low, refine the shapes on local grids (the profile there sets the interval)
    for width in (0.5, 0.25, 0.125):
        near = np.flatnonzero((profile - profile.min()) / scale <= 4.0 * threshold + 2.0)
        local = shape_z[near][:, None, :] + _local_offsets(width)[None]
        better, better_shape = _profile(axis, operator_band, k2[near], local, power, dof, optics.cutoff)
        improved = better < profile[near]
        profile[near] = np.where(improved, better, profile[near])
        shape_z[near] = np.where(improved[:, None], better_shape, shape_z[near])
    # 4. the best |z| refined on the fine grid (a fifth of a step) and by a parabola through it
    j0 = int(np.argmin(profile))
    centre = 5 * j0
    window = np.arange(max(centre - 5, 0), min(centre + 6, problem.fine.size))
    fine = problem.fine[window]
    local = shape_z[j0][None, None, :] + _local_offsets(0.125)[None]
    profile_fine, shape_fine = _profile(axis, operator_band, problem.k2_fine[window],
                                        np.repeat(local, fine.size, axis=0), power, dof, optics.cutoff)
    j = int(np.argmin(profile_fine))
    z_hat = float(fine[j])
    if 0 < j < fine.size - 1:
        z_hat = float(_vertex(fine, profile_fine[None, :], np.array([j]))[0])
    shape_hat = shape_fine[j]
    best_nll, spectrum, model = _best_model(
        axis, operator_band, problem.k2_fine[window[j]], shape_hat, power, dof, optics.cutoff, full=True)
    noise = spectrum.noise
    best_nll = min(best_nll, float(profile_fine.min()))
    step = float(zs[1] - zs[0]) if zs.size > 1 else 1.0

    # interval: scaled profile deviance
    dispersion = _dispersion(power, dof, model, noise)
    scale = max(1.0, dispersion)
    z_all = np.concatenate([zs, fine])
    nll_all = np.concatenate([profile, profile_fine])
    order = np.argsort(z_all, kind="stable")
    z_all, nll_all = z_all[order], nll_all[order]
    deviance = (nll_all - float(nll_all.min())) / scale
    lo, hi = _interval(z_all, deviance, threshold, z_hat)
    # resolution floor: never narrower than half a coarse step either side
    lo, hi = max(0.0, min(lo, z_hat - 0.5 * step)), max(hi, z_hat + 0.5 * step)
    # identifiability: while |K_z|^2 falls monotonically where the signal stands above the
    # noise, a smooth object spectrum can mimic it, so the data cannot tell |z| from shape
    visible = _visible_band(axis, spectrum, k2[0])
    notched = zs[_notch_contrast(k2, axis < visible) >= NOTCH_CONTRAST]
    horizon = float(notched[0]) if notched.size else float(max_defocus_um)
    identifiable = z_hat >= horizon
    if not identifiable:
        lo, hi = 0.0, max(hi, horizon)
    err = (hi - lo) / (2.0 * float(scipy.stats.norm.ppf(0.5 + 0.5 * confidence)))

    full_model = np.full(power_all.shape, np.nan)
    full_model[problem.signal] = model[: int(problem.signal.sum())]
    full_model[problem.noise] = noise
    for arr in (power_all, full_model, band, z_all, deviance):
        arr.flags.writeable = False
    return BlindDefocus(
        defocus_um=float(z_hat), defocus_err_um=float(err), interval_um=(float(lo), float(hi)),
        confidence=confidence, identifiable=bool(identifiable), spectrum=spectrum,
        dispersion=float(dispersion), count=spectra.count,
        freq=spectra.freq, power=power_all, model=full_model, band=band, z_grid=z_all, profile=deviance,
    )


def _shape_candidates(chi2: np.ndarray, betas: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """Per ``|z|``: the grid's best ``(beta, gamma)`` and the parabolas' vertex through its neighbours, (Z, 2, 2)."""
    nz = chi2.shape[0]
    best = np.argmin(chi2.reshape(nz, -1), axis=1)
    ib, ig = np.unravel_index(best, chi2.shape[1:])
    rows = np.arange(nz)
    beta_v = _vertex(betas, chi2[rows, :, ig], ib)
    gamma_v = _vertex_uneven(gammas, chi2[rows, ib, :], ig)
    grid = np.stack([betas[ib], gammas[ig]], axis=-1)
    vertex = np.stack([beta_v, gamma_v], axis=-1)
    return np.stack([grid, vertex], axis=1)


def _vertex_uneven(x: np.ndarray, y: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Like :func:`_vertex` on an uneven grid `x` (the parabola through three points)."""
    i = np.clip(i, 1, x.size - 2)
    rows = np.arange(y.shape[0])
    x0, x1, x2 = x[i - 1], x[i], x[i + 1]
    y0, y1, y2 = y[rows, i - 1], y[rows, i], y[rows, i + 1]
    d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    curvature = (d12 - d01) / (x2 - x0)
    # p'(x) = d01 + curvature (2 x - x0 - x1) vanishes at the vertex
    vertex = np.where(curvature > 0, 0.5 * (x0 + x1) - d01 / (2 * np.where(curvature > 0, curvature, 1.0)), x1)
    return np.clip(vertex, x0, x2)


def _local_offsets(width: float) -> np.ndarray:
    """A 3 x 3 stencil of ``(beta, gamma)`` offsets, ``gamma`` steps twice ``beta``'s, (9, 2)."""
    db, dg = np.meshgrid([-width, 0.0, width], [-2 * width, 0.0, 2 * width], indexing="ij")
    return np.stack([db.ravel(), dg.ravel()], axis=-1)


def _profile(axis, operator_band, k2, shapes, power, dof, cutoff):
    """Whittle NLL minimised over candidate shapes per ``|z|``: `shapes` (Z, C, 2) -> (Z,), (Z, 2)."""
    shapes = shapes.copy()
    shapes[..., 0] = np.clip(shapes[..., 0], 0.0, BETA_MAX)
    shapes[..., 1] = np.clip(shapes[..., 1], 0.0, GAMMA_GRID[-1])
    f = np.maximum(axis, axis[1])
    law = np.exp(-shapes[..., 0:1] * np.log(f) - shapes[..., 1:2] * (f / cutoff) ** 2)  # (Z, C, K)
    law /= law.max(axis=-1, keepdims=True)
    design, _ = _design(operator_band, law, k2, paired=True)
    nll, _, _, _ = _fit_linear(design, power, dof)
    pick = np.argmin(nll, axis=1)
    rows = np.arange(nll.shape[0])
    return nll[rows, pick], shapes[rows, pick]


def _best_model(axis, operator_band, k2_row, shape, power, dof, cutoff, full: bool = False):
    """The fitted ring model at one ``|z|`` and shape: ``(model, noise)``, or ``(nll, spectrum, model)`` with `full`."""
    f = np.maximum(axis, axis[1])
    law = np.exp(-shape[0] * np.log(f) - max(shape[1], 0.0) * (f / cutoff) ** 2)
    peak = law.max()
    law /= peak
    design, scale = _design(operator_band, law[None, :], np.atleast_2d(k2_row)[:1])
    nll, a, n, model = _fit_linear(design, power, dof, iterations=5)
    if full:
        spectrum = ObjectSpectrum(float(a.ravel()[0] / scale.ravel()[0] / peak), float(shape[0]),
                                  float(max(shape[1], 0.0)), float(cutoff), float(axis[1]), float(n.ravel()[0]))
        return float(nll.ravel()[0]), spectrum, model.reshape(-1)
    return model.reshape(-1), float(n.ravel()[0])


def _notch_contrast(k2: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per row, ``max_i max_{j > i} k2[j] / k2[i]`` over the kept frequencies: > 1 once ``|K_z|^2`` has a notch."""
    masked = np.where(keep[None, :], k2, 0.0)
    later = np.maximum.accumulate(masked[:, ::-1], axis=1)[:, ::-1]  # max over j >= i
    ratio = later[:, 1:] / np.maximum(masked[:, :-1], 1e-300)
    ratio[:, ~keep[:-1]] = 0.0
    return ratio.max(axis=1)


def _visible_band(axis: np.ndarray, spectrum: ObjectSpectrum, k2_focus: np.ndarray) -> float:
    """Highest frequency where the in-focus signal of the fitted object would exceed the noise floor."""
    above = np.flatnonzero((spectrum.signal(axis) * k2_focus > spectrum.noise) & (axis > 0))
    return float(axis[above[-1]]) if above.size else 0.0


def _dispersion(power: np.ndarray, dof: np.ndarray, model: np.ndarray, noise: float) -> float:
    """Long-run variance of the standardised residuals over the rings that hold signal."""
    standardised = np.sqrt(dof) * (power - model) / model
    signal = (model - noise) > 0.05 * noise
    return _long_run_variance(standardised[signal] if signal.sum() >= 10 else standardised, BANDWIDTH_RINGS)


def restoration_depth(estimate: BlindDefocus) -> float:
    """The ``|z|`` to restore a plane at: the blind estimate where it is identifiable, else its interval's low end.

    Restoring at too large a ``|z|`` over-sharpens and rings (on simulated
    mitotic fields at focus, Wiener at an unidentifiable estimate of 6 um lost
    15 dB against the input), while restoring at too small a one only leaves
    blur in; without a notch to go by the cautious end of the interval is
    the safer choice (0 in practice).
    """
    if not isinstance(estimate, BlindDefocus):
        raise TypeError(f"estimate must be a BlindDefocus, got {type(estimate).__name__}")
    return estimate.defocus_um if estimate.identifiable else estimate.interval_um[0]


def _interval(z: np.ndarray, deviance: np.ndarray, threshold: float, z_hat: float) -> tuple[float, float]:
    """Hull of the ``z`` whose deviance is within `threshold`, crossings interpolated linearly."""
    inside = np.flatnonzero(deviance <= threshold)
    if inside.size == 0:
        return z_hat, z_hat
    i, j = int(inside[0]), int(inside[-1])
    lo, hi = float(z[i]), float(z[j])
    if i > 0:
        d0, d1 = deviance[i - 1], deviance[i]
        lo = float(z[i] - (z[i] - z[i - 1]) * (threshold - d1) / max(d0 - d1, 1e-12))
    if j < z.size - 1:
        d0, d1 = deviance[j], deviance[j + 1]
        hi = float(z[j] + (z[j + 1] - z[j]) * (threshold - d0) / max(d1 - d0, 1e-12))
    return min(lo, z_hat), max(hi, z_hat)


# --------------------------------------------------------------------------- object spectrum at a known OTF


def fit_object_spectrum(
    spectra: PowerSpectra,
    optics: Optics,
    *,
    defocus_um: float | None = None,
    otf: tuple[np.ndarray, np.ndarray] | None = None,
    aliasing: Aliasing = "fold",
    min_freq: float | None = None,
) -> ObjectSpectrum:
    """Object spectrum and noise floor of planes whose OTF is known (the Wiener filter's balance).

    Parameters
    ----------
    spectra : PowerSpectra
        Ring power of the plane(s) to restore.
    optics : Optics
    defocus_um : float, optional
        The model OTF ``K_z`` at this ``|z|``; or
    otf : (freq, profile), optional
        A measured isotropic OTF (e.g. ``PSFEstimate.freq, .otf_radial``),
        zero beyond its last sample.
    aliasing, min_freq
        As in :func:`blind_defocus`.

    Returns
    -------
    ObjectSpectrum
        ``amplitude``, ``exponent`` and ``rolloff`` fitted on the grids of
        :func:`blind_defocus` then refined, with the noise floor.
    """
    if not isinstance(spectra, PowerSpectra):
        raise TypeError(f"spectra must be a PowerSpectra (from power_spectrum), got {type(spectra).__name__}")
    if (defocus_um is None) == (otf is None):
        raise ValueError("fit_object_spectrum needs exactly one of defocus_um=... or otf=(freq, profile)")
    if not math.isclose(optics.pixel_size_um, spectra.pixel_size_um, rel_tol=1e-9):
        import dataclasses

        optics = dataclasses.replace(optics, pixel_size_um=spectra.pixel_size_um)
    band = _fit_band(spectra, optics, aliasing, min_freq)
    axis, operator = _ring_operator(spectra.shape, spectra.pixel_size_um, optics.cutoff, aliasing == "fold",
                                    spectra.window)
    operator_band = scipy.sparse.csr_matrix(operator[band])
    if otf is not None:
        freq, profile = (np.asarray(a, dtype=np.float64) for a in otf)
        if freq.ndim != 1 or freq.shape != profile.shape:
            raise ValueError(f"otf must be (freq, profile) of one length, got shapes {freq.shape!r}, {profile.shape!r}")
        k2 = np.interp(axis, freq, profile, right=0.0)[None, :] ** 2
    else:
        k2 = np.atleast_2d(radial_otf(axis, abs(float(defocus_um)), optics)) ** 2
    _, _, _, ring_dof = _rings(spectra.shape, spectra.pixel_size_um)
    inflation = HANN_INFLATION if spectra.window.startswith("taper") else 1.0
    power, dof = spectra.mean[band], ring_dof[band] * spectra.count / inflation
    if not np.all(power > 0):
        raise ValueError("the pooled power is zero in some rings: are the images constant?")
    grid = np.stack(np.meshgrid(BETA_GRID, GAMMA_GRID, indexing="ij"), axis=-1).reshape(1, -1, 2)
    _, shape = _profile(axis, operator_band, k2, grid, power, dof, optics.cutoff)
    for width in (0.5, 0.25, 0.125, 0.0625):
        _, shape = _profile(axis, operator_band, k2, shape[:, None, :] + _local_offsets(width)[None],
                            power, dof, optics.cutoff)
    _, spectrum, _ = _best_model(axis, operator_band, k2[0], shape[0], power, dof, optics.cutoff, full=True)
    return spectrum


# --------------------------------------------------------------------------- the in-focus plane of a stack


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
    _, _, weight, _ = _rings(spectra.shape, spectra.pixel_size_um)
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
        :func:`blind_defocus` of each plane. With them the chosen plane must
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
