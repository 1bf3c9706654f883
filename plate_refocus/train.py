"""Train a refocusing U-Net on a plate: defocused planes in, in-focus images out.

Training pairs are (plane at defocus ``d`` -> in-focus target) for every
requested ``d``, mixed with equal weight. The target is the ground-truth
in-focus image of a simulated plate (``target="ground-truth"``) or the plane
at the plate's focal index of a real z-stack (``target="focal-plane"``).
Random patches, flipped and rotated by multiples of 90 degrees, stream from
the zarr plate one plane at a time, so a plate larger than memory works.
Wells are split into training and validation sets (no well in both).
Adam at 1e-4 with reduce-on-plateau; MSE or an SSIM-based loss; the model
with the best validation loss is written after every epoch that improves it.

Every input plane and its target are normalised with the input plane's
percentiles (as :meth:`plate_refocus.unet.RefocusModel.predict` does), so
the network learns on the scale it will see.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import math
import os
import platform
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PlateRefocusError
from .optics import Optics
from .outputs import prepare_output
from .unet import (
    ModelInfo,
    RefocusModel,
    UNetConfig,
    build_unet,
    normalize,
    percentile_range,
    save_model,
)

__all__ = ["TrainConfig", "PatchSampler", "train_model", "train_plate", "plate_training_pairs", "split_wells"]

log = logging.getLogger(__name__)

_LOSSES = ("mse", "ssim")
_TARGETS = ("ground-truth", "focal-plane")
_WEIGHTINGS = ("relative", "none")
_MIN_ERROR = 1e-6  # floor of the input error that weights a patch (normalised units)


@dataclass(frozen=True)
class TrainConfig:
    """How to train (everything that is not the architecture or the data).

    Parameters
    ----------
    patch : int
        Side of the square training patches (a multiple of the model's divisor).
    batch_size : int
    steps_per_epoch : int
    epochs : int
    learning_rate : float
        Adam's initial learning rate (the report's 1e-4).
    loss : {"mse", "ssim"}
        ``"ssim"`` minimises ``MSE + (1 - SSIM)`` on the normalised images
        (MSE keeps the intensities anchored in dark regions, where SSIM is
        insensitive).
    seed : int
        Fixes the weights, the well split, the patches and their order.
    validation_fraction : float
        Fraction of the wells held out (at least one well when there are two or more).
    validation_patches : int
        Fixed validation patches, drawn once, evenly over depths.
    patience : int
        Epochs without improvement before the learning rate is halved.
    min_learning_rate : float
    max_time_s : float, optional
        Stop after the epoch during which this much time has passed.
    norm_percentiles : (float, float)
    weighting : {"relative", "none"}
        ``"relative"``: every patch's loss is divided by the mean squared
        difference between its input and its target, so every pair counts
        by its *relative* error (equal weight in dB for every depth; without
        it the large depths, whose normalised targets are far from their
        inputs, dominate and the nearly sharp planes get worse).
        ``"none"``: plain loss.
    """

    patch: int = 128
    batch_size: int = 8
    steps_per_epoch: int = 100
    epochs: int = 20
    learning_rate: float = 1e-4
    loss: str = "mse"
    seed: int = 0
    validation_fraction: float = 0.2
    validation_patches: int = 64
    patience: int = 3
    min_learning_rate: float = 1e-6
    max_time_s: float | None = None
    norm_percentiles: tuple[float, float] = (1.0, 99.8)
    weighting: str = "relative"

    def __post_init__(self) -> None:
        for name in ("patch", "batch_size", "steps_per_epoch", "epochs", "validation_patches", "patience", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"TrainConfig.{name} must be an int, got {value!r}")
            if value < (0 if name in ("seed", "patience") else 1):
                raise ValueError(f"TrainConfig.{name} must be positive, got {value!r}")
        if self.loss not in _LOSSES:
            raise ValueError(f"TrainConfig.loss must be one of {_LOSSES!r}, got {self.loss!r}")
        if self.weighting not in _WEIGHTINGS:
            raise ValueError(f"TrainConfig.weighting must be one of {_WEIGHTINGS!r}, got {self.weighting!r}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"TrainConfig.learning_rate must be in (0, 1), got {self.learning_rate!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"TrainConfig.validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"TrainConfig.max_time_s must be positive or None, got {self.max_time_s!r}")


# --- data -------------------------------------------------------------------------------------


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
    from .plate import open_ground_truth, open_plate

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


# --- losses (backend-neutral) -----------------------------------------------------------------


def _gaussian_kernel(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    g /= g.sum()
    return np.outer(g, g).astype(np.float32)[:, :, None, None]


def _mse_loss(y_true, y_pred):
    """Mean squared error per patch, ``(batch,)``, so per-patch weights apply."""
    from keras import ops

    return ops.mean(ops.square(y_true - y_pred), axis=(1, 2, 3))


def _ssim_mse_loss(y_true, y_pred):
    """``MSE + 1 - SSIM`` per patch, ``(batch,)``, Gaussian window, data range 1 (normalised)."""
    from keras import ops

    kernel = ops.convert_to_tensor(_gaussian_kernel())

    def filt(a):
        return ops.conv(a, kernel, padding="valid")

    c1, c2 = 0.01**2, 0.03**2
    ux, uy = filt(y_true), filt(y_pred)
    vx = filt(y_true * y_true) - ux * ux
    vy = filt(y_pred * y_pred) - uy * uy
    vxy = filt(y_true * y_pred) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return _mse_loss(y_true, y_pred) + 1.0 - ops.mean(s, axis=(1, 2, 3))


# --- training ---------------------------------------------------------------------------------


def _hardware() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import keras

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "backend": keras.backend.backend(),
    }


def _plate_digest(plate: Path) -> str:
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


def _validation_set(sampler: PatchSampler, count: int) -> dict[str, np.ndarray]:
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


def _weights(input_error: np.ndarray, weighting: str) -> np.ndarray | None:
    if weighting == "none":
        return None
    return (1.0 / np.maximum(input_error, _MIN_ERROR)).astype(np.float32)


def _validate(keras_model, val, depth_um: np.ndarray, data_range: float, batch: int, weighting: str):
    """Validation loss (weighted as in training, MSE) and PSNR of input and output per depth."""
    pred = np.concatenate(
        [np.asarray(keras_model.predict_on_batch(val["x"][i : i + batch])) for i in range(0, len(val["x"]), batch)]
    )
    mse = np.mean((pred - val["y"]) ** 2, axis=(1, 2, 3))
    weight = _weights(np.mean((val["x"] - val["y"]) ** 2, axis=(1, 2, 3)), weighting)
    loss = float(np.mean(mse if weight is None else mse * weight))
    span = (val["scale"][:, 1] - val["scale"][:, 0])[:, None, None, None]
    err_out = np.mean(((pred - val["y"]) * span) ** 2, axis=(1, 2, 3))
    err_in = np.mean(((val["x"] - val["y"]) * span) ** 2, axis=(1, 2, 3))
    per_depth = {}
    for z in np.unique(val["plane"]):
        sel = val["plane"] == z
        p_in = 10 * np.log10(data_range**2 / max(float(np.mean(err_in[sel])), 1e-12))
        p_out = 10 * np.log10(data_range**2 / max(float(np.mean(err_out[sel])), 1e-12))
        per_depth[f"{depth_um[z]:g}"] = {"psnr_input": round(p_in, 3), "psnr_output": round(p_out, 3)}
    return loss, per_depth


def train_model(
    images,
    targets,
    depth_um: Sequence[float],
    *,
    out: str | os.PathLike,
    config: UNetConfig | None = None,
    train: TrainConfig | None = None,
    depths_um: Sequence[float] | None = None,
    optics: Optics | None = None,
    data_range: float | None = None,
    name: str | None = None,
    training_info: dict[str, Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    overwrite: bool = False,
) -> RefocusModel:
    """Train a U-Net on (defocused plane -> target) pairs and save the best model to ``out``.

    Parameters
    ----------
    images : xarray.DataArray (well, field, c, z, y, x)
    targets : xarray.DataArray (well, field, c, y, x)
    depth_um : (Z,) sequence of float
        Distance from focus of every plane on ``z``.
    out : path
        ``.keras`` path for the best model (its ``.json`` is written beside it).
    config : UNetConfig, optional
        Default ``UNetConfig()``.
    train : TrainConfig, optional
        Default ``TrainConfig()``.
    depths_um : sequence of float, optional
        Train on the planes at these distances only (default: all planes).
    optics : Optics, optional
        Default: ``images.attrs["optics"]``.
    data_range : float, optional
        For the validation PSNR; default from the camera bit depth or the dtype.
    name : str, optional
    training_info : dict, optional
        Extra facts recorded in the model's metadata (plate, command line).
    progress : callable, optional
        Called with a dict after every epoch (the CLI prints a line).
    overwrite : bool
        Replace an existing model at ``out`` (only one written by this project:
        a ``.keras`` with its metadata ``.json``). It is replaced when the first
        checkpoint is saved.

    Returns
    -------
    RefocusModel
        The model with the best validation loss, as saved to ``out``.
    """
    config = UNetConfig() if config is None else config
    train = TrainConfig() if train is None else train
    if not isinstance(config, UNetConfig):
        raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
    if not isinstance(train, TrainConfig):
        raise TypeError(f"train must be a TrainConfig, got {type(train).__name__}")
    out = Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"out must end in '.keras', got {str(out)!r}")
    prepare_output(out, kind="model", overwrite=overwrite, remove=False)
    if train.patch % config.divisor:
        raise ValueError(
            f"patch {train.patch!r} must be a multiple of the model's divisor {config.divisor} (2**depth)"
        )
    depth_um = np.asarray(depth_um, dtype=np.float64)
    if depth_um.shape != (images.sizes["z"],):
        raise ValueError(f"depth_um must have one value per plane ({images.sizes['z']}), got {depth_um.shape!r}")
    if depths_um is None:
        planes = list(range(len(depth_um)))
    else:
        planes = []
        for d in depths_um:
            hits = np.flatnonzero(np.isclose(depth_um, abs(float(d)), atol=1e-6))
            if not len(hits):
                raise PlateRefocusError(
                    f"depth {d!r} um is not in the plate; its planes are at {sorted(set(depth_um.round(6).tolist()))!r} um"
                )
            planes.extend(int(h) for h in hits)
        planes = sorted(set(planes))
    if optics is None:
        optics = Optics.from_dict(images.attrs["optics"]) if "optics" in images.attrs else Optics()
    if data_range is None:
        from .plate import data_range as plate_data_range

        data_range = plate_data_range(images.attrs.get("camera"), images.dtype)

    import keras

    start = time.monotonic()
    keras.utils.set_random_seed(train.seed)
    if keras.backend.backend() == "tensorflow":  # reproducible kernels for a seed
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    wells = [str(w) for w in images.coords["well"].values]
    train_wells, val_wells = split_wells(wells, train.validation_fraction, train.seed)
    if not val_wells:
        log.warning("only one well: validating on patches of the training well")
        val_wells = train_wells
    seeds = np.random.SeedSequence([train.seed, 2]).spawn(2)
    common = {"patch": train.patch, "percentiles": train.norm_percentiles}
    sampler = PatchSampler(images, targets, train_wells, planes, seed=seeds[0], **common)
    val = _validation_set(
        PatchSampler(images, targets, val_wells, planes, seed=seeds[1], augment=False, **common),
        train.validation_patches,
    )

    model = build_unet(config, seed=train.seed)
    loss = _mse_loss if train.loss == "mse" else _ssim_mse_loss
    optimizer = keras.optimizers.Adam(learning_rate=train.learning_rate)
    model.compile(optimizer=optimizer, loss=loss)

    info = ModelInfo(
        name=name or out.stem,
        config=config,
        optics=optics,
        depths_um=tuple(sorted({float(round(depth_um[p], 6)) for p in planes})),
        norm_percentiles=train.norm_percentiles,
        training={
            **(training_info or {}),
            **dataclasses.asdict(train),
            "train_wells": train_wells,
            "validation_wells": val_wells,
            "hardware": _hardware(),
        },
    )
    best = math.inf
    best_model: RefocusModel | None = None
    lr = train.learning_rate
    waited = 0
    val_loss, per_depth = _validate(model, val, depth_um, data_range, train.batch_size, train.weighting)
    history: list[dict[str, Any]] = [
        {"epoch": 0, "steps": 0, "loss": None, "val_loss": val_loss, "learning_rate": lr, "time_s": 0.0}
    ]
    log.info("untrained network: val_loss %.4g", val_loss)
    steps = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(sampler.batch, train.batch_size)
        for epoch in range(1, train.epochs + 1):
            losses = []
            for _ in range(train.steps_per_epoch):
                x, y, input_error = pending.result()
                pending = pool.submit(sampler.batch, train.batch_size)
                weight = _weights(input_error, train.weighting)
                losses.append(float(np.asarray(model.train_on_batch(x, y, sample_weight=weight))))
                steps += 1
            val_loss, per_depth = _validate(model, val, depth_um, data_range, train.batch_size, train.weighting)
            elapsed = time.monotonic() - start
            record = {
                "epoch": epoch,
                "steps": steps,
                "loss": float(np.mean(losses)),
                "val_loss": val_loss,
                "learning_rate": lr,
                "time_s": round(elapsed, 1),
                "val_psnr": per_depth,
            }
            history.append({k: record[k] for k in ("epoch", "steps", "loss", "val_loss", "learning_rate", "time_s")})
            if val_loss < best:
                best, waited = val_loss, 0
                record["improved"] = True
                info = dataclasses.replace(
                    info,
                    training={**info.training, "steps": steps, "epochs_run": epoch, "time_s": round(elapsed, 1)},
                    metrics={"val_loss": val_loss, "val_psnr_by_depth_um": per_depth, "data_range": data_range,
                             "history": history},
                )
                best_model = RefocusModel(model, info)
                save_model(best_model, out)
                info = best_model.info
            else:
                record["improved"] = False
                waited += 1
                if waited >= train.patience and lr > train.min_learning_rate:
                    lr = max(lr * 0.5, train.min_learning_rate)
                    optimizer.learning_rate.assign(lr)
                    waited = 0
            if progress is not None:
                progress(record)
            else:
                log.info(format_progress(record))
            if train.max_time_s is not None and elapsed > train.max_time_s:
                log.info("stopping after %.0f s (max_time_s)", elapsed)
                break
        pending.cancel()
    # Record the full history with the best model.
    from .unet import load_model

    final = load_model(out)
    final.info = dataclasses.replace(final.info, metrics={**final.info.metrics, "history": history})
    save_model(final, out)
    return final


def format_progress(record: dict[str, Any]) -> str:
    """One line per epoch: loss, validation loss and mean PSNR gain, learning rate, time."""
    gains = [v["psnr_output"] - v["psnr_input"] for v in record.get("val_psnr", {}).values()]
    gain = f" val_gain {np.mean(gains):+.2f} dB" if gains else ""
    mark = " *" if record.get("improved") else ""
    return (
        f"epoch {record['epoch']:3d} step {record['steps']:6d} loss {record['loss']:.3e} "
        f"val_loss {record['val_loss']:.3e}{gain} lr {record['learning_rate']:.1e} "
        f"{record['time_s']:.0f}s{mark}"
    )


def train_plate(
    plate: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: UNetConfig | None = None,
    train: TrainConfig | None = None,
    target: str = "ground-truth",
    focal_index: int | None = None,
    depths_um: Sequence[float] | None = None,
    name: str | None = None,
    command: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    overwrite: bool = False,
) -> RefocusModel:
    """Train on an OME-Zarr plate; what ``plate-refocus train`` runs.

    Parameters
    ----------
    plate : path
    out : path (``.keras``)
    config, train : UNetConfig, TrainConfig
    target : {"ground-truth", "focal-plane"}
    focal_index : int, optional
    depths_um : sequence of float, optional
    name : str, optional
    command : str, optional
        The command line, recorded in the metadata.
    progress : callable, optional
    overwrite : bool
        Replace an existing model at ``out`` (see :func:`train_model`).

    Returns
    -------
    RefocusModel
    """
    plate = Path(plate)
    if Path(out).suffix != ".keras":
        raise ValueError(f"out must end in '.keras', got {str(out)!r}")
    prepare_output(out, kind="model", inputs=(plate,), overwrite=overwrite, remove=False)
    images, targets, depth_um = plate_training_pairs(plate, target=target, focal_index=focal_index)
    info = {
        "plate": str(plate),
        "plate_metadata_sha256": _plate_digest(plate),
        "target": target,
        "focal_index": focal_index if target == "focal-plane" else None,
    }
    if command:
        info["command"] = command
    return train_model(
        images,
        targets,
        depth_um,
        out=out,
        config=config,
        train=train,
        depths_um=depths_um,
        name=name,
        training_info=info,
        progress=progress,
        overwrite=overwrite,
    )
