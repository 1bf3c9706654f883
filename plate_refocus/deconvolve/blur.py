"""What blurred a plane and the camera's noise: the forward model every restoration shares.

:class:`NoiseModel` is the camera (offset, read noise, gain); :class:`Blur`
the observed transfer and the target it is restored to, expanded to a grid by
:func:`transfer`; :class:`Restoration` the result of a restoration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.fft

from ..focus import ObjectSpectrum
from ..optics import Optics, defocus_otf, frequency_grid


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


@lru_cache(maxsize=4)
def transfer(blur: Blur, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(H, T)`` in the ``rfft2`` half plane of `shape`: observed and target transfer, read-only.

    Kept for the few calls of one (well, depth): its fields share one blur. A
    fitted ``|z|`` is a one-off depth, so its OTF is not cached beyond that.
    """
    if blur.is_model:
        h = defocus_otf(shape, blur.defocus_um, blur.optics, real=True, cache=False)
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


def check_image(image: Any) -> np.ndarray:
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


def check_blur(blur: Any) -> Blur:
    if not isinstance(blur, Blur):
        raise TypeError(f"blur must be a Blur (Blur.model(optics, z) or Blur.measured(...)), got {type(blur).__name__}")
    return blur


def mirror_padded(image: np.ndarray, pad: int) -> tuple[np.ndarray, tuple[int, int], tuple[slice, slice]]:
    """Mirror-pad by `pad` and up to an FFT-friendly size; the crop that undoes it."""
    big = tuple(scipy.fft.next_fast_len(n + 2 * pad, real=True) for n in image.shape)
    extra = [(pad, b - n - pad) for b, n in zip(big, image.shape, strict=True)]
    mode = "symmetric" if all(pad <= n for n in image.shape) else "reflect"
    if pad > min(image.shape) - 1:
        mode = "wrap"
    padded = np.pad(image, extra, mode=mode)
    crop = (slice(pad, pad + image.shape[0]), slice(pad, pad + image.shape[1]))
    return padded, big, crop
