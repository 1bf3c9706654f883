"""The ring model of a pooled power spectrum, and the object spectrum fitted at a known OTF.

The pooled ring power is modelled as ``a (A (S K_z^2)) + N``: ``A`` the ring
average of the window's spectral taps and the aliased copies
(:func:`ring_operator`), ``S = f**-beta exp(-gamma (f / cutoff)**2)`` the
object spectrum (:func:`object_law`), ``N`` a flat noise floor. For a given
shape ``(beta, gamma)`` the amplitude and noise floor are linear, fitted by
the Whittle likelihood (:func:`fit_at_shape`, :func:`profile_over_shapes`);
:func:`fit_object_spectrum` searches the shape at a known OTF, and the blind
fit (:mod:`.blind`) also over ``|z|``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import scipy.sparse

from ..optics import Optics, frequency_grid, radial_frequencies, radial_otf
from ..psf import window_weights
from .spectra import MIN_RING, PowerSpectra, ring_dof, ring_geometry

#: How the model treats the copies an undersampling camera folds back (see
#: :func:`~plate_refocus.focus.blind_defocus`).
Aliasing = Literal["fold", "exclude"]
ALIASING = ("fold", "exclude")

#: Exponents ``beta`` of the object spectrum ``f**-beta exp(-gamma (f / cutoff)**2)`` on the coarse grid.
BETA_GRID: tuple[float, ...] = tuple(float(b) for b in np.arange(0.0, 5.01, 0.5))
#: The steepest power law allowed: ``f**-5`` is an object whose edges are continuous
#: but not smooth; steeper falls at the optics' scale are the roll-off's job. Without
#: the bound, a steep object without defocus explained three of six real BBBC006
#: fields 32 um from focus better than the defocus did.
BETA_MAX = 5.0
#: Roll-offs ``gamma`` of the object spectrum on the coarse grid (soft edges, fine texture).
GAMMA_GRID: tuple[float, ...] = (0.0, 0.75, 1.5, 3.0, 4.5, 6.0, 10.0, 20.0, 40.0, 80.0)


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
def ring_operator(
    shape: tuple[int, int], pixel_size_um: float, support: float, fold: bool, window: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(axis, A)``: ring averages of the windowed, folded model from a profile on `axis`.

    ``A`` (B, K) maps a radial profile ``q`` sampled on ``axis`` (K,) (the
    ring spacing, out past the grid's corner and the support) to
    ``sum_c |W(c)|^2 sum_m q(|nu - c + m / dx|)`` averaged over each ring,
    with linear interpolation in the radius; copies ``m != 0`` only where they
    land inside `support` (with `fold`).
    """
    index, mult, weight, _ = ring_geometry(shape, pixel_size_um)
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


def with_pixel_size(optics: Optics, spectra: PowerSpectra) -> Optics:
    """`optics` at the pixel size of `spectra` (the spectra's, where the two differ)."""
    if math.isclose(optics.pixel_size_um, spectra.pixel_size_um, rel_tol=1e-9):
        return optics
    return dataclasses.replace(optics, pixel_size_um=spectra.pixel_size_um)


def fit_band(spectra: PowerSpectra, optics: Optics, aliasing: str, min_freq: float | None) -> np.ndarray:
    """The rings fitted, (B,) bool: from `min_freq` (default :data:`MIN_RING` rings) up, without
    the rings an aliased copy reaches when `aliasing` is ``"exclude"`` on undersampled optics."""
    freq = spectra.freq
    _, _, weight, _ = ring_geometry(spectra.shape, spectra.pixel_size_um)
    step = freq[1]
    lowest = MIN_RING * step if min_freq is None else max(float(min_freq), step)
    band = (freq >= lowest) & (weight > 0)
    period = 1.0 / spectra.pixel_size_um
    undersampled = optics.cutoff > 0.5 * period  # an aliased copy reaches inside Nyquist
    if aliasing == "exclude" and undersampled:
        # keep what no aliased copy reaches (below 1/dx - cutoff) and what is noise only
        band &= (freq <= period - optics.cutoff - step) | (freq > optics.cutoff + step)
    return band


def object_law(axis: np.ndarray, betas: np.ndarray, gammas: np.ndarray, cutoff: float) -> np.ndarray:
    """``S(f) = f**-beta exp(-gamma (f / cutoff)**2)`` on `axis` for every pair: (nbeta, ngamma, K)."""
    f = np.maximum(axis, axis[1])
    log_s = -np.asarray(betas, float)[:, None, None] * np.log(f)[None, None, :]
    log_s = log_s - np.asarray(gammas, float)[None, :, None] * ((f / cutoff) ** 2)[None, None, :]
    return np.exp(log_s - log_s.max(axis=-1, keepdims=True))


def ring_design(
    operator_band: np.ndarray, law: np.ndarray, k2: np.ndarray, *, paired: bool = False
) -> tuple[np.ndarray, np.ndarray]:
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


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array (same value) by one partition: np.median's overhead is 0.1 ms, a
    tenth of a fit's time when every IRLS call pays it."""
    n = values.size
    k = n // 2
    if n % 2:
        return float(np.partition(values, k)[k])
    lower, upper = np.partition(values, (k - 1, k))[k - 1 : k + 1]
    return float((lower + upper) / 2)


def _fit_linear(design: np.ndarray, power: np.ndarray, dof: np.ndarray, iterations: int = 2):
    """Whittle fit of ``M = a T + N`` (``a >= 0``, ``N > 0``) for every row of `design`.

    Iteratively reweighted least squares of the gamma model with identity
    link (weights ``dof / M**2``), started from the data's own weights.
    Returns ``(nll, a, noise, model)``, ``nll = sum dof (P / M + log M)``.
    """
    shape = design.shape[:-1]
    t = design.reshape(-1, design.shape[-1])
    floor = 1e-9 * _median(power)
    w = None
    for iteration in range(iterations):
        if w is None:  # the data's own weights are one row for every model: matrix-vector products
            w0 = dof / power**2
            stt, st1, stp = (t * t) @ w0, t @ w0, t @ (w0 * power)
            s11, s1p = float(w0.sum()), float(w0 @ power)
        else:
            wt = w * t
            stt = np.einsum("ij,ij->i", wt, t)
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
        if iteration + 1 < iterations:
            w = dof / model**2
    nll = (dof * (power / model + np.log(model))).sum(axis=1)
    return nll.reshape(shape), a.reshape(shape), n.reshape(shape), model.reshape(*shape, -1)


@lru_cache(maxsize=16)
def local_offsets(width: float) -> np.ndarray:
    """A 3 x 3 stencil of ``(beta, gamma)`` offsets, ``gamma`` steps twice ``beta``'s, (9, 2), read-only."""
    db, dg = np.meshgrid([-width, 0.0, width], [-2 * width, 0.0, 2 * width], indexing="ij")
    out = np.stack([db.ravel(), dg.ravel()], axis=-1)
    out.flags.writeable = False
    return out


def profile_over_shapes(axis, operator_band, k2, shapes, power, dof, cutoff):
    """Whittle NLL minimised over candidate shapes per ``|z|``: `shapes` (Z, C, 2) -> (Z,), (Z, 2)."""
    shapes = shapes.copy()
    # np.minimum/np.maximum: np.clip's dispatch costs more than the clipping on these small arrays
    shapes[..., 0] = np.minimum(np.maximum(shapes[..., 0], 0.0), BETA_MAX)
    shapes[..., 1] = np.minimum(np.maximum(shapes[..., 1], 0.0), GAMMA_GRID[-1])
    f = np.maximum(axis, axis[1])
    law = np.exp(-shapes[..., 0:1] * np.log(f) - shapes[..., 1:2] * (f / cutoff) ** 2)  # (Z, C, K)
    law /= law.max(axis=-1, keepdims=True)
    design, _ = ring_design(operator_band, law, k2, paired=True)
    nll, _, _, _ = _fit_linear(design, power, dof)
    pick = np.argmin(nll, axis=1)
    rows = np.arange(nll.shape[0])
    return nll[rows, pick], shapes[rows, pick]


def fit_at_shape(axis, operator_band, k2_row, shape, power, dof, cutoff, full: bool = False):
    """The fitted ring model at one ``|z|`` and shape: ``(model, noise)``, or ``(nll, spectrum, model)`` with `full`."""
    f = np.maximum(axis, axis[1])
    law = np.exp(-shape[0] * np.log(f) - max(shape[1], 0.0) * (f / cutoff) ** 2)
    peak = law.max()
    law /= peak
    design, scale = ring_design(operator_band, law[None, :], np.atleast_2d(k2_row)[:1])
    nll, a, n, model = _fit_linear(design, power, dof, iterations=5)
    if full:
        spectrum = ObjectSpectrum(float(a.ravel()[0] / scale.ravel()[0] / peak), float(shape[0]),
                                  float(max(shape[1], 0.0)), float(cutoff), float(axis[1]), float(n.ravel()[0]))
        return float(nll.ravel()[0]), spectrum, model.reshape(-1)
    return model.reshape(-1), float(n.ravel()[0])


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
        As in :func:`~plate_refocus.focus.blind_defocus`.

    Returns
    -------
    ObjectSpectrum
        ``amplitude``, ``exponent`` and ``rolloff`` fitted on the grids of
        :func:`~plate_refocus.focus.blind_defocus` then refined, with the noise floor.
    """
    if not isinstance(spectra, PowerSpectra):
        raise TypeError(f"spectra must be a PowerSpectra (from power_spectrum), got {type(spectra).__name__}")
    if (defocus_um is None) == (otf is None):
        raise ValueError("fit_object_spectrum needs exactly one of defocus_um=... or otf=(freq, profile)")
    optics = with_pixel_size(optics, spectra)
    band = fit_band(spectra, optics, aliasing, min_freq)
    axis, operator = ring_operator(spectra.shape, spectra.pixel_size_um, optics.cutoff, aliasing == "fold",
                                   spectra.window)
    operator_band = scipy.sparse.csr_matrix(operator[band])
    if otf is not None:
        freq, profile = (np.asarray(a, dtype=np.float64) for a in otf)
        if freq.ndim != 1 or freq.shape != profile.shape:
            raise ValueError(f"otf must be (freq, profile) of one length, got shapes {freq.shape!r}, {profile.shape!r}")
        k2 = np.interp(axis, freq, profile, right=0.0)[None, :] ** 2
    else:
        k2 = np.atleast_2d(radial_otf(axis, abs(float(defocus_um)), optics)) ** 2
    power, dof = spectra.mean[band], ring_dof(spectra)[band]
    if not np.all(power > 0):
        raise ValueError("the pooled power is zero in some rings: are the images constant?")
    grid = np.stack(np.meshgrid(BETA_GRID, GAMMA_GRID, indexing="ij"), axis=-1).reshape(1, -1, 2)
    _, shape = profile_over_shapes(axis, operator_band, k2, grid, power, dof, optics.cutoff)
    for width in (0.5, 0.25, 0.125, 0.0625):
        _, shape = profile_over_shapes(axis, operator_band, k2, shape[:, None, :] + local_offsets(width)[None],
                                       power, dof, optics.cutoff)
    _, spectrum, _ = fit_at_shape(axis, operator_band, k2[0], shape[0], power, dof, optics.cutoff, full=True)
    return spectrum
