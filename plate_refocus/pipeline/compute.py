"""The science of one well at one depth: a pure function of arrays, no I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..optics import Optics
from ..results import PLANE_MISSING, PLANE_NO_REFERENCE, PLANE_NO_SIGNAL, PLANE_NONFINITE, PSF_SIZE

__all__ = ["DepthSettings", "DepthResult", "process_depth"]


@dataclasses.dataclass(frozen=True)
class DepthSettings:
    """What :func:`process_depth` needs besides the pixels."""

    optics: Optics
    reference: str  # one of REFERENCES
    background: float  # camera offset, removed before the Fourier sums
    data_range: float  # of PSNR/SSIM
    backend: str  # FFT array backend: "numpy", "cupy" or "auto"
    psf_size: int = PSF_SIZE


@dataclasses.dataclass
class DepthResult:
    """:func:`process_depth`'s output for one well at one depth (F fields)."""

    refocused: np.ndarray  # (F, Y, X) float32, NaN where a plane was masked or missing
    otf_radial: np.ndarray  # (freq,)
    psf: np.ndarray  # (psf_size, psf_size)
    defocus_um: float
    defocus_err_um: float
    quality: np.ndarray  # (F, 2, 3): [input, refocused] x [sharpness, psnr, ssim]
    flags: np.ndarray  # (F,) uint8, PLANE_* bits

    def small(self) -> dict[str, Any]:
        """Everything but the refocused planes: what a depth task sends on."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "refocused"}


def _usable(image: np.ndarray | None) -> bool:
    return image is not None and (
        not np.issubdtype(image.dtype, np.floating) or bool(np.isfinite(image).all())
    )


def process_depth(
    planes: Sequence[np.ndarray | None],
    *,
    refocus: Callable[[np.ndarray], np.ndarray],
    settings: DepthSettings,
    references: Sequence[np.ndarray | None] | None = None,
    truths: Sequence[np.ndarray | None] | None = None,
    freq_size: int,
) -> DepthResult:
    """Refocus one well's fields at one depth and recover the well's PSF there.

    Parameters
    ----------
    planes : sequence of (Y, X) ndarray or None, one per field
        The defocused planes; None where the plane is missing.
    refocus : callable
        ``(N, Y, X) -> (N, Y, X) float32``: the refocusing method, run once on
        all usable planes.
    settings : DepthSettings
    references : sequence of (Y, X) ndarray or None, optional
        With ``settings.reference == "focal-plane"``: each field's in-focus
        plane (None where missing). Otherwise the refocused planes are the
        reference.
    truths : sequence of (Y, X) ndarray or None, optional
        Ground-truth in-focus images, for PSNR/SSIM.
    freq_size : int
        Length of the radial frequency axis (for NaN profiles).

    Returns
    -------
    DepthResult
        A plane with NaN or infinite pixels is masked like a missing plane
        (``PLANE_NONFINITE``). A plane without signal above its noise is
        refocused but left out of the PSF (``PLANE_NO_SIGNAL``); a depth
        without a usable plane gets NaN defocus and profile.
    """
    from ..metrics import has_signal, plane_quality
    from ..psf import field_spectra, recover_psf

    n = len(planes)
    flags = np.zeros(n, dtype=np.uint8)
    quality = np.full((n, 2, 3), np.nan)
    present = []
    for f, plane in enumerate(planes):
        if plane is None:
            flags[f] |= PLANE_MISSING
        elif not _usable(plane):
            flags[f] |= PLANE_NONFINITE
        else:
            present.append(f)
    shape = next((p.shape for p in planes if p is not None), (0, 0))
    refocused = np.full((n, *shape), np.nan, dtype=np.float32)
    if present:
        refocused[present] = refocus(np.stack([planes[f] for f in present]))
    spectra = None
    for f in present:
        raw = np.asarray(planes[f], dtype=np.float32)
        truth = truths[f] if truths is not None else None
        quality[f] = plane_quality(raw, refocused[f], truth, data_range=settings.data_range)
        reference = refocused[f]
        if settings.reference == "focal-plane":
            reference = references[f] if references is not None else None
            if not _usable(reference) or not has_signal(reference):
                flags[f] |= PLANE_NO_REFERENCE
                continue
            reference = np.asarray(reference, dtype=np.float32)
        if not has_signal(raw):
            flags[f] |= PLANE_NO_SIGNAL
            continue
        field = field_spectra(reference, raw, reference_background=settings.background,
                              defocused_background=settings.background, backend=settings.backend)
        spectra = field if spectra is None else spectra + field
    if spectra is None:
        return DepthResult(refocused, np.full(freq_size, np.nan),
                           np.full((settings.psf_size, settings.psf_size), np.nan),
                           np.nan, np.nan, quality, flags)
    est = recover_psf(spectra, shape, settings.optics, reference="in-focus",
                      psf_size=settings.psf_size)
    return DepthResult(refocused, np.asarray(est.otf_radial, dtype=np.float64),
                       np.asarray(est.psf, dtype=np.float64), float(est.defocus_um),
                       float(est.defocus_err_um), quality, flags)
