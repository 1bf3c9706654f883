"""Cells of the training family, and the drawing and seeding primitives every family shares.

The training family (``"u2os"``) is what the shipped U-Net was trained on:
Hoechst-like nuclei (textured ellipsoids with chromocentres and nucleoli,
varied in size, shape and orientation, some touching) and phalloidin-like
actin (cell outlines around the nuclei with a bright cortical rim,
stress-fibre ridges and thin filopodia), drawn in pixels for 0.3 um pixels
by :func:`render_u2os`. :func:`plate_refocus.simulate.simulate_objects`
draws it, and the families of :mod:`plate_refocus.morphology` draw theirs
with the same primitives (:func:`smooth_noise`, :func:`spots`,
:func:`draw_lines`) and the same seeding (:func:`seed_sequence`,
:func:`child_rng`). Everything is deterministic for a seed: the training
family's output must not change, as the shipped model and its benchmarks
depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = ["SeedLike", "seed_sequence", "child_rng", "smooth_noise", "spots", "draw_lines", "nearest_cell",
           "render_u2os"]

#: A seed: a non-negative int or a :class:`numpy.random.SeedSequence`.
SeedLike = int | np.random.SeedSequence


def seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """`seed` as a :class:`numpy.random.SeedSequence` (a SeedSequence is returned as is)."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return np.random.SeedSequence(int(seed))
    raise TypeError(f"seed must be a non-negative int or a numpy SeedSequence, got {seed!r}")


def child_rng(seed: np.random.SeedSequence, key: int) -> np.random.Generator:
    """The generator of child `key` of `seed`: the same for the same key, whatever was drawn before."""
    # A fixed child per purpose, without mutating the caller's SeedSequence
    # (SeedSequence.spawn counts its children, so calling it twice differs).
    child = np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, key))
    return np.random.default_rng(child)


def smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / max(field.std(), 1e-12)


def spots(shape, ys, xs, amplitudes, sigma) -> np.ndarray:
    """Gaussian spots of peak ``amplitudes`` at (possibly fractional) positions."""
    ny, nx = shape
    impulses = np.zeros(shape)
    iy, ix = np.rint(ys).astype(int), np.rint(xs).astype(int)
    keep = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    np.add.at(impulses, (iy[keep], ix[keep]), np.asarray(amplitudes)[keep])
    return ndimage.gaussian_filter(impulses, sigma, mode="constant") * (2 * np.pi * sigma**2)


def draw_lines(shape, segments, labels, allowed) -> np.ndarray:
    """Anti-aliased lines ``(y0, x0, y1, x1, amplitude, cell)`` kept where ``allowed(labels, cell)``."""
    from skimage.draw import line_aa

    ny, nx = shape
    layer = np.zeros(shape)
    for y0, x0, y1, x1, amp, cell in segments:
        rr, cc, val = line_aa(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
        keep = (rr >= 0) & (rr < ny) & (cc >= 0) & (cc < nx)
        rr, cc, val = rr[keep], cc[keep], val[keep]
        ok = allowed(labels[rr, cc], cell)
        # Fibres fade in and out along their length rather than ending abruptly.
        taper = np.sin(np.linspace(0.15, np.pi - 0.15, len(rr))) if len(rr) else val
        np.maximum.at(layer, (rr[ok], cc[ok]), (amp * val * taper)[ok])
    return layer


def render_u2os(shape: tuple[int, int], channels: Sequence[str], seed: SeedLike) -> np.ndarray:
    """Fluorophore density of a field of training-family cells, (C, Y, X) float32.

    `channels` are names among ``("nuclei", "actin")`` (checked by the
    caller), each scaled so its maximum is 1 (all zeros when no cell reaches
    the field). The cells do not depend on which channels are asked for.
    """
    seq = seed_sequence(seed)
    cells = _place_cells(shape, child_rng(seq, 0))
    nuclei, nuclei_labels = _render_nuclei(shape, cells, child_rng(seq, 1))
    out = np.empty((len(channels), *shape), dtype=np.float32)
    for c, name in enumerate(channels):
        layer = nuclei if name == "nuclei" else _render_actin(shape, cells, nuclei_labels, child_rng(seq, 2))
        layer = np.clip(layer, 0, None)
        peak = layer.max()
        out[c] = layer / peak if peak > 0 else layer
    return out


class _Cells(NamedTuple):
    cy: np.ndarray  # centre row, px
    cx: np.ndarray  # centre column, px
    a: np.ndarray  # nucleus semi-axis along theta, px
    b: np.ndarray  # nucleus semi-axis across theta, px
    theta: np.ndarray  # nucleus orientation, rad
    brightness: np.ndarray  # relative DNA stain
    radius: np.ndarray  # mean cell radius, px
    harmonics: np.ndarray  # (N, K, 2) cell outline cos/sin amplitudes for k = 2..K+1


def _place_cells(shape: tuple[int, int], rng: np.random.Generator) -> _Cells:
    """Cell centres and shapes: roughly one cell per 55 x 55 px, some in touching pairs."""
    ny, nx = shape
    target = max(1, rng.poisson(ny * nx / 3000.0))
    cy: list[float] = []
    cx: list[float] = []
    r: list[float] = []
    attempts = 0
    while len(cy) < target and attempts < 40 * target:
        attempts += 1
        radius = rng.uniform(9.0, 15.0)
        if cy and rng.random() < 0.3:
            # A daughter/neighbour cell whose nucleus touches an existing one.
            k = int(rng.integers(len(cy)))
            angle = rng.uniform(0, 2 * np.pi)
            dist = (r[k] + radius) * rng.uniform(0.85, 1.0)
            y, x = cy[k] + dist * np.sin(angle), cx[k] + dist * np.cos(angle)
            minimum = 0.8
        else:
            y, x = rng.uniform(-10, ny + 10), rng.uniform(-10, nx + 10)
            minimum = 1.6
        d = np.hypot(np.asarray(cy) - y, np.asarray(cx) - x) if cy else np.array([np.inf])
        others = np.asarray(r) + radius if r else np.array([0.0])
        if np.all(d >= minimum * others):
            cy.append(y)
            cx.append(x)
            r.append(radius)
    n = len(cy)
    r_arr = np.asarray(r)
    elong = rng.uniform(1.0, 1.45, n)
    mitotic = rng.random(n) < 0.05
    a = r_arr * np.sqrt(elong) * np.where(mitotic, 0.6, 1.0)
    b = r_arr / np.sqrt(elong) * np.where(mitotic, 0.6, 1.0)
    brightness = np.where(mitotic, rng.uniform(1.6, 2.0, n), rng.uniform(0.55, 1.0, n))
    radius = r_arr * rng.uniform(1.9, 2.6, n)
    harmonics = rng.normal(0, 1, (n, 3, 2)) * (0.09 / np.arange(1, 4))[None, :, None]
    return _Cells(
        np.asarray(cy), np.asarray(cx), a, b, rng.uniform(0, np.pi, n), brightness, radius, harmonics
    )


def _render_nuclei(shape, cells: _Cells, rng: np.random.Generator):
    """Hoechst-like nuclei; returns (density, label image with 1-based cell index)."""
    ny, nx = shape
    density = np.zeros(shape)
    labels = np.zeros(shape, dtype=np.int32)
    texture = smooth_noise(shape, 1.3, rng)
    bright_y, bright_x, bright_a, dark_y, dark_x, dark_a = [], [], [], [], [], []
    for i in range(len(cells.cy)):
        cy, cx, a, b, th = cells.cy[i], cells.cx[i], cells.a[i], cells.b[i], cells.theta[i]
        half = int(math.ceil(max(a, b) * 1.15)) + 3
        y0, y1 = max(0, int(cy) - half), min(ny, int(cy) + half + 1)
        x0, x1 = max(0, int(cx) - half), min(nx, int(cx) + half + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = dx * math.cos(th) + dy * math.sin(th)
        v = -dx * math.sin(th) + dy * math.cos(th)
        phi = np.arctan2(v, u)
        wobble = 1 + 0.04 * np.cos(3 * phi + rng.uniform(0, 2 * np.pi)) + 0.03 * np.cos(
            5 * phi + rng.uniform(0, 2 * np.pi)
        )
        d = np.hypot(u / a, v / b) / wobble
        edge = 0.5 * (1 - np.tanh((d - 1) * min(a, b) / 0.8))  # ~1 px soft rim
        dome = 1 - 0.25 * np.minimum(d, 1) ** 2
        value = cells.brightness[i] * edge * dome
        region = density[y0:y1, x0:x1]
        np.maximum(region, value, out=region)
        labels[y0:y1, x0:x1][edge > 0.5] = i + 1
        # Chromocentres (bright) and nucleoli (dark) inside the nucleus.
        for count, ys, xs, amps, lo, hi, reach in (
            (rng.integers(4, 10), bright_y, bright_x, bright_a, 0.25, 0.6, 0.8),
            (rng.integers(1, 4), dark_y, dark_x, dark_a, 0.35, 0.6, 0.55),
        ):
            rr = reach * np.sqrt(rng.random(count))
            ang = rng.uniform(0, 2 * np.pi, count)
            su, sv = rr * a * np.cos(ang), rr * b * np.sin(ang)
            ys.extend(cy + su * math.sin(th) + sv * math.cos(th))
            xs.extend(cx + su * math.cos(th) - sv * math.sin(th))
            amps.extend(rng.uniform(lo, hi, count) * cells.brightness[i])
    inside = density > 0.02
    density *= np.clip(1 + 0.22 * texture, 0.3, None)
    density += spots(shape, np.array(bright_y), np.array(bright_x), bright_a, 1.1) * inside
    nucleoli = spots(shape, np.array(dark_y), np.array(dark_x), dark_a, 2.2)
    density *= np.clip(1 - nucleoli, 0.2, 1)
    return density, labels


def nearest_cell(shape: tuple[int, int], cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
    """The 0-based index of the nearest cell centre of every pixel (a Voronoi partition), (Y, X).

    Centres outside the field are clamped to its edge: close enough for cells that
    only reach into the field, which keep their own outlines.
    """
    ny, nx = shape
    markers = np.ones(shape, dtype=bool)
    cyi = np.clip(np.rint(cy).astype(int), 0, ny - 1)
    cxi = np.clip(np.rint(cx).astype(int), 0, nx - 1)
    markers[cyi, cxi] = False
    centre_id = np.zeros(shape, dtype=np.int32)
    centre_id[cyi, cxi] = np.arange(1, np.size(cy) + 1)
    _, (iy, ix) = ndimage.distance_transform_edt(markers, return_indices=True)
    return centre_id[iy, ix] - 1


def _render_actin(shape, cells: _Cells, nuclei_labels, rng: np.random.Generator) -> np.ndarray:
    """Phalloidin-like actin: cell bodies, cortical rims, stress fibres, filopodia."""
    ny, nx = shape
    n = len(cells.cy)
    # Each pixel belongs to the nearest cell centre if it lies inside that cell's
    # irregular outline r(phi).
    owner = nearest_cell(shape, cells.cy, cells.cx)  # 0-based cell index of every pixel
    yy, xx = np.indices(shape)
    dy, dx = yy - cells.cy[owner], xx - cells.cx[owner]
    rho = np.hypot(dy, dx)
    phi = np.arctan2(dy, dx)
    k = np.arange(2, 2 + cells.harmonics.shape[1])
    outline = np.ones(shape)
    for j, kk in enumerate(k):
        outline += cells.harmonics[owner, j, 0] * np.cos(kk * phi)
        outline += cells.harmonics[owner, j, 1] * np.sin(kk * phi)
    outline *= cells.radius[owner]
    labels = np.where(rho < outline, owner + 1, 0).astype(np.int32)
    inside = labels > 0

    # Distance to the cell boundary (to background or to a touching neighbour).
    boundary = np.zeros(shape, dtype=bool)
    boundary[:-1] |= labels[:-1] != labels[1:]
    boundary[1:] |= labels[:-1] != labels[1:]
    boundary[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    boundary[:, 1:] |= labels[:, :-1] != labels[:, 1:]
    to_edge = ndimage.distance_transform_edt(~boundary)

    cytoplasm = 0.18 * np.clip(1 + 0.35 * smooth_noise(shape, 4.0, rng), 0.2, None)
    cytoplasm *= np.where(nuclei_labels > 0, 0.55, 1.0)
    rim = 0.5 * np.exp(-0.5 * (to_edge / 1.2) ** 2) + 0.15 * np.exp(-to_edge / 5.0)
    body = (cytoplasm + rim) * inside

    fibres, filopodia = [], []
    for i in range(n):
        psi = rng.uniform(0, np.pi)
        for _ in range(rng.integers(3, 10)):
            rr = cells.radius[i] * 0.7 * np.sqrt(rng.random())
            ang = rng.uniform(0, 2 * np.pi)
            py, px = cells.cy[i] + rr * np.sin(ang), cells.cx[i] + rr * np.cos(ang)
            direction = psi + rng.normal(0, 0.12)
            half = cells.radius[i] * rng.uniform(0.4, 0.8)
            fibres.append((py - half * np.sin(direction), px - half * np.cos(direction),
                           py + half * np.sin(direction), px + half * np.cos(direction),
                           rng.uniform(0.5, 1.0), i + 1))
        for _ in range(rng.integers(4, 16)):
            ang = rng.uniform(-np.pi, np.pi)
            r0 = cells.radius[i] * (1 + sum(
                cells.harmonics[i, j, 0] * np.cos(kk * ang) + cells.harmonics[i, j, 1] * np.sin(kk * ang)
                for j, kk in enumerate(k)
            )) - 1.0
            direction = ang + rng.normal(0, 0.3)
            length = rng.uniform(4.0, 16.0)
            y0, x0 = cells.cy[i] + r0 * np.sin(ang), cells.cx[i] + r0 * np.cos(ang)
            filopodia.append((y0, x0, y0 + length * np.sin(direction), x0 + length * np.cos(direction),
                              rng.uniform(0.35, 0.7), i + 1))
    fibre_layer = draw_lines(shape, fibres, labels, lambda lab, cell: lab == cell)
    filo_layer = draw_lines(shape, filopodia, labels, lambda lab, cell: (lab == 0) | (lab == cell))
    lines = ndimage.gaussian_filter(fibre_layer + filo_layer, 0.6)
    return body + lines
