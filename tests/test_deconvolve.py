"""Physics refocus: Wiener, Richardson-Lucy, consistency and the hybrid choice."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from plate_refocus.deconvolve import (
    Blur,
    NoiseModel,
    Restoration,
    consistency,
    hybrid,
    richardson_lucy,
    wiener,
)
from plate_refocus.focus import blind_defocus, power_spectrum
from plate_refocus.metrics import psnr
from plate_refocus.optics import Optics, defocus_otf, radial_otf
from plate_refocus.psf import radial_frequencies
from plate_refocus.simulate import Camera, simulate_field
from plate_refocus.xp import gpu_available

OPTICS = Optics()
SHAPE = (128, 128)
CAMERA = Camera(photons=3000.0)
NOISE = NoiseModel.from_camera(CAMERA)
DEPTHS = (0.0, 8.0, 14.0)


@pytest.fixture(scope="module")
def field():
    return simulate_field(SHAPE, DEPTHS, seed=21, optics=OPTICS, camera=CAMERA, channels=("nuclei",))


def gain(field, j, out):
    truth = field.in_focus[0]
    return psnr(truth, out, data_range=4095) - psnr(truth, field.images[0, j], data_range=4095)


def test_nothing_here_takes_a_ground_truth():
    for func in (wiener, richardson_lucy, consistency):
        names = set(inspect.signature(func).parameters)
        assert not names & {"truth", "target", "reference", "in_focus", "object"}, (func, names)


@pytest.mark.parametrize("j", [1, 2])
def test_wiener_at_the_blind_depth_improves_a_blurred_noisy_plane(field, j):
    plane = field.images[0, j]
    blind = blind_defocus(power_spectrum(plane, OPTICS.pixel_size_um, background=NOISE.offset), OPTICS,
                          max_defocus_um=30.0)
    out = wiener(plane, Blur.model(OPTICS, blind.defocus_um), noise=NOISE)
    assert isinstance(out, Restoration) and out.image.shape == SHAPE and out.image.dtype == np.float32
    assert gain(field, j, out.image) > 2.0
    # on the input's scale: the offset is restored, and the flux kept
    assert abs(float(out.image.mean()) - float(plane.mean())) < 0.02 * float(plane.mean())
    # reusing the blind fit's object spectrum gives the same balance without a refit
    again = wiener(plane, Blur.model(OPTICS, blind.defocus_um), noise=NOISE, spectrum=blind.spectrum)
    assert gain(field, j, again.image) > 2.0


def test_wiener_with_a_measured_relative_profile_matches_the_model(field):
    freq = radial_frequencies(SHAPE, OPTICS.pixel_size_um)
    ratio = np.divide(radial_otf(freq, 14.0, OPTICS), radial_otf(freq, 0.0, OPTICS),
                      out=np.zeros_like(freq), where=freq < 0.95 * OPTICS.cutoff)
    ratio[0] = 1.0
    measured = wiener(field.images[0, 2], Blur.measured(OPTICS, freq, ratio, defocus_um=14.0), noise=NOISE)
    model = wiener(field.images[0, 2], Blur.model(OPTICS, 14.0), noise=NOISE)
    assert gain(field, 2, measured.image) > 2.0
    assert abs(gain(field, 2, measured.image) - gain(field, 2, model.image)) < 1.5


def test_richardson_lucy_improves_and_stops_by_the_discrepancy_principle(field):
    out = richardson_lucy(field.images[0, 1], Blur.model(OPTICS, 8.0), noise=NOISE, max_iter=200)
    assert out.stop in ("discrepancy", "stalled") and out.iterations < 200
    assert out.chi2 < 1.3
    assert gain(field, 1, out.image) > 3.0


def test_richardson_lucy_stops_at_the_noise_level_on_a_sharp_plane(field):
    out = richardson_lucy(field.images[0, 0], Blur.model(OPTICS, 0.0), noise=NOISE)
    assert out.stop == "discrepancy" and out.chi2 <= 1.0 and out.iterations < 50


def test_richardson_lucy_stops_when_it_stops_improving_under_a_wrong_model(field):
    # a model blurrier than the data cannot reach the noise level (a sharper one can: the object absorbs it)
    out = richardson_lucy(field.images[0, 2], Blur.model(OPTICS, 25.0), noise=NOISE, max_iter=300)
    assert out.stop == "stalled" and out.iterations < 300 and out.chi2 > 1.5


def test_richardson_lucy_runs_past_its_stopping_rule_by_the_overrun(field):
    blur = Blur.model(OPTICS, 8.0)
    at_rule = richardson_lucy(field.images[0, 1], blur, noise=NOISE, overrun=0.0)
    past = richardson_lucy(field.images[0, 1], blur, noise=NOISE, overrun=0.5)
    k = at_rule.iterations  # the estimate returned has had k - 1 updates
    assert past.stop == at_rule.stop and past.iterations == k + math.ceil(0.5 * (k - 1))
    assert past.chi2 < at_rule.chi2  # the chi-square returned is the returned estimate's
    assert gain(field, 1, past.image) > gain(field, 1, at_rule.image) - 0.5
    capped = richardson_lucy(field.images[0, 1], blur, noise=NOISE, overrun=0.5, max_iter=k + 1)
    assert capped.iterations == k + 1


def test_richardson_lucy_respects_max_iter(field):
    out = richardson_lucy(field.images[0, 2], Blur.model(OPTICS, 14.0), noise=NOISE, max_iter=2)
    assert out.iterations == 2 and out.stop == "max_iter"


def test_consistency_is_near_one_for_the_truth_and_large_for_a_wrong_depth(field):
    truth = field.in_focus[0]
    right = consistency(field.images[0, 2], truth, Blur.model(OPTICS, 14.0), noise=NOISE)
    wrong = consistency(field.images[0, 2], truth, Blur.model(OPTICS, 6.0), noise=NOISE)
    blurred = consistency(field.images[0, 2], field.images[0, 2], Blur.model(OPTICS, 14.0), noise=NOISE)
    assert 0.7 < right < 1.4
    assert wrong > 2.0 and blurred > 2.0
    # without a camera model the flat floor from the plane's own spectrum serves
    assert 0.5 < consistency(field.images[0, 2], truth, Blur.model(OPTICS, 14.0)) < 2.0


def test_hybrid_keeps_consistent_network_outputs_only():
    net = np.ones((3, 4, 4))
    phys = np.zeros((3, 4, 4))
    out, used = hybrid(net, phys, [1.1, 5.0, np.nan], limit=2.0)
    assert used.tolist() == [True, False, False]
    assert out[0].max() == 1 and out[1].max() == 0 and out[2].max() == 0
    with pytest.raises(ValueError, match="one value per field"):
        hybrid(net, phys, [1.0])


@pytest.mark.parametrize("call, error, match", [
    (lambda: wiener(np.zeros((4, 8, 8)), Blur.model(OPTICS, 1.0)), ValueError, "one plane"),
    (lambda: wiener(np.zeros((32, 32)), "10 um"), TypeError, "Blur.model"),
    (lambda: Blur.model(OPTICS, float("nan")), ValueError, "finite"),
    (lambda: richardson_lucy(np.zeros((32, 32)), Blur.model(OPTICS, 1.0), noise=None), TypeError, "NoiseModel"),
    (lambda: NoiseModel(gain=0.0), ValueError, "gain > 0"),
])
def test_arguments_are_checked(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_cupy_richardson_lucy_agrees_with_numpy(field):
    a = richardson_lucy(field.images[0, 2], Blur.model(OPTICS, 14.0), noise=NOISE, backend="numpy")
    b = richardson_lucy(field.images[0, 2], Blur.model(OPTICS, 14.0), noise=NOISE, backend="cupy")
    assert a.iterations == b.iterations and a.stop == b.stop
    np.testing.assert_allclose(b.image, a.image, rtol=1e-5, atol=1e-3)


def test_restoring_at_many_fitted_depths_keeps_no_kernel_per_depth():
    """A worker restores every (well, depth) at its own fitted |z|: those one-off OTFs must not
    pile up in the process (they did: 326 MiB per worker after 6 wells of 256 px, 732 after 54)."""
    from plate_refocus import optics as optics_module
    from plate_refocus.deconvolve.blur import transfer

    optics = Optics()
    before = optics_module._otf.cache_info().currsize
    for z in np.linspace(10.0, 11.0, 40):
        h, _ = transfer(Blur.model(optics, float(z)), (64, 64))
    assert transfer.cache_info().currsize <= 4
    assert optics_module._otf.cache_info().currsize <= before + 1  # the in-focus target only
    np.testing.assert_array_equal(h, defocus_otf((64, 64), 11.0, optics, real=True))
