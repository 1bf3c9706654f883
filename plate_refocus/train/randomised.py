"""A domain-randomised training set, simulated in memory, for a network meant for cells in general.

The shipped network was first trained on one simulated morphology at one
light level and one objective; on cells it never saw it lost to the physics
baseline and, near focus, to its own input. :func:`randomised_training_set`
draws every "well" of the set from its own condition (:class:`Randomisation`):
a morphology family (only those the generalisation benchmark does not hold
out, so that benchmark stays a test of unseen cells), a stain, a light level
(log-uniform photons), and an objective whose NA, wavelength and pixel size
are jittered around the nominal optics by up to the tolerance within which
``run`` accepts a model (``OPTICS_TOLERANCE``) - so the band ``run`` only warns
about is one the network has seen. Every well has every depth, so
:func:`~plate_refocus.train.train_model` trains on it as on a simulated plate.

The network stays one per objective: it is not told the optics, and ``run``
refuses it on optics further off than the jitter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..morphology import FAMILIES, HELD_OUT_FAMILIES, STAINS
from ..optics import Optics
from ..simulate import Camera, simulate_field
from ..unet.model import OPTICS_TOLERANCE

__all__ = ["Randomisation", "TRAINING_FAMILIES", "CAMERA_BITS", "randomised_training_set", "summarise_conditions"]

#: The families a randomised training set draws from: the simulator's own ("u2os") and every
#: named family the generalisation benchmark does not hold out.
TRAINING_FAMILIES: tuple[str, ...] = ("u2os", *(f for f in FAMILIES if f not in HELD_OUT_FAMILIES))

#: Bit depth of the simulated camera: 16 (an sCMOS), so 20,000 photons at the brightest pixel do not
#: saturate (a 12-bit camera clips at 4095 while the in-focus target does not).
CAMERA_BITS = 16


@dataclass(frozen=True)
class Randomisation:
    """What varies from one well of a randomised training set to the next.

    Parameters
    ----------
    families : sequence of str
        Morphology families ("u2os" is the simulator's default cells).
    stains : sequence of str
        Drawn per well ("u2os" draws only ``nuclei`` and ``actin``).
    photons : (float, float)
        Range of the camera's peak photons, drawn log-uniformly.
    optics_jitter : float
        Relative half-range of the uniform jitter of NA, wavelength and pixel size
        (default ``OPTICS_TOLERANCE``, within which ``run`` accepts the model).
    depths_um : sequence of float
        Distances from focus of every well's planes.
    """

    families: tuple[str, ...] = TRAINING_FAMILIES
    stains: tuple[str, ...] = STAINS
    photons: tuple[float, float] = (200.0, 20000.0)
    optics_jitter: float = OPTICS_TOLERANCE  # the band run accepts a model in
    depths_um: tuple[float, ...] = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 21, 25, 30, 35, 40)

    def __post_init__(self) -> None:
        unknown = [f for f in self.families if f != "u2os" and f not in FAMILIES]
        if not self.families or unknown:
            raise ValueError(f"families must be a non-empty selection of {['u2os', *FAMILIES]}, got {self.families!r}")
        if not self.stains or any(s not in STAINS for s in self.stains):
            raise ValueError(f"stains must be a non-empty selection of {STAINS}, got {self.stains!r}")
        lo, hi = self.photons
        if not 0 < lo <= hi:
            raise ValueError(f"photons must be a range (low, high) with 0 < low <= high, got {self.photons!r}")
        if not 0 <= self.optics_jitter < 0.5:
            raise ValueError(f"optics_jitter must be in [0, 0.5), got {self.optics_jitter!r}")
        if not self.depths_um or min(self.depths_um) < 0:
            raise ValueError(f"depths_um must be non-negative distances from focus, got {self.depths_um!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the model's training record."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def describe(self) -> str:
        """One line: what the set spans."""
        return (f"domain-randomised simulation: {len(self.families)} families ({', '.join(self.families)}), "
                f"stains {', '.join(self.stains)}, {self.photons[0]:g}-{self.photons[1]:g} photons, "
                f"NA/wavelength/pixel size +-{100 * self.optics_jitter:g} %, "
                f"{min(self.depths_um):g}-{max(self.depths_um):g} um")


def _draw_well(rng: np.random.Generator, optics: Optics, spec: Randomisation) -> dict[str, Any]:
    """One well's condition: family, stain, camera and jittered optics."""
    family = str(rng.choice(spec.families))
    stains = [s for s in spec.stains if family != "u2os" or s in ("nuclei", "actin")] or ["nuclei"]
    lo, hi = np.log(spec.photons)
    j = spec.optics_jitter
    factors = rng.uniform(1 - j, 1 + j, size=3)
    drawn = dataclasses.replace(optics, na=optics.na * factors[0], wavelength_um=optics.wavelength_um * factors[1],
                                pixel_size_um=optics.pixel_size_um * factors[2])
    if drawn.na >= drawn.immersion_index:  # a jittered NA may not exceed what the medium allows
        drawn = dataclasses.replace(drawn, na=optics.na)
    return {"family": family, "stain": str(rng.choice(stains)),
            "camera": Camera(photons=float(np.exp(rng.uniform(lo, hi))), bit_depth=CAMERA_BITS), "optics": drawn}


def randomised_training_set(
    optics: Optics,
    *,
    wells: int,
    fields: int,
    size: int,
    seed: int,
    randomisation: Randomisation | None = None,
) -> tuple[Any, Any, np.ndarray, list[dict[str, Any]]]:
    """Simulate a domain-randomised training set in memory, as a plate's arrays.

    Parameters
    ----------
    optics : Optics
        The nominal objective the network is for (recorded as its optics).
    wells : int
        Conditions drawn (each its own family, stain, light level and optics).
    fields : int
        Fields per well (the same condition, other cells).
    size : int
        Side of the square fields, in pixels.
    seed : int
        Fixes every draw and every field.
    randomisation : Randomisation, optional

    Returns
    -------
    images : xarray.DataArray (well, field, c, z, y, x) uint16
    targets : xarray.DataArray (well, field, c, y, x) float32
        The noise-free in-focus images, on the camera's scale (offset included).
    depth_um : (Z,) ndarray
    conditions : list of dict
        Per well: family, stain, photons, na, wavelength_um, pixel_size_um.
    """
    import xarray as xr

    spec = Randomisation() if randomisation is None else randomisation
    if min(wells, fields, size) < 1:
        raise ValueError(f"wells, fields and size must be positive, got {wells}, {fields}, {size}")
    depths = np.asarray(spec.depths_um, dtype=np.float64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    images = np.empty((wells, fields, 1, depths.size, size, size), dtype=np.uint16)
    targets = np.empty((wells, fields, 1, size, size), dtype=np.float32)
    conditions = []
    for w in range(wells):
        cond = _draw_well(rng, optics, spec)
        for f in range(fields):
            out = simulate_field((size, size), depths, seed=np.random.SeedSequence([seed, w, f]),
                                 optics=cond["optics"], camera=cond["camera"], channels=(cond["stain"],),
                                 family=None if cond["family"] == "u2os" else cond["family"])
            images[w, f], targets[w, f] = out.images, out.in_focus
        o = cond["optics"]
        conditions.append({"family": cond["family"], "stain": cond["stain"], "photons": cond["camera"].photons,
                           "na": o.na, "wavelength_um": o.wavelength_um, "pixel_size_um": o.pixel_size_um})
    camera = dataclasses.asdict(Camera(bit_depth=CAMERA_BITS))
    coords = {"well": [f"r{w:04d}" for w in range(wells)], "field": np.arange(fields), "c": ["randomised"]}
    attrs = {"optics": optics.to_dict(), "camera": camera}
    image_array = xr.DataArray(images, dims=("well", "field", "c", "z", "y", "x"),
                               coords={**coords, "z_um": ("z", depths)}, attrs=attrs)
    target_array = xr.DataArray(targets, dims=("well", "field", "c", "y", "x"), coords=coords, attrs=attrs)
    return image_array, target_array, depths, conditions


def summarise_conditions(conditions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts per family and stain and the ranges drawn, for the training record."""
    def span(key: str) -> list[float]:
        values = [c[key] for c in conditions]
        return [float(min(values)), float(max(values))]

    def count(key: str) -> dict[str, int]:
        return {v: sum(c[key] == v for c in conditions) for v in sorted({c[key] for c in conditions})}

    return {"wells": len(conditions), "families": count("family"), "stains": count("stain"),
            "photons": span("photons"), "na": span("na"), "wavelength_um": span("wavelength_um"),
            "pixel_size_um": span("pixel_size_um")}
