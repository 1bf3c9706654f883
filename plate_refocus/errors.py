"""Errors a user can cause, each also an instance of the matching built-in.

The CLI catches :class:`PlateRefocusError` and prints its message without a
traceback, so every message says what went wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "PlateRefocusError",
    "PlateNotFoundError",
    "NotAPlateError",
    "PlateLayoutError",
    "OutputExistsError",
    "ModelError",
    "ModelNotFoundError",
    "OpticsMismatchWarning",
    "IngestError",
    "ClusterError",
    "OutputLocationError",
    "PlaneReadError",
    "ResultsNotFoundError",
    "NotResultsError",
    "ResultsIncompleteError",
    "IncompleteResultsWarning",
]


class PlateRefocusError(Exception):
    """Base class of every error a user of ``plate_refocus`` can cause."""


class PlateNotFoundError(PlateRefocusError, FileNotFoundError):
    """The path given as a plate does not exist."""


class NotAPlateError(PlateRefocusError, ValueError):
    """The path exists but is not an OME-Zarr HCS plate."""


class PlateLayoutError(PlateRefocusError, ValueError):
    """A plate whose wells or fields disagree (shape, dtype, axes, metadata)."""


class OutputExistsError(PlateRefocusError, FileExistsError):
    """An output store exists and neither resume nor overwrite was asked for."""


class ModelError(PlateRefocusError, ValueError):
    """A model file that is corrupt, unsafe or does not fit the data."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model file given does not exist."""


class IngestError(PlateRefocusError, ValueError):
    """A TIFF folder that cannot be turned into a plate as asked."""


class ClusterError(PlateRefocusError, RuntimeError):
    """A Dask cluster that cannot be started or reached."""


class ResultsNotFoundError(PlateRefocusError, FileNotFoundError):
    """The path given as a results store does not exist."""


class NotResultsError(PlateRefocusError, ValueError):
    """The path exists but is not a results store written by ``plate-refocus run``."""


class ResultsIncompleteError(PlateRefocusError, RuntimeError):
    """A results store whose run has not finished a well yet (in progress or interrupted)."""


class IncompleteResultsWarning(UserWarning):
    """Results of a run that is still in progress or was interrupted: some wells are not done."""


class OpticsMismatchWarning(UserWarning):
    """A model trained for other optics than the plate it is applied to."""


class OutputLocationError(PlateRefocusError, ValueError):
    """An output path that overlaps an input, or cannot be created where it is."""


class PlaneReadError(PlateRefocusError, OSError):
    """A plane of the plate that cannot be read or decoded (a corrupt chunk, a bad file)."""
