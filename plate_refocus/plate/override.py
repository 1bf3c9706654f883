"""Optics and focal plane given on the command line, over what a plate records.

Precedence: flags > the plate's metadata > the defaults (with a warning naming
the values assumed). A flag that contradicts the plate's metadata is used, and
the difference is said.
"""

from __future__ import annotations

import dataclasses
import warnings

from ..errors import PlateLayoutError
from ..optics import Optics
from .read import PlateLayout

__all__ = ["override_layout"]

_FLAGS = {"na": "--na", "wavelength_um": "--wavelength", "immersion_index": "--immersion-index",
          "pixel_size_um": "--pixel-size"}


def override_layout(
    layout: PlateLayout,
    *,
    na: float | None = None,
    wavelength_um: float | None = None,
    immersion_index: float | None = None,
    pixel_size_um: float | None = None,
    focal_plane: int | None = None,
) -> tuple[PlateLayout, list[str]]:
    """The layout with the given optics and focal plane, and one line per value they changed.

    Warns (``UserWarning``) when the plate records no optics and not all of NA,
    wavelength and immersion index are given: the defaults are assumed for the
    rest, and the warning names them.

    Raises
    ------
    PlateLayoutError
        A value that is not physical (NA above the immersion index, a focal
        plane outside the stack), with the fix.
    """
    given = {k: v for k, v in (("na", na), ("wavelength_um", wavelength_um),
                               ("immersion_index", immersion_index),
                               ("pixel_size_um", pixel_size_um)) if v is not None}
    notes = []
    base = layout.optics.to_dict()
    for key, value in given.items():
        if layout.optics_recorded or key == "pixel_size_um":
            if abs(float(value) - float(base[key])) > 1e-9 * max(1.0, abs(float(base[key]))):
                notes.append(f"{_FLAGS[key]} {value:g} is used; the plate records {base[key]:g}")
    try:
        optics = Optics(**{**base, **{k: float(v) for k, v in given.items()}})
    except (TypeError, ValueError) as error:
        raise PlateLayoutError(f"the optics given are not physical: {error}; check the flags "
                               + ", ".join(_FLAGS[k] for k in given)) from None
    recorded = layout.optics_recorded or {"na", "wavelength_um", "immersion_index"} <= set(given)
    if not recorded:
        assumed = {k: base[k] for k in ("na", "wavelength_um", "immersion_index") if k not in given}
        warnings.warn(
            f"plate {layout.path!r} records no optics; assuming {assumed} (the defaults) with "
            + (", ".join(f"{_FLAGS[k]} {v:g}" for k, v in given.items()) or "nothing given")
            + "; pass --na, --wavelength and --immersion-index for the objective used",
            UserWarning, stacklevel=2,
        )
    if focal_plane is not None:
        if not (isinstance(focal_plane, int) and 0 <= focal_plane < layout.n_z):
            raise PlateLayoutError(
                f"--focal-plane {focal_plane!r} is not a plane of the stack (0..{layout.n_z - 1})")
        if layout.focal_plane is not None and layout.focal_plane != focal_plane:
            notes.append(f"--focal-plane {focal_plane} is used; the plate records {layout.focal_plane}")
    layout = dataclasses.replace(
        layout, optics=optics, optics_recorded=recorded or layout.optics_recorded,
        focal_plane=layout.focal_plane if focal_plane is None else focal_plane)
    return layout, notes
