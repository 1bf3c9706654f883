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

One job per module: :mod:`.config` (:class:`TrainConfig`), :mod:`.data` (the
well split, the pairs, :class:`PatchSampler`, the validation set) and
:mod:`.loop` (the losses, the fit loop with checkpointing, :func:`train_model`,
:func:`train_plate`); :mod:`.refiner` fine-tunes ``hybrid``'s RL refiner on a
plate (:func:`fine_tune_refiner`, ``plate-refocus train-refiner``).
"""

from __future__ import annotations

from .config import TrainConfig
from .data import PatchSampler, plate_training_pairs, split_wells
from .loop import format_progress, train_model, train_plate
from .refiner import fine_tune_refiner

__all__ = [
    "TrainConfig",
    "PatchSampler",
    "train_model",
    "train_plate",
    "plate_training_pairs",
    "split_wells",
    "format_progress",
    "fine_tune_refiner",
]
