"""Invariants of the defocus optical model (DESIGN.md, "Physics conventions")."""

import dataclasses

import numpy as np
import pytest

from plate_refocus.optics import Optics, defocus_otf, defocus_psf, frequency_grid, radial_otf

DEPTHS = [0.0, 2.0, 10.0, 40.0]


@pytest.mark.parametrize("z", DEPTHS)
def test_psf_is_normalised_nonnegative_and_otf_dc_is_one(z):
    optics = Optics()
    psf = defocus_psf((128, 96), z, optics)
    assert psf.shape == (128, 96)
    assert psf.min() >= 0
    assert psf.sum() == pytest.approx(1.0, abs=1e-12)
    otf = defocus_otf((128, 96), z, optics)
    assert otf[0, 0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("optics", [Optics(), Optics(na=0.45, wavelength_um=0.46, pixel_size_um=0.1)])
@pytest.mark.parametrize("z", DEPTHS)
def test_otf_support_is_within_incoherent_cutoff(optics, z):
    otf = defocus_otf((128, 128), z, optics)
    rho = frequency_grid((128, 128), optics.pixel_size_um)[2]
    assert np.abs(otf[rho > optics.cutoff * 1.001]).max() < 1e-12
    assert np.abs(otf.imag).max() < 1e-12  # centrosymmetric PSF -> real OTF


@pytest.mark.parametrize("z", [2.0, 7.5, 25.0])
def test_psf_is_even_in_z(z):
    np.testing.assert_array_equal(defocus_psf((64, 64), z), defocus_psf((64, 64), -z))


def test_energy_is_conserved_through_focus():
    # Parseval: |W| = 1 inside the pupil, so the unnormalised PSF energy does not depend on z.
    optics = Optics()
    rho = frequency_grid((64, 64), optics.pixel_size_um)[2]
    pupil = rho <= optics.na / optics.wavelength_um
    for z in DEPTHS:
        k = 1 / optics.wavelength_um
        field = np.where(pupil, np.exp(2j * np.pi * z * np.sqrt(k**2 - np.minimum(rho, k) ** 2)), 0)
        energy = (np.abs(np.fft.ifft2(field)) ** 2).sum()
        assert energy == pytest.approx(pupil.sum() / pupil.size, rel=1e-12)


def test_in_focus_fwhm_matches_airy():
    optics = dataclasses.replace(Optics(), pixel_size_um=0.025)
    psf = defocus_psf((2048, 2048), 0.0, optics)
    row = psf[1024]
    half = row.max() / 2
    above = np.nonzero(row >= half)[0]
    lo, hi = above[0], above[-1]
    left = lo - 1 + (half - row[lo - 1]) / (row[lo] - row[lo - 1])
    right = hi + (row[hi] - half) / (row[hi] - row[hi + 1])
    fwhm = (right - left) * optics.pixel_size_um
    assert fwhm == pytest.approx(optics.airy_fwhm_um, rel=0.05)


def test_defocus_blurs_monotonically_at_mid_frequency():
    freq = np.array([0.3])
    values = [radial_otf(freq, z)[0] for z in (0, 2, 4, 6)]
    assert values == sorted(values, reverse=True)


def test_cached_arrays_are_read_only():
    psf = defocus_psf((32, 32), 4.0)
    with pytest.raises(ValueError):
        psf[0, 0] = 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"na": -0.1}, "Optics.na must be positive"),
        ({"na": 1.2}, "must be below the immersion index"),
        ({"pixel_size_um": float("nan")}, "pixel_size_um must be positive and finite"),
        ({"wavelength_um": "0.5"}, "must be a number"),
    ],
)
def test_bad_optics_are_refused_with_the_fix(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Optics(**kwargs)


def test_optics_round_trip_through_dict():
    optics = Optics(na=0.45, wavelength_um=0.46, pixel_size_um=0.325)
    assert Optics.from_dict(optics.to_dict()) == optics
    with pytest.raises(ValueError, match="unknown optics keys"):
        Optics.from_dict({"NA": 0.3})
