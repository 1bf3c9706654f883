"""Blind defocus per well, and the in-focus plane of a stack, from power spectra alone.

A defocused image is ``g = o conv k_z + noise``; without a sharp reference
only its power spectrum is observable. Pooled over a well's fields at one
depth and averaged over rings, the windowed periodogram is modelled as

    P(f) = A [ |W|^2 * sum_m S(|nu + m / dx|) |K_z(|nu + m / dx|)|^2 ](f) + N

with ``S(f) = f**-beta exp(-gamma (f / cutoff)**2)`` the object spectrum (a
power law, ``beta <= 5``, with a soft roll-off; free amplitude ``A``),
``K_z`` the model OTF (:func:`plate_refocus.optics.radial_otf`), ``N`` a
flat noise floor (read and shot noise are white), ``|W|^2 *`` the smoothing
by the window's spectral taps and the sum over ``m`` the copies a camera folds
back when it undersamples the optics. ``|z|`` is fitted by the Whittle
likelihood of an averaged periodogram, on a grid of ``|z|`` (the cost has many
local minima) then refined, and its interval is read off the profile
likelihood, widened for smooth misfit and, where ``|K_z|^2`` has no notch
above the noise, opened down to 0: without a notch the object's shape can
mimic the defocus, so the data cannot say how far from focus the plane is.

The partial sums (:class:`PowerSpectra`) add up over fields like
:class:`plate_refocus.psf.FieldSpectra`, and are taken from the same
windowed FFT (:func:`plate_refocus.psf.windowed_spectrum`).

Per (well, depth), the pipeline would call::

    spectra = sum(power_spectrum(plane, dx, background=offset) for plane in fields)  # or radial_power(fft)
    estimate = blind_defocus(spectra, optics)          # ~10-20 ms at 520 x 696, cached per shape
    z_restore = restoration_depth(estimate)            # for Wiener / RL (plate_refocus.deconvolve)

and, for a stack without a recorded focal plane, ``find_focus(z_um,
[spectra per plane], optics, blind=[estimate per plane])``.

The package, one job per module:

* :mod:`.spectra`: :class:`PowerSpectra`, :func:`power_spectrum`,
  :func:`radial_power`, :func:`ring_dof`, the partial sums and their rings;
* :mod:`.model`: the ring model (window taps, aliased copies, object law,
  the Whittle fit at a shape), :class:`ObjectSpectrum` and
  :func:`fit_object_spectrum`;
* :mod:`.blind`: :class:`BlindDefocus`, :func:`blind_defocus` in its steps
  (scan, profile, refinement, interval, identifiability) and
  :func:`restoration_depth`;
* :mod:`.plane`: :class:`FocusPlane`, :func:`focus_measure`, :func:`find_focus`.

References
----------
.. [1] P. Whittle, "Curve and periodogram smoothing", J. R. Stat. Soc. B 19,
   38-63 (1957): the likelihood of a periodogram.
.. [2] P. McCullagh and J. A. Nelder, *Generalized Linear Models*, 2nd ed.,
   ch. 8 (gamma errors, dispersion estimated from Pearson's statistic).
.. [3] Y. Pawitan, *In All Likelihood*, ch. 2.6 and 3.4 (profile-likelihood intervals).
"""

from __future__ import annotations

from .blind import BANDWIDTH_RINGS as BANDWIDTH_RINGS
from .blind import NOTCH_CONTRAST as NOTCH_CONTRAST
from .blind import SCAN_BETAS as SCAN_BETAS
from .blind import BlindDefocus, blind_defocus, restoration_depth
from .model import BETA_GRID as BETA_GRID
from .model import BETA_MAX as BETA_MAX
from .model import GAMMA_GRID as GAMMA_GRID
from .model import Aliasing as Aliasing
from .model import ObjectSpectrum, fit_object_spectrum
from .plane import MIN_PROMINENCE as MIN_PROMINENCE
from .plane import FocusPlane, find_focus, focus_measure
from .spectra import HANN_INFLATION as HANN_INFLATION
from .spectra import MIN_RING as MIN_RING
from .spectra import PowerSpectra, power_spectrum, radial_power, ring_dof

__all__ = [
    "PowerSpectra",
    "BlindDefocus",
    "ObjectSpectrum",
    "FocusPlane",
    "power_spectrum",
    "radial_power",
    "blind_defocus",
    "fit_object_spectrum",
    "focus_measure",
    "find_focus",
    "ring_dof",
    "restoration_depth",
]
