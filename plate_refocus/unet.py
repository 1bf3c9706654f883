"""The refocusing U-Net: build it, save and load it with its metadata, predict tiled.

The network is the report's modified U-Net [1]_: per level two 3x3
convolutions with ReLU and 'same' padding, 2x2 max pooling down, 2x2
transposed convolutions up with skip concatenation, and a final linear
layer to one channel. Two changes, both options of :class:`UNetConfig`:

* ``residual=True``: the network predicts a correction that is *added* to its
  (normalised) input, so an image that is already sharp passes through
  almost unchanged;
* ``full_resolution="patch"``: the full-resolution level is a single 2x2
  stride-2 convolution in and a 2x2 stride-2 transposed convolution out (a
  learned space-to-depth and back) instead of two 3x3 convolutions at full
  resolution, which are most of the cost of a U-Net. At the report's
  sampling the optical cutoff (0.96 cycles/um) is well below the camera's
  Nyquist frequency (1.67 cycles/um), and a 2x2 space-to-depth with at least
  four channels loses no information, so the 3x3 convolutions can all run
  at half resolution or below.

Only Keras layers that safe-mode loading accepts are used and no backend
call appears in the model, so a model file runs under the TensorFlow, JAX or
PyTorch backends of Keras 3. Keras is imported lazily, when a model is built
or loaded.

A model file is a ``.keras`` archive with a JSON file of the same stem
beside it (:class:`ModelInfo`): the optics and depths it was trained for,
the normalisation, the tile halo and divisor, the training plate and the
validation metrics. The JSON records the SHA-256 of the archive, so weights
and metadata cannot drift apart silently.

References
----------
.. [1] M. Werth and A. Matlock, "Neural network-based microscope defocus
   correction with point spread function recovery", Boston University
   technical report, 2018.
.. [2] O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks
   for biomedical image segmentation", MICCAI 2015.
.. [3] M. Weigert et al., "Content-aware image restoration: pushing the
   limits of fluorescence microscopy", Nature Methods 15, 2018 (CSBDeep:
   percentile normalisation, tiled prediction with a halo).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError, ModelNotFoundError, OpticsMismatchWarning
from .optics import Optics

__all__ = [
    "UNetConfig",
    "ModelInfo",
    "RefocusModel",
    "build_unet",
    "load_model",
    "save_model",
    "default_model_path",
    "normalize",
    "denormalize",
    "percentile_range",
    "FORMAT_VERSION",
]

log = logging.getLogger(__name__)

#: Version of the JSON metadata layout written by :func:`save_model`.
FORMAT_VERSION = 1

_DEFAULT_MODEL = "default.keras"


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a refocusing U-Net.

    Parameters
    ----------
    depth : int
        Number of 2x2 poolings (the report's 5-level U-Net has ``depth=4``).
    filters : int
        Channels at the full-resolution level; they double at every level down.
    full_resolution : {"conv", "patch"}
        ``"conv"``: the full-resolution level is two 3x3 convolutions as in the
        report. ``"patch"``: a 2x2 stride-2 convolution in and a 2x2 stride-2
        transposed convolution out, so all 3x3 convolutions run at half
        resolution or below (several times cheaper).
    residual : bool
        Add the network's output to its input (predict a correction).
    kernel_size : int
        Odd size of the square convolution kernels.
    """

    depth: int = 4
    filters: int = 8
    full_resolution: str = "patch"
    residual: bool = True
    kernel_size: int = 3

    def __post_init__(self) -> None:
        for name in ("depth", "filters", "kernel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"UNetConfig.{name} must be an int, got {value!r}")
        if not 1 <= self.depth <= 7:
            raise ValueError(f"UNetConfig.depth must be between 1 and 7, got {self.depth!r}")
        if self.filters < 1:
            raise ValueError(f"UNetConfig.filters must be positive, got {self.filters!r}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"UNetConfig.kernel_size must be odd, got {self.kernel_size!r}")
        if self.full_resolution not in ("conv", "patch"):
            raise ValueError(
                f"UNetConfig.full_resolution must be 'conv' or 'patch', got {self.full_resolution!r}"
            )
        if not isinstance(self.residual, bool):
            raise TypeError(f"UNetConfig.residual must be a bool, got {self.residual!r}")

    @property
    def divisor(self) -> int:
        """Tile sizes and tile offsets must be multiples of this (``2 ** depth``)."""
        return 2**self.depth

    @property
    def receptive_margin(self) -> int:
        """Pixels on each side that can influence one output pixel.

        Walks the longest path through the network (down to the bottom
        level and back up). At scale ``s`` (``2**level``) a ``k x k``
        convolution reaches ``s (k - 1) / 2`` pixels further, a 2x2 pooling
        or stride-2 convolution ``s`` pixels, and a 2x2 stride-2 transposed
        convolution back to scale ``s`` another ``s`` pixels.
        """
        half = (self.kernel_size - 1) // 2
        first = 1 if self.full_resolution == "patch" else 0
        # 2x2 stride-2 convolution in and transposed convolution out, at scale 1
        margin = 2 if first else 0
        for level in range(first, self.depth):
            s = 2**level
            margin += 2 * half * s + s  # two convolutions and the pooling on the way down
            margin += s + 2 * half * s  # transposed convolution and two convolutions up
        margin += 2 * half * 2**self.depth  # bottom level
        return margin

    @property
    def halo(self) -> int:
        """Context added on each side of a tile: the margin rounded up to the divisor."""
        d = self.divisor
        return int(math.ceil(self.receptive_margin / d) * d)

    def widths(self) -> list[int]:
        """Channels per level, from full resolution (level 0) to the bottom."""
        return [self.filters * 2**level for level in range(self.depth + 1)]

    def flops_per_pixel(self) -> float:
        """Floating-point operations (2 per multiply-add) per output pixel.

        Counts convolutions, transposed convolutions and the final layer;
        ReLU, pooling and concatenation are a rounding error beside them.
        """
        k2 = self.kernel_size**2
        w = self.widths()
        total = 0.0
        first = 0
        if self.full_resolution == "patch":
            # stem 1 -> w[1] channels on 2x2 blocks, output w[1] -> 1 at full resolution
            total += 2 * 4 * w[1] / 4 + 2 * w[1]
            first = 1
            prev = w[1]
        else:
            prev = 1
        for level in range(first, self.depth + 1):
            area = 4.0**-level
            down = 2 * k2 * (prev * w[level] + w[level] * w[level])
            total += down * area
            prev = w[level]
            if level < self.depth:
                up = 2 * w[level + 1] * w[level]  # 2x2 stride-2 transposed conv, one tap per pixel
                up += 2 * k2 * (2 * w[level] * w[level] + w[level] * w[level])
                total += up * area
        if self.full_resolution == "conv":
            total += 2 * w[0]  # final 1x1 convolution
        return total

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"UNetConfig.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UNetConfig keys {unknown!r}; expected some of {sorted(known)!r}")
        return cls(**data)


def build_unet(config: UNetConfig = UNetConfig(), *, name: str = "refocus_unet", seed: int | None = None):
    """Build the Keras model for ``config`` (inputs of any size divisible by ``config.divisor``).

    Parameters
    ----------
    config : UNetConfig
    name : str
    seed : int, optional
        Seed for the weight initialisers, so that a build is reproducible.

    Returns
    -------
    keras.Model
        Input ``(batch, Y, X, 1)`` float32 normalised images, output the same shape.
    """
    if not isinstance(config, UNetConfig):
        raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
    import keras
    from keras import layers

    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    k = config.kernel_size
    w = config.widths()

    def conv(x, filters, label):
        return layers.Conv2D(filters, k, padding="same", activation="relu", name=label)(x)

    inputs = keras.Input(shape=(None, None, 1), name="image")
    skips = []
    x = inputs
    first = 0
    if config.full_resolution == "patch":
        x = layers.Conv2D(w[1], 2, strides=2, activation="relu", name="patch_in")(x)
        first = 1
    for level in range(first, config.depth):
        x = conv(x, w[level], f"down{level}_conv1")
        x = conv(x, w[level], f"down{level}_conv2")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = conv(x, w[config.depth], "bottom_conv1")
    x = conv(x, w[config.depth], "bottom_conv2")
    for level in reversed(range(first, config.depth)):
        x = layers.Conv2DTranspose(w[level], 2, strides=2, name=f"up{level}_upconv")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([skips[level - first], x])
        x = conv(x, w[level], f"up{level}_conv1")
        x = conv(x, w[level], f"up{level}_conv2")
    # A residual network starts as the identity: its correction layer starts at zero.
    last = {"kernel_initializer": "zeros"} if config.residual else {}
    if config.full_resolution == "patch":
        x = layers.Conv2DTranspose(1, 2, strides=2, name="out", **last)(x)
    else:
        x = layers.Conv2D(1, 1, name="out", **last)(x)
    if config.residual:
        x = layers.Add(name="residual")([inputs, x])
    return keras.Model(inputs, x, name=name)


# --- normalisation ----------------------------------------------------------------------------

_EPS = 1e-6


def percentile_range(image: np.ndarray, percentiles: Sequence[float] = (1.0, 99.8)) -> tuple[float, float]:
    """Low and high intensity percentiles of an image, with ``high > low``.

    Parameters
    ----------
    image : (Y, X) array_like
    percentiles : (float, float)

    Returns
    -------
    (low, high) : tuple of float
        ``high`` is raised to ``low + max(1e-6 * |low|, 1e-6)`` for a flat image,
        so the normalisation never divides by zero.
    """
    image = np.asarray(image)
    if image.dtype in (np.uint8, np.uint16) and image.size > 1:
        lo, hi = _integer_percentiles(image, percentiles)
    else:
        lo, hi = np.percentile(np.asarray(image, dtype=np.float64), percentiles)
    hi = max(float(hi), float(lo) + max(_EPS * abs(float(lo)), _EPS))
    return float(lo), hi


def _integer_percentiles(image: np.ndarray, percentiles: Sequence[float]) -> np.ndarray:
    """``np.percentile`` (linear method) of a uint8/uint16 image from its histogram.

    Camera planes are integers: counting them (``bincount``) and reading the two
    order statistics around each rank gives the same numbers as sorting, about
    ten times faster, which matters where the network itself is fast (a GPU).
    """
    cumulative = np.cumsum(np.bincount(image.ravel()))
    rank = (image.size - 1) * np.asarray(percentiles, dtype=np.float64) / 100.0
    below = np.floor(rank)
    # the k-th smallest value (0-based) is the first bin whose cumulative count exceeds k
    lower = np.searchsorted(cumulative, below, side="right").astype(np.float64)
    upper = np.searchsorted(cumulative, np.minimum(below + 1, image.size - 1), side="right")
    return lower + (rank - below) * (upper - lower)


def normalize(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(image - low) / (high - low)`` as float32: the network's input scale."""
    return ((np.asarray(image, dtype=np.float32) - np.float32(low)) / np.float32(high - low)).astype(
        np.float32, copy=False
    )


def denormalize(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Inverse of :func:`normalize`: back onto the input's intensity scale, float32."""
    return (np.asarray(image, dtype=np.float32) * np.float32(high - low) + np.float32(low)).astype(
        np.float32, copy=False
    )


# --- metadata ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """Everything needed to use a model file, stored as JSON beside it.

    Parameters
    ----------
    name : str
    config : UNetConfig
    optics : Optics
        The optics of the training data; applying the model to other optics warns.
    depths_um : tuple of float
        Defocus distances it was trained on.
    norm_percentiles : (float, float)
        Percentiles mapped to 0 and 1 before the network and back after it.
    tile : int
        Default tile core size in pixels (a multiple of ``divisor``); images
        up to ``max_tile`` per side are processed as a single tile.
    max_tile : int
    sha256 : str
        Hash of the ``.keras`` file (filled in by :func:`save_model`).
    training : dict
        Plate, plate hash, seed, steps, time, hardware, command line.
    metrics : dict
        Validation metrics.
    package_version, keras_version : str
    """

    name: str
    config: UNetConfig
    optics: Optics
    depths_um: tuple[float, ...]
    norm_percentiles: tuple[float, float] = (1.0, 99.8)
    tile: int = 512
    max_tile: int = 1024
    sha256: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    package_version: str = ""
    keras_version: str = ""

    @property
    def halo(self) -> int:
        """Context around each tile, from the architecture (see :attr:`UNetConfig.halo`)."""
        return self.config.halo

    @property
    def divisor(self) -> int:
        """Tile sizes and offsets are multiples of this."""
        return self.config.divisor

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with the derived halo and divisor written out for readers."""
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "sha256": self.sha256,
            "config": self.config.to_dict(),
            "optics": self.optics.to_dict(),
            "depths_um": [float(d) for d in self.depths_um],
            "norm_percentiles": [float(p) for p in self.norm_percentiles],
            "halo": self.halo,
            "divisor": self.divisor,
            "receptive_margin": self.config.receptive_margin,
            "flops_per_pixel": self.config.flops_per_pixel(),
            "tile": self.tile,
            "max_tile": self.max_tile,
            "training": self.training,
            "metrics": self.metrics,
            "package_version": self.package_version,
            "keras_version": self.keras_version,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "model metadata") -> ModelInfo:
        """Validate and read :meth:`to_dict` output; every problem is listed in one :class:`ModelError`."""
        if not isinstance(data, dict):
            raise ModelError(f"{source}: expected a JSON object, got {type(data).__name__}")
        problems: list[str] = []
        values: dict[str, Any] = {}
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            problems.append(f"format_version is {version!r}, this version reads {FORMAT_VERSION!r}")
        for key in ("name", "config", "optics", "depths_um"):
            if key not in data:
                problems.append(f"missing key {key!r}")
        if isinstance(data.get("name"), str):
            values["name"] = data["name"]
        elif "name" in data:
            problems.append(f"name must be a string, got {data['name']!r}")
        for key, kind in (("config", UNetConfig), ("optics", Optics)):
            if key in data:
                try:
                    values[key] = kind.from_dict(data[key])
                except (TypeError, ValueError) as error:
                    problems.append(f"{key}: {error}")
        if "depths_um" in data:
            try:
                depths = tuple(float(d) for d in data["depths_um"])
                if not depths or not all(math.isfinite(d) for d in depths):
                    raise ValueError
                values["depths_um"] = depths
            except (TypeError, ValueError):
                problems.append(f"depths_um must be a non-empty list of numbers, got {data['depths_um']!r}")
        if "norm_percentiles" in data:
            p = data["norm_percentiles"]
            try:
                lo, hi = (float(v) for v in p)
                if not 0 <= lo < hi <= 100:
                    raise ValueError
                values["norm_percentiles"] = (lo, hi)
            except (TypeError, ValueError):
                problems.append(f"norm_percentiles must be two numbers 0 <= low < high <= 100, got {p!r}")
        config = values.get("config")
        for key in ("tile", "max_tile"):
            if key in data:
                v = data[key]
                if not isinstance(v, int) or isinstance(v, bool) or v <= 0 or (
                    config is not None and v % config.divisor
                ):
                    problems.append(f"{key} must be a positive multiple of the divisor, got {v!r}")
                else:
                    values[key] = v
        if config is not None:
            for key, expected in (("halo", config.halo), ("divisor", config.divisor)):
                if key in data and data[key] != expected:
                    problems.append(f"{key} is {data[key]!r} but the config implies {expected!r}")
        for key in ("sha256", "package_version", "keras_version"):
            if key in data:
                if isinstance(data[key], str):
                    values[key] = data[key]
                else:
                    problems.append(f"{key} must be a string, got {data[key]!r}")
        for key in ("training", "metrics"):
            if key in data:
                if isinstance(data[key], dict):
                    values[key] = data[key]
                else:
                    problems.append(f"{key} must be an object, got {data[key]!r}")
        if problems:
            raise ModelError(
                f"{source} is not valid: " + "; ".join(problems)
                + ". Re-save the model with plate_refocus.unet.save_model or retrain it."
            )
        return cls(**values)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _metadata_path(path: Path) -> Path:
    return path.with_suffix(".json")


def default_model_path() -> Path:
    """Path of the model shipped with the package (``plate_refocus/models/default.keras``)."""
    return Path(str(resources.files("plate_refocus") / "models" / _DEFAULT_MODEL))


# --- the model --------------------------------------------------------------------------------


class RefocusModel:
    """A trained U-Net with its metadata; turns defocused planes into refocused ones.

    Parameters
    ----------
    keras_model : keras.Model
    info : ModelInfo

    Notes
    -----
    Prediction normalises each image by its own percentiles
    (``info.norm_percentiles``), pads it by reflection to a multiple of
    ``info.divisor``, and runs the network on tiles whose input windows are
    aligned to ``divisor`` and reach at least ``info.halo`` pixels (the
    receptive margin of the network) past the part of the tile that is kept,
    or to the edge of the padded image. Every kept pixel therefore sees the
    same context as in a whole-image pass, and the result does not depend on
    the tile size (to float rounding). Tiles are run in batches.
    """

    def __init__(self, keras_model, info: ModelInfo):
        if not isinstance(info, ModelInfo):
            raise TypeError(f"info must be a ModelInfo, got {type(info).__name__}")
        self.keras_model = keras_model
        self.info = info

    def __repr__(self) -> str:
        c = self.info.config
        return (
            f"RefocusModel(name={self.info.name!r}, depth={c.depth}, filters={c.filters}, "
            f"full_resolution={c.full_resolution!r}, residual={c.residual}, halo={self.info.halo})"
        )

    # -- checks --

    def check_optics(self, optics: Optics) -> bool:
        """Warn (:class:`OpticsMismatchWarning`) when ``optics`` differ from the training optics.

        Returns
        -------
        bool
            True when they match.
        """
        if not isinstance(optics, Optics):
            raise TypeError(f"optics must be an Optics, got {type(optics).__name__}")
        differ = self.info.optics.differs_from(optics)
        if differ:
            trained = {k: self.info.optics.to_dict()[k] for k in differ}
            given = {k: optics.to_dict()[k] for k in differ}
            warnings.warn(
                f"model {self.info.name!r} was trained for optics {trained} but the data has {given}; "
                "its output may be wrong. Train a model for these optics with "
                "`plate-refocus train` (see --na/--wavelength/--pixel-size).",
                OpticsMismatchWarning,
                stacklevel=2,
            )
        return not differ

    # -- prediction --

    def predict(self, image: np.ndarray, *, tile: int | None = None, batch_size: int = 4) -> np.ndarray:
        """Refocus one plane.

        Parameters
        ----------
        image : (Y, X) array_like of real numbers
            A raw plane (any intensity scale, e.g. uint16 ADU).
        tile : int, optional
            Core tile size in pixels (rounded up to ``info.divisor``). By
            default images up to ``info.max_tile`` per side are one tile and
            larger ones are cut into tiles of ``info.tile``.
        batch_size : int
            Tiles per network call.

        Returns
        -------
        (Y, X) ndarray of float32
            On the input's intensity scale.
        """
        image = self._check_stack(image, ndim=2)
        return self.predict_batch(image[None], tile=tile, batch_size=batch_size)[0]

    def predict_batch(
        self, images: np.ndarray, *, tile: int | None = None, batch_size: int = 4
    ) -> np.ndarray:
        """Refocus a stack of planes of the same shape (each normalised on its own).

        Parameters
        ----------
        images : (N, Y, X) array_like of real numbers
        tile : int, optional
        batch_size : int

        Returns
        -------
        (N, Y, X) ndarray of float32
        """
        images = self._check_stack(images, ndim=3)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if tile is not None and (not isinstance(tile, int) or isinstance(tile, bool) or tile < 1):
            raise ValueError(f"tile must be a positive int or None, got {tile!r}")
        ranges = [percentile_range(im, self.info.norm_percentiles) for im in images]
        normalised = np.stack([normalize(im, lo, hi) for im, (lo, hi) in zip(images, ranges, strict=True)])
        out = self.predict_normalized(normalised, tile=tile, batch_size=batch_size)
        return np.stack([denormalize(o, lo, hi) for o, (lo, hi) in zip(out, ranges, strict=True)])

    def predict_normalized(
        self, images: np.ndarray, *, tile: int | None = None, batch_size: int = 4
    ) -> np.ndarray:
        """The network on already normalised planes, tiled; ``(N, Y, X)`` float32 in and out."""
        images = np.asarray(images, dtype=np.float32)
        n, ny, nx = images.shape
        d = self.info.divisor
        py, px = _round_up(ny, d), _round_up(nx, d)
        padded = np.pad(images, ((0, 0), (0, py - ny), (0, px - nx)), mode="symmetric")
        if tile is None:
            core = self.info.tile if max(py, px) > self.info.max_tile else max(py, px)
        else:
            core = _round_up(tile, d)
        windows_y = _windows(py, core, self.info.halo, d)
        windows_x = _windows(px, core, self.info.halo, d)
        jobs = [(i, wy, wx) for i in range(n) for wy in windows_y for wx in windows_x]
        out = np.empty((n, py, px), dtype=np.float32)
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            batch = np.stack(
                [padded[i, wy[0] : wy[0] + wy[1], wx[0] : wx[0] + wx[1]] for i, wy, wx in chunk]
            )[..., None]
            result = np.asarray(self.keras_model.predict_on_batch(batch), dtype=np.float32)[..., 0]
            for r, (i, wy, wx) in zip(result, chunk, strict=True):
                (y0, _, ky0, ky1), (x0, _, kx0, kx1) = wy, wx
                out[i, ky0:ky1, kx0:kx1] = r[ky0 - y0 : ky1 - y0, kx0 - x0 : kx1 - x0]
        return out[:, :ny, :nx]

    @staticmethod
    def _check_stack(images: Any, *, ndim: int) -> np.ndarray:
        array = np.asarray(images)
        what = "image (Y, X)" if ndim == 2 else "images (N, Y, X)"
        if array.ndim != ndim:
            raise ValueError(f"{what} must have {ndim} dimensions, got shape {array.shape!r}")
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise TypeError(f"{what} must be real numbers, got dtype {array.dtype!r}")
        if min(array.shape[-2:]) < 2:
            raise ValueError(f"{what} must be at least 2x2 pixels, got shape {array.shape!r}")
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(f"{what} contains NaN or infinite values; fill or mask them first")
        return array


def _round_up(n: int, d: int) -> int:
    return int(math.ceil(n / d) * d)


def _windows(size: int, core: int, halo: int, divisor: int) -> list[tuple[int, int, int, int]]:
    """Input windows ``(start, length, keep_start, keep_stop)`` covering ``range(size)``.

    ``size`` and ``core`` are multiples of ``divisor``. Each window is
    ``core + 2 * halo`` long (or the whole axis when that is shorter), starts
    at a multiple of ``divisor``, and reaches ``halo`` past its kept range or
    to the edge of the axis.
    """
    length = core + 2 * halo
    if length >= size:
        return [(0, size, 0, size)]
    count = math.ceil(size / core)
    # Even cores, each a multiple of the divisor.
    step = _round_up(math.ceil(size / count), divisor)
    windows = []
    for keep_start in range(0, size, step):
        keep_stop = min(keep_start + step, size)
        start = min(max(keep_start - halo, 0), size - length)
        windows.append((start, length, keep_start, keep_stop))
    return windows


# --- files ------------------------------------------------------------------------------------


def save_model(model: RefocusModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as ``path`` (``.keras``) and its metadata as ``path`` with ``.json``.

    Parameters
    ----------
    model : RefocusModel
    path : str or path-like
        Must end in ``.keras``.

    Returns
    -------
    Path
        The ``.keras`` path. ``model.info`` is replaced by one that carries
        the file's SHA-256 and the package and Keras versions. Only the
        architecture and weights are written (no optimizer state).
    """
    if not isinstance(model, RefocusModel):
        raise TypeError(f"model must be a RefocusModel, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in '.keras', got {str(path)!r}")
    import keras

    from . import __version__

    path.parent.mkdir(parents=True, exist_ok=True)
    keras_model = model.keras_model
    if getattr(keras_model, "optimizer", None) is not None:
        # A compiled model would carry its optimizer state (twice the weights) and its loss:
        # save an uncompiled copy, which is all that prediction needs.
        keras_model = keras.Model.from_config(keras_model.get_config())
        keras_model.set_weights(model.keras_model.get_weights())
    keras_model.save(path)
    info = dataclasses.replace(
        model.info,
        sha256=_sha256(path),
        package_version=__version__,
        keras_version=keras.__version__,
    )
    _metadata_path(path).write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    model.info = info
    return path


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The validated metadata of a model file, without loading the weights (or Keras)."""
    path = Path(path)
    meta = _metadata_path(path)
    if not meta.exists():
        raise ModelError(
            f"model {str(path)!r} has no metadata file {str(meta)!r}; a model file needs its JSON "
            "beside it (written by plate_refocus.unet.save_model and `plate-refocus train`)"
        )
    try:
        data = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelError(f"model metadata {str(meta)!r} is not valid JSON ({error}); re-save the model") from None
    return ModelInfo.from_dict(data, source=f"model metadata {str(meta)!r}")


def load_model(path: str | os.PathLike | None = None) -> RefocusModel:
    """Load a refocusing model and its metadata, in Keras safe mode.

    Parameters
    ----------
    path : str or path-like, optional
        A ``.keras`` file with its ``.json`` beside it; by default the model
        shipped with the package (:func:`default_model_path`).

    Returns
    -------
    RefocusModel

    Raises
    ------
    ModelNotFoundError
        The file does not exist.
    ModelError
        The metadata is missing or invalid, does not match the file's hash,
        or the file is corrupt or holds code (e.g. a ``Lambda`` layer) that
        safe mode refuses to run.
    """
    if path is None:
        path = default_model_path()
        if not path.exists():
            raise ModelNotFoundError(
                f"the default model {str(path)!r} is missing from this installation; "
                "reinstall plate-refocus or pass a model with --model / load_model(path)"
            )
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(
            f"model file {str(path)!r} does not exist; pass the path of a .keras file written by "
            "`plate-refocus train`, or leave it out to use the shipped default model"
        )
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise ModelError(
            f"model file {str(path)!r} is not a Keras 3 '.keras' archive (corrupt or another "
            "format); retrain it or copy it again"
        )
    info = read_model_info(path)
    digest = _sha256(path)
    if info.sha256 and info.sha256 != digest:
        raise ModelError(
            f"model file {str(path)!r} has SHA-256 {digest[:12]}... but its metadata says "
            f"{info.sha256[:12]}...; the weights and the JSON do not belong together"
        )
    with native_startup_lines_to_log():
        import keras

        try:
            keras_model = keras.models.load_model(path, compile=False, safe_mode=True)
        except Exception as error:  # noqa: BLE001 - Keras raises many kinds for bad archives
            raise ModelError(
                f"cannot load model file {str(path)!r} in Keras safe mode: {error}. Files with "
                "Lambda layers or custom code are refused; use a model written by `plate-refocus train`"
            ) from error
    _check_io(keras_model, path)
    return RefocusModel(keras_model, info)


def _check_io(keras_model: Any, path: Path) -> None:
    """Refuse a network that cannot refocus planes: one (Y, X, 1) input of any size, one channel out."""
    problems = []
    inputs, outputs = list(keras_model.inputs), list(keras_model.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        problems.append(f"{len(inputs)} inputs and {len(outputs)} outputs (needs one of each)")
    else:
        shape_in, shape_out = tuple(inputs[0].shape), tuple(outputs[0].shape)
        if len(shape_in) != 4 or shape_in[-1] != 1:
            problems.append(f"input shape {shape_in} (needs (batch, Y, X, 1): one channel)")
        elif any(n is not None for n in shape_in[1:3]):
            problems.append(f"input shape {shape_in} fixes the image size (needs (None, None, None, 1)"
                            ": a fully convolutional network that takes any tile)")
        if len(shape_out) != 4 or shape_out[-1] != 1:
            problems.append(f"output shape {shape_out} (needs (batch, Y, X, 1): one channel)")
    if problems:
        raise ModelError(
            f"model file {str(path)!r} does not fit plate-refocus: " + "; ".join(problems)
            + ". Use a model written by `plate-refocus train`."
        )


#: TensorFlow's native start-up lines: absl INFO/WARNING records, its banner, the CPU-feature
#: hint, and the CUDA probes that fail on every machine without a GPU driver.
_STARTUP_NOISE = re.compile(
    r"^(?:[IW]\d{4} |WARNING: All log messages before absl::InitializeLog|To enable the following "
    r"instructions|E\d{4} .*(?:cuInit|Unable to register cu\w+ factory))"
)


@contextlib.contextmanager
def native_startup_lines_to_log() -> Any:
    """Send TensorFlow's native start-up lines to this module's logger instead of the terminal.

    TensorFlow's C++ code prints a dozen lines (oneDNN, CPU features, "could
    not find cuda drivers", "failed call to cuInit") straight to file
    descriptor 2 when it starts, ignoring ``TF_CPP_MIN_LOG_LEVEL`` (TensorFlow
    issue #100442), once per Dask worker. While Keras loads, descriptor 2 is
    captured; those lines go to the ``plate_refocus.unet`` logger at DEBUG
    and every other line is written back to stderr unchanged. Set
    ``PLATE_REFOCUS_TF_LOGS=1`` (inherited by local workers) to leave stderr alone.
    """
    if os.environ.get("PLATE_REFOCUS_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if _STARTUP_NOISE.match(line):
                    log.debug("TensorFlow: %s", line)
                elif line.strip():
                    print(line, file=sys.stderr)
