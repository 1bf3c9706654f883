"""Invariants of the defocus optical model (DESIGN.md, "Physics conventions")."""

import dataclasses
import math

import numpy as np
import pytest

from plate_refocus.optics import (
    Optics,
    check_shape,
    defocus_otf,
    defocus_psf,
    frequency_grid,
    radial_frequencies,
    radial_otf,
)

DEPTHS = [0.0, 2.0, 10.0, 40.0]
SECOND = Optics(na=0.45, wavelength_um=0.46, pixel_size_um=0.325)  # undersampled: cutoff > Nyquist


def grid_radial_otf(freq, z_um, optics, grid=None):
    """Independent reference for :func:`radial_otf`: the OTF along an axis of a fine 2-D grid.

    The defocus PSF of :func:`defocus_psf` on a ``grid x grid`` grid of pixels of at most a
    quarter of the cutoff period (so the support lies inside Nyquist), projected on x and
    transformed (the OTF along fx), interpolated at `freq`. By default the grid is the
    smallest power of two >= 1024 whose field of view holds eight blur diameters, at most
    4096 (about a second, 256 MB).
    """
    fine = dataclasses.replace(optics, pixel_size_um=min(optics.pixel_size_um, 0.25 / optics.cutoff))
    if grid is None:
        needed = 8.0 * 2.0 * optics.blur_radius_um(z_um) / fine.pixel_size_um
        grid = min(4096, max(1024, 1 << int(math.ceil(math.log2(max(needed, 1.0))))))
    psf = defocus_psf((grid, grid), z_um, fine)
    axis_f = np.fft.fftfreq(grid, d=fine.pixel_size_um)[: grid // 2]
    axis_v = np.fft.fft(np.fft.ifftshift(psf).sum(axis=0)).real[: grid // 2]
    return np.interp(np.asarray(freq), axis_f, axis_v, right=0.0)


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


# --- the radial OTF model (Hankel transforms) against the 2-D grid ----------------------------------


@pytest.mark.parametrize("optics", [Optics(), SECOND])
@pytest.mark.parametrize("z", [0.0, 2.0, 10.0, 25.0])
def test_radial_otf_agrees_with_the_2d_grid(optics, z):
    # Measured: max |Hankel - 2048 grid| 1.45e-3 over these cases, 1.39e-3 against 4096 grids
    # for NA 0.25-0.75 and |z| <= 40 um; the largest part is the Hankel model's in-focus offset.
    freq = np.linspace(0, 1.2 * optics.cutoff, 90)
    np.testing.assert_allclose(radial_otf(freq, z, optics), grid_radial_otf(freq, z, optics, grid=2048),
                               atol=2.5e-3)


def test_radial_otf_agrees_with_a_4096_grid_for_a_wide_blur():
    # NA 0.45 at 30 um (the PSF benchmark's widest case): a 1024 grid is 1 % off there, so
    # the reference is a 4096 grid; measured relative L2 inside 0.8 x cutoff: 6.6e-4.
    freq = np.linspace(0, 0.8 * SECOND.cutoff, 200)
    fine = grid_radial_otf(freq, 30.0, SECOND, grid=4096)
    assert np.linalg.norm(radial_otf(freq, 30.0, SECOND) - fine) <= 3e-3 * np.linalg.norm(fine)


@pytest.mark.parametrize("optics", [Optics(), SECOND, Optics(na=0.75, wavelength_um=0.5, pixel_size_um=0.1)])
@pytest.mark.parametrize("z", [0.0, 7.0, 60.0])
def test_hankel_node_count_follows_the_oscillations(monkeypatch, optics, z):
    # the adaptive Gauss-Legendre rule gives what a dense 1024-node rule gives
    from plate_refocus import optics as module

    freq = np.linspace(0, optics.cutoff, 200)
    adaptive = radial_otf(freq, z, optics)
    monkeypatch.setattr(module, "_hankel_nodes", lambda n_radii, phase_cycles: 1024)
    np.testing.assert_allclose(adaptive, radial_otf(freq, z, optics), atol=1e-10)


def test_radial_otf_in_focus_is_the_circular_pupil_autocorrelation():
    optics = Optics()
    freq = np.linspace(0, optics.cutoff, 60)
    s = freq / optics.cutoff
    exact = 2 / np.pi * (np.arccos(s) - s * np.sqrt(1 - s * s))
    np.testing.assert_allclose(radial_otf(freq, 0.0, optics), exact, atol=2e-3)


def test_radial_otf_of_several_depths_in_one_call():
    freq = np.linspace(0, Optics().cutoff, 50)
    depths = np.array([0.0, 4.0, 10.0])
    together = radial_otf(freq, depths, max_radius_um=80.0)
    assert together.shape == (3, 50)
    for row, z in zip(together, depths, strict=True):
        np.testing.assert_allclose(row, radial_otf(freq, z, max_radius_um=80.0), atol=1e-12)
    with pytest.raises(TypeError, match="optics must be an Optics"):
        radial_otf(freq, 1.0, {"na": 0.25})


# --- the radial axis and the checks ---------------------------------------------------------------


def test_radial_frequencies_cover_the_grid():
    freq = radial_frequencies((40, 64), 0.5)
    assert freq[0] == 0
    np.testing.assert_allclose(np.diff(freq), 1 / (40 * 0.5))
    assert freq[-1] > math.hypot(1.0, 1.0)  # the corner of the grid, 1 / (2 dx) on each axis
    with pytest.raises(ValueError, match="pixel_size_um must be positive"):
        radial_frequencies((40, 64), -1.0)
    with pytest.raises(TypeError, match="pixel_size_um must be a number"):
        radial_frequencies((40, 64), "0.5")


@pytest.mark.parametrize(
    "shape, minimum, error, match",
    [
        ((64, 1), 2, ValueError, r"shape must be two integers >= 2 \(Y, X\), got \(64, 1\)"),
        ((64, 64.5), 2, ValueError, ">= 2"),
        ((7, 64), 8, ValueError, ">= 8"),
        ((64, 64, 3), 2, TypeError, r"shape must be two integers \(Y, X\)"),
        (64, 2, TypeError, "two integers"),
        (("a", 3), 2, TypeError, "two integers"),
    ],
)
def test_check_shape_refuses_bad_shapes(shape, minimum, error, match):
    with pytest.raises(error, match=match):
        check_shape(shape, minimum=minimum)


def test_check_shape_accepts_whole_numbers():
    assert check_shape((np.int64(8), 12.0), minimum=8) == (8, 12)
    assert defocus_psf([16.0, 16], 1.0).shape == (16, 16)


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
