"""Per-field partial sums of the pooled Fourier PSF estimate: the spectra of reference and defocused images.

:func:`field_spectra` takes one or more fields' sharp reference ``f`` and
defocused image ``g`` and returns :class:`FieldSpectra`, the partial sums
``sum conj(F) G`` and ``sum |F|^2`` that add up over fields (and, with the
Hann window, the window model's terms). The border treatments live here:
the Hann/Tukey window with the window-weighted mean removed, the model of
the window's spectral taps on the lowest frequencies (block DFT helpers),
and Moisan's periodic-plus-smooth decomposition.

References
----------
.. [1] M. Werth and A. Matlock, "Neural network-based microscope defocus
   correction with point spread function recovery", Boston University
   technical report, 2018, sections 3.4-3.8.
.. [2] L. Moisan, "Periodic plus smooth image decomposition", J. Math.
   Imaging Vis. 39, 161-179 (2011).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ..optics import check_shape
from ..xp import get_xp, to_numpy

__all__ = ["FieldSpectra", "field_spectra", "windowed_spectrum", "window_weights",
           "WINDOW_MODEL_BINS", "WINDOW_TAPS", "WINDOW_TERMS_SHAPE"]

_EDGES = ("taper", "periodic", "none")

#: Half-width ``L`` (in DFT bins) of the block of lowest frequencies where the
#: Hann window's mixing of neighbouring frequencies is modelled exactly.
WINDOW_MODEL_BINS = 12
#: The Hann window's 3 x 3 spectral taps ``(cy, cx)``, in the order of ``window_terms``.
WINDOW_TAPS = tuple((cy, cx) for cy in (-1, 0, 1) for cx in (-1, 0, 1))
#: Shape of :attr:`FieldSpectra.window_terms`: one ``(2 L + 1, L + 1)`` block per tap.
WINDOW_TERMS_SHAPE = (len(WINDOW_TAPS), 2 * WINDOW_MODEL_BINS + 1, WINDOW_MODEL_BINS + 1)


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
            if terms.shape != WINDOW_TERMS_SHAPE:
                raise ValueError(
                    f"FieldSpectra.window_terms must have shape {WINDOW_TERMS_SHAPE!r}, got {terms.shape!r}"
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
    the Hann window ``w`` at the offsets :data:`WINDOW_TAPS`.
    """
    ny, nx = shape
    n = WINDOW_MODEL_BINS + 1
    angle_x = 2 * np.pi * np.outer(np.arange(nx), np.arange(n + 1)) / nx
    ex = np.concatenate([np.cos(angle_x), -np.sin(angle_x)], axis=1)
    ey = np.exp(-2j * np.pi * np.outer(np.arange(-n, n + 1), np.arange(ny)) / ny)
    spectrum = np.fft.fft2(_tukey(shape, 0.5, "numpy")) / (ny * nx)
    taps = np.array([spectrum[cy % ny, cx % nx] for cy, cx in WINDOW_TAPS])
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
    for (cy, cx), tap in zip(WINDOW_TAPS, taps, strict=True):
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
    _check_edges(edges, taper)
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
    shape = check_shape(shape)
    _check_edges(edges, taper)
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
    _check_edges(edges, taper)
    xp, fft = get_xp(backend, workers=workers)
    spectrum, _, _ = _spectrum(image, _background("background", background, xp), xp, fft, edges,
                               float(taper))
    return spectrum


def _check_edges(edges: str, taper: Any) -> None:
    if edges not in _EDGES:
        raise ValueError(f"edges must be one of {_EDGES!r}, got {edges!r}")
    if isinstance(taper, bool) or not isinstance(taper, (int, float)) or not 0 <= taper <= 0.5:
        raise ValueError(f"taper must be a fraction between 0 and 0.5, got {taper!r}")
