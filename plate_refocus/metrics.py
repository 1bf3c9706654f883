"""Image quality measures: PSNR and SSIM against a reference, and a no-reference sharpness.

PSNR and SSIM take the data range explicitly (4095 for 12-bit cameras):
guessing it from the images would make numbers from different images
incomparable.

References
----------
.. [1] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality
   assessment: from error visibility to structural similarity", IEEE TIP 13, 2004.
.. [2] J. L. Pech-Pacheco et al., "Diatom autofocusing in brightfield
   microscopy: a comparative study", ICPR 2000 (variance of the Laplacian).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["psnr", "ssim", "sharpness", "mse"]


def _pair(reference: np.ndarray, image: np.ndarray, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    img = np.asarray(image, dtype=np.float64)
    if ref.shape != img.shape:
        raise ValueError(f"reference and image must have the same shape, got {ref.shape!r} and {img.shape!r}")
    if ref.ndim < 2:
        raise ValueError(f"images must have at least 2 dimensions (Y, X), got shape {ref.shape!r}")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float, np.number)):
        raise TypeError(f"data_range must be a number, got {data_range!r}")
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range!r}; use 4095 for 12-bit images")
    return ref, img


def mse(reference: np.ndarray, image: np.ndarray) -> float:
    """Mean squared error over all pixels."""
    ref, img = _pair(reference, image, 1.0)
    return float(np.mean((ref - img) ** 2))


def psnr(reference: np.ndarray, image: np.ndarray, *, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range**2 / MSE)``.

    Parameters
    ----------
    reference, image : (..., Y, X) array_like
        Same shape; ``reference`` is the ground truth.
    data_range : float
        The largest possible intensity difference (4095 for 12-bit data).

    Returns
    -------
    float
        ``inf`` when the images are equal.
    """
    ref, img = _pair(reference, image, data_range)
    err = float(np.mean((ref - img) ** 2))
    if err == 0:
        return math.inf
    return 10.0 * math.log10(float(data_range) ** 2 / err)


def ssim(
    reference: np.ndarray,
    image: np.ndarray,
    *,
    data_range: float,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity with Gaussian windows (Wang et al. 2004 [1]_).

    Parameters
    ----------
    reference, image : (Y, X) array_like
    data_range : float
        The largest possible intensity difference (4095 for 12-bit data).
    sigma : float
        Standard deviation of the Gaussian window in pixels (1.5, as in [1]_).
    k1, k2 : float
        Stabilising constants, ``C1 = (k1 L)**2``, ``C2 = (k2 L)**2``.

    Returns
    -------
    float
        Mean SSIM over pixels whose window lies inside the image (the
        sample-covariance form used by ``skimage.metrics.structural_similarity``
        with ``gaussian_weights=True``).

    Notes
    -----
    ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with local means and (co)variances under the window.
    """
    ref, img = _pair(reference, image, data_range)
    if ref.ndim != 2:
        raise ValueError(f"ssim needs 2-D images (Y, X), got shape {ref.shape!r}")
    truncate = 3.5
    radius = int(truncate * sigma + 0.5)
    if min(ref.shape) < 2 * radius + 1:
        raise ValueError(f"images of shape {ref.shape!r} are smaller than the SSIM window ({2 * radius + 1} px)")

    def filt(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma, truncate=truncate, mode="reflect")

    n = (2 * radius + 1) ** 2
    cov_norm = n / (n - 1.0)
    ux, uy = filt(ref), filt(img)
    vx = cov_norm * (filt(ref * ref) - ux * ux)
    vy = cov_norm * (filt(img * img) - uy * uy)
    vxy = cov_norm * (filt(ref * img) - ux * uy)
    c1 = (k1 * float(data_range)) ** 2
    c2 = (k2 * float(data_range)) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s[radius:-radius, radius:-radius].mean())


def sharpness(image: np.ndarray) -> float:
    """A no-reference focus measure: variance of the Laplacian over the mean squared intensity.

    Higher is sharper. Dividing by the mean square makes it independent of
    the intensity scale, so a refocused image (float) and its input (uint16)
    compare directly.

    Parameters
    ----------
    image : (Y, X) array_like

    Returns
    -------
    float
        0 for a constant image.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"sharpness needs a 2-D image (Y, X), got shape {img.shape!r}")
    if not np.isfinite(img).all():
        raise ValueError("image contains NaN or infinite values")
    lap = ndimage.laplace(img, mode="reflect")
    power = float(np.mean(img**2))
    if power == 0:
        return 0.0
    return float(np.var(lap) / power)
