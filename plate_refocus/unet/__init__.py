"""The refocusing U-Net: build it, save and load it with its metadata, predict tiled.

The network is the report's modified U-Net [1]_ [2]_ (see
:mod:`plate_refocus.unet.network`); a model file is a ``.keras`` archive with a
JSON file of the same stem beside it (:class:`ModelInfo`): the optics and
depths it was trained for, the normalisation, the tile halo and divisor, the
training plate and the validation metrics. Prediction normalises by
percentiles and runs on tiles with a halo [3]_.

One job per module:

* :mod:`.network`: :class:`UNetConfig` (halo, divisor, FLOPs) and :func:`build_unet`;
* :mod:`.model`: :class:`ModelInfo`, :class:`RefocusModel` (tiled prediction)
  and the normalisation (:func:`percentile_range`, :func:`normalize`,
  :func:`denormalize`);
* :mod:`.io`: :func:`save_model`, :func:`load_model`, :func:`read_model_info`,
  :func:`default_model_path`, the model-file checks and the capture of
  TensorFlow's start-up noise.

Keras is imported lazily, only inside the functions that build, save or load
a network, so ``import plate_refocus.unet`` does not import it.

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

from .io import (
    default_model_path,
    load_model,
    native_startup_lines_to_log,
    read_model_info,
    save_model,
    shipped_model_paths,
    shipped_optics,
)
from .model import FORMAT_VERSION, ModelInfo, RefocusModel, denormalize, normalize, percentile_range
from .network import UNetConfig, build_unet

__all__ = [
    "UNetConfig",
    "ModelInfo",
    "RefocusModel",
    "build_unet",
    "load_model",
    "save_model",
    "default_model_path",
    "shipped_model_paths",
    "shipped_optics",
    "normalize",
    "denormalize",
    "percentile_range",
    "FORMAT_VERSION",
    "read_model_info",
    "native_startup_lines_to_log",
]
