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

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from scipy import ndimage

from .errors import PlateRefocusError
from .optics import Optics, defocus_otf

__all__ = [
    "psnr",
    "ssim",
    "sharpness",
    "mse",
    "wiener_refocus",
    "evaluate_stack",
    "evaluate_plate",
    "summarize",
    "format_table",
    "write_table",
    "WIENER_BALANCES",
    "plane_quality",
    "has_signal",
    "noise_variance",
]

log = logging.getLogger(__name__)

#: Regularisation weights tried for the oracle Wiener filter (the best per depth is kept).
WIENER_BALANCES: tuple[float, ...] = tuple(10.0 ** e for e in np.arange(-5.0, -0.4, 0.5))


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


def sharpness(image: np.ndarray, *, sigma: float = 2.0) -> float:
    """A no-reference focus measure: the share of the image's variance in fine detail.

    ``var(LoG_sigma(image)) / var(image)``, with ``LoG_sigma`` the Laplacian
    of a Gaussian of `sigma` pixels. Higher is sharper. The LoG passes a band
    around ``1 / (pi sigma sqrt(2))`` cycles/pixel (0.11 for 2 px): detail that
    defocus removes first, below the pixel-scale band where shot noise
    dominates, so a noisy plane is not scored sharp for its noise (the plain
    Laplacian over the mean square, used before, rose with defocus on
    simulated 2000-photon fields: noise, not detail). Dividing by the variance
    makes it independent of the intensity scale and of any offset, so a
    refocused plane (float) and its camera input (uint16 with an offset)
    compare directly.

    Parameters
    ----------
    image : (Y, X) array_like
    sigma : float
        Scale of the detail measured, in pixels.

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
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma!r}")
    variance = float(np.var(img))
    if variance == 0:
        return 0.0
    detail = ndimage.gaussian_laplace(img, float(sigma), mode="reflect")
    return float(np.var(detail) / variance)


def noise_variance(image: np.ndarray) -> float:
    """The variance of an image's pixel-to-pixel noise, from its neighbour differences.

    The differences of neighbouring pixels remove the (smooth) signal and keep
    twice the variance of white noise; the median absolute deviation makes the
    estimate robust to the edges of cells. Camera noise (Poisson plus read
    noise) is white, so this measures it whatever the image shows.
    """
    img = np.asarray(image, dtype=np.float64)
    diffs = [np.diff(img, axis=axis).ravel() for axis in (0, 1) if img.shape[axis] > 1]
    d = np.concatenate(diffs) if diffs else np.zeros(1)
    mad = float(np.median(np.abs(d - np.median(d))))
    return (1.4826 * mad) ** 2 / 2.0


def has_signal(image: np.ndarray, *, ratio: float = 1.5) -> bool:
    """Whether an image holds more than its noise: ``var(image) > ratio * noise variance``.

    A constant plane, an all-zero plane, or one of camera noise alone has (up
    to sampling) no more variance than its white noise (:func:`noise_variance`),
    while cells, even far out of focus, add variance at scales above the
    pixel. A plane without signal has nothing to fit a PSF to: the pipeline
    leaves it out and says so, rather than fitting a confident number. With
    the default ratio, pure camera noise stays below it (largest ratio in 200
    noise planes: 1.27 at 32 x 32 px, 1.02 at 64 x 64) while simulated cells at
    200 photons and 40 um defocus read 3-6.
    """
    img = np.asarray(image, dtype=np.float64)
    total = float(np.var(img))
    if not np.isfinite(total) or total <= 0:
        return False
    noise = noise_variance(img)
    if noise <= 0:
        # quantised planes whose differences are mostly zero: any variance is structure
        return total > 0
    return total > ratio * noise


def plane_quality(defocused: np.ndarray, refocused: np.ndarray, truth: np.ndarray | None, *,
                  data_range: float) -> np.ndarray:
    """``[[sharpness, psnr, ssim] for stage in (input, refocused)]`` of one plane, (2, 3).

    PSNR and SSIM are NaN when there is no ground truth.
    """
    out = np.full((2, 3), np.nan)
    for row, image in enumerate((defocused, refocused)):
        image = np.asarray(image, dtype=np.float64)
        out[row, 0] = sharpness(image)
        if truth is not None:
            out[row, 1] = psnr(truth, image, data_range=data_range)
            out[row, 2] = ssim(truth, image, data_range=data_range)
    return out


# --- evaluation against ground truth ---------------------------------------------------------


def wiener_refocus(
    image: np.ndarray,
    z_um: float,
    optics: Optics | None = None,
    *,
    balance: float | Sequence[float],
    offset: float = 0.0,
) -> np.ndarray:
    """Wiener deconvolution of a defocused plane to the in-focus image, given the true PSF.

    Parameters
    ----------
    image : (Y, X) array_like
    z_um : float
        The true defocus of the plane.
    optics : Optics, optional
        Default ``Optics()``.
    balance : float or sequence of float
        Regularisation ``lambda`` (noise-to-signal power, in units where the
        OTF is 1 at zero frequency); several give several results.
    offset : float
        Camera offset, removed before and restored after.

    Returns
    -------
    (Y, X) or (B, Y, X) ndarray of float32
        One image per ``balance``.

    Notes
    -----
    ``F = (G - offset) K_0 conj(K_z) / (|K_z|^2 + lambda) + offset`` on a grid
    padded by reflection by the blur radius (so the image edges do not wrap
    around), cropped back. Restoring to ``K_0`` (the in-focus OTF) rather than
    to 1 targets the in-focus image, as the U-Net does. With the *true* ``z``
    this is the oracle that a blind method chases.
    """
    optics = Optics() if optics is None else optics
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"wiener_refocus needs a 2-D image (Y, X), got shape {img.shape!r}")
    balances = np.atleast_1d(np.asarray(balance, dtype=np.float64))
    if (balances <= 0).any():
        raise ValueError(f"balance must be positive, got {balance!r}")
    reach = abs(float(z_um)) * math.tan(math.asin(optics.na / optics.immersion_index))
    pad = int(math.ceil((reach + 3 * optics.wavelength_um / optics.na) / optics.pixel_size_um)) + 2
    big = tuple(scipy.fft.next_fast_len(n + 2 * pad, real=True) for n in img.shape)
    extra = [(pad, b - n - pad) for b, n in zip(big, img.shape, strict=True)]
    padded = np.pad(img - offset, extra, mode="symmetric")
    spectrum = scipy.fft.rfft2(padded)
    k_z = defocus_otf(big, z_um, optics, real=True)
    k_0 = defocus_otf(big, 0.0, optics, real=True)
    out = []
    for lam in balances:
        filt = k_0 * np.conj(k_z) / (np.abs(k_z) ** 2 + lam)
        restored = scipy.fft.irfft2(spectrum * filt, s=big)
        out.append(restored[pad : pad + img.shape[0], pad : pad + img.shape[1]] + offset)
    result = np.asarray(out, dtype=np.float32)
    return result[0] if np.ndim(balance) == 0 else result


def evaluate_stack(
    planes: np.ndarray,
    truth: np.ndarray,
    depth_um: Sequence[float],
    *,
    data_range: float,
    refocus: Callable[[np.ndarray], np.ndarray] | None = None,
    optics: Optics | None = None,
    offset: float = 0.0,
) -> list[dict[str, Any]]:
    """Scores of one field's planes against its in-focus ground truth.

    Parameters
    ----------
    planes : (Z, Y, X) array_like
        Defocused planes of one field and channel.
    truth : (Y, X) array_like
        The in-focus ground truth.
    depth_um : (Z,) sequence of float
    data_range : float
    refocus : callable, optional
        ``(Z, Y, X) -> (Z, Y, X)``, e.g. ``model.predict_batch``.
    optics : Optics, optional
        When given, Wiener deconvolution with the true PSF is scored too, with
        the balance from :data:`WIENER_BALANCES` that gives each image its
        best PSNR (an oracle on top of the oracle PSF).
    offset : float
        Camera offset (for the Wiener filter).

    Returns
    -------
    list of dict
        One row per plane and method: ``depth_um``, ``method`` ("input",
        "refocused", "wiener"), ``balance`` (Wiener only), ``psnr``, ``ssim``.
    """
    planes = np.asarray(planes)
    truth = np.asarray(truth, dtype=np.float64)
    if planes.ndim != 3 or planes.shape[1:] != truth.shape:
        raise ValueError(f"planes (Z, Y, X) and truth (Y, X) do not match: {planes.shape!r}, {truth.shape!r}")
    if len(depth_um) != len(planes):
        raise ValueError(f"depth_um needs one value per plane ({len(planes)}), got {len(depth_um)}")
    rows = []

    def score(image, depth, method, **extra):
        rows.append({
            "depth_um": float(depth),
            "method": method,
            **extra,
            "psnr": psnr(truth, image, data_range=data_range),
            "ssim": ssim(truth, image, data_range=data_range),
        })

    outputs = refocus(planes) if refocus is not None else None
    for j, depth in enumerate(depth_um):
        score(planes[j], depth, "input")
        if outputs is not None:
            score(outputs[j], depth, "refocused")
        if optics is not None:
            # Oracle: the true PSF and, per image, the balance that maximises its PSNR
            # (SSIM is then computed for that one only).
            restored = wiener_refocus(planes[j], depth, optics, balance=WIENER_BALANCES, offset=offset)
            errors = [float(np.mean((truth - r) ** 2)) for r in restored]
            best = int(np.argmin(errors))
            score(restored[best], depth, "wiener", balance=float(WIENER_BALANCES[best]))
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over fields per depth and method.

    For ``"wiener"``, ``balance`` is the median of the per-image best balances.

    Returns
    -------
    list of dict
        ``depth_um``, ``method``, ``n``, ``psnr_mean``, ``psnr_std``,
        ``ssim_mean``, ``ssim_std`` (and ``balance`` for Wiener), sorted by
        depth then method.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["depth_um"], row["method"]), []).append(row)
    summary: dict[tuple[float, str], dict[str, Any]] = {}
    for (depth, method), members in groups.items():
        balances = [m["balance"] for m in members if "balance" in m]
        balance = float(np.median(balances)) if balances else None
        p = np.array([m["psnr"] for m in members])
        s = np.array([m["ssim"] for m in members])
        entry = {
            "depth_um": depth,
            "method": method,
            "n": len(members),
            "psnr_mean": float(p.mean()),
            "psnr_std": float(p.std()),
            "ssim_mean": float(s.mean()),
            "ssim_std": float(s.std()),
        }
        if balance is not None:
            entry["balance"] = balance
        summary[(depth, method)] = entry
    order = {"input": 0, "refocused": 1, "wiener": 2}
    return sorted(summary.values(), key=lambda e: (e["depth_um"], order.get(e["method"], 3)))


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """The per-depth table: PSNR (dB) and SSIM, mean +- std, for every method, and the gains."""
    by_depth: dict[float, dict[str, dict[str, Any]]] = {}
    for e in summary:
        by_depth.setdefault(e["depth_um"], {})[e["method"]] = e
    methods = [m for m in ("input", "refocused", "wiener") if any(m in v for v in by_depth.values())]
    head = ["depth um"] + [f"{m} PSNR" for m in methods] + [f"{m} SSIM" for m in methods]
    if "refocused" in methods:
        head.append("gain dB")
        if "wiener" in methods:
            head.append("behind Wiener dB")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for depth in sorted(by_depth):
        row = by_depth[depth]
        cells = [f"{depth:g}"]
        cells += [f"{row[m]['psnr_mean']:.2f} ± {row[m]['psnr_std']:.2f}" if m in row else "" for m in methods]
        cells += [f"{row[m]['ssim_mean']:.4f} ± {row[m]['ssim_std']:.4f}" if m in row else "" for m in methods]
        if "refocused" in methods:
            cells.append(f"{row['refocused']['psnr_mean'] - row['input']['psnr_mean']:+.2f}")
            if "wiener" in methods:
                cells.append(f"{row['wiener']['psnr_mean'] - row['refocused']['psnr_mean']:+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    n = max((e["n"] for e in summary), default=0)
    note = "; wiener: the true PSF and the best balance per image (an oracle)" if "wiener" in methods else ""
    lines.append(f"(mean ± std over {n} fields x channels per depth{note})")
    return "\n".join(lines)


def write_table(summary: Sequence[dict[str, Any]], path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write the summary as CSV (``.csv``) or JSON (``.json``, with ``extra`` facts beside it)."""
    path = Path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps({**(extra or {}), "summary": list(summary)}, indent=2) + "\n")
    elif path.suffix == ".csv":
        keys = ["depth_um", "method", "n", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "balance"]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            for e in summary:
                writer.writerow({k: e.get(k, "") for k in keys})
    else:
        raise ValueError(f"table path must end in .csv or .json, got {str(path)!r}")
    return path


def evaluate_plate(
    plate: str | os.PathLike,
    model: Any = None,
    *,
    depths_um: Sequence[float] | None = None,
    max_fields: int | None = None,
    wiener: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Score a model on a simulated plate against its ground truth, per depth.

    Parameters
    ----------
    plate : path
        A plate with ground truth (:func:`plate_refocus.simulate.simulate_plate`).
    model : RefocusModel or path, optional
        Default: the shipped model. ``False``: score the input (and Wiener) only.
    depths_um : sequence of float, optional
        Only the planes at these depths.
    max_fields : int, optional
        Only the first fields (in well, field order).
    wiener : bool
        Also score Wiener deconvolution with the true PSF (the oracle).
    progress : callable, optional
        ``progress(done, total)`` after each field.

    Returns
    -------
    rows : list of dict
        Per field, channel, plane and method (see :func:`evaluate_stack`),
        with ``well``, ``field`` and ``channel``.
    summary : list of dict
        :func:`summarize` of ``rows``.
    """
    from .plate import open_ground_truth, open_plate, read_layout

    layout = read_layout(plate)
    images = open_plate(layout)
    truth = open_ground_truth(plate)
    if truth is None:
        raise PlateRefocusError(
            f"plate {str(plate)!r} has no ground truth; evaluate needs a simulated plate "
            "(plate-refocus simulate)"
        )
    if model is not False:
        from .unet import RefocusModel, load_model

        if not isinstance(model, RefocusModel):
            model = load_model(model)
    optics = Optics.from_dict(images.attrs["optics"]) if "optics" in images.attrs else Optics()
    if model:
        model.check_optics(optics)
    offset, data_range = layout.offset, layout.data_range
    z_um = np.abs(np.asarray(images.coords["z_um"].values, dtype=np.float64))
    planes = np.arange(len(z_um))
    if depths_um is not None:
        keep = [np.flatnonzero(np.isclose(z_um, abs(float(d)), atol=1e-6)) for d in depths_um]
        missing = [d for d, k in zip(depths_um, keep, strict=True) if not len(k)]
        if missing:
            raise PlateRefocusError(f"depths {missing!r} um are not in the plate; it has {sorted(set(z_um))!r}")
        planes = np.unique(np.concatenate(keep))
    fields = [(w, f) for w in range(images.sizes["well"]) for f in range(images.sizes["field"])]
    if max_fields is not None:
        fields = fields[:max_fields]
    rows = []
    for done, (w, f) in enumerate(fields, 1):
        for c in range(images.sizes["c"]):
            stack = np.asarray(images.isel(well=w, field=f, c=c, z=planes).values)
            target = np.asarray(truth["in_focus"].isel(well=w, field=f, c=c).values)
            for row in evaluate_stack(
                stack, target, z_um[planes], data_range=data_range,
                refocus=model.predict_batch if model else None,
                optics=optics if wiener else None, offset=offset,
            ):
                rows.append({"well": str(images.coords["well"].values[w]), "field": int(f),
                             "channel": str(images.coords["c"].values[c]), **row})
        if progress is not None:
            progress(done, len(fields))
    return rows, summarize(rows)
