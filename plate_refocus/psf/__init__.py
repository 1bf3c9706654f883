"""Pooled recovery of the defocus PSF from sharp/defocused image pairs.

For one well and one depth, every field ``i`` gives a sharp reference ``f_i``
(the object, or an in-focus / refocused image) and the defocused image
``g_i = f_i conv k + noise``. The pooled, regularised Fourier estimate is

    C = sum_i conj(F_i) G_i / (sum_i |F_i|^2 + mu)

(the report's eq. 17, pooled over fields as its conclusion asks). Its
numerator and denominator are kept as partial sums, :class:`FieldSpectra`,
which add up: a Dask reduction sums them over fields, so each field's two
FFTs are computed once, wherever the field lives.

:func:`recover_psf` then projects ``C`` onto isotropic OTFs with the report's
operator ``B`` (section 3.6, linear interpolation in the radius), applies the
circular-support prior, normalises ``OTF(0) = 1``, builds the spatial PSF
and fits the defocus distance ``|z|`` against the optical model.

The package, one job per module:

* :mod:`.spectra`: :class:`FieldSpectra` and :func:`field_spectra`, the
  per-field partial sums and the border treatments (window, mean removal,
  window model, periodic component);
* :mod:`.isotropic`: the operator ``B``, :func:`isotropic_operator`,
  :func:`project_isotropic`, :func:`expand_isotropic`;
* :mod:`.fit`: :func:`fit_defocus`, ``|z|`` against the optical model;
* :mod:`.recovery`: :class:`PSFEstimate`, :func:`recover_psf`, :func:`estimate_psf`.

The radial frequency axis and the radial OTF model are the optics module's
(:func:`plate_refocus.optics.radial_frequencies`,
:func:`plate_refocus.optics.radial_otf`); they are re-exported here under
the frequency axis under its name of old (``radial_frequencies``).

References
----------
.. [1] M. Werth and A. Matlock, "Neural network-based microscope defocus
   correction with point spread function recovery", Boston University
   technical report, 2018, sections 3.4-3.8.
.. [2] L. Moisan, "Periodic plus smooth image decomposition", J. Math.
   Imaging Vis. 39, 161-179 (2011).
"""

from __future__ import annotations

from ..optics import radial_frequencies
from .fit import Reference, fit_band, fit_defocus
from .isotropic import expand_isotropic, isotropic_operator, project_isotropic
from .recovery import AUTO_MU, PSFEstimate, estimate_psf, psf_from_profile, recover_psf
from .spectra import (
    WINDOW_MODEL_BINS,
    FieldSpectra,
    field_spectra,
    window_weights,
    windowed_spectrum,
)

__all__ = [
    "FieldSpectra",
    "PSFEstimate",
    "field_spectra",
    "windowed_spectrum",
    "window_weights",
    "radial_frequencies",
    "isotropic_operator",
    "project_isotropic",
    "expand_isotropic",
    "fit_defocus",
    "fit_band",
    "recover_psf",
    "estimate_psf",
    "psf_from_profile",
    "AUTO_MU",
    "WINDOW_MODEL_BINS",
    "Reference",
]
