"""Synthetic U2OS-like fluorescence fields, defocus stacks and whole plates.

A field is made in three steps:

1. :func:`simulate_objects` draws the fluorophore density of a field of
   cells: Hoechst-like nuclei (textured ellipsoids with chromocentres and
   nucleoli, varied in size, shape and orientation, some touching) and
   phalloidin-like actin (cell outlines around the nuclei with a bright
   cortical rim, stress-fibre ridges and thin filopodia); the cells are drawn
   by :mod:`plate_refocus.cells` (or by a family of
   :mod:`plate_refocus.morphology`).
2. :func:`simulate_field` blurs it with the defocus OTFs of
   :mod:`plate_refocus.optics` on a padded grid and crops, so no FFT
   wrap-around reaches the image, then adds camera noise (DESIGN.md,
   "Physics conventions"): ``g = Poisson(o conv k_z) + N(0, read_noise) +
   offset``, clipped to ``[0, 2**bit_depth - 1]`` and quantised to uint16.
3. :func:`simulate_plate` does this for every field of a plate as a Dask
   graph and writes an OME-Zarr HCS plate with the ground truth beside it
   (see :mod:`plate_refocus.plate`).

Everything is deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.fft

from .cells import SeedLike, child_rng, render_u2os, seed_sequence
from .optics import Optics, check_shape, defocus_otf, radial_frequencies, radial_otf

__all__ = [
    "DEFAULT_DEPTHS_UM",
    "CHANNELS",
    "Camera",
    "SimulatedField",
    "simulate_objects",
    "simulate_field",
    "simulate_plate",
    "field_padding",
    "true_otf_radial",
]

log = logging.getLogger(__name__)

#: The report's defocus distances in um.
DEFAULT_DEPTHS_UM: tuple[float, ...] = (0, 2, 4, 6, 8, 10, 15, 20, 25, 30, 40)

#: Channels :func:`simulate_objects` knows how to draw.
CHANNELS: tuple[str, ...] = ("nuclei", "actin")


@dataclass(frozen=True)
class Camera:
    """A scientific camera with a gain of one ADU per photo-electron.

    Parameters
    ----------
    photons : float
        Expected photo-electrons at the brightest pixel of the noise-free
        in-focus image of a field and its surroundings (per channel): a field
        holding the brightest cell peaks at this value, a sparse field stays
        dimmer. Sets the signal-to-noise.
    read_noise : float
        Standard deviation of the Gaussian read noise, in ADU.
    offset : float
        Camera offset (bias) added to every pixel, in ADU.
    bit_depth : int
        Values are clipped to ``[0, 2**bit_depth - 1]`` (12 for the report's
        and BBBC006's cameras) and stored as uint16.
    """

    photons: float = 2000.0
    read_noise: float = 2.0
    offset: float = 100.0
    bit_depth: int = 12

    def __post_init__(self) -> None:
        for name in ("photons", "read_noise", "offset"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"Camera.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Camera.{name} must be finite and >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.photons <= 0:
            raise ValueError(f"Camera.photons must be > 0, got {self.photons!r}")
        bits = self.bit_depth
        if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool):
            raise TypeError(f"Camera.bit_depth must be an integer, got {bits!r}")
        if not 1 <= bits <= 16:
            raise ValueError(f"Camera.bit_depth must be in 1..16 (stored as uint16), got {bits!r}")
        object.__setattr__(self, "bit_depth", int(bits))
        if self.offset >= self.max_value:
            raise ValueError(
                f"Camera.offset={self.offset!r} leaves no room below the maximum "
                f"{self.max_value!r} of a {self.bit_depth}-bit camera; lower the offset"
            )

    @property
    def max_value(self) -> int:
        """Largest value the camera records, ``2**bit_depth - 1``."""
        return 2**self.bit_depth - 1

    def to_dict(self) -> dict[str, float]:
        """Plain JSON-able form, as stored in plate metadata."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Camera:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"Camera.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown camera keys {unknown!r}; expected some of {sorted(known)!r}")
        return cls(**data)


#: Frozen, so safe as shared defaults.
DEFAULT_OPTICS = Optics()
DEFAULT_CAMERA = Camera()


class SimulatedField(NamedTuple):
    """One simulated field and its ground truth.

    Attributes
    ----------
    images : (C, Z, Y, X) ndarray of uint16
        The noisy, quantised defocus stack, one plane per requested depth.
    object : (C, Y, X) ndarray of float32
        The fluorophore density in ADU above the camera offset: the noise-free
        mean of ``images[c, j]`` is ``offset + (object conv k_{z_j})``.
    in_focus : (C, Y, X) ndarray of float32
        The noise-free in-focus image ``offset + (object conv k_0)``.
    """

    images: np.ndarray
    object: np.ndarray
    in_focus: np.ndarray


# --- argument checks ----------------------------------------------------------------------------


def _check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(channels, str):
        raise TypeError(f"channels must be a sequence of names like ('nuclei', 'actin'), got {channels!r}")
    channels = tuple(channels)
    unknown = [c for c in channels if c not in CHANNELS]
    if not channels or unknown:
        raise ValueError(f"channels must be a non-empty selection of {CHANNELS!r}, got {channels!r}")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channels must not repeat, got {channels!r}")
    return channels


def _check_optics_camera(optics: Any, camera: Any) -> None:
    if not isinstance(optics, Optics):
        raise TypeError(f"optics must be an Optics, got {optics!r}")
    if not isinstance(camera, Camera):
        raise TypeError(f"camera must be a Camera, got {camera!r}")


def _check_family_channels(channels: Sequence[str], family: str | None) -> tuple[str, ...]:
    if family is None or family == "u2os":
        return _check_channels(channels)
    from .morphology import STAINS, get_family

    get_family(family)
    if isinstance(channels, str):
        raise TypeError(f"channels must be a sequence of names like ('nuclei',), got {channels!r}")
    channels = tuple(channels)
    if not channels or any(c not in STAINS for c in channels) or len(set(channels)) != len(channels):
        raise ValueError(f"channels must be a non-empty selection of {STAINS!r} without repeats, got {channels!r}")
    return channels


def _check_spherical(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"spherical_rms_waves must be a finite number of waves, got {value!r}")
    if abs(value) > 2:
        raise ValueError(f"spherical_rms_waves={value!r} is beyond any usable objective; use at most 2 waves rms")
    return float(value)


def _check_depths(depths_um: Sequence[float]) -> tuple[float, ...]:
    try:
        depths = tuple(float(z) for z in np.ravel(np.asarray(depths_um, dtype=float)))
    except (TypeError, ValueError):
        raise TypeError(f"depths_um must be a sequence of numbers, got {depths_um!r}") from None
    if not depths or not all(math.isfinite(z) for z in depths):
        raise ValueError(f"depths_um must be a non-empty sequence of finite numbers, got {depths_um!r}")
    return depths


# --- objects -----------------------------------------------------------------------------------


def simulate_objects(
    shape: Sequence[int],
    *,
    seed: SeedLike,
    channels: Sequence[str] = ("nuclei", "actin"),
    family: str | None = None,
    pixel_size_um: float = 0.3,
) -> np.ndarray:
    """Fluorophore density of a field of U2OS-like cells.

    Parameters
    ----------
    shape : (int, int)
        Field size ``(Y, X)`` in pixels (at least 8 x 8). Sizes are in pixels
        and fit the report's 0.3 um pixels: nuclei 18-30 px across, cells
        about 55 px apart.
    seed : int or numpy.random.SeedSequence
        The field; the same seed and shape give the same cells.
    channels : sequence of {"nuclei", "actin"}
        Which stains to draw, in this order. The cells do not depend on which
        channels are asked for. Families also draw ``"cytoplasm"``.
    family : str, optional
        A morphology family of :mod:`plate_refocus.morphology` (e.g.
        ``"small-nuclei"``); ``None`` (or ``"u2os"``) is the training family
        drawn here, unchanged.
    pixel_size_um : float
        Pixel size at the sample, used by families (whose sizes are in um);
        the training family is drawn in pixels for 0.3 um pixels.

    Returns
    -------
    object : (C, Y, X) ndarray of float32
        Non-negative, each channel scaled so its maximum is 1 (all zeros when
        no cell reaches the field).
    """
    shape = check_shape(shape, minimum=8)
    if family is not None and family != "u2os":
        from .morphology import render_objects

        return render_objects(shape, family, seed=seed, channels=tuple(channels), pixel_size_um=pixel_size_um)
    return render_u2os(shape, _check_channels(channels), seed)


# --- fields ------------------------------------------------------------------------------------


def field_padding(max_depth_um: float, optics: Optics = DEFAULT_OPTICS) -> int:
    """Pixels of padding on each side that keep FFT wrap-around out of a crop.

    The geometric blur radius ``|z| tan(asin(NA / n))`` plus six Airy radii
    ``0.61 lambda / NA`` (the diffraction tail), plus two pixels.
    """
    geometric = optics.blur_radius_um(max_depth_um)
    airy = 0.61 * optics.wavelength_um / optics.na
    return int(math.ceil((geometric + 6 * airy) / optics.pixel_size_um)) + 2


def _padded_shape(shape: tuple[int, int], pad: int) -> tuple[int, int]:
    return tuple(scipy.fft.next_fast_len(n + 2 * pad, real=True) for n in shape)


def _blur(spectrum: np.ndarray, big: tuple[int, int], z_um: float, optics: Optics, spherical: float = 0.0) -> np.ndarray:
    """``irfft2(spectrum * K_z)`` on the padded grid, one call for all channels."""
    otf = defocus_otf(big, z_um, optics, real=True, spherical_rms_waves=spherical)
    return scipy.fft.irfft2(spectrum * otf, s=big, axes=(-2, -1), workers=1)


def simulate_field(
    shape: Sequence[int],
    depths_um: Sequence[float] = DEFAULT_DEPTHS_UM,
    *,
    seed: SeedLike,
    optics: Optics = DEFAULT_OPTICS,
    camera: Camera = DEFAULT_CAMERA,
    channels: Sequence[str] = ("nuclei", "actin"),
    family: str | None = None,
    spherical_rms_waves: float = 0.0,
) -> SimulatedField:
    """A noisy defocus stack of one field, with its ground truth.

    Parameters
    ----------
    shape : (int, int)
        Field size ``(Y, X)`` in pixels.
    depths_um : sequence of float
        Defocus distances of the planes, in um (sign is irrelevant: the PSF
        is even in z).
    seed : int or numpy.random.SeedSequence
        Fixes the cells and the noise.
    optics : Optics
    camera : Camera
    channels : sequence of {"nuclei", "actin"}
        (and ``"cytoplasm"`` with a `family`).
    family : str, optional
        Morphology family (:mod:`plate_refocus.morphology`); ``None`` is the
        training family, whose output is unchanged.
    spherical_rms_waves : float
        Primary spherical aberration of the microscope's pupil, Zernike
        ``Z(4, 0)`` rms in waves (e.g. 0.15): optics the estimators do not
        model. The depths' signs then matter; the ground truth ``in_focus``
        is blurred by the aberrated in-focus PSF.

    Returns
    -------
    SimulatedField
        ``images`` (C, Z, Y, X) uint16, ``object`` and ``in_focus``
        (C, Y, X) float32; see :class:`SimulatedField` for the scales.

    Notes
    -----
    The cells are drawn on a field padded by :func:`field_padding` of the
    largest depth on each side (rounded up to an FFT-friendly size), blurred
    there by multiplying its ``rfft2`` with ``K_z`` (one forward transform
    per channel, one inverse per depth) and cropped; so the cells in a field
    depend on the seed, the shape and that padding, and the same seed with
    the same largest depth and optics gives the same cells. Each channel is
    scaled so that its noise-free in-focus image over the padded field peaks
    at ``camera.photons`` photo-electrons above the offset (the crop peaks at
    that value or below). The FFTs run on one
    thread, as this is meant to run inside Dask tasks.
    """
    shape = check_shape(shape, minimum=8)
    depths = _check_depths(depths_um)
    channels = _check_family_channels(channels, family)
    _check_optics_camera(optics, camera)
    seq = seed_sequence(seed)
    spherical = _check_spherical(spherical_rms_waves)

    pad = field_padding(max(abs(z) for z in depths), optics)
    big = _padded_shape(shape, pad)
    y0, x0 = (big[0] - shape[0]) // 2, (big[1] - shape[1]) // 2
    crop = (Ellipsis, slice(y0, y0 + shape[0]), slice(x0, x0 + shape[1]))

    density = simulate_objects(big, seed=np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, 0)),
                               channels=channels, family=family,
                               pixel_size_um=optics.pixel_size_um).astype(np.float64)
    spectrum = scipy.fft.rfft2(density, axes=(-2, -1), workers=1)
    focus_big = _blur(spectrum, big, 0.0, optics, spherical)
    # Scale by the brightest in-focus pixel of the whole simulated neighbourhood, not of
    # the crop: a crop that only catches the edge of a cell must stay dim, as on a
    # microscope where every field of a plate shares the staining and the exposure.
    peak = focus_big.max(axis=(-2, -1), keepdims=True)
    focus = focus_big[crop]
    scale = np.where(peak > 0, camera.photons / np.where(peak > 0, peak, 1), 0.0)

    rng = child_rng(seq, 1)
    images = np.empty((len(channels), len(depths), *shape), dtype=np.uint16)
    for j, z in enumerate(depths):
        mean = focus if z == 0 else _blur(spectrum, big, z, optics, spherical)[crop]
        mean = np.clip(mean * scale, 0, None)
        counts = rng.poisson(mean).astype(np.float64)
        counts += rng.normal(camera.offset, camera.read_noise, counts.shape) if camera.read_noise else camera.offset
        np.rint(counts, out=counts)
        np.clip(counts, 0, camera.max_value, out=counts)
        images[:, j] = counts
    return SimulatedField(
        images=images,
        object=(density[crop] * scale).astype(np.float32),
        in_focus=(camera.offset + focus * scale).astype(np.float32),
    )


# --- ground truth ------------------------------------------------------------------------------


def true_otf_radial(
    depths_um: Sequence[float], freq: np.ndarray, optics: Optics = DEFAULT_OPTICS, *,
    spherical_rms_waves: float = 0.0,
) -> np.ndarray:
    """The model's isotropic OTF ``K_z(|nu|)`` (:func:`plate_refocus.optics.radial_otf`) for every
    depth, with the simulation's aberration, if any.

    `freq` is normally :func:`plate_refocus.optics.radial_frequencies` of the
    field shape, the axis of the results' ``otf_radial``.

    Returns
    -------
    otf : (Z, F) ndarray of float64
    """
    depths = _check_depths(depths_um)
    return np.stack([radial_otf(freq, z, optics, spherical_rms_waves=spherical_rms_waves) for z in depths])


def _simulate_and_write(images, objects, in_focus, w, f, shape, depths, seed_key, optics, camera,
                        channels, family=None, spherical=0.0) -> None:
    """One task of :func:`simulate_plate`: simulate a field and write it and its ground truth
    into the zarr arrays ``images`` (c, z, y, x) and ``objects``/``in_focus`` at ``[w, f]``."""
    field = simulate_field(shape, depths, seed=np.random.SeedSequence(list(seed_key)),
                           optics=optics, camera=camera, channels=channels, family=family,
                           spherical_rms_waves=spherical)
    images[...] = field.images
    objects[w, f] = field.object
    in_focus[w, f] = field.in_focus


def _write_otf(target, depths, freq, optics, spherical=0.0) -> None:
    target[...] = true_otf_radial(depths, freq, optics, spherical_rms_waves=spherical)


def simulate_plate(
    out: str | Path,
    *,
    rows: int = 2,
    columns: int = 3,
    fields: int = 2,
    depths_um: Sequence[float] = DEFAULT_DEPTHS_UM,
    size: Sequence[int] = (128, 128),
    seed: int = 0,
    optics: Optics = DEFAULT_OPTICS,
    camera: Camera = DEFAULT_CAMERA,
    channels: Sequence[str] = ("nuclei", "actin"),
    family: str | None = None,
    spherical_rms_waves: float = 0.0,
    plate_format: int = 96,
    ngff_version: str = "0.5",
    client: Any = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Simulate a plate and write it as an OME-Zarr HCS plate with its ground truth.

    The groups and empty arrays of the plate are created first (as
    :func:`plate_refocus.plate.write_plate` does); then the plate is one Dask
    graph of one task per field, which runs :func:`simulate_field` and writes
    the field's planes and ground truth straight into the zarr arrays, so the
    wells are simulated and written in parallel, nothing but completion comes
    back to the client, and a worker holds one field at a time.

    Parameters
    ----------
    out : str or Path
        The new plate folder.
    rows, columns : int
        The first ``rows`` x ``columns`` wells of the plate are acquired
        (A01, A02, ..., B01, ...).
    fields : int
        Fields per well.
    depths_um : sequence of float
        Defocus of each plane in um; plane ``depths_um.index(0)`` (if any) is
        recorded as the focal plane.
    size : (int, int)
        Field size ``(Y, X)`` in pixels.
    seed : int
        Field ``f`` of the well at 0-based row ``r``, column ``c`` of the plate
        uses ``SeedSequence([seed, r * plate_columns + c, f])``: a well's
        images do not depend on which other wells are simulated.
    optics : Optics
    camera : Camera
    channels : sequence of {"nuclei", "actin"}
        (and ``"cytoplasm"`` with a `family`).
    family : str, optional
        Morphology family (:mod:`plate_refocus.morphology`) of every field;
        recorded in the plate's simulation metadata. ``None``: the training family.
    spherical_rms_waves : float
        Spherical aberration of the simulated microscope (see :func:`simulate_field`);
        the plate's optics metadata stays the ideal ``optics`` (what a run is told).
    plate_format : {96, 384, 1536, 6, 12, 24, 48}
        Wells on the physical plate (all its rows and columns are listed in the
        metadata).
    ngff_version : {"0.5", "0.4"}
    client : distributed.Client, optional
        Where to run; by default a new ``LocalCluster`` of ``workers``
        single-threaded processes (default: one per core) is started and
        closed.
    workers : int, optional
        Worker processes of that local cluster.
    overwrite : bool
        Replace an existing zarr store at ``out``.
    progress : bool
        Show a text progress bar and the dashboard link while it runs.

    Returns
    -------
    Path
        ``out``. If anything fails or the run is interrupted, the partial
        store is removed.

    Raises
    ------
    OutputExistsError
        ``out`` exists and ``overwrite`` is false.
    """
    from .plate import check_plate_format, create_plate, wells_for

    _check_plate_args(rows, columns, fields, seed, workers)
    n_rows, n_columns = check_plate_format(plate_format)
    wells = wells_for(rows, columns, plate_format)
    shape = check_shape(size, minimum=8)
    depths = _check_depths(depths_um)
    channels = _check_family_channels(channels, family)
    spherical = _check_spherical(spherical_rms_waves)
    _check_optics_camera(optics, camera)
    n_c, n_z = len(channels), len(depths)
    simulation = {"seed": int(seed), "size": list(shape), "plate_format": plate_format,
                  "seeding": "SeedSequence([seed, row * plate_columns + column - 1, field])"}
    if family is not None:
        simulation["family"] = str(family)
    if spherical:
        simulation["spherical_rms_waves"] = spherical
    freq = radial_frequencies(shape, optics.pixel_size_um)
    focal = [j for j, z in enumerate(depths) if z == 0]
    targets = create_plate(
        out, (len(wells), fields, n_c, n_z, *shape), np.uint16, wells, optics=optics, z_um=depths,
        channel_names=channels, plate_rows=n_rows, plate_columns=n_columns,
        focal_plane=focal[0] if focal else None, camera=camera, ngff_version=ngff_version,
        ground_truth={"object": (len(wells), fields, n_c, *shape), "in_focus": (len(wells), fields, n_c, *shape),
                      "otf_radial": (n_z, freq.size), "freq": (freq.size,)},
        extra_attrs={"written_by": "simulate", "simulation": simulation},
        overwrite=overwrite,
    )
    targets.ground_truth["freq"][...] = freq
    try:
        tasks = _plate_tasks(targets, wells, n_columns, fields, freq, shape, depths, seed, optics, camera,
                             channels, family, spherical)
        _run_tasks(tasks, client=client, workers=workers, progress=progress)
    except BaseException:
        shutil.rmtree(targets.path, ignore_errors=True)  # never leave a half-written plate behind
        raise
    return targets.path


def _check_plate_args(rows: Any, columns: Any, fields: Any, seed: Any, workers: Any) -> None:
    """The counts, seed and workers of :func:`simulate_plate`, checked."""
    for name, value in (("rows", rows), ("columns", columns), ("fields", fields)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")


def _plate_tasks(targets, wells, n_columns, fields, freq, shape, depths, seed, optics, camera, channels,
                 family, spherical) -> list[Any]:
    """The Dask tasks of :func:`simulate_plate`: the true OTFs, then one per field.

    Each field's task simulates it and writes its planes and ground truth
    straight into the zarr arrays: nothing but "done" travels back, so a
    worker holds one field at a time whatever the size of the plate. The true
    OTFs are one more task, run on a worker alongside the fields.
    """
    import dask

    from .plate import parse_well

    run = uuid.uuid4().hex[:8]
    gt = targets.ground_truth
    tasks = [dask.delayed(_write_otf, pure=False)(gt["otf_radial"], depths, freq, optics, spherical,
                                                 dask_key_name=f"true-otf-{run}")]
    for w, well in enumerate(wells):
        r, c = parse_well(well)
        well_index = r * n_columns + (c - 1)
        for f in range(fields):
            tasks.append(dask.delayed(_simulate_and_write, pure=False)(
                targets.fields[w][f], gt["object"], gt["in_focus"], w, f, shape, depths,
                (int(seed), well_index, f), optics, camera, channels, family, spherical,
                dask_key_name=f"simulate-field-{well}-{f}-{run}",
            ))
    return tasks


def _run_tasks(tasks: list[Any], *, client: Any, workers: int | None, progress: bool) -> None:
    """Compute `tasks` on `client`, or on a local cluster of `workers` processes started and closed here."""
    from .cluster import compute, start_client

    if client is not None:
        compute(tasks, client=client, progress=progress)
        return
    with start_client("local", workers=workers, dashboard_address=":0") as own:
        log.info("simulating %d fields; dashboard: %s", len(tasks) - 1, own.dashboard_link)  # and the true OTFs
        compute(tasks, client=own, progress=progress)
