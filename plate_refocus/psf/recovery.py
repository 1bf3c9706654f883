"""PSF recovery: pooled spectra -> isotropic OTF -> support prior -> ``OTF(0) = 1`` -> PSF and ``|z|``.

:func:`recover_psf` turns pooled :class:`~plate_refocus.psf.FieldSpectra` into
a :class:`PSFEstimate`: the isotropic profile (with the exact window model on
the lowest frequencies and the aliased copies of an undersampling camera),
the support prior (known or estimated), the spatial PSF and the fitted
``|z|``. :func:`estimate_psf` does spectra and recovery in one call.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.sparse

from ..optics import Optics, check_pixel_size, check_shape, radial_frequencies
from .fit import REFERENCES, Reference, fit_defocus
from .isotropic import expand_isotropic, operator_parts, solve_profile
from .spectra import WINDOW_MODEL_BINS, WINDOW_TAPS, FieldSpectra, field_spectra

__all__ = ["PSFEstimate", "recover_psf", "estimate_psf", "psf_from_profile", "AUTO_MU"]

logger = logging.getLogger(__name__)

#: ``mu="auto"``: ``mu`` is this fraction of the mean pooled reference power.
AUTO_MU = 1e-4


@dataclass(frozen=True)
class PSFEstimate:
    """The PSF recovered for one well and depth.

    Attributes
    ----------
    freq : (F,) ndarray of float64
        Radial frequencies, cycles/um (:func:`radial_frequencies`).
    otf_radial : (F,) ndarray of float64
        Isotropic OTF profile, ``otf_radial[0] == 1``, zero beyond `cutoff`.
        ``K_z`` for ``reference="object"``, ``K_z / K_0`` for ``"in-focus"``.
    psf : (psf_size, psf_size) ndarray of float64
        Spatial kernel on the pixel grid, centred at ``psf_size // 2``,
        non-negative, summing to one.
    defocus_um, defocus_err_um : float
        Fitted ``|z|`` and its standard error (NaN without optics).
    mu : float
        The regulariser used, in units of the pooled spectral power.
    reference : str
        ``"object"`` or ``"in-focus"``: what the profile is relative to.
    cutoff : float
        Support radius applied (cycles/um): ``2 NA / lambda``, or estimated.
    count : int
        Number of fields pooled.
    na : float or None
        Fitted NA when asked for.
    """

    freq: np.ndarray
    otf_radial: np.ndarray
    psf: np.ndarray
    defocus_um: float
    defocus_err_um: float
    mu: float
    reference: str
    cutoff: float = math.nan
    count: int = 0
    na: float | None = None


def _estimate_support(freq: np.ndarray, profile: np.ndarray, noise: np.ndarray) -> float:
    """Smallest radius beyond which the profile stays at its noise level."""
    window = 5
    kernel = np.ones(window) / window
    level = np.sqrt(np.convolve(noise**2, kernel, mode="same"))
    level = np.maximum(level, 1e-3 * np.abs(profile[0]))
    snr = np.convolve(np.abs(profile), kernel, mode="same") / level
    above = np.nonzero(snr > 4.0)[0]
    if above.size == 0:
        return float(freq[1])
    last = int(above[-1])
    return float(freq[min(last + 1, freq.size - 1)])


def _spatial_psf(otf_half: np.ndarray, shape: tuple[int, int], psf_size: int) -> np.ndarray:
    kernel = np.fft.irfft2(otf_half, s=shape)
    kernel = np.fft.fftshift(kernel)
    cy, cx = shape[0] // 2, shape[1] // 2
    half = psf_size // 2
    out = np.zeros((psf_size, psf_size))
    y0, y1 = max(cy - half, 0), min(cy - half + psf_size, shape[0])
    x0, x1 = max(cx - half, 0), min(cx - half + psf_size, shape[1])
    out[y0 - (cy - half) : y1 - (cy - half), x0 - (cx - half) : x1 - (cx - half)] = kernel[y0:y1, x0:x1]
    out = np.clip(out, 0.0, None)
    total = out.sum()
    if total <= 0:
        out[half, half] = 1.0
        return out
    return out / total


def recover_psf(
    spectra: FieldSpectra,
    shape: tuple[int, int],
    optics: Optics | None = None,
    *,
    reference: Reference = "object",
    mu: float | str = "auto",
    psf_size: int = 33,
    weighting: str = "power",
    pixel_size_um: float | None = None,
    fit: bool = True,
    fit_na: bool = False,
    max_defocus_um: float = 60.0,
) -> PSFEstimate:
    """Isotropic OTF, spatial PSF and fitted ``|z|`` from pooled spectra.

    Parameters
    ----------
    spectra : FieldSpectra
        Pooled sums from :func:`field_spectra` (summed over fields).
    shape : (int, int)
        Image shape ``(Y, X)`` of the fields.
    optics : Optics, optional
        Known optics: the support prior is ``|nu| < 2 NA / lambda``, aliased
        copies are modelled for ``reference="object"``, and ``|z|`` is fitted.
        Without optics the support is estimated from the data, nothing is
        fitted (``defocus_um`` is NaN) and `pixel_size_um` is required.
    reference : {"object", "in-focus"}
        What the sharp images were: the object (the profile estimates
        ``K_z``) or an in-focus / refocused image (it estimates ``K_z / K_0``).
    mu : float or "auto"
        Regulariser relative to the typical pooled spectral power, the median
        of ``sum_i |F_i|^2`` over the half plane (the mean would be dominated
        by the zero frequency); the value added to the denominator is
        ``mu * median(denominator)``. ``"auto"`` is :data:`AUTO_MU`.
    psf_size : int
        Side of the spatial PSF returned (odd values centre it on a pixel).
    weighting : {"power", "uniform"}
        ``"power"`` (default) projects with weights ``sum |F_i|^2 + mu``: the
        profile then minimises ``sum_i |G_i - F_i B p|^2 + mu |B p|^2`` over all
        fields and frequencies, the pooled Tikhonov problem restricted to
        isotropic OTFs. ``"uniform"`` is the report's eq. 18, the unweighted
        projection ``(B^T B)^-1 B^T`` of the 2-D estimate ``C``.
    pixel_size_um : float, optional
        Overrides ``optics.pixel_size_um``; required without optics.
    fit : bool
        Fit ``|z|`` when optics are given (``False``: ``defocus_um`` is NaN).
    fit_na : bool
        Fit the NA along with ``|z|``.
    max_defocus_um : float
        Upper end of the ``|z|`` search.

    Returns
    -------
    PSFEstimate

    Notes
    -----
    The steps: ``C = N / (D + mu)`` (report eq. 17 pooled); the profile
    ``p = (B^T W B)^-1 B^T W Re(C)`` (eq. 18, ``W`` as per `weighting`);
    the support prior zeroes ``p`` at and beyond the cutoff; ``p /= p[0]`` so
    ``OTF(0) = 1``; the PSF is the inverse FFT of the 2-D expansion, centred,
    cropped to ``psf_size``, clipped at zero and renormalised to unit sum.

    With ``spectra.window_terms`` (the Hann window, the default) and
    ``weighting="power"``, the rows of the lowest frequencies
    ``|ky|, |kx| <= L`` are fitted with the exact model of the window,
    ``N(nu) = sum_c H_c(nu) K(nu - c) + mu K(nu)`` (see :func:`field_spectra`),
    and ``OTF(0) = 1`` is imposed in the fit instead of read from the zero
    frequency, whose ratio is that of the windowed fluxes of ``g`` and ``f``.

    When the camera undersamples the optics (``2 NA / lambda > 1 / (2 dx)``)
    the sampled images carry the aliased OTF ``sum_m K(nu + m / dx)``. With
    the object as reference this is modelled exactly: ``B`` includes the
    aliased copies, so the profile is the unaliased ``K_z`` up to the cutoff
    and the PSF is the sampled one. With an in-focus reference the ratio of
    two aliased sums is not isotropic; it is projected as is, and the defocus
    fit uses only the alias-free band ``|nu| <= 1/dx - cutoff``.
    """
    shape, dx, mu = _check_arguments(spectra, shape, optics, reference, mu, psf_size, weighting, pixel_size_um)
    freq = radial_frequencies(shape, dx)
    support = None if optics is None else min(optics.cutoff, float(freq[-1]))
    alias = optics is not None and reference == "object"
    matrix, profile, support = _radial_profile(spectra, shape, dx, freq, support, alias, weighting, mu)
    otf_half = (matrix @ profile).reshape(shape[0], shape[1] // 2 + 1)
    psf = _spatial_psf(otf_half, shape, int(psf_size))
    z = err = math.nan
    na = None
    if optics is not None and fit:
        fit_optics = optics if dx == optics.pixel_size_um else _replace_pixel(optics, dx)
        z, err, na = fit_defocus(
            freq, profile, fit_optics, reference=reference, fit_na=fit_na, max_defocus_um=max_defocus_um
        )
    profile.flags.writeable = False
    psf.flags.writeable = False
    return PSFEstimate(
        freq=freq,
        otf_radial=profile,
        psf=psf,
        defocus_um=z,
        defocus_err_um=err,
        mu=mu,
        reference=reference,
        cutoff=float(support),
        count=spectra.count,
        na=na,
    )


def _check_arguments(
    spectra: Any,
    shape: Any,
    optics: Any,
    reference: Any,
    mu: Any,
    psf_size: Any,
    weighting: Any,
    pixel_size_um: Any,
) -> tuple[tuple[int, int], float, float]:
    """:func:`recover_psf`'s argument checks; returns the shape, the pixel size and ``mu`` as numbers."""
    if not isinstance(spectra, FieldSpectra):
        raise TypeError(f"spectra must be a FieldSpectra (from field_spectra), got {type(spectra).__name__}")
    shape = check_shape(shape)
    half = (shape[0], shape[1] // 2 + 1)
    if spectra.shape != half:
        raise ValueError(
            f"spectra of shape {spectra.shape!r} do not belong to images of shape {shape!r} "
            f"(expected {half!r})"
        )
    if optics is not None and not isinstance(optics, Optics):
        raise TypeError(f"optics must be an Optics or None, got {type(optics).__name__}")
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES!r}, got {reference!r}")
    if weighting not in ("power", "uniform"):
        raise ValueError(f"weighting must be 'power' or 'uniform', got {weighting!r}")
    if isinstance(psf_size, bool) or not isinstance(psf_size, (int, np.integer)) or psf_size < 1:
        raise ValueError(f"psf_size must be a positive int, got {psf_size!r}")
    if isinstance(mu, str):
        if mu != "auto":
            raise ValueError(f"mu must be a non-negative number or 'auto', got {mu!r}")
        mu = AUTO_MU
    if isinstance(mu, bool) or not isinstance(mu, (int, float, np.floating)) or not (mu >= 0):
        raise ValueError(f"mu must be a non-negative number or 'auto', got {mu!r}")
    if pixel_size_um is None:
        if optics is None:
            raise ValueError("recover_psf needs optics or pixel_size_um=...; pass one of them")
        pixel_size_um = optics.pixel_size_um
    dx = check_pixel_size(pixel_size_um)
    if spectra.count == 0:
        raise ValueError("spectra hold no fields (count == 0); sum field_spectra over fields first")
    return shape, dx, float(mu)


def _radial_profile(
    spectra: FieldSpectra,
    shape: tuple[int, int],
    dx: float,
    freq: np.ndarray,
    support: float | None,
    alias: bool,
    weighting: str,
    mu: float,
) -> tuple[scipy.sparse.csr_matrix, np.ndarray, float]:
    """The isotropic profile of :func:`recover_psf`, zero beyond the support, with ``profile[0] = 1``.

    Solves the weighted projection (with the window model on the low block
    when the spectra carry it); without a known `support` it is estimated
    from the profile against the imaginary part's noise. Returns the operator
    ``B``, the profile and the support used.
    """
    den = spectra.denominator
    power = float(np.median(den)) or float(den.mean())
    if not power > 0:
        raise ValueError("the reference images have no spectral power (all zero after background)")
    mu_abs = mu * power
    matrix, mult, active = operator_parts(shape, dx, support, alias)
    if weighting == "power":
        w = mult * (den.ravel() + mu_abs)
        rhs_re = mult * spectra.numerator.real.ravel()
        rhs_im = mult * spectra.numerator.imag.ravel()
    else:
        c = spectra.numerator.ravel() / (den.ravel() + mu_abs)
        w = mult
        rhs_re, rhs_im = mult * c.real, mult * c.imag
    extra = None
    if weighting == "power" and spectra.window_terms is not None:
        w, rhs_re, extra = _window_model(matrix, mult, w, rhs_re, spectra, shape, mu_abs)
    profile, _ = solve_profile(matrix, w, rhs_re, active, extra, fix_origin=extra is not None)
    if support is None:
        noise, _ = solve_profile(matrix, w, rhs_im, active)
        support = _estimate_support(freq, profile, noise)
        profile[freq >= support] = 0.0
        logger.debug("estimated OTF support %.4f cycles/um", support)
    dc = profile[0]
    if not (abs(dc) > 0 and math.isfinite(dc)):
        raise ValueError("the recovered OTF is zero at the origin; check the backgrounds")
    return matrix, profile / dc, support


@lru_cache(maxsize=8)
def _block_rows(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Half-plane row indices of the low block ``nu`` and of ``nu - c`` for every tap ``c``.

    Returns ``(rows, shifted)``: ``rows`` (B,) for ``ky = -L .. L``, ``kx = 0 .. L``
    (C order), ``shifted`` (9, B); ``nu - c`` with ``kx - cx = -1`` is read at
    ``c - nu`` (the isotropic model is even).
    """
    ny, nx = shape
    width = nx // 2 + 1
    size = WINDOW_MODEL_BINS
    ky, kx = np.meshgrid(np.arange(-size, size + 1), np.arange(size + 1), indexing="ij")
    rows = ((ky % ny) * width + kx).ravel()
    shifted = []
    for cy, cx in WINDOW_TAPS:
        sy, sx = ky - cy, kx - cx
        flip = sx < 0
        sy, sx = np.where(flip, -sy, sy), np.where(flip, -sx, sx)
        shifted.append(((sy % ny) * width + sx).ravel())
    return rows, np.stack(shifted)


def _window_model(
    matrix: scipy.sparse.csr_matrix,
    mult: np.ndarray,
    weights: np.ndarray,
    rhs: np.ndarray,
    spectra: FieldSpectra,
    shape: tuple[int, int],
    mu_abs: float,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Replace the low block's rows of the power-weighted fit by the exact window model.

    There the pooled numerator is modelled as ``sum_c H_c(nu) K(nu - c) + mu K(nu)``
    (``H_c`` = ``spectra.window_terms``) instead of ``(D(nu) + mu) K(nu)``; the
    complex residual is weighted by ``mult / (D + mu)`` as the other rows are.
    Returns the weights and right-hand side with the block's rows zeroed, and
    the block's dense normal-equation terms.
    """
    rows, shifted = _block_rows(shape)
    terms = spectra.window_terms.reshape(len(WINDOW_TAPS), -1)  # (9, B)
    den = spectra.denominator.ravel()[rows]
    weight = mult[rows] / (den + mu_abs)
    # the block reaches only the lowest profile bins (and their aliased copies): work on those
    cols = np.unique(matrix[np.unique(np.concatenate([rows, shifted.ravel()]))].indices)
    local = matrix[:, cols]
    model = mu_abs * local[rows].toarray().astype(np.complex128)  # (B, len(cols))
    for term, index in zip(terms, shifted, strict=True):
        model += term[:, None] * local[index].toarray()
    numerator = spectra.numerator.ravel()[rows]
    nbins = matrix.shape[1]
    normal = np.zeros((nbins, nbins))
    right = np.zeros(nbins)
    normal[np.ix_(cols, cols)] = np.real(model.conj().T @ (weight[:, None] * model))
    right[cols] = np.real(model.conj().T @ (weight * numerator))
    weights = weights.copy()
    rhs = rhs.copy()
    weights[rows] = 0.0
    rhs[rows] = 0.0
    return weights, rhs, (normal, right)


def _replace_pixel(optics: Optics, dx: float) -> Optics:
    import dataclasses

    return dataclasses.replace(optics, pixel_size_um=dx)


def estimate_psf(
    references: Any,
    defocused: Any,
    optics: Optics | None,
    *,
    reference: Reference = "object",
    reference_background: float | np.ndarray = 0.0,
    defocused_background: float | np.ndarray = 0.0,
    mu: float | str = "auto",
    psf_size: int = 33,
    backend: str = "auto",
    **options: Any,
) -> PSFEstimate:
    """Pooled PSF of one well and depth from its fields, in one call.

    Parameters
    ----------
    references : (F, Y, X) or (Y, X) array_like of real
        Sharp images of the fields (object, in-focus or refocused).
    defocused : same shape as `references`
        The defocused images of the same fields.
    optics : Optics or None
    reference, mu, psf_size
        As in :func:`recover_psf`.
    reference_background, defocused_background, backend
        As in :func:`field_spectra`.
    **options
        Passed to :func:`recover_psf` (``weighting``, ``fit``, ``fit_na``,
        ``pixel_size_um``, ``max_defocus_um``) and :func:`field_spectra`
        (``edges``, ``taper``, ``workers``).

    Returns
    -------
    PSFEstimate

    Examples
    --------
    >>> est = estimate_psf(objects, stack[:, 5], Optics(), defocused_background=100.0)
    >>> est.defocus_um  # doctest: +SKIP
    """
    spectra_options = {k: options.pop(k) for k in ("edges", "taper", "workers") if k in options}
    spectra = field_spectra(
        references,
        defocused,
        reference_background=reference_background,
        defocused_background=defocused_background,
        backend=backend,
        **spectra_options,
    )
    shape = tuple(np.shape(references)[-2:])
    return recover_psf(spectra, shape, optics, reference=reference, mu=mu, psf_size=psf_size, **options)


def psf_from_profile(
    profile: np.ndarray, shape: tuple[int, int], pixel_size_um: float, *, psf_size: int = 33
) -> np.ndarray:
    """The centred spatial PSF (non-negative, sums to 1) of an isotropic OTF profile.

    The same construction as :func:`recover_psf`'s ``psf``, for a profile that
    was not recovered from pairs (e.g. the model OTF at a blind ``|z|``).

    Parameters
    ----------
    profile : (F,) ndarray of float
        On :func:`plate_refocus.optics.radial_frequencies` ``(shape, pixel_size_um)``.
    shape : (int, int)
    pixel_size_um : float
    psf_size : int

    Returns
    -------
    psf : (psf_size, psf_size) ndarray of float64
    """
    return _spatial_psf(expand_isotropic(profile, shape, pixel_size_um), tuple(shape), int(psf_size))
