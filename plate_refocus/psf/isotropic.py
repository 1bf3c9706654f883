"""The isotropic projection: the report's operator ``B`` between radial profiles and 2-D OTFs.

:func:`isotropic_operator` builds ``B`` (linear interpolation in the radius on
:func:`plate_refocus.optics.radial_frequencies`, optionally with the aliased
copies of an undersampling camera), :func:`project_isotropic` is the weighted
least-squares projection ``(B^T W B)^-1 B^T W c`` (report eq. 18) and
:func:`expand_isotropic` the expansion ``B p``.

References
----------
.. [1] M. Werth and A. Matlock, "Neural network-based microscope defocus
   correction with point spread function recovery", Boston University
   technical report, 2018, section 3.6.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.linalg
import scipy.sparse

from ..optics import check_pixel_size, check_shape, radial_frequencies

# operator_parts and solve_profile are the package's own building blocks (used by
# .recovery), not part of plate_refocus.psf's public surface.
__all__ = ["isotropic_operator", "project_isotropic", "expand_isotropic", "operator_parts", "solve_profile"]


@lru_cache(maxsize=8)
def operator_parts(
    shape: tuple[int, int], pixel_size_um: float, support: float | None, alias: bool
) -> tuple[scipy.sparse.csr_matrix, np.ndarray, np.ndarray]:
    """``B`` with what a least-squares fit on it needs, cached per arguments (checked by the caller).

    Returns ``(B, mult, active)``: the operator of :func:`isotropic_operator`,
    the Hermitian multiplicity (1 or 2) of every half-plane row, and the
    profile bins below `support` (bin 0 always), all read-only.
    """
    ny, nx = shape
    freq = radial_frequencies(shape, pixel_size_um)
    step = freq[1]
    nbins = freq.size
    fy = np.fft.fftfreq(ny, d=pixel_size_um)[:, None]
    fx = np.fft.rfftfreq(nx, d=pixel_size_um)[None, :]
    shifts = [(0, 0)]
    if alias and support is not None:
        period = 1.0 / pixel_size_um
        shifts += [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)]
        shifts = [(a * period, b * period) for a, b in shifts]
    rows, cols, vals = [], [], []
    index = np.arange(ny * fx.size)
    limit = support if support is not None else np.inf
    for sy, sx in shifts:
        rho = np.hypot(fy + sy, fx + sx).ravel()
        keep = rho < limit if (sy, sx) != (0, 0) else np.ones(rho.size, bool)
        pos = rho[keep] / step
        lo = np.minimum(np.floor(pos).astype(np.int64), nbins - 2)
        t = pos - lo
        idx = index[keep]
        rows += [idx, idx]
        cols += [lo, lo + 1]
        vals += [1.0 - t, t]
    matrix = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(ny * fx.size, nbins),
    )
    # Hermitian multiplicity of the rfft2 half plane: interior columns stand for two points.
    mult = np.full(fx.size, 2.0)
    mult[0] = 1.0
    if nx % 2 == 0:
        mult[-1] = 1.0
    mult = np.broadcast_to(mult, (ny, fx.size)).ravel().copy()
    active = freq < limit
    active[0] = True
    for a in (matrix.data, mult, active):
        a.flags.writeable = False
    return matrix, mult, active


def isotropic_operator(
    shape: tuple[int, int],
    pixel_size_um: float,
    *,
    support: float | None = None,
    alias: bool = False,
) -> scipy.sparse.csr_matrix:
    """The report's operator ``B``: radial profile -> 2-D ``rfft2`` half plane.

    Row ``j`` (a grid frequency ``nu_j`` in C order of the ``(Y, X // 2 + 1)``
    half plane) linearly interpolates the profile sampled at
    :func:`radial_frequencies` at the radius ``|nu_j|``.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(Y, X)``.
    pixel_size_um : float
    support : float, optional
        Support radius in cycles/um (the incoherent cutoff ``2 NA / lambda``).
    alias : bool
        Add the aliased copies ``|nu_j + m / dx|``, ``m`` in ``{-1, 0, 1}^2``,
        that fall inside `support`: ``B p`` is then the OTF of the sampled
        PSF, which is what a camera that undersamples the optics records.

    Returns
    -------
    B : (Y * (X // 2 + 1), F) scipy.sparse.csr_matrix
    """
    shape = check_shape(shape)
    support = None if support is None else float(support)
    return operator_parts(shape, check_pixel_size(pixel_size_um), support, bool(alias))[0]


def solve_profile(
    matrix: scipy.sparse.csr_matrix,
    weights: np.ndarray,
    rhs_2d: np.ndarray,
    active: np.ndarray,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    fix_origin: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares profile ``(B^T W B)^-1 B^T rhs`` on the `active` bins.

    ``rhs_2d`` is already weighted (``W c``). `extra` adds dense normal-equation
    terms ``(N, r)`` over all bins (the window model); with `fix_origin` the
    profile's bin 0 is fixed to 1. Returns the profile (zero off `active`) and
    the normal matrix solved.
    """
    sub = matrix[:, active]
    normal = (sub.T @ sub.multiply(weights[:, None])).toarray()
    rhs = sub.T @ rhs_2d
    if extra is not None:  # dense normal-equation terms over all bins (the window model)
        normal += extra[0][np.ix_(active, active)]
        rhs = rhs + extra[1][active]
    if fix_origin:  # profile[0] = 1: solve for the other bins only
        rhs = rhs[1:] - normal[1:, 0]
        normal = normal[1:, 1:]
    # A bin with no grid point of weight (possible only for tiny or odd grids)
    # would make the system singular: tie it to zero with a negligible ridge.
    diag = np.diag(normal).copy()
    ridge = 1e-12 * (diag.max() if diag.size else 1.0)
    normal[np.diag_indices_from(normal)] += ridge
    try:
        factor = scipy.linalg.cho_factor(normal, lower=True, check_finite=False)
        solution = scipy.linalg.cho_solve(factor, rhs, check_finite=False)
    except np.linalg.LinAlgError:
        solution = scipy.linalg.lstsq(normal, rhs, check_finite=False)[0]
    if fix_origin:
        solution = np.concatenate([[1.0], solution])
    profile = np.zeros(active.size, dtype=np.result_type(rhs, np.float64))
    profile[active] = solution
    return profile, normal


def project_isotropic(
    otf: np.ndarray,
    shape: tuple[int, int],
    pixel_size_um: float,
    *,
    weights: np.ndarray | None = None,
    support: float | None = None,
    alias: bool = False,
) -> np.ndarray:
    """Least-squares isotropic projection ``(B^T W B)^-1 B^T W c`` (report eq. 18).

    Parameters
    ----------
    otf : (Y, X // 2 + 1) ndarray of float or complex
        A 2-D transfer function in the ``rfft2`` half plane (the real part is used).
    shape : (int, int)
        Image shape ``(Y, X)``.
    pixel_size_um : float
    weights : (Y, X // 2 + 1) ndarray of float, optional
        Non-negative weights ``W`` per frequency; ``None`` gives the report's
        unweighted projection ``(B^T B)^-1 B^T``.
    support, alias
        As in :func:`isotropic_operator`; bins at or beyond `support` are zero.

    Returns
    -------
    profile : (F,) ndarray of float64
        On :func:`radial_frequencies`. The weights count each half-plane point
        with its Hermitian multiplicity, so this is the least-squares fit over
        the full 2-D frequency plane.
    """
    shape = check_shape(shape)
    half = (shape[0], shape[1] // 2 + 1)
    otf = np.asarray(otf)
    if otf.shape != half:
        raise ValueError(f"otf must have the rfft2 shape {half!r} for shape {shape!r}, got {otf.shape!r}")
    matrix, mult, active = operator_parts(
        shape, check_pixel_size(pixel_size_um), None if support is None else float(support), bool(alias)
    )
    w = mult if weights is None else mult * np.asarray(weights, dtype=np.float64).ravel()
    if weights is not None and (np.asarray(weights).shape != half or np.any(w < 0)):
        raise ValueError(f"weights must be non-negative with shape {half!r}")
    profile, _ = solve_profile(matrix, w, w * np.real(otf).ravel(), active)
    return profile


def expand_isotropic(
    profile: np.ndarray,
    shape: tuple[int, int],
    pixel_size_um: float,
    *,
    support: float | None = None,
    alias: bool = False,
) -> np.ndarray:
    """The 2-D expansion ``B p`` of a radial profile, in the ``rfft2`` half plane.

    Parameters
    ----------
    profile : (F,) ndarray of float
        On :func:`radial_frequencies` ``(shape, pixel_size_um)``.
    shape, pixel_size_um, support, alias
        As in :func:`isotropic_operator`.

    Returns
    -------
    otf : (Y, X // 2 + 1) ndarray of float64
    """
    shape = check_shape(shape)
    matrix = isotropic_operator(shape, pixel_size_um, support=support, alias=alias)
    profile = np.asarray(profile, dtype=np.float64)
    if profile.shape != (matrix.shape[1],):
        raise ValueError(
            f"profile must have {matrix.shape[1]} samples (radial_frequencies of {shape!r}), "
            f"got shape {profile.shape!r}"
        )
    return (matrix @ profile).reshape(shape[0], shape[1] // 2 + 1)
