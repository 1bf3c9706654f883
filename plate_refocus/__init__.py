"""Refocus whole high-content screening plates and recover the defocus PSF per well.

The public surface is re-exported here; heavy modules (Keras, the pipeline)
are imported only when their names are first used, so ``import plate_refocus``
and ``plate-refocus info`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ClusterError,
    IncompleteResultsWarning,
    IngestError,
    ModelError,
    ModelNotFoundError,
    NotAPlateError,
    NotResultsError,
    OpticsMismatchWarning,
    OutputExistsError,
    PlateLayoutError,
    PlateNotFoundError,
    PlateRefocusError,
    ResultsIncompleteError,
    ResultsNotFoundError,
)

# Imported eagerly (it needs only NumPy): the function shares its module's name, and a lazy
# import would leave `plate_refocus.ingest` bound to the module once anything imports it.
from .ingest import ingest
from .optics import Optics, defocus_otf, defocus_psf, radial_otf

__version__ = "0.1.0"

# name -> module that defines it; filled in as modules land.
_LAZY = {
    "open_plate": "plate",
    "write_plate": "plate",
    "open_ground_truth": "plate",
    "plate_info": "plate",
    "simulate_plate": "simulate",
    "simulate_field": "simulate",
    "simulate_objects": "simulate",
    "Camera": "simulate",
    "estimate_psf": "psf",
    "recover_psf": "psf",
    "field_spectra": "psf",
    "power_spectrum": "focus",
    "blind_defocus": "focus",
    "find_focus": "focus",
    "Blur": "deconvolve",
    "wiener": "deconvolve",
    "richardson_lucy": "deconvolve",
    "consistency": "deconvolve",
    "load_model": "unet",
    "save_model": "unet",
    "default_model_path": "unet",
    "shipped_model_paths": "unet",
    "train_plate": "train",
    "evaluate_plate": "metrics",
    "run_plate": "pipeline",
    "open_results": "results",
    "plan_run": "pipeline",
    "execute_run": "pipeline",
    "read_layout": "plate",
    "PlateLayout": "plate",
    "start_client": "cluster",
    "write_report": "report",
    "depth_summary": "report",
    "create_refocused_plate": "plate",
    "write_field": "plate",
    "write_pyramid": "plate",
    "open_refocused": "plate",
    "fields_table": "tables",
    "wells_table": "tables",
    "write_tables": "tables",
}

__all__ = [
    "Optics",
    "defocus_otf",
    "defocus_psf",
    "radial_otf",
    "PlateRefocusError",
    "PlateNotFoundError",
    "NotAPlateError",
    "PlateLayoutError",
    "OutputExistsError",
    "ModelError",
    "ModelNotFoundError",
    "IngestError",
    "ClusterError",
    "OpticsMismatchWarning",
    "ResultsNotFoundError",
    "NotResultsError",
    "ResultsIncompleteError",
    "IncompleteResultsWarning",
    "ingest",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'plate_refocus' has no attribute {name!r}")
