"""The microscope's optical parameters and its defocus PSF/OTF model.

Conventions (see DESIGN.md, "Physics conventions"): lengths in micrometres,
spatial frequencies in cycles/um; a circular pupil ``P(nu) = 1`` for
``|nu| <= NA/lambda``; defocus by the angular spectrum
``W = exp(i 2 pi z sqrt((n/lambda)^2 - |nu|^2))``; the incoherent PSF
``k_z = |F^-1{P W}|^2`` normalised to unit sum, so its OTF ``K_z`` has
``K_z(0) = 1`` and support ``|nu| <= 2 NA/lambda``.

This module owns the physics primitives that the rest of the package shares,
each defined once: the shape and pixel-size checks, the 2-D frequency grid,
the radial frequency axis of every OTF profile (:func:`radial_frequencies`),
the defocus PSF/OTF on a grid and the isotropic OTF model
(:func:`radial_otf`, by Hankel transforms).

The 2-D arrays returned here are cached per ``(shape, z, optics)`` and
read-only: the simulator and the PSF fit ask for the same kernels many times.

References
----------
.. [1] M. Werth and A. Matlock, "Neural network-based microscope defocus
   correction with point spread function recovery", Boston University
   technical report, 2018.
.. [2] J. W. Goodman, *Introduction to Fourier Optics*, 3rd ed., ch. 3 & 6.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.special

__all__ = [
    "Optics",
    "check_shape",
    "check_pixel_size",
    "frequency_grid",
    "radial_frequencies",
    "defocus_otf",
    "defocus_psf",
    "radial_otf",
    "model_psf_radius_um",
]


@dataclass(frozen=True)
class Optics:
    """Widefield fluorescence optics, as seen by the camera.

    The defaults are the report's [1]_: a 20x / NA 0.25 air objective and a
    camera with 6 um pixels, i.e. 0.3 um pixels at the sample.

    Parameters
    ----------
    na : float
        Numerical aperture of the objective.
    wavelength_um : float
        Emission wavelength in micrometres.
    immersion_index : float
        Refractive index of the immersion medium (1.0 for air).
    pixel_size_um : float
        Camera pixel size divided by the magnification.
    """

    na: float = 0.25
    wavelength_um: float = 0.52
    immersion_index: float = 1.0
    pixel_size_um: float = 0.3

    def __post_init__(self) -> None:
        for name in ("na", "wavelength_um", "immersion_index", "pixel_size_um"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"Optics.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"Optics.{name} must be positive and finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.na >= self.immersion_index:
            raise ValueError(
                f"Optics.na={self.na!r} must be below the immersion index "
                f"{self.immersion_index!r}; pass immersion_index=1.518 for oil objectives"
            )

    @property
    def cutoff(self) -> float:
        """Incoherent cutoff frequency ``2 NA / lambda`` in cycles/um."""
        return 2.0 * self.na / self.wavelength_um

    @property
    def nyquist(self) -> float:
        """Sampling limit ``1 / (2 dx)`` in cycles/um."""
        return 0.5 / self.pixel_size_um

    @property
    def airy_fwhm_um(self) -> float:
        """Full width at half maximum of the in-focus PSF, ``0.51 lambda / NA``."""
        return 0.51 * self.wavelength_um / self.na

    def blur_radius_um(self, z_um: float) -> float:
        """Geometric radius of the defocus blur, ``|z| tan(asin(NA / n))``, in um.

        The edge of the light cone at depth ``z``: what paddings and PSF crops
        must hold (the diffraction tail adds a few Airy radii).
        """
        return abs(float(z_um)) * math.tan(math.asin(self.na / self.immersion_index))

    def to_dict(self) -> dict[str, float]:
        """Plain JSON-able form, as stored in plate and model metadata."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Optics:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing ones default."""
        if not isinstance(data, dict):
            raise TypeError(f"Optics.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown optics keys {unknown!r}; expected some of {sorted(known)!r}")
        return cls(**data)

    def differs_from(self, other: Optics, *, rtol: float = 1e-3) -> list[str]:
        """Names of the parameters that differ by more than ``rtol``, for warnings."""
        return [
            f.name
            for f in dataclasses.fields(self)
            if not math.isclose(getattr(self, f.name), getattr(other, f.name), rel_tol=rtol)
        ]


def check_shape(shape: Any, *, minimum: int = 2) -> tuple[int, int]:
    """Check an image shape ``(Y, X)`` and return it as two ints.

    The one shape check of the package: the optical model, the PSF recovery
    and the simulator call it.

    Parameters
    ----------
    shape : (int, int)
        Integral values (``64.0`` passes, ``64.5`` does not).
    minimum : int
        Smallest size allowed on each axis.

    Returns
    -------
    (int, int)

    Raises
    ------
    TypeError
        `shape` is not two numbers.
    ValueError
        A size is not whole or is below `minimum`.
    """
    try:
        ny, nx = (int(n) for n in shape)
        whole = all(int(n) == n for n in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be two integers (Y, X), got {shape!r}") from None
    if not whole or ny < minimum or nx < minimum:
        raise ValueError(f"shape must be two integers >= {minimum} (Y, X), got {shape!r}")
    return ny, nx


def check_pixel_size(pixel_size_um: Any) -> float:
    """Check a pixel size in um (a positive, finite number) and return it as a float."""
    if isinstance(pixel_size_um, bool) or not isinstance(pixel_size_um, (int, float, np.floating)):
        raise TypeError(f"pixel_size_um must be a number, got {pixel_size_um!r}")
    if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be positive and finite, got {pixel_size_um!r}")
    return float(pixel_size_um)


@lru_cache(maxsize=64)
def _frequency_grid(shape: tuple[int, int], pixel_size_um: float, real: bool):
    ny, nx = shape
    fy = np.fft.fftfreq(ny, d=pixel_size_um)[:, None]
    fx = (np.fft.rfftfreq if real else np.fft.fftfreq)(nx, d=pixel_size_um)[None, :]
    rho = np.sqrt(fy**2 + fx**2)
    for a in (fy, fx, rho):
        a.flags.writeable = False
    return fy, fx, rho


def frequency_grid(
    shape: tuple[int, int], pixel_size_um: float, *, real: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spatial frequencies of a ``(Y, X)`` grid in FFT order, cycles/um.

    Returns
    -------
    fy : (Y, 1) ndarray of float64
    fx : (1, X) or (1, X // 2 + 1) ndarray of float64
        The second form when ``real=True`` (the layout of ``rfft2``).
    rho : (Y, X) or (Y, X // 2 + 1) ndarray of float64
        Radial frequency ``sqrt(fy**2 + fx**2)``.
    """
    return _frequency_grid(check_shape(shape), float(pixel_size_um), bool(real))


def radial_frequencies(shape: tuple[int, int], pixel_size_um: float) -> np.ndarray:
    """The radial frequency axis of every OTF profile for a field shape.

    The one ``freq`` axis of the package: the recovered profiles, the results
    store and the simulator's ground truth all lie on it. The spacing is the
    coarser of the two grid spacings, ``1 / (min(Y, X) dx)``, so that every
    bin holds grid points; the axis runs from 0 past the corner of the grid,
    ``sqrt(2) / (2 dx)``, so every grid frequency is interpolated.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(Y, X)``.
    pixel_size_um : float

    Returns
    -------
    freq : (F,) ndarray of float64
        Cycles/um, ``freq[0] == 0``.
    """
    ny, nx = check_shape(shape)
    dx = check_pixel_size(pixel_size_um)
    step = 1.0 / (min(ny, nx) * dx)
    fy = np.abs(np.fft.fftfreq(ny, d=dx)).max()
    fx = np.abs(np.fft.fftfreq(nx, d=dx)).max()
    nbins = int(math.floor(math.hypot(fy, fx) / step)) + 2
    return np.arange(nbins) * step


def spherical_phase(rho: np.ndarray, optics: Optics, rms_waves: float) -> np.ndarray:
    """Pupil phase (radians) of primary spherical aberration, Zernike ``Z(4, 0)`` of `rms_waves` rms.

    ``2 pi w sqrt(5) (6 r^4 - 6 r^2 + 1)`` with ``r = |nu| / (NA / lambda)`` (Noll
    normalisation: unit rms over the pupil), at radial frequencies `rho`.
    """
    r2 = (np.asarray(rho) / (optics.na / optics.wavelength_um)) ** 2
    return 2 * np.pi * float(rms_waves) * math.sqrt(5.0) * (6 * r2 * r2 - 6 * r2 + 1)


def _depth(z_um: float, spherical: float) -> float:
    """The depth as the kernels are cached: ``|z|`` unless aberrated (then the sign matters)."""
    return float(z_um) if spherical else abs(float(z_um))


def _compute_psf(shape: tuple[int, int], z_um: float, optics: Optics,
                 spherical: float = 0.0) -> np.ndarray:
    fy, fx, rho = _frequency_grid(shape, optics.pixel_size_um, False)
    k = optics.immersion_index / optics.wavelength_um
    pupil = rho <= optics.na / optics.wavelength_um
    # Angular spectrum phase relative to the on-axis wave: the constant term only
    # shifts the phase of the whole field and leaves the intensity unchanged.
    kz = np.sqrt(np.maximum(k**2 - rho**2, 0.0)) - k
    phase = 2 * np.pi * z_um * kz
    if spherical:
        phase = phase + spherical_phase(rho, optics, spherical)
    field = np.where(pupil, np.exp(1j * phase), 0.0)
    amplitude = np.fft.ifft2(field)
    intensity = amplitude.real**2 + amplitude.imag**2
    intensity /= intensity.sum()
    intensity.flags.writeable = False
    return intensity


#: PSFs asked for by :func:`defocus_psf` (a simulator's few depths), kept per process.
_psf_unshifted = lru_cache(maxsize=64)(_compute_psf)


def defocus_psf(
    shape: tuple[int, int], z_um: float, optics: Optics = Optics(), *, spherical_rms_waves: float = 0.0
) -> np.ndarray:
    """Incoherent defocus PSF on a ``(Y, X)`` grid, centred, summing to one.

    Parameters
    ----------
    shape : (int, int)
        Grid size; the PSF is periodic on it, so choose it larger than the
        blur (about ``2 |z| NA`` um across) plus the Airy core.
    z_um : float
        Defocus distance in um. The result is even in ``z`` (unless aberrated).
    optics : Optics
    spherical_rms_waves : float
        Primary spherical aberration of the pupil, Zernike ``Z(4, 0)`` rms in
        waves (:func:`spherical_phase`); 0 (default) is the ideal pupil. A
        simulation parameter: estimators model the ideal pupil.

    Returns
    -------
    psf : (Y, X) ndarray of float64
        Centred at ``(Y // 2, X // 2)`` (the ``fftshift`` convention), read-only.
    """
    shape = check_shape(shape)
    spherical = float(spherical_rms_waves)
    psf = np.fft.fftshift(_psf_unshifted(shape, _depth(z_um, spherical), optics, spherical))
    psf.flags.writeable = False
    return psf


def _compute_otf(shape: tuple[int, int], z_um: float, optics: Optics, real: bool,
                 spherical: float = 0.0) -> np.ndarray:
    psf = _compute_psf(shape, z_um, optics, spherical)
    otf = np.fft.rfft2(psf) if real else np.fft.fft2(psf)
    otf.flags.writeable = False
    return otf


#: OTFs at the depths a simulator or a benchmark asks for again and again (a plate's planes).
_otf = lru_cache(maxsize=256)(_compute_otf)


def defocus_otf(
    shape: tuple[int, int],
    z_um: float,
    optics: Optics = Optics(),
    *,
    real: bool = False,
    spherical_rms_waves: float = 0.0,
    cache: bool = True,
) -> np.ndarray:
    """OTF ``K_z`` of :func:`defocus_psf` in FFT order, with ``K_z(0) = 1``.

    Parameters
    ----------
    shape : (int, int)
    z_um : float
    optics : Optics
    real : bool
        Return the ``rfft2`` half-plane ``(Y, X // 2 + 1)`` instead of the
        full ``(Y, X)`` plane.
    spherical_rms_waves : float
        As in :func:`defocus_psf`.
    cache : bool
        Keep the OTF for the next call with the same arguments (default), for
        depths asked for again and again (a simulator's planes). ``False`` for a
        one-off depth such as a fitted ``|z|``: a worker restoring a whole plate
        at continuous depths would otherwise hold hundreds of full-size kernels
        (measured: 326 MiB per worker after 6 wells of 256 x 256 fields, 732 after 54).

    Returns
    -------
    otf : ndarray of complex128
        Read-only. Zero (to rounding) beyond ``optics.cutoff``; real to
        rounding because the defocus PSF is centrosymmetric.
    """
    shape = check_shape(shape)
    spherical = float(spherical_rms_waves)
    compute = _otf if cache else _compute_otf
    return compute(shape, _depth(z_um, spherical), optics, bool(real), spherical)


# --- the radial OTF model (Hankel transforms) ---------------------------------------------------


_HANKEL_STEP = 0.04  # image-radius step in units of 1 / (NA / lambda): 12.5 samples per cutoff period


def model_psf_radius_um(z_um: float, optics: Optics) -> float:
    """Radius of the PSF that :func:`radial_otf` keeps by default: 1.5 blur radii plus 30 um, at least 60 um.

    The defocus fit passes one radius (that of its largest ``|z|``) for a
    whole search, so the Hankel kernels are built once.
    """
    return max(60.0, 1.5 * optics.blur_radius_um(z_um) + 30.0)


def _hankel_nodes(n_radii: int, phase_cycles: float) -> int:
    """Gauss-Legendre nodes over the pupil radius for an integrand of so many oscillations.

    The pupil integral of ``J0(2 pi s t) exp(i phase(t))`` oscillates about
    ``s_max + phase_cycles`` times over ``t in [0, 1]``; twice that plus a margin,
    rounded up to a multiple of 64 (few cached kernels), agrees with 1024 nodes
    to 1e-13 for NA 0.1-0.75 and |z| up to 100 um (NA 0.45, 30 um: 256 nodes,
    a third of the time), and takes more than 1024 where the integrand needs it.
    """
    cycles = n_radii * _HANKEL_STEP + phase_cycles
    return 64 * math.ceil((2.0 * cycles + 64.0) / 64.0)


@lru_cache(maxsize=8)
def _pupil_to_psf(n_radii: int, n_nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # In normalised radii (pupil t = rho / rho_max in [0, 1], image s = r rho_max) the
    # Hankel kernel J0(2 pi s t) does not depend on the optics, so fitting the NA reuses it.
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    t = 0.5 * (nodes + 1.0)
    t_weights = 0.5 * weights * 2 * np.pi * t
    s = (np.arange(n_radii) + 0.5) * _HANKEL_STEP
    kernel = scipy.special.j0(2 * np.pi * s[:, None] * t[None, :])
    for a in (t, t_weights, kernel):
        a.flags.writeable = False
    return t, t_weights, kernel


@lru_cache(maxsize=16)
def _psf_to_otf(scaled_freq: tuple[float, ...], n_radii: int) -> np.ndarray:
    s = (np.arange(n_radii) + 0.5) * _HANKEL_STEP
    matrix = scipy.special.j0(2 * np.pi * np.asarray(scaled_freq)[:, None] * s[None, :])
    matrix *= 2 * s * _HANKEL_STEP  # 2 pi s ds / pi: the energy of the pupil is pi in these units
    matrix.flags.writeable = False
    return matrix


def radial_otf(
    freq: np.ndarray,
    z_um: float | np.ndarray,
    optics: Optics = Optics(),
    *,
    max_radius_um: float | None = None,
    spherical_rms_waves: float = 0.0,
) -> np.ndarray:
    """The isotropic defocus OTF ``K_z(|nu|)`` at radial frequencies ``freq``, by Hankel transforms.

    The radial OTF of the package: the model the recovered profiles are
    fitted against and the simulator's ground truth. The amplitude PSF is the
    Hankel transform of the pupil with the angular-spectrum defocus phase,
    the OTF the Hankel transform of its squared modulus, normalised by the
    exact total energy ``pi (NA/lambda)^2`` (Parseval), so truncating the PSF
    at `max_radius_um` only affects frequencies below ``1 / max_radius_um``.
    It is not aliased, whatever the camera sampling, and costs a few
    milliseconds per ``z``; an array of ``z`` is computed in one matrix
    product. Unlike the 2-D arrays of this module it is not cached.

    It agrees with the OTF sampled along an axis of a finely sampled 2-D
    grid (:func:`defocus_otf` on a 4096 x 4096 grid at a quarter of the
    cutoff period; ``tests/test_optics.py`` keeps that computation as a
    reference) to 1.4e-3 for NA 0.25-0.75 and ``|z|`` up to 40 um. The
    largest part is an offset of about 1.3e-3 at every frequency but zero of
    the in-focus OTF (the quadrature of the Hankel transform; the 4096 grid
    is 4e-5 from the exact circular-pupil autocorrelation there).

    Parameters
    ----------
    freq : (F,) array_like of float
        Radial frequencies in cycles/um.
    z_um : float or (Z,) array_like of float
    optics : Optics
    max_radius_um : float, optional
        Radius of the PSF kept; default :func:`model_psf_radius_um` of the
        largest ``|z|``, ``max(60, 1.5 |z| tan(asin(NA/n)) + 30)``.
    spherical_rms_waves : float
        As in :func:`defocus_psf` (the OTF stays isotropic; the sign of ``z``
        then matters).

    Returns
    -------
    otf : (F,) or (Z, F) ndarray of float64
        ``otf[..., freq == 0] == 1`` and zero beyond the cutoff.
    """
    if not isinstance(optics, Optics):
        raise TypeError(f"optics must be an Optics, got {type(optics).__name__}")
    spherical = float(spherical_rms_waves)
    zs = np.asarray(z_um, dtype=np.float64)
    zs = zs if spherical else np.abs(zs)
    z = float(np.abs(zs).max()) if zs.size else 0.0
    freq = np.asarray(freq, dtype=np.float64)
    rho_max = optics.na / optics.wavelength_um
    k = optics.immersion_index / optics.wavelength_um
    if max_radius_um is None:
        max_radius_um = model_psf_radius_um(z, optics)
    # few distinct grids: round the normalised radius up to a multiple of 10
    n_radii = int(math.ceil(max_radius_um * rho_max / 10.0)) * int(round(10.0 / _HANKEL_STEP))
    phase_cycles = z * (k - math.sqrt(max(k**2 - rho_max**2, 0.0))) + 6 * math.sqrt(5.0) * abs(spherical)
    t, t_weights, kernel = _pupil_to_psf(n_radii, _hankel_nodes(n_radii, phase_cycles))
    rho = rho_max * t
    angle = 2 * np.pi * zs.reshape(-1, 1) * (np.sqrt(k**2 - rho**2) - k)  # (Z, T)
    if spherical:
        angle = angle + spherical_phase(rho, optics, spherical)[None, :]
    # real kernel times (cos, sin) columns: one real GEMM for all z, no complex copy
    columns = np.concatenate([np.cos(angle) * t_weights, np.sin(angle) * t_weights]).T  # (T, 2Z)
    amplitude = kernel @ columns
    nz = zs.size
    intensity = amplitude[:, :nz] ** 2 + amplitude[:, nz:] ** 2  # (S, Z)
    otf = (_psf_to_otf(tuple((freq / rho_max).tolist()), n_radii) @ intensity).T  # (Z, F)
    otf[:, freq >= optics.cutoff] = 0.0
    otf[:, freq == 0] = 1.0
    return otf.reshape(zs.shape + freq.shape)
