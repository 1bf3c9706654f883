"""Richardson-Lucy refocus with read noise, the padding masked out, stopped by the discrepancy principle."""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Any

import numpy as np
import scipy.fft

from ..xp import get_xp, to_numpy
from .blur import Blur, NoiseModel, Restoration, check_blur, check_image, transfer

log = logging.getLogger(__name__)

#: Iterations run past the stopping rule, as a fraction of those before it. The discrepancy rule
#: (chi2 <= 1) and the stall rule (chi2 falls by < 0.1 % an iteration; where most restorations at
#: 20-40 um stop) both stop early: at the true |z| on u2os and the held-out families (2 fields
#: of 260 x 348, 10-40 um, 300 / 2,000 / 20,000 photons; benchmarks/rl_stopping.py) running 0.5x
#: more gained -0.14..+2.50 dB (median +1.40) over the 60 cells, 1x more -0.28..+3.87, 2x more
#: lost up to 1.47 dB in 5 cells. README "Richardson-Lucy stopped too early".
OVERRUN = 0.5


def richardson_lucy(
    image: Any,
    blur: Blur,
    *,
    noise: NoiseModel,
    target_chi2: float = 1.0,
    max_iter: int = 200,
    tol: float = 1e-3,
    overrun: float = OVERRUN,
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
    overrun : float
        Once either rule stops it after ``k`` iterations, run ``overrun * k``
        more (within ``max_iter``): both rules stop early (default
        :data:`OVERRUN`; 0 stops where they fire).
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
    blur = check_blur(blur)
    _check_settings(noise, max_iter, target_chi2, tol, overrun)
    img = check_image(image)
    data = (img - noise.offset) / noise.gain
    shift = (noise.read_noise / noise.gain) ** 2 + 1.0 / 12.0 / noise.gain**2
    pad = blur.padding()
    big = tuple(scipy.fft.next_fast_len(n + 2 * pad, real=True) for n in img.shape)
    crop = (slice(pad, pad + img.shape[0]), slice(pad, pad + img.shape[1]))
    h, t = transfer(blur, big)
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
    last = int(max_iter)  # the iteration whose estimate is returned

    def misfit(x):
        blurred = xp.clip(through(x, h), 0.0, None)
        return blurred, float(xp.mean((data_dev - blurred[crop]) ** 2 / (blurred[crop] + shift)))

    for iteration in range(1, int(max_iter) + 1):
        iterations = iteration
        previous = chi2
        blurred, chi2 = misfit(x)
        if stop == "max_iter":
            if chi2 <= target_chi2:
                stop = "discrepancy"
            elif math.isfinite(previous) and previous - chi2 < tol * previous:
                stop = "stalled"
            if stop != "max_iter":  # x has had iteration - 1 updates: give it overrun times as many more
                last = min(int(max_iter), iteration + math.ceil(overrun * (iteration - 1)))
        if iteration == last:
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


def _check_settings(noise: Any, max_iter: Any, target_chi2: float, tol: float, overrun: float) -> None:
    if not isinstance(noise, NoiseModel):
        raise TypeError(f"richardson_lucy needs noise=NoiseModel(offset, read_noise, gain), got {noise!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not (target_chi2 > 0 and tol >= 0 and overrun >= 0):
        raise ValueError(f"target_chi2 must be > 0, tol >= 0 and overrun >= 0, got {target_chi2!r}, {tol!r}, "
                         f"{overrun!r}")


@lru_cache(maxsize=8)
def _nonnegative_kernel(blur: Blur, big: tuple[int, int]) -> np.ndarray:
    """The transfer of a measured profile's kernel clipped at zero and renormalised (RL needs ``k >= 0``)."""
    h, _ = transfer(blur, big)
    kernel = np.clip(scipy.fft.irfft2(h, s=big), 0.0, None)
    out = scipy.fft.rfft2(kernel / kernel.sum())
    out.flags.writeable = False
    return out
