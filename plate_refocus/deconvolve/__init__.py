"""Physics refocus: Wiener and Richardson-Lucy against a model or measured OTF, and trust per field.

A defocused plane is ``g = offset + o conv k_z + noise`` (camera counts; Poisson
noise of the signal plus Gaussian read noise, gain ``ADU per photo-electron``).
The target is the in-focus image ``o conv k_0`` on the input's intensity scale,
as for the U-Net. Everything here takes its balance from the data (the plane's
own power spectrum and the camera model), never from a ground truth.

- :class:`Blur` says what blurs the plane: the model OTF at a ``|z|``
  (``K_z``, restored to ``K_0``) or a measured isotropic profile
  (``K_z / K_0`` from an in-focus reference, restored to 1; or ``K_z`` from
  the object, restored to ``K_0``).
- :func:`wiener` divides by the OTF with the noise-to-signal ratio
  ``N / S(f)`` of a power-law object spectrum fitted to the plane
  (:func:`plate_refocus.focus.fit_object_spectrum`), on a mirror-padded grid.
- :func:`richardson_lucy` iterates the Poisson likelihood (with read noise as
  a constant shift, Snyder et al.) with the padding masked out, and stops by
  the discrepancy principle: when the reduced chi-square of the re-blurred
  estimate against the data reaches ``target_chi2`` (about 1), or stops
  improving.
- :func:`consistency` re-blurs any in-focus estimate (network or physics) and
  measures its reduced chi-square against the observed plane; :func:`hybrid`
  keeps the network where it is consistent and the physics estimate where not.

``consistency`` lives here and not in :mod:`plate_refocus.metrics` because it
is this package's forward model and noise model: the same reduced chi-square
stops Richardson-Lucy, so one definition serves both.

The package, one job per module:

* :mod:`.blur`: :class:`NoiseModel`, :class:`Blur` and its transfer on a
  grid, :class:`Restoration`, the input checks and the mirror padding;
* :mod:`.wiener_filter`: :func:`wiener` and its border floor :func:`border_balance`;
* :mod:`.rl`: :func:`richardson_lucy`;
* :mod:`.trust`: :func:`consistency`, :func:`hybrid`, :data:`CONSISTENCY_LIMIT`.

References
----------
.. [1] W. H. Richardson, "Bayesian-based iterative method of image
   restoration", JOSA 62, 55 (1972); L. B. Lucy, AJ 79, 745 (1974).
.. [2] D. L. Snyder, A. M. Hammoud, R. L. White, "Image recovery from data
   acquired with a charge-coupled-device camera", JOSA A 10, 1014 (1993).
.. [3] M. Bertero, P. Boccacci, "A simple method for the reduction of boundary
   effects in the Richardson-Lucy approach to image deconvolution", A&A 437,
   369 (2005).
.. [4] D. S. C. Biggs, M. Andrews, "Acceleration of iterative image
   restoration algorithms", Appl. Opt. 36, 1766 (1997).
.. [5] V. A. Morozov, "On the solution of functional equations by the method
   of regularization", Soviet Math. Dokl. 7, 414 (1966): the discrepancy principle.
"""

from __future__ import annotations

from .blur import Blur, NoiseModel, Restoration
from .rl import richardson_lucy
from .trust import CONSISTENCY_LIMIT, consistency, hybrid
from .wiener_filter import BORDER_BALANCE as BORDER_BALANCE
from .wiener_filter import border_balance as border_balance
from .wiener_filter import wiener

__all__ = [
    "NoiseModel",
    "Blur",
    "Restoration",
    "wiener",
    "richardson_lucy",
    "consistency",
    "hybrid",
    "CONSISTENCY_LIMIT",
]
