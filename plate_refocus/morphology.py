"""Morphology families: fields of cells unlike the ones the shipped U-Net was trained on.

The training family (``"u2os"``, :func:`plate_refocus.simulate.simulate_objects`
without ``family``) draws U2OS-like cells: nuclei 5.4-9 um across at 0.3 um
pixels, moderately textured chromatin with a few chromocentres and nucleoli,
about 37 cells per 100 x 100 um, 5 % mitotic, phalloidin actin with short
stress fibres. A new seed draws new cells of the same kind; a family here
changes what kind of cells they are: their size relative to the pixel, their
chromatin, how they fill the field, what is stained. Sizes are in um, so the
same family at another pixel size is the same biology sampled differently.

Every family draws three stains: ``"nuclei"`` (a DNA stain such as Hoechst),
``"actin"`` (phalloidin) and ``"cytoplasm"`` (a diffuse cytoplasmic stain,
excluded from the nucleus, brighter around it, with vesicles), for the same
cells. Each channel is scaled to a maximum of 1 and is deterministic for a
seed.

Families (:data:`FAMILIES`; ``describe()`` prints them):

==================  ===========================================================
``small-nuclei``    nuclei 3-5 um (10-17 px at 0.3 um), twice as dense
``large-nuclei``    nuclei 14-20 um, smooth chromatin, sparse
``textured``        granular chromatin: strong fine texture and 15-30
                    chromocentres per nucleus (mouse-like)
``smooth``          no texture, chromocentres or nucleoli: uniform domes
``confluent``       packed monolayer, most nuclei touching (2.5x density)
``sparse``          1-3 cells per 100 x 100 um, mostly empty field
``clusters``        cells in tight colonies with empty space between
``mitotic``         half the cells in mitosis: prometaphase rods, metaphase
                    plates, anaphase pairs, telophase daughters
``fibroblast``      large elongated cells with long aligned stress fibres
``hazy``            training-like cells on autofluorescent background and
                    out-of-focus haze
==================  ===========================================================

References
----------
.. [1] BBBC006 and BBBC021 (Broad Bioimage Benchmark Collection) for the
   look of Hoechst, phalloidin and cytoplasmic stains at 20x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .cells import child_rng, draw_lines, nearest_cell, seed_sequence, smooth_noise, spots

__all__ = ["Family", "FAMILIES", "HELD_OUT_FAMILIES", "STAINS", "get_family", "random_family", "render_objects",
           "describe"]

#: Stains every family draws (the training family draws only the first two).
STAINS: tuple[str, ...] = ("nuclei", "actin", "cytoplasm")


@dataclass(frozen=True)
class Family:
    """Parameters of one morphology family (lengths in um, densities per 100 x 100 um).

    Attributes
    ----------
    name : str
    differs : str
        How it differs from the training family, in one sentence.
    nucleus_um : (float, float)
        Range of nucleus diameters.
    elongation : (float, float)
        Range of nucleus axis ratios.
    density : float
        Mean cells per 100 x 100 um.
    touching : float
        Chance that a cell is placed touching an existing one.
    spacing : float
        Least centre distance of non-touching cells, in sums of radii.
    colonies : float
        Colonies per 100 x 100 um (0: cells placed uniformly).
    colony_um : float
        Colony radius (standard deviation of the cells around its centre).
    texture, texture_um : float
        Amplitude and correlation length of the multiplicative chromatin texture.
    chromocentres : (int, int)
        Bright spots per nucleus (range).
    spot_um : float
        Their size (Gaussian sigma).
    nucleoli : (int, int)
        Dark nucleoli per nucleus (range).
    mitotic : float
        Fraction of cells in mitosis.
    cell_factor : (float, float)
        Cell radius over nucleus radius.
    cell_elongation : (float, float)
        Axis ratio of the cell outline (fibroblasts are long).
    fibres : (int, int)
        Stress fibres per cell.
    fibre_length : (float, float)
        Half-length of a fibre in cell radii.
    fibre_spread : float
        Spread of fibre directions in a cell (rad).
    background : float
        Uniform autofluorescence, fraction of the channel's peak.
    haze : float
        Amplitude of a smooth haze (10 um scale), fraction of the peak.
    """

    name: str
    differs: str
    nucleus_um: tuple[float, float] = (5.4, 9.0)
    elongation: tuple[float, float] = (1.0, 1.45)
    density: float = 37.0
    touching: float = 0.3
    spacing: float = 1.6
    colonies: float = 0.0
    colony_um: float = 20.0
    texture: float = 0.22
    texture_um: float = 0.4
    chromocentres: tuple[int, int] = (4, 10)
    spot_um: float = 0.33
    nucleoli: tuple[int, int] = (1, 4)
    mitotic: float = 0.05
    cell_factor: tuple[float, float] = (1.9, 2.6)
    cell_elongation: tuple[float, float] = (1.0, 1.3)
    fibres: tuple[int, int] = (3, 10)
    fibre_length: tuple[float, float] = (0.4, 0.8)
    fibre_spread: float = 0.12
    background: float = 0.0
    haze: float = 0.0


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("small-nuclei", "nuclei 3-5 um (training 5.4-9 um), at twice the density",
           nucleus_um=(3.0, 5.0), density=75.0, chromocentres=(2, 5), spot_um=0.25, texture_um=0.3),
    Family("large-nuclei", "nuclei 14-20 um with smooth chromatin, a quarter of the density",
           nucleus_um=(14.0, 20.0), density=8.0, texture=0.08, texture_um=1.0, chromocentres=(2, 6),
           spot_um=0.5, nucleoli=(2, 5), cell_factor=(1.5, 2.0)),
    Family("textured", "granular chromatin: texture 3x stronger and finer, 15-30 chromocentres",
           nucleus_um=(7.0, 11.0), texture=0.65, texture_um=0.25, chromocentres=(15, 30), spot_um=0.25),
    Family("smooth", "uniform nuclei: no texture, chromocentres or nucleoli",
           nucleus_um=(6.0, 10.0), texture=0.0, chromocentres=(0, 0), nucleoli=(0, 0)),
    Family("confluent", "packed monolayer: 2.5x the density, most nuclei touching",
           nucleus_um=(6.0, 9.0), density=90.0, touching=0.8, spacing=1.05, cell_factor=(1.1, 1.4)),
    Family("sparse", "1-3 cells per 100 x 100 um (training 37): mostly empty field",
           density=2.0, touching=0.0),
    Family("clusters", "cells gathered in tight colonies with empty space between",
           density=35.0, colonies=1.0, colony_um=12.0, touching=0.6, spacing=1.1, cell_factor=(1.2, 1.6)),
    Family("mitotic", "half the cells in mitosis (training 5 %), in four phases",
           mitotic=0.5, density=30.0),
    Family("fibroblast", "large elongated cells with long aligned stress fibres",
           nucleus_um=(10.0, 16.0), elongation=(1.5, 2.5), density=6.0, cell_factor=(3.0, 4.0),
           cell_elongation=(2.0, 3.0), fibres=(12, 25), fibre_length=(0.8, 1.4), fibre_spread=0.06),
    Family("hazy", "training-like cells on 10 % autofluorescence and a smooth 15 % haze",
           background=0.10, haze=0.15),
)}


#: Families no network of this project trains on: the benchmarks (generalization.py and the network
#: experiments) score on them as cells never seen. They differ from the rest in size, chromatin or
#: cell cycle, the ways real cells most often differ from a training set.
HELD_OUT_FAMILIES: tuple[str, ...] = ("small-nuclei", "large-nuclei", "textured", "mitotic")


def random_family(rng: np.random.Generator) -> Family:
    """A family drawn at random over the range of cultured mammalian cells, for domain randomisation.

    The named families change one thing each; this draws every parameter at
    once from ranges meant to span cells in general: nuclei 3-29 um across
    (log-uniform) and up to 2.2:1, 2-45 % of the field covered, uniform to
    clustered to touching, chromatin from smooth to strongly granular with
    0-30 chromocentres, 0-60 % of cells in mitosis, compact to fibroblast-like
    cell bodies, and a clean or hazy background. Its ranges contain the held-out
    families' parameters: a network trained on it has seen their kind of
    variation (not their generator's combinations), so the held-out benchmark
    then measures how well it covers cells in general rather than extrapolation.
    """
    lo = float(np.exp(rng.uniform(np.log(3.0), np.log(18.0))))
    nucleus = (lo, lo * rng.uniform(1.15, 1.6))
    mean_area = math.pi * (0.25 * sum(nucleus)) ** 2  # um^2
    clustered = rng.random() < 0.3
    chromo = int(rng.integers(0, 16))
    fibres = int(rng.integers(0, 13))
    cell_lo = rng.uniform(1.1, 3.0)
    cell_elong = rng.uniform(1.0, 2.5)
    return Family(
        name="randomised", differs="every parameter drawn at random (domain randomisation)",
        nucleus_um=nucleus, elongation=(1.0, rng.uniform(1.1, 2.2)),
        density=float(rng.uniform(0.02, 0.45) * 1e4 / mean_area),
        touching=rng.uniform(0.0, 0.8), spacing=rng.uniform(1.05, 1.6),
        colonies=1.0 if clustered else 0.0, colony_um=rng.uniform(8.0, 25.0),
        texture=rng.uniform(0.0, 0.8), texture_um=float(np.exp(rng.uniform(np.log(0.2), np.log(1.2)))),
        chromocentres=(chromo, chromo + int(rng.integers(0, 16))), spot_um=rng.uniform(0.2, 0.55),
        nucleoli=(int(rng.integers(0, 3)), int(rng.integers(3, 6))) if rng.random() < 0.7 else (0, 0),
        mitotic=rng.uniform(0.0, 0.6) if rng.random() < 0.6 else rng.uniform(0.0, 0.08),
        cell_factor=(cell_lo, cell_lo + rng.uniform(0.3, 1.0)), cell_elongation=(1.0, cell_elong),
        fibres=(fibres, fibres + int(rng.integers(1, 14))),
        fibre_length=(rng.uniform(0.3, 0.8), rng.uniform(0.8, 1.4)), fibre_spread=rng.uniform(0.05, 0.3),
        background=rng.uniform(0.0, 0.12) if rng.random() < 0.3 else 0.0,
        haze=rng.uniform(0.0, 0.2) if rng.random() < 0.3 else 0.0,
    )


def get_family(family: str | Family) -> Family:
    """A :class:`Family` by name (or the family itself)."""
    if isinstance(family, Family):
        return family
    if not isinstance(family, str):
        raise TypeError(f"family must be a name or a Family, got {family!r}")
    if family not in FAMILIES:
        raise ValueError(f"unknown morphology family {family!r}; known: {sorted(FAMILIES)} (or None for 'u2os')")
    return FAMILIES[family]


def describe() -> str:
    """One line per family: name and how it differs from the training family."""
    return "\n".join(f"{f.name:14s} {f.differs}" for f in FAMILIES.values())


# --------------------------------------------------------------------------- cells


@dataclass
class _Cells:
    cy: np.ndarray  # centre row, px
    cx: np.ndarray  # centre column, px
    a: np.ndarray  # nucleus semi-axis along theta, px
    b: np.ndarray  # nucleus semi-axis across theta, px
    theta: np.ndarray  # nucleus orientation, rad
    brightness: np.ndarray
    phase: np.ndarray  # 0 interphase, 1 prometaphase, 2 metaphase, 3 anaphase, 4 telophase
    radius: np.ndarray  # cell radius, px
    stretch: np.ndarray  # cell axis ratio (along theta)
    harmonics: np.ndarray = field(repr=False)  # (N, 3, 2) outline cos/sin amplitudes


def _place(shape: tuple[int, int], fam: Family, dx: float, rng: np.random.Generator) -> _Cells:
    ny, nx = shape
    area = ny * nx * dx * dx / 1e4
    target = max(1, int(rng.poisson(fam.density * area)))
    margin = 0.5 * fam.nucleus_um[1] / dx
    colonies = None
    if fam.colonies > 0:
        n_col = max(1, int(rng.poisson(fam.colonies * area)))
        colonies = np.stack([rng.uniform(0, ny, n_col), rng.uniform(0, nx, n_col)], axis=1)
    cy: list[float] = []
    cx: list[float] = []
    r: list[float] = []
    attempts = 0
    while len(cy) < target and attempts < 60 * target:
        attempts += 1
        radius = 0.5 * rng.uniform(*fam.nucleus_um) / dx
        if cy and rng.random() < fam.touching:
            k = int(rng.integers(len(cy)))
            angle = rng.uniform(0, 2 * np.pi)
            dist = (r[k] + radius) * rng.uniform(0.85, 1.0)
            y, x = cy[k] + dist * np.sin(angle), cx[k] + dist * np.cos(angle)
            minimum = 0.8
        elif colonies is not None:
            centre = colonies[int(rng.integers(len(colonies)))]
            y, x = centre + rng.normal(0.0, fam.colony_um / dx, 2)
            minimum = fam.spacing
        else:
            y, x = rng.uniform(-margin, ny + margin), rng.uniform(-margin, nx + margin)
            minimum = fam.spacing
        if cy:
            d = np.hypot(np.asarray(cy) - y, np.asarray(cx) - x)
            if np.any(d < minimum * (np.asarray(r) + radius)):
                continue
        cy.append(float(y))
        cx.append(float(x))
        r.append(radius)
    n = len(cy)
    r_arr = np.asarray(r)
    elong = rng.uniform(*fam.elongation, n)
    mitotic = rng.random(n) < fam.mitotic
    phase = np.where(mitotic, rng.integers(1, 5, n), 0)
    brightness = np.where(mitotic, rng.uniform(1.6, 2.2, n), rng.uniform(0.55, 1.0, n))
    return _Cells(
        cy=np.asarray(cy), cx=np.asarray(cx), a=r_arr * np.sqrt(elong), b=r_arr / np.sqrt(elong),
        theta=rng.uniform(0, np.pi, n), brightness=brightness, phase=phase,
        radius=r_arr * rng.uniform(*fam.cell_factor, n), stretch=rng.uniform(*fam.cell_elongation, n),
        harmonics=rng.normal(0, 1, (n, 3, 2)) * (0.09 / np.arange(1, 4))[None, :, None],
    )


def _patch(shape, cy, cx, reach):
    """Bounding box of a disc of radius `reach` around (cy, cx), clipped: (y0, y1, x0, x1) or None."""
    y0, y1 = max(0, int(cy - reach)), min(shape[0], int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(shape[1], int(cx + reach) + 2)
    return None if y0 >= y1 or x0 >= x1 else (y0, y1, x0, x1)


def _ellipse(shape, out, cy, cx, a, b, theta, value, soft_px, wobble=None):
    """Paint ``max(out, value * soft ellipse)``; returns the patch box and the normalised radius there."""
    box = _patch(shape, cy, cx, max(a, b) * 1.2 + 3)
    if box is None:
        return None, None
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    d = np.hypot(u / a, v / b)
    if wobble is not None:
        d = d / wobble(np.arctan2(v, u))
    edge = 0.5 * (1 - np.tanh((d - 1) * min(a, b) / max(soft_px, 0.3)))
    region = out[y0:y1, x0:x1]
    np.maximum(region, value * edge * (1 - 0.25 * np.minimum(d, 1) ** 2), out=region)
    return box, d


def _render_nuclei(shape, cells: _Cells, fam: Family, dx: float, rng: np.random.Generator):
    """DNA stain; returns (density, labels) with 1-based cell labels of the nuclear region."""
    density = np.zeros(shape)
    labels = np.zeros(shape, dtype=np.int32)
    soft = 0.25 / dx  # ~0.25 um rim
    spot = ([], [], [])
    dark = ([], [], [])
    for i in range(cells.cy.size):
        cy, cx, a, b, th, level = (cells.cy[i], cells.cx[i], cells.a[i], cells.b[i], cells.theta[i],
                                   cells.brightness[i])
        phase = int(cells.phase[i])
        if phase == 0:
            p3, p5 = rng.uniform(0, 2 * np.pi, 2)

            def wobble(phi, p3=p3, p5=p5):
                return 1 + 0.04 * np.cos(3 * phi + p3) + 0.03 * np.cos(5 * phi + p5)

            box, d = _ellipse(shape, density, cy, cx, a, b, th, level, soft, wobble)
            if box is not None:
                y0, y1, x0, x1 = box
                labels[y0:y1, x0:x1][d < 1.0] = i + 1
            for count, store, lo, hi, reach in ((rng.integers(fam.chromocentres[0], fam.chromocentres[1] + 1), spot,
                                                 0.25, 0.6, 0.8),
                                                (rng.integers(fam.nucleoli[0], fam.nucleoli[1] + 1), dark,
                                                 0.35, 0.6, 0.55)):
                rr = reach * np.sqrt(rng.random(count))
                ang = rng.uniform(0, 2 * np.pi, count)
                su, sv = rr * a * np.cos(ang), rr * b * np.sin(ang)
                store[0].extend(cy + su * math.sin(th) + sv * math.cos(th))
                store[1].extend(cx + su * math.cos(th) - sv * math.sin(th))
                store[2].extend(rng.uniform(lo, hi, count) * level)
            continue
        # mitosis: condensed chromatin (sizes in px), spindle along th
        d = 2 * math.sqrt(a * b)
        thin = 0.25 / dx  # ~0.25 um: the width of a condensed chromosome arm
        if phase == 1:  # prometaphase: short rods around the centre
            for _ in range(int(rng.integers(8, 15))):
                rr, ang, rot = 0.35 * d * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
                _ellipse(shape, density, cy + rr * math.sin(ang), cx + rr * math.cos(ang),
                         0.14 * d, 0.05 * d + thin, rot, level, soft)
        elif phase == 2:  # metaphase plate across the spindle
            _ellipse(shape, density, cy, cx, 0.12 * d + thin, 0.45 * d, th, level, soft)
        elif phase == 3:  # anaphase: two plates moving apart
            for sgn in (-1, 1):
                _ellipse(shape, density, cy + sgn * 0.3 * d * math.sin(th), cx + sgn * 0.3 * d * math.cos(th),
                         0.1 * d + thin, 0.35 * d, th, level, soft)
        else:  # telophase: two compact daughter nuclei
            for sgn in (-1, 1):
                _ellipse(shape, density, cy + sgn * 0.6 * d * math.sin(th), cx + sgn * 0.6 * d * math.cos(th),
                         0.28 * d, 0.24 * d, th, 0.8 * level, soft)
        box = _patch(shape, cy, cx, 0.5 * d)
        if box is not None:
            y0, y1, x0, x1 = box
            labels[y0:y1, x0:x1][density[y0:y1, x0:x1] > 0.3 * level] = i + 1
    inside = density > 0.02
    if fam.texture > 0:
        density *= np.clip(1 + fam.texture * smooth_noise(shape, fam.texture_um / dx, rng), 0.15, None)
    if spot[0]:
        density += spots(shape, np.array(spot[0]), np.array(spot[1]), spot[2], fam.spot_um / dx) * inside
    if dark[0]:
        nucleoli = spots(shape, np.array(dark[0]), np.array(dark[1]), dark[2], 0.65 / dx)
        density *= np.clip(1 - nucleoli, 0.2, 1)
    return density, labels


def _cell_labels(shape, cells: _Cells) -> tuple[np.ndarray, np.ndarray]:
    """Cell bodies (1-based labels) from a Voronoi partition cut by each cell's outline; distance to edges."""
    owner = nearest_cell(shape, cells.cy, cells.cx)
    yy, xx = np.indices(shape)
    dy, dx = yy - cells.cy[owner], xx - cells.cx[owner]
    th = cells.theta[owner]
    u = dx * np.cos(th) + dy * np.sin(th)
    v = -dx * np.sin(th) + dy * np.cos(th)
    stretch = np.sqrt(cells.stretch[owner])
    rho = np.hypot(u / stretch, v * stretch)
    phi = np.arctan2(v, u)
    outline = np.ones(shape)
    for j, k in enumerate(range(2, 5)):
        outline += cells.harmonics[owner, j, 0] * np.cos(k * phi) + cells.harmonics[owner, j, 1] * np.sin(k * phi)
    labels = np.where(rho < outline * cells.radius[owner], owner + 1, 0).astype(np.int32)
    boundary = np.zeros(shape, dtype=bool)
    boundary[:-1] |= labels[:-1] != labels[1:]
    boundary[1:] |= labels[:-1] != labels[1:]
    boundary[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    boundary[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    return labels, ndimage.distance_transform_edt(~boundary)


def _render_actin(shape, cells: _Cells, labels, to_edge, nuclei_labels, fam: Family, dx: float,
                  rng: np.random.Generator) -> np.ndarray:
    inside = labels > 0
    cytoplasm = 0.18 * np.clip(1 + 0.35 * smooth_noise(shape, 1.2 / dx, rng), 0.2, None)
    cytoplasm *= np.where(nuclei_labels > 0, 0.55, 1.0)
    rim = 0.5 * np.exp(-0.5 * (to_edge * dx / 0.36) ** 2) + 0.15 * np.exp(-to_edge * dx / 1.5)
    body = (cytoplasm + rim) * inside
    fibres, filopodia = [], []
    for i in range(cells.cy.size):
        psi = cells.theta[i] + rng.normal(0, 0.3)
        for _ in range(int(rng.integers(fam.fibres[0], fam.fibres[1] + 1))):
            rr = cells.radius[i] * 0.7 * math.sqrt(rng.random())
            ang = rng.uniform(0, 2 * np.pi)
            py, px = cells.cy[i] + rr * math.sin(ang), cells.cx[i] + rr * math.cos(ang)
            direction = psi + rng.normal(0, fam.fibre_spread)
            half = cells.radius[i] * rng.uniform(*fam.fibre_length)
            fibres.append((py - half * math.sin(direction), px - half * math.cos(direction),
                           py + half * math.sin(direction), px + half * math.cos(direction),
                           rng.uniform(0.5, 1.0), i + 1))
        for _ in range(int(rng.integers(4, 16))):
            ang = rng.uniform(-np.pi, np.pi)
            r0 = cells.radius[i] * math.sqrt(cells.stretch[i]) * 0.9
            direction = ang + rng.normal(0, 0.3)
            length = rng.uniform(1.2, 4.8) / dx
            y0, x0 = cells.cy[i] + r0 * math.sin(ang), cells.cx[i] + r0 * math.cos(ang)
            filopodia.append((y0, x0, y0 + length * math.sin(direction), x0 + length * math.cos(direction),
                              rng.uniform(0.35, 0.7), i + 1))
    layer = draw_lines(shape, fibres, labels, lambda lab, cell: lab == cell)
    layer += draw_lines(shape, filopodia, labels, lambda lab, cell: (lab == 0) | (lab == cell))
    return body + ndimage.gaussian_filter(layer, 0.18 / dx)


def _render_cytoplasm(shape, cells: _Cells, labels, nuclei_labels, fam: Family, dx: float,
                      rng: np.random.Generator) -> np.ndarray:
    inside = labels > 0
    to_nucleus = ndimage.distance_transform_edt(nuclei_labels == 0) * dx
    base = 0.35 * np.clip(1 + 0.3 * smooth_noise(shape, 1.0 / dx, rng), 0.2, None)
    perinuclear = 0.65 * np.exp(-to_nucleus / 2.0)
    body = (base + perinuclear) * inside * np.where(nuclei_labels > 0, 0.2, 1.0)
    ys, xs, amps = [], [], []
    for i in range(cells.cy.size):
        count = int(rng.integers(20, 60))
        rr = cells.radius[i] * np.sqrt(rng.random(count))
        ang = rng.uniform(0, 2 * np.pi, count)
        ys.extend(cells.cy[i] + rr * np.sin(ang))
        xs.extend(cells.cx[i] + rr * np.cos(ang))
        amps.extend(rng.uniform(0.3, 0.8, count))
    vesicles = spots(shape, np.array(ys), np.array(xs), np.array(amps), 0.2 / dx) * inside if ys else 0.0
    return ndimage.gaussian_filter(body, 0.3 / dx) + vesicles


def render_objects(
    shape: tuple[int, int],
    family: str | Family,
    *,
    seed: Any,
    channels: tuple[str, ...] = ("nuclei", "actin"),
    pixel_size_um: float = 0.3,
) -> np.ndarray:
    """Fluorophore density of one field of a family (see :func:`plate_refocus.simulate.simulate_objects`).

    Parameters
    ----------
    shape : (int, int)
    family : str or Family
    seed : int or numpy.random.SeedSequence
    channels : sequence of {"nuclei", "actin", "cytoplasm"}
    pixel_size_um : float
        Pixel size at the sample: the family's sizes are in um.

    Returns
    -------
    object : (C, Y, X) ndarray of float32
        Non-negative, each channel's maximum 1 before background and haze
        (which add ``background + haze * smooth noise`` of the peak).
    """
    fam = get_family(family)
    if not (isinstance(pixel_size_um, (int, float)) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um!r}")
    unknown = [c for c in channels if c not in STAINS]
    if isinstance(channels, str) or not channels or unknown or len(set(channels)) != len(channels):
        raise ValueError(f"channels must be a non-empty selection of {STAINS!r} without repeats, got {channels!r}")
    dx = float(pixel_size_um)
    seq = seed_sequence(seed)
    cells = _place(shape, fam, dx, child_rng(seq, 0))
    nuclei, nuclei_labels = _render_nuclei(shape, cells, fam, dx, child_rng(seq, 1))
    labels = to_edge = None
    out = np.empty((len(channels), *shape), dtype=np.float32)
    for c, name in enumerate(channels):
        if name == "nuclei":
            layer = nuclei
        else:
            if labels is None:
                labels, to_edge = _cell_labels(shape, cells)
            if name == "actin":
                layer = _render_actin(shape, cells, labels, to_edge, nuclei_labels, fam, dx, child_rng(seq, 2))
            else:
                layer = _render_cytoplasm(shape, cells, labels, nuclei_labels, fam, dx, child_rng(seq, 3))
        layer = np.clip(layer, 0, None)
        peak = layer.max()
        layer = layer / peak if peak > 0 else layer
        if fam.background or fam.haze:
            haze = np.clip(smooth_noise(shape, 10.0 / dx, child_rng(seq, 4 + c)), -1.0, None) + 1.0
            layer = layer + fam.background + fam.haze * haze
        out[c] = layer
    return out
