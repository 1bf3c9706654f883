"""The defocus fit: ``|z|`` (and optionally the NA) from a recovered radial OTF.

:func:`fit_defocus` fits the optical model :func:`plate_refocus.optics.radial_otf`
(``K_z``, or ``K_z / K_0`` for an in-focus reference) to a profile by a grid
scan and Brent's method, with the curvature estimate of its standard error.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.optimize

from ..optics import Optics, model_psf_radius_um, radial_otf

__all__ = ["fit_defocus", "Reference", "REFERENCES"]

#: What the sharp reference images are: the object (profiles estimate ``K_z``)
#: or an in-focus / refocused image (profiles estimate ``K_z / K_0``).
Reference = Literal["object", "in-focus"]
REFERENCES = ("object", "in-focus")


def fit_band(freq: np.ndarray, optics: Optics, reference: str) -> np.ndarray:
    """Where the |z| fit looks: inside the passband, and for a relative OTF (``"in-focus"``)
    where ``K_0`` is not tiny and the ratio is free of aliasing. (F,) bool."""
    band = (freq > 0) & (freq < optics.cutoff)
    if reference == "in-focus":
        # The relative OTF K_z / K_0 is only defined where K_0 is not tiny, and
        # it is only alias-free below 1/dx - cutoff (the ratio of two aliased
        # sums is not the alias sum of the ratio).
        limit = min(0.8 * optics.cutoff, 1.0 / optics.pixel_size_um - optics.cutoff)
        band &= freq <= limit
    return band


def _model(
    freq: np.ndarray, z: float | np.ndarray, optics: Optics, focus: np.ndarray | None, radius: float
) -> np.ndarray:
    """``K_z`` on `freq`, or ``K_z / K_0`` when the in-focus model `focus` is given.

    An array of ``z`` gives one row per ``z`` (the fit's coarse grid in one call).
    """
    model = radial_otf(freq, z, optics, max_radius_um=radius)
    if focus is not None:
        model = np.divide(model, focus, out=np.zeros_like(model), where=np.abs(focus) > 1e-6)
    return model


def fit_defocus(
    freq: np.ndarray,
    profile: np.ndarray,
    optics: Optics,
    *,
    reference: Reference = "object",
    fit_na: bool = False,
    max_defocus_um: float = 60.0,
) -> tuple[float, float, float | None]:
    """Least-squares fit of ``|z|`` (and optionally NA) to a recovered radial OTF.

    Parameters
    ----------
    freq : (F,) ndarray of float
    profile : (F,) ndarray of float
        Recovered radial OTF (``OTF(0) = 1``).
    optics : Optics
        Nominal optics; with ``fit_na=True`` its NA is the starting point.
    reference : {"object", "in-focus"}
        ``"object"``: fit ``K_z`` over ``0 < |nu| < cutoff``. ``"in-focus"``:
        fit ``K_z / K_0`` over ``0 < |nu| <= min(0.8 cutoff, 1/dx - cutoff)``.
    fit_na : bool
        Also fit the numerical aperture.
    max_defocus_um : float
        Upper end of the search for ``|z|``.

    Returns
    -------
    z_um, z_err_um : float
        Fitted ``|z|`` and its standard error.
    na : float or None
        Fitted NA when `fit_na`, else None.

    Notes
    -----
    The model is :func:`plate_refocus.optics.radial_otf`. The objective is the unweighted
    sum of squares over the profile bins of the band; it is scanned over a
    grid of ``|z|`` (0.5 um steps) because it has many local minima, then
    refined by Brent's method. The standard error is the curvature estimate
    of nonlinear least squares, ``s^2 / sum J^2`` with ``s^2`` the residual
    variance and ``J = d model / dz``: it treats the bins as independent, so
    it understates correlated model errors (edges, aliasing); a jackknife over
    fields is not available from pooled sums.
    """
    freq = np.asarray(freq, dtype=np.float64)
    profile = np.asarray(profile, dtype=np.float64)
    if freq.shape != profile.shape or freq.ndim != 1:
        raise ValueError(f"freq and profile must be 1-D of one length, got {freq.shape!r}, {profile.shape!r}")
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES!r}, got {reference!r}")
    if not (max_defocus_um > 0):
        raise ValueError(f"max_defocus_um must be positive, got {max_defocus_um!r}")
    band = fit_band(freq, optics, reference)
    if band.sum() < 3:
        raise ValueError(
            f"too few profile bins ({int(band.sum())}) inside the fit band for optics {optics!r}; "
            "use larger images"
        )
    f, p = freq[band], profile[band]

    # one PSF radius for the whole search, so the Hankel kernel is built once
    radius = model_psf_radius_um(max_defocus_um, optics)

    def focus_of(opt: Optics) -> np.ndarray | None:
        return radial_otf(f, 0.0, opt, max_radius_um=radius) if reference == "in-focus" else None

    focus = focus_of(optics)

    def cost(z: float, opt: Optics = optics, foc: np.ndarray | None = focus) -> float:
        return float(np.sum((p - _model(f, z, opt, foc, radius)) ** 2))

    grid = np.arange(0.0, max_defocus_um + 1e-9, 0.5)
    costs = ((_model(f, grid, optics, focus, radius) - p) ** 2).sum(axis=1)
    best = int(np.argmin(costs))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    res = scipy.optimize.minimize_scalar(cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    z = float(res.x) if res.fun <= costs[best] else float(grid[best])
    na = None
    fitted = optics
    if fit_na:
        import dataclasses

        def cost2(x: np.ndarray) -> float:
            na_ = float(x[1])
            if not (0.05 <= na_ < optics.immersion_index * 0.999):
                return 1e9
            opt = dataclasses.replace(optics, na=na_)
            return cost(abs(float(x[0])), opt, focus_of(opt))

        res2 = scipy.optimize.minimize(
            cost2, np.array([z, optics.na]), method="Nelder-Mead",
            options={"xatol": 1e-4, "fatol": 1e-12, "initial_simplex": [
                [z, optics.na], [z + 0.5, optics.na], [z, optics.na * 1.05]]},
        )
        z, na = abs(float(res2.x[0])), float(res2.x[1])
        fitted = dataclasses.replace(optics, na=na)
        focus = focus_of(fitted)
    resid = p - _model(f, z, fitted, focus, radius)
    h = 1e-3 * max(1.0, z)
    jac = (_model(f, z + h, fitted, focus, radius) - _model(f, max(z - h, 0.0), fitted, focus, radius)) / (
        z + h - max(z - h, 0.0)
    )
    dof = max(f.size - (2 if fit_na else 1), 1)
    s2 = float(resid @ resid) / dof
    curvature = float(jac @ jac)
    err = math.sqrt(s2 / curvature) if curvature > 0 else math.inf
    return z, err, na
