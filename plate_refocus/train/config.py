"""How to train a refocusing U-Net: :class:`TrainConfig` (everything that is not the architecture or the data)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrainConfig"]

_LOSSES = ("mse", "ssim")
_WEIGHTINGS = ("relative", "none")


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
