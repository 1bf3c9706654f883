"""Training a refocusing U-Net: the losses, the Keras fit loop with checkpointing, the model's metadata.

:func:`train_model` trains on (defocused plane -> target) pairs of any
``(well, field, c, z, y, x)`` array and saves the best model;
:func:`train_plate` is the same from an OME-Zarr plate (what
``plate-refocus train`` runs). Keras is imported inside the functions only.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PlateRefocusError
from ..optics import Optics
from ..outputs import prepare_output
from ..unet import ModelInfo, RefocusModel, UNetConfig, build_unet, load_model, save_model
from .config import TrainConfig
from .data import PatchSampler, plate_digest, plate_training_pairs, training_data

__all__ = ["train_model", "train_plate", "format_progress"]

log = logging.getLogger(__name__)

_MIN_ERROR = 1e-6  # floor of the input error that weights a patch (normalised units)


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
    """The machine a model was trained on (CPU model and count, platform, Keras backend), for its metadata."""
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


def _weights(input_error: np.ndarray, weighting: str) -> np.ndarray | None:
    """Per-patch loss weights: ``1 / input error`` for ``weighting="relative"``, None for ``"none"``."""
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
    init: str | os.PathLike | None = None,
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
    init : path, optional
        Fine-tune this model (e.g. the shipped one) instead of starting from
        random weights: its architecture is kept (``config`` must match it or
        be left out), its weights are the start, and its name and hash are
        recorded in the new model's training metadata.

    Returns
    -------
    RefocusModel
        The model with the best validation loss, as saved to ``out``.
    """
    start_from = _initial_model(init, config)
    if start_from is not None:
        config = start_from.info.config
    config = UNetConfig() if config is None else config
    train = TrainConfig() if train is None else train
    out, depth_um, planes = _check_arguments(images, depth_um, out, config, train, depths_um, overwrite)
    if optics is None:
        optics = Optics.from_dict(images.attrs["optics"]) if "optics" in images.attrs else Optics()
    if data_range is None:
        from ..plate import data_range as plate_data_range

        data_range = plate_data_range(images.attrs.get("camera"), images.dtype)

    import keras

    start = time.monotonic()
    keras.utils.set_random_seed(train.seed)
    if keras.backend.backend() == "tensorflow":  # reproducible kernels for a seed
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    sampler, val, train_wells, val_wells = training_data(images, targets, planes, train)
    model = start_from.keras_model if start_from is not None else build_unet(config, seed=train.seed)
    if start_from is not None:
        training_info = {**(training_info or {}), "init": {
            "name": start_from.info.name, "sha256": start_from.info.sha256,
            "optics": start_from.info.optics.to_dict(), "depths_um": list(start_from.info.depths_um)}}
    optimizer = keras.optimizers.Adam(learning_rate=train.learning_rate)
    model.compile(optimizer=optimizer, loss=_mse_loss if train.loss == "mse" else _ssim_mse_loss)
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
    history = _fit(
        model,
        optimizer,
        sampler,
        val,
        info,
        out=out,
        train=train,
        depth_um=depth_um,
        data_range=data_range,
        start=start,
        progress=progress,
    )
    # Record the full history with the best model.
    final = load_model(out)
    final.info = dataclasses.replace(final.info, metrics={**final.info.metrics, "history": history})
    save_model(final, out)
    return final


def _initial_model(init: Any, config: UNetConfig | None) -> RefocusModel | None:
    """The model to fine-tune, checked against an explicitly given architecture."""
    from ..errors import ModelError

    if init is None:
        return None
    model = load_model(init)
    if config is not None and config != model.info.config:
        raise ModelError(
            f"--init {str(init)!r} has the architecture {model.info.config}, not {config}; leave "
            "the network flags out to fine-tune it as it is"
        )
    return model


def _check_arguments(
    images,
    depth_um: Sequence[float],
    out: Any,
    config: Any,
    train: Any,
    depths_um: Sequence[float] | None,
    overwrite: bool,
) -> tuple[Path, np.ndarray, list[int]]:
    """:func:`train_model`'s checks, before anything is computed; returns ``out``, ``depth_um`` and the planes."""
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
        return out, depth_um, list(range(len(depth_um)))
    planes = []
    for d in depths_um:
        hits = np.flatnonzero(np.isclose(depth_um, abs(float(d)), atol=1e-6))
        if not len(hits):
            raise PlateRefocusError(
                f"depth {d!r} um is not in the plate; its planes are at {sorted(set(depth_um.round(6).tolist()))!r} um"
            )
        planes.extend(int(h) for h in hits)
    return out, depth_um, sorted(set(planes))


def _fit(
    model,
    optimizer,
    sampler: PatchSampler,
    val: dict[str, np.ndarray],
    info: ModelInfo,
    *,
    out: Path,
    train: TrainConfig,
    depth_um: np.ndarray,
    data_range: float,
    start: float,
    progress: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """The Keras fit loop: epochs of ``train_on_batch`` on prefetched batches, validation after each.

    The model is saved to ``out`` (:func:`_checkpoint`) after every epoch that
    improves the validation loss; the learning rate is halved after
    ``train.patience`` epochs without improvement. Returns the history, one
    record per epoch (epoch 0: the untrained network).
    """
    best = math.inf
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
            record["improved"] = val_loss < best
            if record["improved"]:
                best, waited = val_loss, 0
                info = _checkpoint(model, info, out, record, data_range, history)
            else:
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
    return history


def _checkpoint(
    model,
    info: ModelInfo,
    out: Path,
    record: dict[str, Any],
    data_range: float,
    history: list[dict[str, Any]],
) -> ModelInfo:
    """Save the model of an improved epoch to ``out`` with its metadata so far; returns the info saved."""
    info = dataclasses.replace(
        info,
        training={
            **info.training,
            "steps": record["steps"],
            "epochs_run": record["epoch"],
            "time_s": record["time_s"],
        },
        metrics={
            "val_loss": record["val_loss"],
            "val_psnr_by_depth_um": record["val_psnr"],
            "data_range": data_range,
            "history": history,
        },
    )
    best_model = RefocusModel(model, info)
    save_model(best_model, out)
    return best_model.info


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
    init: str | os.PathLike | None = None,
) -> RefocusModel:
    """Train (or with ``init`` fine-tune) on an OME-Zarr plate; what ``plate-refocus train`` runs.

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
    init : path, optional
        A model to fine-tune (see :func:`train_model`), e.g. the shipped model
        on a facility's own z-stacks with ``target="focal-plane"``.

    Returns
    -------
    RefocusModel
    """
    plate = Path(plate)
    if Path(out).suffix != ".keras":
        raise ValueError(f"out must end in '.keras', got {str(out)!r}")
    prepare_output(out, kind="model", inputs=(plate,) + ((init,) if init else ()),
                   overwrite=overwrite, remove=False)
    images, targets, depth_um = plate_training_pairs(plate, target=target, focal_index=focal_index)
    info = {
        "plate": str(plate),
        "plate_metadata_sha256": plate_digest(plate),
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
        init=init,
    )
