"""The refocusing U-Net's architecture: :class:`UNetConfig` (halo, divisor, FLOPs) and :func:`build_unet`.

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
PyTorch backends of Keras 3. Keras is imported lazily, when a model is built.

References
----------
.. [1] M. Werth and A. Matlock, "Neural network-based microscope defocus
   correction with point spread function recovery", Boston University
   technical report, 2018.
.. [2] O. Ronneberger, P. Fischer, T. Brox, "U-Net: convolutional networks
   for biomedical image segmentation", MICCAI 2015.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["UNetConfig", "build_unet"]


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
