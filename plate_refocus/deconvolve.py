"""Physics refocus: Wiener and Richardson-Lucy against a model or measured OTF, and trust per field.

A defocused plane is ``g = offset + o conv k_z + noise`` (camera counts; Poisson
noise of the signal plus Gaussian read noise, gain ``ADU per photo-electron``).
The target is the in-focus image ``o conv k_0`` on the input's intensity scale,
as for the U-Net. Everything here takes its balance from the data (the plane's
own power spectrum and the camera model), never from a ground truth.

- :class:`Blur` says what blurs the plane: the model OTF at a ``|z|``
  (``K_z``, restored to ``K_0``) or a measured isotropic profile
  (``K_z / K_0`` from an in-focus reference, restored to 1; or ``K_z`` from
  the object, restored to ``K_0``).
- :func:`wiener` divides by the OTF with the noise-to-signal ratio
  ``N / S(f)`` of a power-law object spectrum fitted to the plane
  (:func:`plate_refocus.focus.fit_object_spectrum`), on a mirror-padded grid.
- :func:`richardson_lucy` iterates the Poisson likelihood (with read noise as
  a constant shift, Snyder et al.) with the padding masked out, and stops by
  the discrepancy principle: when the reduced chi-square of the re-blurred
  estimate against the data reaches ``target_chi2`` (about 1), or stops
  improving.
- :func:`consistency` re-blurs any in-focus estimate (network or physics) and
  measures its reduced chi-square against the observed plane; :func:`hybrid`
  keeps the network where it is consistent and the physics estimate where not.

``consistency`` lives here and not in :mod:`plate_refocus.metrics` because it
is this module's forward model and noise model: the same reduced chi-square
stops Richardson-Lucy, so one definition serves both.

References
----------
.. [1] W. H. Richardson, "Bayesian-based iterative method of image
   restoration", JOSA 62, 55 (1972); L. B. Lucy, AJ 79, 745 (1974).
.. [2] D. L. Snyder, A. M. Hammoud, R. L. White, "Image recovery from data
   acquired with a charge-coupled-device camera", JOSA A 10, 1014 (1993).
.. [3] M. Bertero, P. Boccacci, "A simple method for the reduction of boundary
   effects in the Richardson-Lucy approach to image deconvolution", A&A 437,
   369 (2005).
.. [4] D. S. C. Biggs, M. Andrews, "Acceleration of iterative image
   restoration algorithms", Appl. Opt. 36, 1766 (1997).
.. [5] V. A. Morozov, "On the solution of functional equations by the method
   of regularization", Soviet Math. Dokl. 7, 414 (1966): the discrepancy principle.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.fft

from .focus import ObjectSpectrum, fit_object_spectrum, power_spectrum, ring_dof
from .optics import Optics, defocus_otf, frequency_grid, radial_otf
from .xp import get_xp, to_numpy

__all__ = [
    "NoiseModel",
    "Blur",
    "Restoration",
    "wiener",
    "richardson_lucy",
    "consistency",
    "hybrid",
    "CONSISTENCY_LIMIT",
]

log = logging.getLogger(__name__)

#: :func:`hybrid` keeps a network output whose :func:`consistency` is at most this. Calibrated on
#: simulated fields at 2000 photons (benchmarks/generalization.py --quick): the shipped U-Net read
#: 0.3-38 (10th-90th percentile, median 13) on its training family at 0-30 um and 77-179 on unseen
#: families at 40 um. Systematic errors grow with the signal, so brighter plates read higher.
CONSISTENCY_LIMIT = 50.0


@dataclass(frozen=True)
class NoiseModel:
    """The camera's noise: ``var = gain * (mean - offset) + read_noise**2 + 1/12``.

    Parameters
    ----------
    offset : float
        Camera offset (bias) in ADU, subtracted before and added after.
    read_noise : float
        Read noise standard deviation in ADU.
    gain : float
        ADU per photo-electron (1 in the simulator).
    """

    offset: float = 0.0
    read_noise: float = 0.0
    gain: float = 1.0

    def __post_init__(self) -> None:
        for name in ("offset", "read_noise", "gain"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise TypeError(f"NoiseModel.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.read_noise < 0 or self.gain <= 0:
            raise ValueError(f"NoiseModel needs read_noise >= 0 and gain > 0, got {self!r}")

    @classmethod
    def from_camera(cls, camera: Any) -> NoiseModel:
        """From a :class:`plate_refocus.simulate.Camera` (or any object with ``offset`` and ``read_noise``)."""
        return cls(float(camera.offset), float(camera.read_noise), float(getattr(camera, "gain", 1.0)))

    def variance(self, signal: np.ndarray) -> np.ndarray:
        """Per-pixel variance (ADU^2) for an expected signal above the offset (ADU)."""
        return self.gain * np.clip(signal, 0.0, None) + self.read_noise**2 + 1.0 / 12.0


@dataclass(frozen=True)
class Blur:
    """What blurred a plane, and what it is restored to.

    Build one with :meth:`model` or :meth:`measured`.

    Attributes
    ----------
    optics : Optics
    defocus_um : float
        ``|z|`` of the model; for a measured profile the fitted ``|z|`` (only
        used to size the padding).
    freq, profile : tuple of float, optional
        A measured isotropic OTF (cycles/um), ``profile[0] == 1``.
    relative : bool
        The measured profile is ``K_z / K_0`` (an in-focus reference): the
        target is the profile's own reference (transfer 1). Otherwise it is
        ``K_z`` and the target is the model ``K_0``.
    """

    optics: Optics
    defocus_um: float
    freq: tuple[float, ...] | None = None
    profile: tuple[float, ...] | None = None
    relative: bool = True

    @classmethod
    def model(cls, optics: Optics, defocus_um: float) -> Blur:
        """The model OTF ``K_z`` at ``|z| = defocus_um``, restored to ``K_0``."""
        if not isinstance(optics, Optics):
            raise TypeError(f"optics must be an Optics, got {type(optics).__name__}")
        z = float(defocus_um)
        if not math.isfinite(z):
            raise ValueError(f"defocus_um must be finite, got {defocus_um!r}; use a fitted |z|, not NaN")
        return cls(optics, abs(z))

    @classmethod
    def measured(
        cls, optics: Optics, freq: np.ndarray, profile: np.ndarray, *, relative: bool = True,
        defocus_um: float = 0.0,
    ) -> Blur:
        """A measured isotropic OTF (e.g. ``PSFEstimate.freq, PSFEstimate.otf_radial``), expanded to 2-D.

        Parameters
        ----------
        optics : Optics
            Pixel size (and ``K_0`` when ``relative=False``).
        freq, profile : (F,) array_like of float
            Radial frequencies (cycles/um) and the OTF there; zero beyond ``freq[-1]``.
        relative : bool
            ``True`` for ``K_z / K_0`` (``PSFEstimate.reference == "in-focus"``).
        defocus_um : float
            The fitted ``|z|``, to size the padding.
        """
        f = np.asarray(freq, dtype=np.float64).ravel()
        p = np.asarray(profile, dtype=np.float64).ravel()
        if f.shape != p.shape or f.size < 2 or not np.all(np.isfinite(p)):
            raise ValueError(f"freq and profile must be finite 1-D arrays of one length >= 2, got {f.shape!r}, {p.shape!r}")
        z = float(defocus_um) if math.isfinite(float(defocus_um)) else 0.0
        return cls(optics, abs(z), tuple(f.tolist()), tuple(p.tolist()), bool(relative))

    @property
    def is_model(self) -> bool:
        return self.profile is None

    def padding(self) -> int:
        """Pixels of mirror padding on each side: the blur radius plus three Airy radii."""
        reach = self.optics.blur_radius_um(self.defocus_um) + 3 * 0.61 * self.optics.wavelength_um / self.optics.na
        return int(math.ceil(reach / self.optics.pixel_size_um)) + 2

    def radial(self) -> tuple[np.ndarray, np.ndarray]:
        """``(freq, |OTF|)``: the observed transfer on a radial axis (for the object-spectrum fit)."""
        if self.is_model:
            return np.array([]), np.array([])
        return np.asarray(self.freq), np.asarray(self.profile)


@lru_cache(maxsize=32)
def _transfer(blur: Blur, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(H, T)`` in the ``rfft2`` half plane of `shape`: observed and target transfer, read-only."""
    if blur.is_model:
        h = defocus_otf(shape, blur.defocus_um, blur.optics, real=True)
        t = defocus_otf(shape, 0.0, blur.optics, real=True)
        return h, t
    _, _, rho = frequency_grid(shape, blur.optics.pixel_size_um, real=True)
    h = np.interp(rho, np.asarray(blur.freq), np.asarray(blur.profile), right=0.0).astype(np.complex128)
    if blur.relative:
        t = np.ones_like(h)
    else:
        t = defocus_otf(shape, 0.0, blur.optics, real=True)
    h.flags.writeable = False
    t.flags.writeable = False
    return h, t


@dataclass(frozen=True)
class Restoration:
    """A restored plane and how it was obtained.

    Attributes
    ----------
    image : (Y, X) ndarray of float32
        The in-focus estimate on the input's intensity scale (offset added back).
    chi2 : float
        Reduced chi-square of the re-blurred estimate against the data
        (:func:`consistency`, interior pixels).
    iterations : int
        Richardson-Lucy iterations run (0 for Wiener).
    stop : str
        Why it stopped: ``"wiener"``, ``"discrepancy"``, ``"stalled"``, ``"max_iter"``.
    spectrum : ObjectSpectrum or None
        The object spectrum and noise floor used for the Wiener balance.
    """

    image: np.ndarray
    chi2: float
    iterations: int
    stop: str
    spectrum: ObjectSpectrum | None = None


def _check_image(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected one plane (Y, X), got shape {img.shape!r}; loop over a stack")
    if np.dtype(img.dtype).kind not in "uif":
        raise TypeError(f"the plane must hold real numbers, got dtype {img.dtype!r}")
    if min(img.shape) < 8:
        raise ValueError(f"the plane is too small to restore, got shape {img.shape!r}")
    img = img.astype(np.float64)
    if not np.all(np.isfinite(img)):
        raise ValueError("the plane holds NaN or inf; fill missing pixels first")
    return img


def _check_blur(blur: Any) -> Blur:
    if not isinstance(blur, Blur):
        raise TypeError(f"blur must be a Blur (Blur.model(optics, z) or Blur.measured(...)), got {type(blur).__name__}")
    return blur


def _padded(image: np.ndarray, pad: int) -> tuple[np.ndarray, tuple[int, int], tuple[slice, slice]]:
    """Mirror-pad by `pad` and up to an FFT-friendly size; the crop that undoes it."""
    big = tuple(scipy.fft.next_fast_len(n + 2 * pad, real=True) for n in image.shape)
    extra = [(pad, b - n - pad) for b, n in zip(big, image.shape, strict=True)]
    mode = "symmetric" if all(pad <= n for n in image.shape) else "reflect"
    if pad > min(image.shape) - 1:
        mode = "wrap"
    padded = np.pad(image, extra, mode=mode)
    crop = (slice(pad, pad + image.shape[0]), slice(pad, pad + image.shape[1]))
    return padded, big, crop


def _ring_transfer(blur: Blur, freq: np.ndarray) -> np.ndarray:
    """``|H(f)|^2`` of the blur on a radial axis."""
    if blur.is_model:
        return radial_otf(freq, blur.defocus_um, blur.optics) ** 2
    f, p = blur.radial()
    return np.interp(freq, f, p, right=0.0) ** 2


def _object_power(
    image: np.ndarray, blur: Blur, noise: NoiseModel | None, spectrum: ObjectSpectrum | None
) -> tuple[ObjectSpectrum, np.ndarray, np.ndarray]:
    """The object spectrum to balance with, and the most the plane's own ring power allows.

    Returns ``(spectrum, freq, cap)``: where the blur leaves little signal the
    fitted power law is an extrapolation, so ``S`` is capped at what the ring
    power ``P`` allows, ``(max(P - N, 0) + 2 P / sqrt(nu)) / |H|^2`` (two
    standard deviations of the ring average above the signal seen).
    """
    offset = 0.0 if noise is None else noise.offset
    spectra = power_spectrum(image, blur.optics.pixel_size_um, background=offset, backend="numpy")
    if spectrum is None:
        if blur.is_model:
            spectrum = fit_object_spectrum(spectra, blur.optics, defocus_um=blur.defocus_um)
        else:
            spectrum = fit_object_spectrum(spectra, blur.optics, otf=blur.radial())
    freq, power = spectra.freq, spectra.mean
    dof = np.maximum(ring_dof(spectra), 1.0)
    cap = (np.clip(power - spectrum.noise, 0.0, None) + 2.0 * power / np.sqrt(dof))
    cap = cap / np.maximum(_ring_transfer(blur, freq), 1e-300)
    return spectrum, freq, cap


def wiener(
    image: Any,
    blur: Blur,
    *,
    noise: NoiseModel | None = None,
    spectrum: ObjectSpectrum | None = None,
    workers: int | None = 1,
) -> Restoration:
    """Wiener refocus of one plane with the noise-to-signal ratio of its own spectrum.

    Parameters
    ----------
    image : (Y, X) array_like of real
        The defocused plane, camera counts (or any linear scale with `noise`'s offset).
    blur : Blur
        :meth:`Blur.model` at a ``|z|`` (e.g. the blind estimate) or :meth:`Blur.measured`.
    noise : NoiseModel, optional
        Camera offset (subtracted before, added after) and noise, for the
        chi-square reported. Without it the offset is 0 and the chi-square
        uses the fitted flat noise floor.
    spectrum : ObjectSpectrum, optional
        Object spectrum and noise floor to balance with (e.g. the
        ``BlindDefocus.spectrum`` of the well at this depth); default: fitted
        to this plane by :func:`plate_refocus.focus.fit_object_spectrum`.
    workers : int, optional
        ``scipy.fft`` threads.

    Returns
    -------
    Restoration

    Notes
    -----
    ``F = T conj(H) S / (|H|^2 S + N) (G - offset) + offset`` on a grid
    mirror-padded by the blur radius, with ``S(f)`` the fitted power-law object
    spectrum and ``N`` the fitted white-noise floor (both per-pixel variances,
    so their ratio does not depend on the grid), ``H`` the observed and ``T``
    the target transfer (:class:`Blur`), plus a floor :func:`border_balance`
    for the light the mirror padding gets wrong at the borders (it limits the
    gain near the zeros of a deep defocus OTF, where that error was amplified
    up to 12 dB below the oracle at 20-30 um). Where the blur leaves the signal
    below the noise the power law is an extrapolation; ``S`` is capped there
    by what the plane's ring power allows (see ``_object_power``): without the
    cap, an over-extrapolated ``S`` between the zeros of a deep defocus OTF
    amplified noise (20 dB below the oracle at 20-30 um on simulated nuclei).
    """
    blur = _check_blur(blur)
    img = _check_image(image)
    offset = 0.0 if noise is None else noise.offset
    spectrum, ring_freq, cap = _object_power(img, blur, noise, spectrum)
    padded, big, crop = _padded(img - offset, blur.padding())
    h, t = _transfer(blur, big)
    _, _, rho = frequency_grid(big, blur.optics.pixel_size_um, real=True)
    signal = np.minimum(spectrum.signal(rho), np.interp(rho, ring_freq, cap))
    floor = border_balance(img.shape, blur)
    filt = t * np.conj(h) / (np.abs(h) ** 2 + max(spectrum.noise, 1e-12) / np.maximum(signal, 1e-300) + floor)
    restored = scipy.fft.irfft2(scipy.fft.rfft2(padded, workers=workers) * filt, s=big, workers=workers)[crop]
    out = (restored + offset).astype(np.float32)
    chi2 = consistency(img, out, blur, noise=noise, noise_floor=spectrum.noise, workers=workers)
    return Restoration(out, chi2, 0, "wiener", spectrum)


#: :func:`border_balance` is this times the squared share of the image within a blur radius of a border.
BORDER_BALANCE = 0.2


def border_balance(shape: tuple[int, int], blur: Blur) -> float:
    """Error-to-signal floor of the Wiener balance for the borders' unknown light.

    A pixel within the blur radius ``R`` of a border receives light the
    image does not hold; mirror padding guesses it. The share of such pixels
    is ``a = 1 - (1 - 2R/Y)(1 - 2R/X)``; the floor is ``BORDER_BALANCE * a**2``
    (an error field of relative amplitude ``~a``, weighted down once by its
    smoothness). On simulated 260 x 348 and 520 x 696 fields (both optics,
    0-30 um) it kept the Wiener filter within about 0.5 dB of the best floor.
    """
    reach = blur.optics.blur_radius_um(blur.defocus_um) / blur.optics.pixel_size_um
    share = 1.0 - max(0.0, 1 - 2 * reach / shape[0]) * max(0.0, 1 - 2 * reach / shape[1])
    return BORDER_BALANCE * share**2


def richardson_lucy(
    image: Any,
    blur: Blur,
    *,
    noise: NoiseModel,
    target_chi2: float = 1.0,
    max_iter: int = 200,
    tol: float = 1e-3,
    accelerate: bool = True,
    backend: str = "numpy",
    workers: int | None = 1,
) -> Restoration:
    """Richardson-Lucy refocus of one plane, stopped by the discrepancy principle.

    Parameters
    ----------
    image : (Y, X) array_like of real
        The defocused plane in camera counts.
    blur : Blur
    noise : NoiseModel
        Camera offset, read noise and gain: the likelihood and the stopping rule.
    target_chi2 : float
        Stop once the reduced chi-square of the re-blurred estimate against the
        data (over the image, not the padding) is at or below this.
    max_iter : int
        Hard limit on iterations.
    tol : float
        Stop when an iteration lowers the chi-square by less than this fraction
        (it has stopped improving: a model that cannot reach the noise level).
    accelerate : bool
        Biggs-Andrews vector extrapolation (fewer iterations for the same fit).
    backend : {"numpy", "cupy", "auto"}
        Where the iterations run (:func:`plate_refocus.xp.get_xp`); the result is NumPy.
    workers : int, optional
        ``scipy.fft`` threads.

    Returns
    -------
    Restoration
        ``stop`` is ``"discrepancy"``, ``"stalled"`` or ``"max_iter"``.

    Notes
    -----
    In photo-electrons ``d = (g - offset) / gain`` and ``s = (read_noise / gain)^2``,
    the update is ``x <- x H^T[M (d + s) / (H x + s)] / H^T M`` (Snyder's
    shift for read noise), with ``M`` 1 on the image and 0 on the padding, so
    the object may extend beyond the field (light from outside enters the
    edges) without the padding pretending to be data (Bertero and Boccacci).
    The output is ``T x`` cropped, in ADU, plus the offset.
    """
    blur = _check_blur(blur)
    if not isinstance(noise, NoiseModel):
        raise TypeError(f"richardson_lucy needs noise=NoiseModel(offset, read_noise, gain), got {noise!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not (target_chi2 > 0 and tol >= 0):
        raise ValueError(f"target_chi2 must be > 0 and tol >= 0, got {target_chi2!r}, {tol!r}")
    img = _check_image(image)
    data = (img - noise.offset) / noise.gain
    shift = (noise.read_noise / noise.gain) ** 2 + 1.0 / 12.0 / noise.gain**2
    pad = blur.padding()
    big = tuple(scipy.fft.next_fast_len(n + 2 * pad, real=True) for n in img.shape)
    crop = (slice(pad, pad + img.shape[0]), slice(pad, pad + img.shape[1]))
    h, t = _transfer(blur, big)
    if not blur.is_model:
        h = _nonnegative_kernel(blur, big)
    xp, fft = get_xp(backend, workers=workers)
    h, h_conj, t = xp.asarray(h), xp.asarray(np.conj(h)), xp.asarray(t)
    data_dev = xp.asarray(data)
    mask = xp.zeros(big)
    mask[crop] = 1.0
    shifted = xp.zeros(big)
    shifted[crop] = xp.clip(data_dev + shift, 0.0, None)

    def through(x, transfer):
        return fft.irfft2(fft.rfft2(x) * transfer, s=big)

    norm = xp.clip(through(mask, h_conj), 1e-6, None)
    x = xp.full(big, max(float(np.mean(np.clip(data, 0, None))), 1e-3))
    previous_x = x
    steps: list[Any] = []
    chi2 = math.inf
    stop = "max_iter"
    iterations = 0
    for iteration in range(1, int(max_iter) + 1):
        iterations = iteration
        blurred = xp.clip(through(x, h), 0.0, None)
        previous = chi2
        chi2 = float(xp.mean((data_dev - blurred[crop]) ** 2 / (blurred[crop] + shift)))
        if chi2 <= target_chi2:
            stop = "discrepancy"
            break
        if math.isfinite(previous) and previous - chi2 < tol * previous:
            stop = "stalled"
            break
        # Biggs-Andrews: extrapolate along the last step before the RL update
        y = x
        if accelerate and len(steps) == 2:
            alpha = float(xp.vdot(steps[1], steps[0]) / max(float(xp.vdot(steps[0], steps[0])), 1e-300))
            if 0.0 < alpha < 1.0:
                y = xp.clip(x + alpha * (x - previous_x), 0.0, None)
                blurred = xp.clip(through(y, h), 0.0, None)
        updated = xp.clip(y * through(shifted / (blurred + shift) * mask, h_conj) / norm, 0.0, None)
        steps = [*steps[-1:], updated - y]
        previous_x, x = x, updated
    restored = to_numpy(through(x, t)[crop])
    out = (restored * noise.gain + noise.offset).astype(np.float32)
    log.debug("richardson_lucy: %d iterations, chi2 %.3f, %s", iterations, chi2, stop)
    return Restoration(out, float(chi2), iterations, stop)


@lru_cache(maxsize=8)
def _nonnegative_kernel(blur: Blur, big: tuple[int, int]) -> np.ndarray:
    """The transfer of a measured profile's kernel clipped at zero and renormalised (RL needs ``k >= 0``)."""
    h, _ = _transfer(blur, big)
    kernel = np.clip(scipy.fft.irfft2(h, s=big), 0.0, None)
    out = scipy.fft.rfft2(kernel / kernel.sum())
    out.flags.writeable = False
    return out


def consistency(
    observed: Any,
    restored: Any,
    blur: Blur,
    *,
    noise: NoiseModel | None = None,
    noise_floor: float | None = None,
    margin: int | None = None,
    workers: int | None = 1,
) -> float:
    """How well an in-focus estimate, re-blurred, explains the observed plane.

    Parameters
    ----------
    observed : (Y, X) array_like of real
        The defocused plane (camera counts).
    restored : (Y, X) array_like of real
        An in-focus estimate on the same scale (U-Net output, Wiener, RL).
    blur : Blur
        The estimated blur of the plane (e.g. the well's blind ``|z|``).
    noise : NoiseModel, optional
        The camera: variance ``gain (m - offset) + read_noise^2 + 1/12`` per pixel.
    noise_floor : float, optional
        Without a camera model: a flat per-pixel variance (e.g. a fitted floor);
        default the median ring power beyond the cutoff of `observed`.
    margin : int, optional
        Border pixels left out (default: the blur's padding, at most a quarter
        of the image): there the re-blurred estimate lacks light from outside.

    Returns
    -------
    float
        Reduced chi-square over the interior. About 1 when the estimate is
        consistent with the data to the noise; large when it is not.

    Notes
    -----
    Both sides are brought to the same blur instead of dividing by an OTF:
    ``T g`` (the observation through the target's transfer, ``K_0`` for the
    model) against ``H t`` (the estimate through the observation's, ``K_z``);
    for the true in-focus image both are ``T H o`` plus, on the left, the
    noise seen through ``T``, whose variance is the camera's variance map
    (from the observed counts, unbiased; from the re-blurred estimate it was
    blurred once more and read 0.66 for the truth) convolved with the squared
    target kernel. Dividing by ``K_0`` instead
    truncates at the cutoff, and the ringing of that truncation of the
    mirror-padded estimate read 1.5-2 for the true image on 128 x 128 fields.
    """
    blur = _check_blur(blur)
    g = _check_image(observed)
    t_img = _check_image(restored)
    if g.shape != t_img.shape:
        raise ValueError(f"observed and restored must have one shape, got {g.shape!r} and {t_img.shape!r}")
    offset = 0.0 if noise is None else noise.offset
    pad = blur.padding()
    padded_t, big, crop = _padded(t_img - offset, pad)
    padded_g, _, _ = _padded(g - offset, pad)
    h, t = _transfer(blur, big)

    def through(image, transfer):
        return scipy.fft.irfft2(scipy.fft.rfft2(image, workers=workers) * transfer, s=big, workers=workers)

    predicted = through(padded_t, h)
    observed_t = through(padded_g, t)
    if noise is not None:
        variance = noise.variance(padded_g)  # the observation's own counts: unbiased for its variance
    else:
        if noise_floor is None:
            noise_floor = _floor(g, blur)
        variance = np.full(big, max(float(noise_floor), 1e-12))
    variance = through(variance, _squared_kernel_transfer(blur, big))
    if margin is None:
        margin = min(pad, min(g.shape) // 4)
    inner = (slice(crop[0].start + margin, crop[0].stop - margin),
             slice(crop[1].start + margin, crop[1].stop - margin))
    resid = (observed_t - predicted)[inner]
    return float(np.mean(resid**2 / np.clip(variance[inner], 1e-12, None)))


@lru_cache(maxsize=32)
def _squared_kernel_transfer(blur: Blur, big: tuple[int, int]) -> np.ndarray:
    """Transfer of the squared target kernel ``|F^-1 T|^2``: white noise seen through ``T`` has this variance map."""
    _, t = _transfer(blur, big)
    kernel = scipy.fft.irfft2(t, s=big)
    out = scipy.fft.rfft2(kernel * kernel)
    out.flags.writeable = False
    return out


def _floor(image: np.ndarray, blur: Blur) -> float:
    spectra = power_spectrum(image, blur.optics.pixel_size_um, backend="numpy")
    freq, power = spectra.freq, spectra.mean
    beyond = freq > blur.optics.cutoff
    if beyond.sum() < 3:
        beyond = freq >= freq[-max(3, freq.size // 20)]
    return float(np.median(power[beyond]))


def hybrid(
    network: Any,
    physics: Any,
    network_consistency: Any,
    *,
    limit: float = CONSISTENCY_LIMIT,
) -> tuple[np.ndarray, np.ndarray]:
    """Per field, the network output where it is consistent with its plane, the physics estimate where not.

    Parameters
    ----------
    network, physics : (F, Y, X) array_like
        The U-Net outputs and the physics estimates (Wiener or RL) of the same fields.
    network_consistency : (F,) array_like of float
        :func:`consistency` of each network output.
    limit : float
        Largest consistency (reduced chi-square) at which the network is kept.

    Returns
    -------
    out : (F, Y, X) ndarray
        The chosen images (dtype of the inputs' result type).
    used_network : (F,) ndarray of bool
    """
    net = np.asarray(network)
    phys = np.asarray(physics)
    score = np.asarray(network_consistency, dtype=np.float64).ravel()
    if net.shape != phys.shape or net.ndim != 3:
        raise ValueError(f"network and physics must be stacks (F, Y, X) of one shape, got {net.shape!r}, {phys.shape!r}")
    if score.size != net.shape[0]:
        raise ValueError(f"network_consistency needs one value per field ({net.shape[0]}), got {score.size}")
    if not limit > 0:
        raise ValueError(f"limit must be positive, got {limit!r}")
    keep = np.isfinite(score) & (score <= limit)
    out = np.where(keep[:, None, None], net, phys)
    return out, keep

