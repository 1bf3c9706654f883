"""Ring-averaged windowed power of a well's fields at one depth: the partial sums the blind fit reads.

:class:`PowerSpectra` adds up over fields like
:class:`plate_refocus.psf.FieldSpectra` and is taken from the same windowed
FFT (:func:`plate_refocus.psf.windowed_spectrum`); :func:`ring_geometry` is
the ring of every frequency that the model (:mod:`.model`) averages over.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..optics import frequency_grid, radial_frequencies
from ..psf import window_weights, windowed_spectrum
from ..xp import get_xp, to_numpy

#: Lowest ring fitted, in units of the ring spacing: below it the window's
#: mean removal and non-uniform backgrounds dominate.
MIN_RING = 4
#: Variance inflation of a ring average of Hann-windowed periodograms over
#: independent frequencies: neighbours along the ring share the window's main
#: lobe (``35/18`` for the Hann window along one axis; rings one bin wide
#: see mostly that direction). Measured on white noise (128 x 128 and
#: 256 x 320): 1.93-2.05.
HANN_INFLATION = 35.0 / 18.0


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
def ring_geometry(shape: tuple[int, int], pixel_size_um: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
    _, _, _, dof = ring_geometry(spectra.shape, spectra.pixel_size_um)
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
    index, mult, weight, _ = ring_geometry(shape, float(pixel_size_um))
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
