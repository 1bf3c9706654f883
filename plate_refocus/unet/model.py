"""A trained U-Net with its metadata: :class:`ModelInfo`, :class:`RefocusModel` and tiled prediction.

:class:`ModelInfo` is everything needed to use a model file (stored as JSON
beside it, validated on load); :class:`RefocusModel` refocuses planes:
percentile normalisation (:func:`percentile_range`, :func:`normalize`,
:func:`denormalize`), reflection padding to the network's divisor and
prediction on tiles whose windows reach the network's halo [1]_.

References
----------
.. [1] M. Weigert et al., "Content-aware image restoration: pushing the
   limits of fluorescence microscopy", Nature Methods 15, 2018 (CSBDeep:
   percentile normalisation, tiled prediction with a halo).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError, OpticsMismatchWarning
from ..optics import Optics
from .network import UNetConfig

__all__ = [
    "ModelInfo",
    "RefocusModel",
    "normalize",
    "denormalize",
    "percentile_range",
    "FORMAT_VERSION",
]

#: Version of the JSON metadata layout written by :func:`~plate_refocus.unet.save_model`.
FORMAT_VERSION = 1
#: ``run`` refuses a model whose training optics differ from the plate's by more than this fraction
#: in any parameter (NA, wavelength, immersion index, pixel size); closer ones only warn.
OPTICS_TOLERANCE = 0.05


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
    consistency_limit : float, optional
        The largest :func:`~plate_refocus.deconvolve.consistency` at which
        ``--method hybrid`` keeps this model's output, where it was measured
        for the model (it scales with the optics); None: the package's
        :data:`~plate_refocus.deconvolve.CONSISTENCY_LIMIT`.
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
    consistency_limit: float | None = None

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
            "consistency_limit": self.consistency_limit,
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
        limit = data.get("consistency_limit")
        if limit is not None:
            if isinstance(limit, (int, float)) and not isinstance(limit, bool) and math.isfinite(limit) and limit > 0:
                values["consistency_limit"] = float(limit)
            else:
                problems.append(f"consistency_limit must be a positive number or null, got {limit!r}")
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

    def check_optics(self, optics: Optics, *, refuse_beyond: float | None = None) -> bool:
        """Compare ``optics`` with the training optics: warn when they differ, refuse when far apart.

        The network is not told the optics: it learned one objective's blur at
        one pixel size, and on another it restores the wrong blur without
        saying so (on the depth issue's NA 0.45 plates the shipped model lost
        to the input at every depth).

        Parameters
        ----------
        optics : Optics
            The plate's (or the run's) optics.
        refuse_beyond : float, optional
            Raise :class:`~plate_refocus.errors.ModelError` when any parameter
            differs by more than this fraction (``run`` uses
            :data:`OPTICS_TOLERANCE`); below it, and without it, a difference
            above 0.1 % only warns (:class:`OpticsMismatchWarning`).

        Returns
        -------
        bool
            True when they match.
        """
        if not isinstance(optics, Optics):
            raise TypeError(f"optics must be an Optics, got {type(optics).__name__}")
        differ = self.info.optics.differs_from(optics)
        if not differ:
            return True
        trained = {k: self.info.optics.to_dict()[k] for k in differ}
        given = {k: optics.to_dict()[k] for k in differ}
        if refuse_beyond is not None and self.info.optics.differs_from(optics, rtol=refuse_beyond):
            raise ModelError(
                f"model {self.info.name!r} was trained for optics {trained} but the plate has {given} "
                f"(more than {refuse_beyond:.0%} apart) and would restore the wrong blur: fine-tune it on "
                "these optics (`plate-refocus train --init MODEL` with --na/--wavelength/--pixel-size), "
                "or restore without a network (--method rl)"
            )
        warnings.warn(
            f"model {self.info.name!r} was trained for optics {trained} but the data has {given}; "
            "its output may be wrong. Train a model for these optics with "
            "`plate-refocus train` (see --na/--wavelength/--pixel-size).",
            OpticsMismatchWarning,
            stacklevel=2,
        )
        return False

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
