"""The blind estimate: ``|z|`` of a well at one depth from its pooled power spectrum alone.

:func:`blind_defocus` fits the ring model of :mod:`.model` over ``|z|`` and
the object's shape in steps (a scan by Neyman's chi-square, the profile
likelihood near the scan's best, the best ``|z|`` refined on a finer grid),
reads the interval off the scaled profile deviance and decides whether the
data can tell ``|z|`` at all (a notch of ``|K_z|^2`` above the noise);
:func:`restoration_depth` is the ``|z|`` to restore a plane at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.sparse
import scipy.stats

from ..optics import Optics, radial_otf
from .model import (
    ALIASING,
    GAMMA_GRID,
    Aliasing,
    ObjectSpectrum,
    fit_at_shape,
    fit_band,
    local_offsets,
    object_law,
    profile_over_shapes,
    ring_design,
    ring_operator,
    with_pixel_size,
)
from .spectra import PowerSpectra, ring_dof, ring_geometry

#: Exponents of the coarse scan (the parabola and local grids refine them).
SCAN_BETAS: tuple[float, ...] = tuple(float(b) for b in np.arange(0.0, 5.01, 1.0))
#: ``|K_z|^2`` must rise again by this factor after a dip, inside the band where the
#: signal exceeds the noise, before ``|z|`` counts as identifiable (see :func:`blind_defocus`).
NOTCH_CONTRAST = 1.25
#: Step 2 of the fit evaluates every this-many-th ``|z|`` the scan keeps, then fills in around the low ones.
PROFILE_STRIDE = 3
#: Bartlett bandwidth (rings) of the long-run variance that scales the profile likelihood.
BANDWIDTH_RINGS = 16


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


@lru_cache(maxsize=8)
def _quantiles(confidence: float) -> tuple[float, float]:
    """``(chi2_1(confidence) / 2, Phi^-1((1 + confidence) / 2))``: the deviance threshold and the z-score
    of the interval (cached: scipy's ``ppf`` costs a quarter of a millisecond, a few % of a fit)."""
    return 0.5 * float(scipy.stats.chi2.ppf(confidence, 1)), float(scipy.stats.norm.ppf(0.5 + 0.5 * confidence))


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
    notch: np.ndarray  # (Z, K + 1) notch contrast of k2 over its first m frequencies (see notch_table)


@lru_cache(maxsize=4)
def _coarse(shape, pixel_size_um, optics, window, aliasing, band_key, max_defocus_um) -> _Problem:
    """The cached problem: ring operator, model OTFs on the coarse and fine grids, scan designs.

    Rings of the band that no copy of the support reaches hold only noise;
    they are merged into one ring (their dof-weighted mean), which the model
    fits with the noise floor alone.
    """
    axis, operator = ring_operator(shape, pixel_size_um, optics.cutoff, aliasing == "fold", window)
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
    law = object_law(axis, np.asarray(SCAN_BETAS), np.asarray(GAMMA_GRID), optics.cutoff)
    design, _ = ring_design(operator_band, law, k2)
    # the scan only finds candidates: neighbouring rings merged in pairs halve its cost
    _, _, _, dof = ring_geometry(shape, pixel_size_um)
    weights = np.append(dof[signal], dof[noise].sum()) if noise.any() else dof[signal].copy()
    n = weights.size
    group = np.minimum(np.arange(n) // 2, (n - 1) // 2) if not noise.any() else np.append(
        np.arange(n - 1) // 2, (n - 2) // 2 + 1)
    merge = np.zeros((group.max() + 1, n))
    merge[group, np.arange(n)] = weights
    merge /= merge.sum(axis=1, keepdims=True)
    design = (design.reshape(-1, n) @ merge.T).astype(np.float32)
    squared = design * design
    notch = notch_table(k2)
    for arr in (signal, noise, zs, k2, fine, k2_fine, design, squared, merge, notch):
        arr.flags.writeable = False
    return _Problem(axis, operator_band, signal, noise, zs, k2, fine, k2_fine, design, squared, merge, notch)


def _squared_model(axis: np.ndarray, zs: np.ndarray, optics: Optics, max_defocus_um: float) -> np.ndarray:
    """``|K_z|^2`` on `axis` for `zs`, (Z, K), with the Hankel grid of the whole search.

    ``radial_otf`` sizes its quadrature by the largest ``|z|`` asked for;
    appending ``max_defocus_um`` keeps one size, whose cached kernels the scan built.
    """
    radius = _radius(optics, max_defocus_um)
    otf = radial_otf(axis, np.append(zs, max_defocus_um), optics, max_radius_um=radius)
    return otf[:-1] ** 2


def _z_step(optics: Optics) -> float:
    """Coarse ``|z|`` step: a tenth of the wave-optical depth ``lambda / (n - sqrt(n^2 - NA^2))``, at most 1 um."""
    n = optics.immersion_index
    depth = optics.wavelength_um / (n - math.sqrt(n * n - optics.na**2))
    return max(0.05, min(1.0, depth / 10.0))


def _neyman(design: np.ndarray, squared: np.ndarray, power: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Neyman's chi-square ``sum w (P - aT - N)**2``, ``w = dof / P**2``, minimised over ``a, N``.

    Closed form from five weighted sums, so every model (a row of `design`,
    `squared` its square) costs three dot products: the coarse scan.
    """
    w = dof / power**2
    # three matrix-vector products: OpenBLAS takes twice as long for one product with two columns
    stt, st1, stp = squared @ w, design @ w, design @ (w * power)
    s11, s1p, spp = float(w.sum()), float(w @ power), float(w @ power**2)
    det = stt * s11 - st1 * st1
    det = np.where(det > 0, det, np.inf)
    a = np.maximum((stp * s11 - st1 * s1p) / det, 0.0)
    n = (s1p - a * st1) / s11
    chi2 = spp - 2 * a * stp - 2 * n * s1p + a * a * stt + 2 * a * n * st1 + n * n * s11
    return chi2


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
       fitted by iteratively reweighted least squares: the profile likelihood
       (on every :data:`PROFILE_STRIDE`-th ``|z|`` near the scan's best, the scan's
       local minima and around low points; elsewhere interpolated);
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
    optics, band = _checked(spectra, optics, aliasing, max_defocus_um, confidence, min_freq)
    problem = _coarse(spectra.shape, spectra.pixel_size_um, optics, spectra.window, aliasing,
                      band.tobytes(), float(max_defocus_um))
    power, dof = _pooled(spectra, problem)
    threshold, z_score = _quantiles(confidence)
    profile, shape_z = _coarse_profile(problem, _scan(problem, power, dof), power, dof, optics.cutoff, threshold)
    z_hat, fine, profile_fine, spectrum, model = _refine(problem, profile, shape_z, power, dof, optics.cutoff)
    dispersion = _dispersion(power, dof, model, spectrum.noise)
    z_all, deviance, (lo, hi) = _deviance_interval(problem, profile, fine, profile_fine, z_hat,
                                                   max(1.0, dispersion), threshold)
    # identifiability: while |K_z|^2 falls monotonically where the signal stands above the
    # noise, a smooth object spectrum can mimic it, so the data cannot tell |z| from shape
    horizon = _horizon(problem, spectrum, max_defocus_um)
    identifiable = z_hat >= horizon
    if not identifiable:
        lo, hi = 0.0, max(hi, horizon)
    err = (hi - lo) / (2.0 * z_score)

    power_all = spectra.mean
    full_model = np.full(power_all.shape, np.nan)
    full_model[problem.signal] = model[: int(problem.signal.sum())]
    full_model[problem.noise] = spectrum.noise
    for arr in (power_all, full_model, band, z_all, deviance):
        arr.flags.writeable = False
    return BlindDefocus(
        defocus_um=float(z_hat), defocus_err_um=float(err), interval_um=(float(lo), float(hi)),
        confidence=confidence, identifiable=bool(identifiable), spectrum=spectrum,
        dispersion=float(dispersion), count=spectra.count,
        freq=spectra.freq, power=power_all, model=full_model, band=band, z_grid=z_all, profile=deviance,
    )


def _checked(spectra, optics, aliasing, max_defocus_um, confidence, min_freq) -> tuple[Optics, np.ndarray]:
    """The arguments of :func:`blind_defocus` checked: the optics at the spectra's pixel size, the rings to fit."""
    if not isinstance(spectra, PowerSpectra):
        raise TypeError(f"spectra must be a PowerSpectra (from power_spectrum), got {type(spectra).__name__}")
    if not isinstance(optics, Optics):
        raise TypeError(f"optics must be an Optics, got {type(optics).__name__}")
    if aliasing not in ALIASING:
        raise ValueError(f"aliasing must be one of {ALIASING!r}, got {aliasing!r}")
    if isinstance(max_defocus_um, bool) or not isinstance(max_defocus_um, (int, float)) or not 0 < max_defocus_um <= 500:
        raise ValueError(f"max_defocus_um must be a number in (0, 500], got {max_defocus_um!r}")
    if not isinstance(confidence, float) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a float in (0, 1), got {confidence!r}")
    if spectra.count == 0:
        raise ValueError("spectra hold no fields (count == 0); sum power_spectrum over fields first")
    optics = with_pixel_size(optics, spectra)
    band = fit_band(spectra, optics, aliasing, min_freq)
    if band.sum() < 8:
        raise ValueError(f"only {int(band.sum())} rings to fit for images of {spectra.shape!r}; use larger images")
    if not np.all(spectra.mean[band] > 0):
        raise ValueError("the pooled power is zero in some rings: are the images constant?")
    return optics, band


def _pooled(spectra: PowerSpectra, problem: _Problem) -> tuple[np.ndarray, np.ndarray]:
    """Ring power and dof as the model sees them: the signal rings, then the noise-only rings as one."""
    power_all, dof_all = spectra.mean, ring_dof(spectra)
    power, dof = power_all[problem.signal], dof_all[problem.signal]
    if problem.noise.any():
        noise_dof = dof_all[problem.noise]
        power = np.append(power, noise_dof @ power_all[problem.noise] / noise_dof.sum())
        dof = np.append(dof, noise_dof.sum())
    return power, dof


def _scan(problem: _Problem, power: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """Step 1: Neyman's chi-square of every scanned ``(|z|, beta, gamma)`` on merged ring pairs, (Z, nbeta, ngamma)."""
    merged_power = problem.merge @ power
    merged_dof = (problem.merge > 0) @ dof
    chi2 = _neyman(problem.design, problem.squared, merged_power.astype(np.float32), merged_dof.astype(np.float32))
    return chi2.astype(np.float64).reshape(problem.zs.size, len(SCAN_BETAS), len(GAMMA_GRID))


def _coarse_profile(problem: _Problem, chi2: np.ndarray, power: np.ndarray, dof: np.ndarray, cutoff: float,
                    threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2 and 3: the profile NLL on the coarse ``|z|`` and its best shape there, (Z,), (Z, 2)."""
    axis, operator_band, zs, k2 = problem.axis, problem.operator, problem.zs, problem.k2
    # 2. the likelihood where the scan is close to its best: per |z| the best shape, refined by
    #    parabolas in beta and gamma; elsewhere half the scan's excess (beyond any threshold)
    shapes = _shape_candidates(chi2, np.asarray(SCAN_BETAS), np.asarray(GAMMA_GRID))  # (Z, C, 2)
    scan = chi2.reshape(zs.size, -1).min(axis=1)
    j0 = int(np.argmin(scan))
    nll0, shape0 = profile_over_shapes(axis, operator_band, k2[j0 : j0 + 1], shapes[j0 : j0 + 1], power, dof, cutoff)
    model0 = fit_at_shape(axis, operator_band, k2[j0], shape0[0], power, dof, cutoff)
    scale = max(1.0, _dispersion(power, dof, *model0))
    margin = 8.0 * threshold + 4.0
    near = np.flatnonzero(0.5 * (scan - scan[j0]) / scale <= margin)
    profile = float(nll0[0]) + 0.5 * (scan - scan[j0])
    shape_z = shapes[:, 1].copy()
    _strided_profile(problem, near, scan, shapes, profile, shape_z, power, dof, cutoff, scale * margin)
    # 3. where the profile is low, refine the shapes on local grids (the profile there sets the interval)
    for width in (0.5, 0.25, 0.125):
        near = np.flatnonzero((profile - profile.min()) / scale <= 4.0 * threshold + 2.0)
        local = shape_z[near][:, None, :] + local_offsets(width)[None]
        better, better_shape = profile_over_shapes(axis, operator_band, k2[near], local, power, dof, cutoff)
        improved = better < profile[near]
        profile[near] = np.where(improved, better, profile[near])
        shape_z[near] = np.where(improved[:, None], better_shape, shape_z[near])
    return profile, shape_z


def _strided_profile(problem: _Problem, near: np.ndarray, scan: np.ndarray, shapes: np.ndarray, profile: np.ndarray,
                     shape_z: np.ndarray, power: np.ndarray, dof: np.ndarray, cutoff: float, margin: float) -> None:
    """Step 2 on the `near` ``|z|``, in place: the scan's local minima and every :data:`PROFILE_STRIDE`-th
    first, then around the low ones.

    A near ``|z|`` is evaluated when it lies within a stride (in `near`'s
    order) of an evaluated one whose NLL is within `margin` of the least, until
    no more qualify; the rest take the NLL interpolated between the evaluated
    ``|z|`` either side, both more than `margin` above the least, so they stay
    out of every later step and of the interval. The profile's basin can be
    one coarse step wide (a stride would step over it) but the scan has a
    local minimum there, so those are always evaluated. At NA 0.45 the scan
    keeps 96-141 of its 141 ``|z|`` near: this evaluates 44-63 of them, with
    estimates identical to evaluating all (``benchmarks/blind_stride_check.py``).
    """
    stride = PROFILE_STRIDE
    padded = np.concatenate([[np.inf], scan, [np.inf]])
    dips = (scan <= padded[:-2]) & (scan <= padded[2:])
    done = dips[near].copy()
    done[::stride] = True
    done[-1] = True
    todo = np.flatnonzero(done)
    while todo.size:
        idx = near[todo]
        profile[idx], shape_z[idx] = profile_over_shapes(problem.axis, problem.operator, problem.k2[idx],
                                                         shapes[idx], power, dof, cutoff)
        evaluated = np.flatnonzero(done)
        nll = profile[near[evaluated]]
        low = evaluated[nll - nll.min() <= margin]
        marks = np.zeros(near.size)
        marks[low] = 1.0
        around = np.convolve(marks, np.ones(2 * stride - 1))[stride - 1 : stride - 1 + near.size] > 0
        todo = np.flatnonzero(around & ~done)
        done |= around
    skipped = near[~done]  # their shape_z stays the scan's vertex, as everywhere outside `near`
    if skipped.size:
        kept = near[done]
        profile[skipped] = np.interp(problem.zs[skipped], problem.zs[kept], profile[kept])


def _refine(problem: _Problem, profile: np.ndarray, shape_z: np.ndarray, power: np.ndarray, dof: np.ndarray,
            cutoff: float) -> tuple[float, np.ndarray, np.ndarray, ObjectSpectrum, np.ndarray]:
    """Step 4: the best ``|z|`` refined on the fine grid (a fifth of a step) and by a parabola through it.

    Returns ``(z_hat, fine, profile_fine, spectrum, model)``: the estimate, the
    fine ``|z|`` evaluated and their profile NLL, the object spectrum and ring
    model fitted at the estimate's grid point.
    """
    j0 = int(np.argmin(profile))
    centre = 5 * j0
    window = np.arange(max(centre - 5, 0), min(centre + 6, problem.fine.size))
    fine = problem.fine[window]
    local = shape_z[j0][None, None, :] + local_offsets(0.125)[None]
    profile_fine, shape_fine = profile_over_shapes(problem.axis, problem.operator, problem.k2_fine[window],
                                                   np.repeat(local, fine.size, axis=0), power, dof, cutoff)
    j = int(np.argmin(profile_fine))
    z_hat = float(fine[j])
    if 0 < j < fine.size - 1:
        z_hat = float(_vertex(fine, profile_fine[None, :], np.array([j]))[0])
    _, spectrum, model = fit_at_shape(problem.axis, problem.operator, problem.k2_fine[window[j]], shape_fine[j],
                                      power, dof, cutoff, full=True)
    return z_hat, fine, profile_fine, spectrum, model


def _deviance_interval(problem: _Problem, profile: np.ndarray, fine: np.ndarray, profile_fine: np.ndarray,
                       z_hat: float, scale: float, threshold: float):
    """The scaled profile deviance on every ``|z|`` evaluated and its interval at `threshold`.

    Returns ``(z, deviance, (lo, hi))``, ``z`` sorted; the interval is never
    narrower than half a coarse step either side of `z_hat` (the resolution floor).
    """
    zs = problem.zs
    z_all = np.concatenate([zs, fine])
    nll_all = np.concatenate([profile, profile_fine])
    order = np.argsort(z_all, kind="stable")
    z_all, nll_all = z_all[order], nll_all[order]
    deviance = (nll_all - float(nll_all.min())) / scale
    lo, hi = _interval(z_all, deviance, threshold, z_hat)
    step = float(zs[1] - zs[0]) if zs.size > 1 else 1.0
    return z_all, deviance, (max(0.0, min(lo, z_hat - 0.5 * step)), max(hi, z_hat + 0.5 * step))


def _horizon(problem: _Problem, spectrum: ObjectSpectrum, max_defocus_um: float) -> float:
    """The least coarse ``|z|`` whose ``|K_z|^2`` has a notch where the fitted signal stands above the noise."""
    visible = _visible_band(problem.axis, spectrum, problem.k2[0])
    notched = problem.zs[problem.notch[:, int(np.count_nonzero(problem.axis < visible))] >= NOTCH_CONTRAST]
    return float(notched[0]) if notched.size else float(max_defocus_um)

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


def notch_table(k2: np.ndarray) -> np.ndarray:
    """``T[z, m] = max_{i < j < m} k2[z, j] / k2[z, i]`` (0 without a pair), (Z, K + 1).

    Above 1 once ``|K_z|^2`` rises again after a dip within its first ``m``
    frequencies: a notch. The band where the signal shows is a prefix of the
    axis, so one table per problem serves every fit (a prefix minimum, then a
    prefix maximum of the ratios).
    """
    k2 = np.asarray(k2, dtype=np.float64)
    lowest_before = np.maximum(np.minimum.accumulate(k2, axis=1)[:, :-1], 1e-300)  # min k2[:j], j >= 1
    table = np.zeros((k2.shape[0], k2.shape[1] + 1))
    if k2.shape[1] > 1:
        table[:, 2:] = np.maximum.accumulate(k2[:, 1:] / lowest_before, axis=1)
    return table


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
