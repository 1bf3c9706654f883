"""Trust per field: how well an in-focus estimate, re-blurred, explains its plane; the hybrid choice."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import scipy.fft

from ..focus import power_spectrum
from .blur import Blur, NoiseModel, check_blur, check_image, mirror_padded, transfer

#: :func:`hybrid` keeps a network output whose :func:`consistency` is at most this. Calibrated on
#: simulated fields at 2000 photons (benchmarks/generalization.py --quick): the shipped U-Net read
#: 0.3-38 (10th-90th percentile, median 13) on its training family at 0-30 um and 77-179 on unseen
#: families at 40 um. Systematic errors grow with the signal, so brighter plates read higher.
CONSISTENCY_LIMIT = 50.0


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
    blur = check_blur(blur)
    g = check_image(observed)
    t_img = check_image(restored)
    if g.shape != t_img.shape:
        raise ValueError(f"observed and restored must have one shape, got {g.shape!r} and {t_img.shape!r}")
    offset = 0.0 if noise is None else noise.offset
    pad = blur.padding()
    padded_t, big, crop = mirror_padded(t_img - offset, pad)
    padded_g, _, _ = mirror_padded(g - offset, pad)
    h, t = transfer(blur, big)

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
    _, t = transfer(blur, big)
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
