"""The science of one well at one depth: a pure function of arrays, no I/O.

:func:`process_depth` takes the well's fields at one depth (and, when the
stack has one, their in-focus plane) and returns everything the results
store keeps for that depth:

1. planes with NaN/inf pixels are masked, planes without signal are left out
   of every estimate (flagged, never fitted);
2. the **blind** ``|z|`` from the fields' pooled power spectra
   (:func:`plate_refocus.focus.blind_defocus`), always;
3. the **reference**: the stack's in-focus plane (the well's measured OTF
   ``K_z / K_0`` and ``|z|`` by :func:`plate_refocus.psf.recover_psf`), or the
   blind estimate (:func:`plate_refocus.focus.restoration_depth`), or, as
   before, the network's output;
4. the **refocus** by the chosen method: the network, or Wiener or
   Richardson-Lucy against the model OTF at that ``|z|``, or (``hybrid``)
   Richardson-Lucy wherever the blur is known (refined by the RL refiner
   network at the depths and optics it was trained for, where one is given
   and its output stays consistent) and, where it is not (near focus), the
   network where its output is consistent with the plane; a
   plane whose blur is not identifiable and has no reference is otherwise
   left as it is, never sharpened at a guessed depth;
5. the **consistency** of every output with its plane (re-blurred under the
   camera's noise model) and the quality measures. A Richardson-Lucy restoration whose
   consistency exceeds :data:`RL_CONSISTENCY_LIMIT` is replaced by the
   plane as it is (flagged ``PLANE_INCONSISTENT``): the blur it assumed does not
   explain the plane (an objective the model does not describe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..optics import Optics
from ..results import (
    METHOD_IDENTITY,
    METHOD_RL,
    METHOD_RL_REFINED,
    METHOD_UNET,
    METHOD_WIENER,
    PLANE_INCONSISTENT,
    PLANE_MISSING,
    PLANE_NO_REFERENCE,
    PLANE_NO_SIGNAL,
    PLANE_NONFINITE,
    PSF_SIZE,
)

__all__ = ["METHODS", "RL_CONSISTENCY_LIMIT", "DepthSettings", "DepthResult", "process_depth"]

#: Refocusing methods: the network, Wiener, Richardson-Lucy, or Richardson-Lucy where the well's blur
#: is known and the network (where consistent with the plane) where it is not: at 10-30 um RL gains
#: up to 14 dB more than any network tried; near focus, where the blind |z| is not identifiable,
#: the domain-randomised network gains 1.9-8.3 dB on held-out families (benchmarks/network_comparison.py);
#: at depth hybrid also refines RL's output with the RL refiner where one is given (unet.refiner).
METHODS = ("unet", "wiener", "rl", "hybrid")

#: Consistency above which a Richardson-Lucy output is not kept (the plane is left as it is).
#: RL iterates until its re-blurred output fits the plane to the noise, so it reads about 1 when
#: its blur is right; Wiener's regularisation leaves it 90-230 even where it gains, so it is not
#: judged by this. Measured by benchmarks/restoration_guard.py (3-field wells of 260 x 348, five families,
#: 0-40 um, with RL's overrun): with the optics as modelled the restorations read at most 2.1
#: (2000 photons), 1.8 (300), 6.1 (20,000, 16-bit) and 5.1 (NA 10 % off what the run is told),
#: and none lost to the input; through spherical aberration the run does not model (0.15 / 0.08
#: waves rms) every restoration lost, and 35 of 84 / 54 of 75 read above 20. Consistency grows
#: with brightness (systematic misfit), hence 3x the largest modelled value.
RL_CONSISTENCY_LIMIT = 20.0


@dataclasses.dataclass(frozen=True)
class DepthSettings:
    """What :func:`process_depth` needs besides the pixels."""

    optics: Optics
    method: str  # one of METHODS
    reference: str  # "focal-plane", "blind" or "refocused" (resolved per well)
    background: float  # camera offset, removed before the Fourier sums
    data_range: float  # of PSNR/SSIM
    backend: str  # FFT array backend: "numpy", "cupy" or "auto"
    read_noise: float | None = None  # the camera's, when recorded; None: from the data
    psf_size: int = PSF_SIZE
    network_limit: float | None = None  # hybrid keeps the network at consistency <= this (the model's)


@dataclasses.dataclass
class DepthResult:
    """:func:`process_depth`'s output for one well at one depth (F fields)."""

    refocused: np.ndarray  # (F, Y, X) float32, NaN where a plane was masked or missing
    otf_radial: np.ndarray  # (freq,)
    psf: np.ndarray  # (psf_size, psf_size)
    defocus_um: float  # against the reference used
    defocus_err_um: float
    defocus_blind_um: float  # from the pooled power spectra alone
    defocus_blind_err_um: float
    quality: np.ndarray  # (F, 2, 3): [input, refocused] x [sharpness, psnr, ssim]
    consistency: np.ndarray  # (F,) reduced chi-square of the output re-blurred against the plane
    method_used: np.ndarray  # (F,) int8: METHOD_* codes
    flags: np.ndarray  # (F,) uint8, PLANE_* bits

    def small(self) -> dict[str, Any]:
        """Everything but the refocused planes: what a depth task sends on."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "refocused"}


def _usable(image: np.ndarray | None) -> bool:
    return image is not None and (
        not np.issubdtype(image.dtype, np.floating) or bool(np.isfinite(image).all())
    )


def _noise_model(settings: DepthSettings, planes: Sequence[np.ndarray], blind: Any) -> Any:
    """The camera's noise model: recorded, else estimated from the planes (offset, gain)."""
    from ..deconvolve import NoiseModel

    if settings.read_noise is not None:
        return NoiseModel(settings.background, settings.read_noise, 1.0)
    if not planes:
        return NoiseModel(settings.background, 0.0, 1.0)
    # Unknown camera: the offset just below the darkest pixels, the gain from the white noise
    # floor of the fitted power spectrum over the mean signal (read noise folded into it).
    offset = min(float(np.percentile(p, 0.1)) for p in planes) - 3.0
    mean = float(np.mean([np.mean(p) for p in planes])) - offset
    floor = blind.spectrum.noise if blind is not None else np.mean([np.var(p) for p in planes])
    return NoiseModel(offset, 0.0, max(float(floor) / max(mean, 1.0), 0.05))


def _blind(planes: Sequence[np.ndarray], settings: DepthSettings) -> Any:
    from ..focus import blind_defocus, power_spectrum

    if not planes:
        return None
    spectra = power_spectrum(np.stack(planes), settings.optics.pixel_size_um,
                             background=settings.background, backend=settings.backend)
    return blind_defocus(spectra, settings.optics)


def _relative_model(freq: np.ndarray, z: float, optics: Optics) -> np.ndarray:
    """``K_z / K_0`` of the model inside the passband (where ``K_0`` is not tiny), 0 beyond."""
    from ..optics import radial_otf

    k = radial_otf(freq, np.array([z, 0.0]), optics)
    inside = k[1] > 1e-3
    out = np.zeros_like(freq, dtype=np.float64)
    out[inside] = k[0][inside] / k[1][inside]
    out[0] = 1.0
    return out


def _measured(pairs: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int],
              settings: DepthSettings) -> Any:
    """The well's OTF relative to its references, pooled over the fields: a PSFEstimate."""
    from ..psf import field_spectra, recover_psf

    spectra = None
    for reference, plane in pairs:
        field = field_spectra(reference, plane, reference_background=settings.background,
                              defocused_background=settings.background, backend=settings.backend)
        spectra = field if spectra is None else spectra + field
    return recover_psf(spectra, shape, settings.optics, reference="in-focus",
                       psf_size=settings.psf_size)


def _restore(plane: np.ndarray, blur: Any, method: str, noise: Any) -> np.ndarray:
    from ..deconvolve import richardson_lucy, wiener

    if method == "wiener":
        return wiener(plane, blur, noise=noise).image
    return richardson_lucy(plane, blur, noise=noise).image


@dataclasses.dataclass
class _Planes:
    """The well's planes at one depth, sorted: which are present, usable and carry signal."""

    raw: dict[int, np.ndarray]  # field -> float32 plane, for the present ones
    present: list[int]
    signal: list[int]
    flags: np.ndarray
    shape: tuple[int, int]


def _sort_planes(planes: Sequence[np.ndarray | None]) -> _Planes:
    from ..metrics import has_signal

    flags = np.zeros(len(planes), dtype=np.uint8)
    present = []
    for f, plane in enumerate(planes):
        if plane is None:
            flags[f] |= PLANE_MISSING
        elif not _usable(plane):
            flags[f] |= PLANE_NONFINITE
        else:
            present.append(f)
    raw = {f: np.asarray(planes[f], dtype=np.float32) for f in present}
    signal = [f for f in present if has_signal(raw[f])]
    for f in set(present) - set(signal):
        flags[f] |= PLANE_NO_SIGNAL
    shape = next((p.shape for p in planes if p is not None), (0, 0))
    return _Planes(raw, present, signal, flags, shape)


def _reference(ps: _Planes, settings: DepthSettings, freq: np.ndarray, blind: Any,
               net: dict[int, np.ndarray], references: Sequence[np.ndarray | None] | None):
    """``(otf_radial, psf, |z|, its error, blur to restore or None)`` against the reference."""
    from ..deconvolve import Blur
    from ..focus import restoration_depth
    from ..metrics import has_signal
    from ..psf import psf_from_profile

    optics = settings.optics
    profile = np.full(freq.size, np.nan)
    psf = np.full((settings.psf_size, settings.psf_size), np.nan)
    if settings.reference in ("focal-plane", "refocused"):
        pairs = []
        for f in ps.signal:
            ref = net[f] if settings.reference == "refocused" else (
                references[f] if references is not None else None)
            if not _usable(ref) or not has_signal(np.asarray(ref, dtype=np.float32)):
                ps.flags[f] |= PLANE_NO_REFERENCE
                continue
            pairs.append((np.asarray(ref, dtype=np.float32), ps.raw[f]))
        if not pairs:
            return profile, psf, np.nan, np.nan, None
        est = _measured(pairs, ps.shape, settings)
        z, z_err = float(est.defocus_um), float(est.defocus_err_um)
        # Restore with the model OTF at the |z| measured against the reference: the measured
        # profile itself, pooled over a few fields, is too noisy for Richardson-Lucy (on 192-px
        # simulated fields, 3 fields: -3..+7 dB against +6..+12 dB with the model at the fitted
        # |z|; README). A |z| within two errors of 0 is not restored.
        blur = Blur.model(optics, z) if np.isfinite(z) and z > 2 * max(z_err, 0.0) else None
        return np.asarray(est.otf_radial, float), np.asarray(est.psf, float), z, z_err, blur
    if blind is None:
        return profile, psf, np.nan, np.nan, None
    depth = restoration_depth(blind)
    profile = _relative_model(freq, depth, optics)
    psf = psf_from_profile(profile, ps.shape, optics.pixel_size_um, psf_size=settings.psf_size)
    blur = Blur.model(optics, depth) if depth > 0 else None  # not identifiable: leave it
    return profile, psf, float(blind.defocus_um), float(blind.defocus_err_um), blur


def _refocus(ps: _Planes, settings: DepthSettings, net: dict[int, np.ndarray], blur: Any,
             noise: Any, refiner: Any | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(refocused, method_used, consistency)`` of every field by the settings' method (and
    `refiner` on Richardson-Lucy's kept outputs, where given)."""
    from ..deconvolve import CONSISTENCY_LIMIT, Blur, consistency

    n = ps.flags.size
    refocused = np.full((n, *ps.shape), np.nan, dtype=np.float32)
    method_used = np.full(n, -1, dtype=np.int8)
    trust = np.full(n, np.nan)
    check = blur if blur is not None else Blur.model(settings.optics, 0.0)
    limit = CONSISTENCY_LIMIT if settings.network_limit is None else settings.network_limit
    method = settings.method
    for f in ps.present:
        out, code = ps.raw[f], METHOD_IDENTITY
        if method == "unet":
            out, code = net[f], METHOD_UNET
        elif blur is not None and f in ps.signal:  # wiener, rl, hybrid: physics wherever the blur is known
            out = _restore(ps.raw[f], blur, "wiener" if method == "wiener" else "rl", noise)
            code = METHOD_WIENER if method == "wiener" else METHOD_RL
        elif method == "hybrid" and f in ps.signal \
                and consistency(ps.raw[f], net[f], check, noise=noise) <= limit:
            out, code = net[f], METHOD_UNET  # near focus the physics has nothing to restore with
        if f in ps.signal and code != METHOD_IDENTITY:  # a plane left as it is has nothing to check
            trust[f] = consistency(ps.raw[f], out, check, noise=noise)
            if code == METHOD_RL and trust[f] > RL_CONSISTENCY_LIMIT:
                out, code = ps.raw[f], METHOD_IDENTITY  # the blur model does not explain the plane
                ps.flags[f] |= PLANE_INCONSISTENT
            elif code == METHOD_RL and refiner is not None:
                refined = refiner.refine(ps.raw[f], out, noise.offset, blur.defocus_um)
                refined_trust = consistency(ps.raw[f], refined, check, noise=noise)
                # held to RL's own bar, or to the one a fine-tuned refiner was calibrated to
                if refined_trust <= (refiner.info.consistency_limit or RL_CONSISTENCY_LIMIT):
                    out, code, trust[f] = refined, METHOD_RL_REFINED, refined_trust
        refocused[f], method_used[f] = out, code
    return refocused, method_used, trust


def process_depth(
    planes: Sequence[np.ndarray | None],
    *,
    settings: DepthSettings,
    freq: np.ndarray,
    refocus: Callable[[np.ndarray], np.ndarray] | None = None,
    references: Sequence[np.ndarray | None] | None = None,
    truths: Sequence[np.ndarray | None] | None = None,
    refiner: Any | None = None,
) -> DepthResult:
    """Refocus one well's fields at one depth and estimate the well's defocus there.

    Parameters
    ----------
    planes : sequence of (Y, X) ndarray or None, one per field
        The defocused planes; None where the plane is missing.
    settings : DepthSettings
    freq : (F,) ndarray
        The radial frequency axis (:func:`plate_refocus.optics.radial_frequencies`).
    refocus : callable, optional
        The network, ``(N, Y, X) -> (N, Y, X) float32``, run once on all usable
        planes; needed by the methods ``"unet"``, ``"hybrid"`` and the
        reference ``"refocused"``.
    references : sequence of (Y, X) ndarray or None, optional
        With ``settings.reference == "focal-plane"``: each field's in-focus plane.
    truths : sequence of (Y, X) ndarray or None, optional
        Ground-truth in-focus images, for PSNR/SSIM.
    refiner : Refiner, optional
        With ``"hybrid"``: the network that corrects Richardson-Lucy's output
        (:class:`plate_refocus.unet.refiner.Refiner`: ``applies(optics, |z|)``,
        ``refine(plane, restored, offset, |z|)`` and ``info.consistency_limit``), used at
        the depths and optics it was trained for wherever RL's restoration was kept; its
        output is kept at consistency up to its limit (None: ``RL_CONSISTENCY_LIMIT``).

    Returns
    -------
    DepthResult
    """
    from ..metrics import plane_quality

    ps = _sort_planes(planes)
    blind = _blind([ps.raw[f] for f in ps.signal], settings)
    noise = _noise_model(settings, [ps.raw[f] for f in ps.signal], blind)
    net = {}
    if (settings.method in ("unet", "hybrid") or settings.reference == "refocused") and ps.present:
        net = dict(zip(ps.present, refocus(np.stack([planes[f] for f in ps.present])), strict=True))
    profile, psf, z, z_err, blur = _reference(ps, settings, freq, blind, net, references)
    use_refiner = (refiner is not None and settings.method == "hybrid" and blur is not None
                   and refiner.applies(settings.optics, blur.defocus_um))
    refocused, method_used, trust = _refocus(ps, settings, net, blur, noise, refiner if use_refiner else None)
    quality = np.full((len(planes), 2, 3), np.nan)
    for f in ps.present:
        truth = truths[f] if truths is not None else None
        quality[f] = plane_quality(ps.raw[f], refocused[f], truth, data_range=settings.data_range)
    return DepthResult(
        refocused=refocused, otf_radial=profile, psf=psf, defocus_um=z, defocus_err_um=z_err,
        defocus_blind_um=float(blind.defocus_um) if blind is not None else np.nan,
        defocus_blind_err_um=float(blind.defocus_err_um) if blind is not None else np.nan,
        quality=quality, consistency=trust, method_used=method_used, flags=ps.flags,
    )
