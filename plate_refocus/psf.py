"""Pooled recovery of the defocus PSF from sharp/defocused image pairs.

For one well and one depth, every field ``i`` gives a sharp reference ``f_i``
(the object, or an in-focus / refocused image) and the defocused image
``g_i = f_i conv k + noise``. The pooled, regularised Fourier estimate is

    C = sum_i conj(F_i) G_i / (sum_i |F_i|^2 + mu)

(the report's eq. 17, pooled over fields as its conclusion asks). Its
numerator and denominator are kept as partial sums, :class:`FieldSpectra`,
which add up: a Dask reduction sums them over fields, so each field's two
FFTs are computed once, wherever the field lives.

:func:`recover_psf` then projects ``C`` onto isotropic OTFs with the report's
operator ``B`` (section 3.6, linear interpolation in the radius), applies the
circular-support prior, normalises ``OTF(0) = 1``, builds the spatial PSF
and fits the defocus distance ``|z|`` against the optical model.

References
----------
.. [1] M. Werth and A. Matlock, "Neural network-based microscope defocus
   correction with point spread function recovery", Boston University
   technical report, 2018, sections 3.4-3.8.
.. [2] L. Moisan, "Periodic plus smooth image decomposition", J. Math.
   Imaging Vis. 39, 161-179 (2011).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse
import scipy.special

from .optics import Optics
from .xp import get_xp, to_numpy

__all__ = [
    "FieldSpectra",
    "PSFEstimate",
    "field_spectra",
    "windowed_spectrum",
    "window_weights",
    "radial_frequencies",
    "isotropic_operator",
    "project_isotropic",
    "expand_isotropic",
    "model_radial_otf",
    "fit_defocus",
    "recover_psf",
    "estimate_psf",
]

logger = logging.getLogger(__name__)

Reference = Literal["object", "in-focus"]
_REFERENCES = ("object", "in-focus")
_EDGES = ("taper", "periodic", "none")

#: ``mu="auto"``: ``mu`` is this fraction of the mean pooled reference power.
AUTO_MU = 1e-4

#: Half-width ``L`` (in DFT bins) of the block of lowest frequencies where the
#: Hann window's mixing of neighbouring frequencies is modelled exactly.
WINDOW_MODEL_BINS = 12
#: The Hann window's 3 x 3 spectral taps ``(cy, cx)``, in the order of ``window_terms``.
_TAPS = tuple((cy, cx) for cy in (-1, 0, 1) for cx in (-1, 0, 1))
_WINDOW_TERMS_SHAPE = (len(_TAPS), 2 * WINDOW_MODEL_BINS + 1, WINDOW_MODEL_BINS + 1)


# --------------------------------------------------------------------------- partial sums


@dataclass(frozen=True, eq=False)
class FieldSpectra:
    """Partial sums of the pooled Fourier estimate over some fields.

    Parameters
    ----------
    numerator : (Y, X // 2 + 1) ndarray of complex128
        ``sum_i conj(F_i) G_i`` over the fields summed so far (``rfft2`` layout).
    denominator : (Y, X // 2 + 1) ndarray of float64
        ``sum_i |F_i|^2``.
    count : int
        Number of fields summed.
    window_terms : (9, 2 L + 1, L + 1) ndarray of complex128, optional
        With the Hann window (``field_spectra``'s default), the split of the
        numerator's model over the window's 3 x 3 spectral taps ``c`` at the
        lowest frequencies ``|ky|, |kx| <= L`` (:data:`WINDOW_MODEL_BINS`):
        ``sum_i conj(F_w,i(nu)) W(c) F_i(nu - c)``, ``F`` the unwindowed
        spectrum. :func:`recover_psf` uses it to model the window exactly
        there. ``None`` for other border treatments.

    Notes
    -----
    ``a + b`` adds the sums, and ``0 + a`` is ``a``, so the built-in ``sum``
    and a Dask tree reduction both combine them. Addition is exact up to
    floating-point rounding, so the order of the fields does not matter.
    """

    numerator: np.ndarray
    denominator: np.ndarray
    count: int = field(default=1)
    window_terms: np.ndarray | None = None

    def __post_init__(self) -> None:
        num = np.asarray(self.numerator)
        den = np.asarray(self.denominator)
        if num.ndim != 2 or num.shape != den.shape:
            raise ValueError(
                "FieldSpectra needs 2-D numerator and denominator of the same shape, got "
                f"{num.shape!r} and {den.shape!r}"
            )
        if not isinstance(self.count, (int, np.integer)) or self.count < 0:
            raise ValueError(f"FieldSpectra.count must be a non-negative int, got {self.count!r}")
        object.__setattr__(self, "numerator", num.astype(np.complex128, copy=False))
        object.__setattr__(self, "denominator", den.astype(np.float64, copy=False))
        object.__setattr__(self, "count", int(self.count))
        if self.window_terms is not None:
            terms = np.asarray(self.window_terms).astype(np.complex128, copy=False)
            if terms.shape != _WINDOW_TERMS_SHAPE:
                raise ValueError(
                    f"FieldSpectra.window_terms must have shape {_WINDOW_TERMS_SHAPE!r}, got {terms.shape!r}"
                )
            object.__setattr__(self, "window_terms", terms)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the half-plane spectra, ``(Y, X // 2 + 1)``."""
        return self.numerator.shape

    def __add__(self, other: Any) -> FieldSpectra:
        if isinstance(other, (int, float)) and other == 0:
            return self
        if not isinstance(other, FieldSpectra):
            return NotImplemented
        if other.shape != self.shape:
            raise ValueError(
                f"cannot add FieldSpectra of shapes {self.shape!r} and {other.shape!r}: "
                "pool only fields of the same image shape"
            )
        if (self.window_terms is None) != (other.window_terms is None):
            raise ValueError(
                "cannot add FieldSpectra with and without window terms: pool only fields whose "
                "spectra were taken with the same edges/taper"
            )
        terms = None if self.window_terms is None else self.window_terms + other.window_terms
        return FieldSpectra(
            self.numerator + other.numerator,
            self.denominator + other.denominator,
            self.count + other.count,
            terms,
        )

    __radd__ = __add__


def _as_stack(name: str, image: Any) -> np.ndarray | Any:
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"{name} must be (Y, X) or a stack (F, Y, X), got shape {image.shape!r}")
    kind = np.dtype(image.dtype).kind
    if kind not in "uif":
        raise TypeError(f"{name} must hold real numbers, got dtype {image.dtype!r}")
    if image.shape[-1] < 2 or image.shape[-2] < 2:
        raise ValueError(f"{name} images must be at least 2 x 2 pixels, got {image.shape!r}")
    return image


def _background(name: str, value: Any, xp: Any) -> Any:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return float(value)
    arr = np.asarray(to_numpy(value), dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got an array with NaN or inf")
    return xp.asarray(arr)


def _periodic_component(u: Any, xp: Any, fft: Any) -> Any:
    """``rfft2`` of the periodic component of ``u`` (Moisan's decomposition).

    ``u = p + s`` with ``s`` smooth and ``p`` free of the cross-shaped
    spectral leakage of the image borders. The smooth part solves a discrete
    Poisson equation whose source is the border jump image ``v``; ``v`` has
    only its first/last rows and columns non-zero, so its spectrum is two
    outer products of 1-D FFTs, and the whole decomposition costs one
    ``rfft2`` plus O(Y X) work.
    """
    ny, nx = u.shape[-2:]
    u_hat = fft.rfft2(u, axes=(-2, -1))
    row_jump = u[..., -1, :] - u[..., 0, :]  # (..., X): v[0, :] = +jump, v[-1, :] = -jump
    col_jump = u[..., :, -1] - u[..., :, 0]  # (..., Y): v[:, 0] = +jump, v[:, -1] = -jump
    q = xp.arange(ny)
    r = xp.arange(nx // 2 + 1)
    ey = 1.0 - xp.exp(2j * xp.pi * q / ny)  # (Y,)
    ex = 1.0 - xp.exp(2j * xp.pi * r / nx)  # (X//2+1,)
    v_hat = ey[:, None] * fft.rfft(row_jump, axis=-1)[..., None, :]
    v_hat = v_hat + fft.fft(col_jump, axis=-1)[..., :, None] * ex[None, :]
    denom = 2.0 * xp.cos(2 * xp.pi * q / ny)[:, None] + 2.0 * xp.cos(2 * xp.pi * r / nx)[None, :] - 4.0
    denom[0, 0] = 1.0
    s_hat = v_hat / denom
    s_hat[..., 0, 0] = 0.0
    return u_hat - s_hat


@lru_cache(maxsize=8)
def _tukey(shape: tuple[int, int], fraction: float, module: str) -> Any:
    """Separable Tukey window: flat, raised-cosine ramps over `fraction` of each side."""
    axes = []
    for n in shape:
        width = int(round(fraction * n))
        window = np.ones(n)
        if fraction == 0.5:
            # the Hann window sin^2(pi (x + 1/2) / n) for every n: exactly 3 spectral taps
            window = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2
        elif width > 0:
            ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width) + 0.5) / width)
            window[:width] = ramp
            window[n - width :] = ramp[::-1]
        axes.append(window)
    window = np.outer(*axes)
    if module == "cupy":
        import cupy

        return cupy.asarray(window)
    window.flags.writeable = False
    return window


@lru_cache(maxsize=8)
def _window_leakage(shape: tuple[int, int], fraction: float, module: str) -> tuple[Any, Any, Any, float]:
    """Where the window's own spectrum ``W = rfft2(w)`` is not negligible, DC excluded.

    Returns ``(rows, cols, values, sum(w))``: the leakage of an image's mean
    ``m`` through the window is ``m * values`` at ``[rows, cols]``. For the
    Hann window on even sizes ``W`` has only the 3 x 3 taps around DC.
    """
    window = _tukey(shape, fraction, "numpy")
    spectrum = np.fft.rfft2(window)
    mag = np.abs(spectrum)
    keep = mag > 1e-12 * mag[0, 0]
    keep[0, 0] = False
    rows, cols = np.nonzero(keep)
    values = spectrum[rows, cols]
    total = float(window.sum())
    if module == "cupy":
        import cupy

        return cupy.asarray(rows), cupy.asarray(cols), cupy.asarray(values), total
    return rows, cols, values, total


def _window_model_applies(shape: tuple[int, int], edges: str, taper: float) -> bool:
    """The low-frequency window model needs the Hann window's 3 x 3 taps and room for the block."""
    return edges == "taper" and taper == 0.5 and min(shape) >= 4 * (WINDOW_MODEL_BINS + 2)


@lru_cache(maxsize=8)
def _block_dft(shape: tuple[int, int], module: str) -> tuple[Any, Any, np.ndarray]:
    """Matrices of the DFT restricted to ``|ky|, |kx| <= L + 1`` (``kx >= 0``), and the window's taps.

    Returns ``(ex, ey, taps)``: ``ex`` (X, 2 (L + 2)) real, the cosine and minus
    sine columns for ``kx = 0 .. L + 1``; ``ey`` (2 L + 3, Y) complex for
    ``ky = -L - 1 .. L + 1``; ``taps`` (9,) complex, ``DFT(w)(c) / (Y X)`` for
    the Hann window ``w`` at the offsets :data:`_TAPS`.
    """
    ny, nx = shape
    n = WINDOW_MODEL_BINS + 1
    angle_x = 2 * np.pi * np.outer(np.arange(nx), np.arange(n + 1)) / nx
    ex = np.concatenate([np.cos(angle_x), -np.sin(angle_x)], axis=1)
    ey = np.exp(-2j * np.pi * np.outer(np.arange(-n, n + 1), np.arange(ny)) / ny)
    spectrum = np.fft.fft2(_tukey(shape, 0.5, "numpy")) / (ny * nx)
    taps = np.array([spectrum[cy % ny, cx % nx] for cy, cx in _TAPS])
    if module == "cupy":
        import cupy

        return cupy.asarray(ex), cupy.asarray(ey), taps
    return ex, ey, taps


def _low_block(u: Any, xp: Any) -> Any:
    """DFT of the unwindowed ``u`` at ``|ky|, |kx| <= L + 1``: (..., 2 L + 3, 2 L + 3), index ``k + L + 1``."""
    ex, ey, _ = _block_dft(tuple(u.shape[-2:]), xp.__name__)
    n = WINDOW_MODEL_BINS + 1
    rows = u @ ex  # (..., Y, 2 (n + 1)): one real GEMM
    half = ey @ (rows[..., : n + 1] + 1j * rows[..., n + 1 :])  # (..., 2n + 1, n + 1): kx = 0 .. n
    # real input: F(ky, -kx) = conj(F(-ky, kx))
    negative = xp.conj(half[..., ::-1, :0:-1])  # kx = -n .. -1
    return xp.concatenate([negative, half], axis=-1)


def _spectrum(
    image: Any,
    background: Any,
    xp: Any,
    fft: Any,
    edges: str,
    taper: float,
    block: bool = False,
    mean: Any = None,
) -> tuple[Any, Any, Any]:
    """``rfft2`` of the treated image, the unwindowed low block of ``u - m`` (with `block`), and ``m``.

    ``m`` is the window-weighted mean of the image, or `mean` when given.
    """
    # a fresh float64 array: the caller's images are never modified
    u = xp.subtract(xp.asarray(image), background, dtype=xp.float64)
    if edges == "periodic":
        return _periodic_component(u, xp, fft), None, None
    if edges != "taper":
        return fft.rfft2(u, axes=(-2, -1)), None, None
    shape = tuple(u.shape[-2:])
    low = _low_block(u, xp) if block else None
    u *= _tukey(shape, taper, xp.__name__)
    spectrum = fft.rfft2(u, axes=(-2, -1))
    # Remove the window-weighted mean m = sum(w u) / sum(w) from every frequency
    # but DC: spectrum of (u - m) w there, the DC (the flux) kept. See field_spectra.
    rows, cols, values, total = _window_leakage(shape, taper, xp.__name__)
    if mean is None:
        mean = spectrum[..., 0, 0].real / total
    if rows.size:
        spectrum[..., rows, cols] -= mean[..., None] * values
    if low is not None:
        centre = WINDOW_MODEL_BINS + 1
        low[..., centre, centre] -= mean * (shape[0] * shape[1])
    return spectrum, low, mean


def _window_terms(f_hat: Any, low: Any, shape: tuple[int, int], xp: Any) -> Any:
    """``sum_fields conj(F_w(nu)) W(c) F(nu - c)`` on the low block, per tap ``c`` (see FieldSpectra).

    `f_hat` is the treated (windowed, mean-removed) ``rfft2`` and `low` the
    unwindowed block of ``u - m`` from :func:`_spectrum`. At ``nu = 0`` they are 0.
    """
    size = WINDOW_MODEL_BINS
    _, _, taps = _block_dft(shape, xp.__name__)
    rows = xp.asarray(np.arange(-size, size + 1) % shape[0])
    fw = xp.conj(f_hat[..., rows, : size + 1])  # (..., 2L + 1, L + 1)
    terms = []
    for (cy, cx), tap in zip(_TAPS, taps, strict=True):
        # low is indexed k + L + 1; nu - c for ky = -L .. L, kx = 0 .. L
        shifted = low[..., 1 - cy : 1 - cy + 2 * size + 1, size + 1 - cx : 2 * size + 2 - cx]
        term = fw * shifted * complex(tap)
        if term.ndim == 3:
            term = term.sum(axis=0)
        terms.append(term)
    out = xp.stack(terms)
    out[:, size, 0] = 0.0  # the zero frequency is not modelled: OTF(0) = 1 is imposed instead
    return out


def field_spectra(
    reference: Any,
    defocused: Any,
    *,
    reference_background: float | np.ndarray = 0.0,
    defocused_background: float | np.ndarray = 0.0,
    edges: str = "taper",
    taper: float = 0.5,
    backend: str = "auto",
    workers: int | None = None,
) -> FieldSpectra:
    """Per-field partial sums of the pooled Fourier PSF estimate.

    Parameters
    ----------
    reference : (Y, X) or (F, Y, X) array_like of real
        Sharp reference image(s) ``f``: the object, or an in-focus or refocused image.
    defocused : same shape as `reference`
        Defocused image(s) ``g`` of the same fields.
    reference_background, defocused_background : float or array broadcastable to the images
        Known additive backgrounds subtracted before the FFT (for camera images
        the camera offset in ADU; 0 for an object or a background-free image).
    edges : {"taper", "periodic", "none"}
        How the non-periodic borders are kept out of the spectrum. ``"taper"``
        (default) multiplies both images by the same separable Tukey window
        (flat, with raised-cosine ramps over `taper` of each side);
        ``"periodic"`` takes the periodic component of Moisan's
        periodic-plus-smooth decomposition [2]_; ``"none"`` transforms the
        raw images. See Notes for why the taper is the default.
    taper : float
        Fraction of each side covered by one ramp of the Tukey window
        (0-0.5; the default 0.5 is the Hann window).
    backend : {"auto", "numpy", "cupy"}
        Array backend (see :func:`plate_refocus.xp.get_xp`); results are NumPy.
    workers : int, optional
        Threads for ``scipy.fft`` on the CPU.

    Returns
    -------
    FieldSpectra
        ``numerator = sum conj(F) G``, ``denominator = sum |F|^2`` over the
        fields given, ``count`` the number of fields.

    Notes
    -----
    The defocused image carries light from outside the field (within the blur
    radius ``R`` of its borders) and lacks the light that a periodic
    convolution would wrap in, so ``G = F K`` fails near the borders. Both
    border treatments remove the cross-shaped leakage of the discontinuity;
    they differ in what is left. With the periodic component the mismatch
    band still enters at full weight and biases the pooled ratio by about
    ``R / L`` (``L`` the field side). A window ``w`` that is smooth and small
    near the borders gives ``E[sum conj(F_w) G_w] = |W|^2 * (S K)``: the OTF
    is only smoothed over the window's narrow spectral main lobe, a bias of
    order ``(R / L)^2``, while the remaining border mismatch is weighted down
    by ``w^2``; the price is noise (the Hann window keeps 14% of the energy).
    On simulated 520 x 696 fields at 30 um defocus the noise-free OTF error
    was 18% with the periodic component, 2.6% with ``taper=0.25`` and 1.2%
    with the Hann window, which is why it is the default; for images with
    little high-frequency power and few fields (noise-limited) a smaller
    `taper` can be better (see ``benchmarks/psf_quality.py --taper``).

    With the taper, the window-weighted mean ``m = sum(w u) / sum(w)`` of
    each image is removed before the transform at every frequency but zero
    (there the flux ``sum(w u)`` is kept, which fixes ``OTF(0)``). The mean
    carries most of the power and leaks through the window's spectral main
    lobe into the lowest frequencies, where it pulls the ratio towards
    ``K(0) = 1``: a bias that is the same in every field, so pooling cannot
    average it away. Removing it is exact for ``g = f * k`` because a
    constant is blurred into the same constant. On the held-out fields of
    ``benchmarks/psf_quality.py`` (object reference, report optics, 9 fields)
    it lowered the OTF error at 30 um from 1.3% to 1.0-1.1% and the ratio
    of the 9-field to the 1-field error from 0.35-0.64 to 0.29-0.52. It
    costs an indexed update of the few frequencies where the window's
    spectrum is not negligible (3 x 3 for the Hann window on even sizes).

    The window also mixes each frequency with its neighbours,
    ``F_w = W * F``, and where the spectrum is steep (the lowest frequencies)
    that mixing biases ``sum conj(F_w) G_w / sum |F_w|^2`` towards the
    neighbours' OTF, again the same in every field. With the Hann window
    (``taper=0.5``, exactly ``sin^2(pi (x + 1/2) / n)``, whose spectrum is 3 x 3
    taps) on images of at least ``4 (L + 2)`` pixels a side, ``field_spectra``
    therefore also returns ``window_terms``, the split of the numerator's
    model over the taps on the block ``|ky|, |kx| <= L``
    (:data:`WINDOW_MODEL_BINS`), and the defocused image loses the reference's
    window-weighted mean (not its own), so that for periodic images
    ``G_w(nu) = sum_c W(c) F(nu - c) K(nu - c)`` holds exactly there.
    :func:`recover_psf` fits that model on the block. It costs a DFT of the
    reference restricted to the block (one real matrix product, about 15 %
    of the per-field time on 520 x 696 fields) and 9 small complex arrays per
    partial sum. On the held-out fields it halved the errors at 30 um
    (object reference, report optics: 9 fields 1.0% -> 0.4-0.7%, 1 field
    2.0-2.6% -> 0.9-1.9%).
    """
    reference = _as_stack("reference", reference)
    defocused = _as_stack("defocused", defocused)
    if reference.shape != defocused.shape:
        raise ValueError(
            f"reference and defocused must have the same shape, got {reference.shape!r} "
            f"and {defocused.shape!r}"
        )
    if edges not in _EDGES:
        raise ValueError(f"edges must be one of {_EDGES!r}, got {edges!r}")
    if isinstance(taper, bool) or not isinstance(taper, (int, float)) or not 0 <= taper <= 0.5:
        raise ValueError(f"taper must be a fraction between 0 and 0.5, got {taper!r}")
    xp, fft = get_xp(backend, workers=workers)
    ref_bg = _background("reference_background", reference_background, xp)
    def_bg = _background("defocused_background", defocused_background, xp)
    shape = tuple(int(n) for n in reference.shape[-2:])
    model = _window_model_applies(shape, edges, float(taper))
    f_hat, low, f_mean = _spectrum(reference, ref_bg, xp, fft, edges, float(taper), block=model)
    # With the window model both images lose the same constant, the reference's mean:
    # a constant blurs into itself, so g - m = (f - m) * k holds exactly (see recover_psf).
    g_hat, _, _ = _spectrum(defocused, def_bg, xp, fft, edges, float(taper), mean=f_mean if model else None)
    terms = _window_terms(f_hat, low, shape, xp) if model else None
    numerator = xp.conj(f_hat) * g_hat
    denominator = f_hat.real**2 + f_hat.imag**2
    count = 1
    if numerator.ndim == 3:
        count = numerator.shape[0]
        numerator = numerator.sum(axis=0)
        denominator = denominator.sum(axis=0)
    # a NaN or inf pixel spreads over the whole spectrum, so one reduction catches it
    if not math.isfinite(float(denominator.sum()) + float(abs(numerator.sum()))):
        raise ValueError(
            "field_spectra got NaN or inf in the images; mask or fill missing pixels first"
        )
    return FieldSpectra(
        to_numpy(numerator), to_numpy(denominator), count, None if terms is None else to_numpy(terms)
    )


def window_weights(shape: tuple[int, int], *, edges: str = "taper", taper: float = 0.5) -> np.ndarray:
    """The window ``w`` that :func:`field_spectra` and :func:`windowed_spectrum` apply.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(Y, X)``.
    edges, taper
        As in :func:`field_spectra`; ``"periodic"`` and ``"none"`` apply no window (ones).

    Returns
    -------
    w : (Y, X) ndarray of float64
        Read-only. ``sum(w**2)`` normalises a windowed periodogram so that white
        noise of variance ``s**2`` per pixel has power ``s**2`` at every frequency.
    """
    shape = _check_shape(shape)
    if edges not in _EDGES:
        raise ValueError(f"edges must be one of {_EDGES!r}, got {edges!r}")
    if isinstance(taper, bool) or not isinstance(taper, (int, float)) or not 0 <= taper <= 0.5:
        raise ValueError(f"taper must be a fraction between 0 and 0.5, got {taper!r}")
    if edges != "taper":
        ones = np.ones(shape)
        ones.flags.writeable = False
        return ones
    return _tukey(shape, float(taper), "numpy")


def windowed_spectrum(
    image: Any,
    *,
    background: float | np.ndarray = 0.0,
    edges: str = "taper",
    taper: float = 0.5,
    backend: str = "auto",
    workers: int | None = None,
) -> Any:
    """``rfft2`` of one image (or a stack) treated exactly as :func:`field_spectra` treats it.

    The background is subtracted, the borders are treated (`edges`, `taper`)
    and, with the taper, the image's own window-weighted mean is removed at
    every frequency but zero. This is the transform a blind, reference-free
    estimate reads (:mod:`plate_refocus.focus`), with the conventions of the
    pooled PSF estimate, so both can come from one FFT per plane.

    Parameters
    ----------
    image : (Y, X) or (F, Y, X) array_like of real
    background : float or array broadcastable to the images
        Known additive background (the camera offset in ADU).
    edges, taper, backend, workers
        As in :func:`field_spectra`.

    Returns
    -------
    spectrum : (Y, X // 2 + 1) or (F, Y, X // 2 + 1) array of complex128
        On the backend's device (a CuPy array with ``backend="cupy"``).
    """
    image = _as_stack("image", image)
    if edges not in _EDGES:
        raise ValueError(f"edges must be one of {_EDGES!r}, got {edges!r}")
    if isinstance(taper, bool) or not isinstance(taper, (int, float)) or not 0 <= taper <= 0.5:
        raise ValueError(f"taper must be a fraction between 0 and 0.5, got {taper!r}")
    xp, fft = get_xp(backend, workers=workers)
    spectrum, _, _ = _spectrum(image, _background("background", background, xp), xp, fft, edges, float(taper))
    return spectrum


# --------------------------------------------------------------------------- isotropic projection


def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        ny, nx = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise TypeError(f"shape must be two integers (Y, X), got {shape!r}") from None
    if ny < 2 or nx < 2 or (ny, nx) != tuple(shape):
        raise ValueError(f"shape must be two integers >= 2 (Y, X), got {shape!r}")
    return ny, nx


def _check_pixel(pixel_size_um: Any) -> float:
    if isinstance(pixel_size_um, bool) or not isinstance(pixel_size_um, (int, float, np.floating)):
        raise TypeError(f"pixel_size_um must be a number, got {pixel_size_um!r}")
    if not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be positive and finite, got {pixel_size_um!r}")
    return float(pixel_size_um)


def radial_frequencies(shape: tuple[int, int], pixel_size_um: float) -> np.ndarray:
    """The fixed radial frequency axis of the OTF profile for a field shape.

    The spacing is the coarser of the two grid spacings, ``1 / (min(Y, X) dx)``,
    so that every bin holds grid points; the axis runs from 0 past the corner
    of the grid, ``sqrt(2) / (2 dx)``, so every grid frequency is interpolated.

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
    ny, nx = _check_shape(shape)
    dx = _check_pixel(pixel_size_um)
    step = 1.0 / (min(ny, nx) * dx)
    fy = np.abs(np.fft.fftfreq(ny, d=dx)).max()
    fx = np.abs(np.fft.fftfreq(nx, d=dx)).max()
    nbins = int(math.floor(math.hypot(fy, fx) / step)) + 2
    return np.arange(nbins) * step


@lru_cache(maxsize=8)
def _operator(
    shape: tuple[int, int], pixel_size_um: float, support: float | None, alias: bool
) -> tuple[scipy.sparse.csr_matrix, np.ndarray, np.ndarray]:
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
    shape = _check_shape(shape)
    support = None if support is None else float(support)
    return _operator(shape, _check_pixel(pixel_size_um), support, bool(alias))[0]


def _solve_profile(
    matrix: scipy.sparse.csr_matrix,
    weights: np.ndarray,
    rhs_2d: np.ndarray,
    active: np.ndarray,
    extra: tuple[np.ndarray, np.ndarray] | None = None,
    fix_origin: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
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
    shape = _check_shape(shape)
    half = (shape[0], shape[1] // 2 + 1)
    otf = np.asarray(otf)
    if otf.shape != half:
        raise ValueError(f"otf must have the rfft2 shape {half!r} for shape {shape!r}, got {otf.shape!r}")
    matrix, mult, active = _operator(
        shape, _check_pixel(pixel_size_um), None if support is None else float(support), bool(alias)
    )
    w = mult if weights is None else mult * np.asarray(weights, dtype=np.float64).ravel()
    if weights is not None and (np.asarray(weights).shape != half or np.any(w < 0)):
        raise ValueError(f"weights must be non-negative with shape {half!r}")
    profile, _ = _solve_profile(matrix, w, w * np.real(otf).ravel(), active)
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
    shape = _check_shape(shape)
    matrix = isotropic_operator(shape, pixel_size_um, support=support, alias=alias)
    profile = np.asarray(profile, dtype=np.float64)
    if profile.shape != (matrix.shape[1],):
        raise ValueError(
            f"profile must have {matrix.shape[1]} samples (radial_frequencies of {shape!r}), "
            f"got shape {profile.shape!r}"
        )
    return (matrix @ profile).reshape(shape[0], shape[1] // 2 + 1)


# --------------------------------------------------------------------------- optical model


_HANKEL_STEP = 0.04  # image-radius step in units of 1 / (NA / lambda): 12.5 samples per cutoff period


def _psf_radius_um(z_um: float, optics: Optics) -> float:
    """Radius of the PSF the Hankel model keeps: 1.5 blur radii plus 30 um, at least 60 um."""
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


def model_radial_otf(
    freq: np.ndarray, z_um: float | np.ndarray, optics: Optics, *, max_radius_um: float | None = None
) -> np.ndarray:
    """The isotropic defocus OTF ``K_z(|nu|)`` by Hankel transforms (fast, for fitting).

    The amplitude PSF is the Hankel transform of the pupil with the
    angular-spectrum defocus phase, the OTF the Hankel transform of its
    squared modulus, normalised by the exact total energy ``pi (NA/lambda)^2``
    (Parseval), so truncating the PSF at `max_radius_um` only affects
    frequencies below ``1 / max_radius_um``. It agrees with
    :func:`plate_refocus.optics.radial_otf` to about 1e-3 and costs a few
    milliseconds per ``z``; an array of ``z`` is computed in one matrix product.

    Parameters
    ----------
    freq : (F,) array_like of float
        Radial frequencies in cycles/um.
    z_um : float or (Z,) array_like of float
    optics : Optics
    max_radius_um : float, optional
        Radius of the PSF kept; default ``max(60, 1.5 |z| tan(asin(NA/n)) + 30)``.

    Returns
    -------
    otf : (F,) or (Z, F) ndarray of float64
        ``otf[..., freq == 0] == 1`` and zero beyond the cutoff.
    """
    if not isinstance(optics, Optics):
        raise TypeError(f"optics must be an Optics, got {type(optics).__name__}")
    zs = np.abs(np.asarray(z_um, dtype=np.float64))
    z = float(zs.max()) if zs.size else 0.0
    freq = np.asarray(freq, dtype=np.float64)
    rho_max = optics.na / optics.wavelength_um
    k = optics.immersion_index / optics.wavelength_um
    if max_radius_um is None:
        max_radius_um = _psf_radius_um(z, optics)
    # few distinct grids: round the normalised radius up to a multiple of 10
    n_radii = int(math.ceil(max_radius_um * rho_max / 10.0)) * int(round(10.0 / _HANKEL_STEP))
    phase_cycles = z * (k - math.sqrt(max(k**2 - rho_max**2, 0.0)))
    t, t_weights, kernel = _pupil_to_psf(n_radii, _hankel_nodes(n_radii, phase_cycles))
    rho = rho_max * t
    angle = 2 * np.pi * zs.reshape(-1, 1) * (np.sqrt(k**2 - rho**2) - k)  # (Z, T)
    # real kernel times (cos, sin) columns: one real GEMM for all z, no complex copy
    columns = np.concatenate([np.cos(angle) * t_weights, np.sin(angle) * t_weights]).T  # (T, 2Z)
    amplitude = kernel @ columns
    nz = zs.size
    intensity = amplitude[:, :nz] ** 2 + amplitude[:, nz:] ** 2  # (S, Z)
    otf = (_psf_to_otf(tuple((freq / rho_max).tolist()), n_radii) @ intensity).T  # (Z, F)
    otf[:, freq >= optics.cutoff] = 0.0
    otf[:, freq == 0] = 1.0
    return otf.reshape(zs.shape + freq.shape)


# --------------------------------------------------------------------------- defocus fit


@dataclass(frozen=True)
class _Fit:
    z: float
    err: float
    na: float | None


def _fit_band(freq: np.ndarray, optics: Optics, reference: str) -> np.ndarray:
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
    model = model_radial_otf(freq, z, optics, max_radius_um=radius)
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
    The model is :func:`model_radial_otf`. The objective is the unweighted
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
    if reference not in _REFERENCES:
        raise ValueError(f"reference must be one of {_REFERENCES!r}, got {reference!r}")
    if not (max_defocus_um > 0):
        raise ValueError(f"max_defocus_um must be positive, got {max_defocus_um!r}")
    band = _fit_band(freq, optics, reference)
    if band.sum() < 3:
        raise ValueError(
            f"too few profile bins ({int(band.sum())}) inside the fit band for optics {optics!r}; "
            "use larger images"
        )
    f, p = freq[band], profile[band]

    # one PSF radius for the whole search, so the Hankel kernel is built once
    radius = _psf_radius_um(max_defocus_um, optics)

    def focus_of(opt: Optics) -> np.ndarray | None:
        return model_radial_otf(f, 0.0, opt, max_radius_um=radius) if reference == "in-focus" else None

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


# --------------------------------------------------------------------------- recovery


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
    if not isinstance(spectra, FieldSpectra):
        raise TypeError(f"spectra must be a FieldSpectra (from field_spectra), got {type(spectra).__name__}")
    shape = _check_shape(shape)
    half = (shape[0], shape[1] // 2 + 1)
    if spectra.shape != half:
        raise ValueError(
            f"spectra of shape {spectra.shape!r} do not belong to images of shape {shape!r} "
            f"(expected {half!r})"
        )
    if optics is not None and not isinstance(optics, Optics):
        raise TypeError(f"optics must be an Optics or None, got {type(optics).__name__}")
    if reference not in _REFERENCES:
        raise ValueError(f"reference must be one of {_REFERENCES!r}, got {reference!r}")
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
    dx = _check_pixel(pixel_size_um)
    if spectra.count == 0:
        raise ValueError("spectra hold no fields (count == 0); sum field_spectra over fields first")

    freq = radial_frequencies(shape, dx)
    den = spectra.denominator
    power = float(np.median(den)) or float(den.mean())
    if not power > 0:
        raise ValueError("the reference images have no spectral power (all zero after background)")
    mu_abs = float(mu) * power
    support = None if optics is None else min(optics.cutoff, float(freq[-1]))
    alias = optics is not None and reference == "object"
    matrix, mult, active = _operator(shape, dx, support, alias)
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
    profile, _ = _solve_profile(matrix, w, rhs_re, active, extra, fix_origin=extra is not None)
    if support is None:
        noise, _ = _solve_profile(matrix, w, rhs_im, active)
        support = _estimate_support(freq, profile, noise)
        profile[freq >= support] = 0.0
        logger.debug("estimated OTF support %.4f cycles/um", support)
    dc = profile[0]
    if not (abs(dc) > 0 and math.isfinite(dc)):
        raise ValueError("the recovered OTF is zero at the origin; check the backgrounds")
    profile = profile / dc
    otf_half = (matrix @ profile).reshape(half)
    psf = _spatial_psf(otf_half, shape, int(psf_size))
    z = err = math.nan
    na = None
    if optics is not None and fit:
        fit_optics = optics if pixel_size_um == optics.pixel_size_um else _replace_pixel(optics, dx)
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
        mu=float(mu),
        reference=reference,
        cutoff=float(support),
        count=spectra.count,
        na=na,
    )


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
    for cy, cx in _TAPS:
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
    terms = spectra.window_terms.reshape(len(_TAPS), -1)  # (9, B)
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
