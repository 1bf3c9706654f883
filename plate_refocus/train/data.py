"""Training data from a plate: the well split, the (input, target) pairs, the patch sampler, the validation set.

:func:`plate_training_pairs` opens a plate's planes and targets lazily (the
ground-truth in-focus images, or the focal plane of each z-stack);
:func:`split_wells` holds wells out for validation; :class:`PatchSampler`
streams normalised, augmented patches through a small buffer of fields;
:func:`validation_set` draws the fixed validation patches and
:func:`training_data` puts these together for :func:`~plate_refocus.train.train_model`.
:func:`plate_digest` hashes a plate's metadata for the model's provenance.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PlateRefocusError
from ..unet import normalize, percentile_range
from .config import TrainConfig

__all__ = [
    "split_wells",
    "plate_training_pairs",
    "PatchSampler",
    "validation_set",
    "training_data",
    "plate_digest",
]

log = logging.getLogger(__name__)

_TARGETS = ("ground-truth", "focal-plane")


def split_wells(wells: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split well names into (training, validation), disjoint, reproducibly for a seed.

    At least one well goes to validation when there are two or more wells;
    with a single well there is no validation set and the caller is told so.
    """
    wells = sorted(str(w) for w in wells)
    if not wells:
        raise PlateRefocusError("the plate has no wells to train on")
    if len(wells) == 1:
        return wells, []
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    order = [wells[i] for i in rng.permutation(len(wells))]
    n_val = min(max(1, round(fraction * len(wells))), len(wells) - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def plate_training_pairs(
    plate: str | os.PathLike,
    *,
    target: str = "ground-truth",
    focal_index: int | None = None,
):
    """The inputs, targets and per-plane defocus of a plate, lazily.

    Parameters
    ----------
    plate : path
        An OME-Zarr HCS plate (see :func:`plate_refocus.plate.open_plate`).
    target : {"ground-truth", "focal-plane"}
        ``"ground-truth"``: the plate's stored in-focus images (simulated
        plates). ``"focal-plane"``: the plane at ``focal_index`` (default:
        the plate's ``focal_plane`` attribute) of each z-stack.
    focal_index : int, optional

    Returns
    -------
    images : xarray.DataArray (well, field, c, z, y, x)
    targets : xarray.DataArray (well, field, c, y, x)
    depth_um : (Z,) ndarray of float
        Distance of every plane from focus.
    """
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {_TARGETS!r}, got {target!r}")
    from ..plate import open_ground_truth, open_plate

    images = open_plate(plate)
    z_um = np.asarray(images.coords["z_um"].values, dtype=np.float64)
    if target == "ground-truth":
        truth = open_ground_truth(plate)
        if truth is None:
            raise PlateRefocusError(
                f"plate {str(plate)!r} has no ground truth (it is not simulated); train with "
                "--target focal-plane [--focal-index N] to use its in-focus plane as the target"
            )
        return images, truth["in_focus"], np.abs(z_um)
    if focal_index is None:
        focal_index = images.attrs.get("focal_plane")
        if focal_index is None:
            raise PlateRefocusError(
                f"plate {str(plate)!r} records no focal plane; pass --focal-index N (0-based plane index)"
            )
    if not isinstance(focal_index, (int, np.integer)) or not 0 <= focal_index < images.sizes["z"]:
        raise PlateRefocusError(
            f"focal index {focal_index!r} is outside the plate's planes 0..{images.sizes['z'] - 1}"
        )
    return images, images.isel(z=int(focal_index)), np.abs(z_um - z_um[int(focal_index)])


class PatchSampler:
    """Random training patches streamed from a plate through a small buffer of fields.

    Reading one field's stack (its channels and the chosen planes) costs one
    Dask compute; a plane costs nearly as much, so the sampler keeps the last
    ``buffer_fields`` fields in memory, loads a new random field every
    ``draws_per_load`` patches (evicting the oldest), and draws each patch
    from a random buffered field, channel and plane. Memory stays bounded
    whatever the plate size.

    Parameters
    ----------
    images : xarray.DataArray (well, field, c, z, y, x)
        Dask- or NumPy-backed.
    targets : xarray.DataArray (well, field, c, y, x)
    wells : sequence of str
        The wells to draw from.
    planes : sequence of int
        Indices on ``z`` to draw from, each with equal probability.
    patch : int
    percentiles : (float, float)
    seed : int or numpy.random.SeedSequence
    augment : bool
        Random flips and rotations by multiples of 90 degrees.
    buffer_fields : int
    draws_per_load : int
    """

    def __init__(
        self,
        images,
        targets,
        wells: Sequence[str],
        planes: Sequence[int],
        *,
        patch: int,
        percentiles: tuple[float, float] = (1.0, 99.8),
        seed: int | np.random.SeedSequence = 0,
        augment: bool = True,
        buffer_fields: int = 24,
        draws_per_load: int = 32,
    ):
        ny, nx = images.sizes["y"], images.sizes["x"]
        if patch > min(ny, nx):
            raise PlateRefocusError(
                f"patch size {patch!r} is larger than the plate's planes ({ny}x{nx}); pass a smaller --patch"
            )
        if not wells:
            raise ValueError("no wells to draw patches from")
        if not planes:
            raise ValueError("no planes to draw patches from")
        self.images = images
        self.targets = targets
        index = {str(w): i for i, w in enumerate(images.coords["well"].values)}
        self.fields = [(index[str(w)], f) for w in wells for f in range(images.sizes["field"])]
        self.planes = [int(p) for p in planes]
        self.patch = int(patch)
        self.percentiles = percentiles
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.buffer_fields = int(buffer_fields)
        self.draws_per_load = int(draws_per_load)
        self._buffer: OrderedDict[tuple[int, int], dict[str, np.ndarray]] = OrderedDict()
        self._draws = 0

    def _load(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        if key in self._buffer:
            return self._buffer[key]
        w, f = key
        stack = np.asarray(self.images.isel(well=w, field=f, z=self.planes).values)  # (c, z, y, x)
        target = np.asarray(self.targets.isel(well=w, field=f).values, dtype=np.float32)  # (c, y, x)
        ranges = np.array([[percentile_range(plane, self.percentiles) for plane in channel] for channel in stack])
        entry = {"stack": stack, "target": target, "ranges": ranges}
        self._buffer[key] = entry
        while len(self._buffer) > self.buffer_fields:
            self._buffer.popitem(last=False)
        return entry

    def draw(self, plane: int | None = None) -> tuple[np.ndarray, np.ndarray, float, float, int]:
        """One patch pair ``(input (P, P), target (P, P), low, high, plane)``, normalised."""
        rng = self.rng
        if not self._buffer or self._draws % self.draws_per_load == 0:
            self._load(self.fields[rng.integers(len(self.fields))])
        self._draws += 1
        keys = list(self._buffer)
        entry = self._buffer[keys[rng.integers(len(keys))]]
        c = int(rng.integers(entry["stack"].shape[0]))
        j = int(rng.integers(len(self.planes))) if plane is None else self.planes.index(int(plane))
        y0 = int(rng.integers(self.images.sizes["y"] - self.patch + 1))
        x0 = int(rng.integers(self.images.sizes["x"] - self.patch + 1))
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        lo, hi = (float(v) for v in entry["ranges"][c, j])
        window = (slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
        x = normalize(entry["stack"][c, j][window], lo, hi)
        y = normalize(entry["target"][c][window], lo, hi)
        if self.augment:
            x, y = np.rot90(x, k), np.rot90(y, k)
            if flip:
                x, y = x[:, ::-1], y[:, ::-1]
        return np.ascontiguousarray(x), np.ascontiguousarray(y), lo, hi, self.planes[j]

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``size`` pairs stacked as ``(size, P, P, 1)`` float32 arrays, and their input errors.

        Returns
        -------
        x, y : (size, P, P, 1) ndarray of float32
        input_error : (size,) ndarray of float32
            ``mean((x - y)**2)`` per pair, the error of doing nothing.
        """
        pairs = [self.draw() for _ in range(size)]
        x = np.stack([p[0] for p in pairs])[..., None]
        y = np.stack([p[1] for p in pairs])[..., None]
        return x, y, np.mean((x - y) ** 2, axis=(1, 2, 3)).astype(np.float32)


def validation_set(sampler: PatchSampler, count: int) -> dict[str, np.ndarray]:
    """``count`` fixed validation pairs, evenly over the sampler's planes: ``x``, ``y`` (N, P, P, 1), ``scale`` (N, 2) and ``plane`` (N,)."""
    xs, ys, scale, planes = [], [], [], []
    for i in range(count):
        x, y, lo, hi, z = sampler.draw(plane=sampler.planes[i % len(sampler.planes)])
        xs.append(x)
        ys.append(y)
        scale.append((lo, hi))
        planes.append(z)
    return {
        "x": np.stack(xs)[..., None],
        "y": np.stack(ys)[..., None],
        "scale": np.asarray(scale, dtype=np.float64),
        "plane": np.asarray(planes),
    }


def training_data(
    images, targets, planes: Sequence[int], train: TrainConfig
) -> tuple[PatchSampler, dict[str, np.ndarray], list[str], list[str]]:
    """The training sampler and the validation set of :func:`~plate_refocus.train.train_model`.

    Wells are split by :func:`split_wells` (with a single well, validation
    draws from the training well, with a warning); the two samplers get
    independent seeds from ``train.seed``, and the validation one does not
    augment.

    Returns
    -------
    sampler : PatchSampler
        Over the training wells.
    val : dict
        From :func:`validation_set`, ``train.validation_patches`` pairs.
    train_wells, val_wells : list of str
    """
    wells = [str(w) for w in images.coords["well"].values]
    train_wells, val_wells = split_wells(wells, train.validation_fraction, train.seed)
    if not val_wells:
        log.warning("only one well: validating on patches of the training well")
        val_wells = train_wells
    seeds = np.random.SeedSequence([train.seed, 2]).spawn(2)
    common: dict[str, Any] = {"patch": train.patch, "percentiles": train.norm_percentiles}
    sampler = PatchSampler(images, targets, train_wells, planes, seed=seeds[0], **common)
    val = validation_set(
        PatchSampler(images, targets, val_wells, planes, seed=seeds[1], augment=False, **common),
        train.validation_patches,
    )
    return sampler, val, train_wells, val_wells


def plate_digest(plate: Path) -> str:
    """SHA-256 over the plate's metadata files (zarr.json, .zattrs, .zarray), in path order.

    Pixel data is not hashed (a large plate would take as long to hash as to
    train on); simulated plates record their seed in the metadata.
    """
    digest = hashlib.sha256()
    names = {"zarr.json", ".zattrs", ".zarray", ".zgroup"}
    for path in sorted(p for p in plate.rglob("*") if p.name in names):
        digest.update(str(path.relative_to(plate)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
