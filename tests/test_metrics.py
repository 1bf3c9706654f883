"""PSNR, SSIM and sharpness against direct formulas and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from plate_refocus.metrics import psnr, sharpness, ssim


def _field(seed=0, shape=(64, 80)):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 2) * 3000 + 100


def test_psnr_known_value():
    ref = np.zeros((8, 8))
    assert psnr(ref, ref + 1.0, data_range=4095) == pytest.approx(20 * math.log10(4095))
    assert psnr(ref, ref + 2.0, data_range=255) == pytest.approx(10 * math.log10(255**2 / 4))
    assert psnr(ref, ref, data_range=1) == math.inf


def test_psnr_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    a, b = _field(0), _field(1)
    assert psnr(a, b, data_range=4095) == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=4095))


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    a = _field(0)
    b = a + np.random.default_rng(2).normal(0, 100, a.shape)
    expected = skm.structural_similarity(
        a, b, data_range=4095, gaussian_weights=True, sigma=1.5, use_sample_covariance=True
    )
    assert ssim(a, b, data_range=4095) == pytest.approx(expected, abs=1e-6)
    assert ssim(a, a, data_range=4095) == pytest.approx(1.0)


def test_ssim_drops_with_blur():
    a = _field(3)
    assert ssim(a, ndimage.gaussian_filter(a, 3), data_range=4095) < ssim(a, ndimage.gaussian_filter(a, 1), data_range=4095)


def test_sharpness_orders_blur_and_ignores_scale_and_offset():
    a = _field(4).astype(np.float64)  # structure, not white noise (which has no detail band)
    s0 = sharpness(a)
    s1 = sharpness(ndimage.gaussian_filter(a, 1))
    s2 = sharpness(ndimage.gaussian_filter(a, 3))
    assert s0 > s1 > s2 > 0
    assert sharpness(3.0 * a) == pytest.approx(s0)
    assert sharpness(a + 500.0) == pytest.approx(s0)  # a camera offset changes nothing
    assert sharpness(np.full((8, 8), 7.0)) == 0.0
    assert sharpness(np.zeros((8, 8))) == 0.0


def test_sharpness_is_not_fooled_by_shot_noise():
    # Cell-like blobs imaged with Poisson noise: the in-focus plane must score higher than a
    # defocused one at the same photon count (the noise is whiter in both), and close to the
    # noise-free in-focus image.
    rng = np.random.default_rng(5)
    obj = np.zeros((128, 128))
    obj[tuple(rng.integers(0, 128, (2, 60)))] = 1.0
    obj = ndimage.gaussian_filter(obj, 2.5)
    obj *= 300 / obj.max()
    for blur in (2.0, 4.0, 8.0):
        sharp = rng.poisson(obj + 20.0).astype(float)
        blurred = rng.poisson(ndimage.gaussian_filter(obj, blur) + 20.0).astype(float)
        assert sharpness(sharp) > 1.5 * sharpness(blurred), blur
    assert sharpness(rng.poisson(obj + 20.0)) == pytest.approx(sharpness(obj + 20.0), rel=0.15)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 5)), data_range=1), ValueError, "same shape"),
        (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 4)), data_range=0), ValueError, "4095 for 12-bit"),
        (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 4)), data_range="1"), TypeError, "data_range"),
        (lambda: psnr(np.zeros((4, 4)), np.zeros((4, 4))), TypeError, "data_range"),
        (lambda: ssim(np.zeros((5, 5)), np.zeros((5, 5)), data_range=1), ValueError, "smaller than the SSIM window"),
        (lambda: ssim(np.zeros((2, 20, 20)), np.zeros((2, 20, 20)), data_range=1), ValueError, "2-D"),
        (lambda: sharpness(np.zeros(5)), ValueError, "2-D"),
        (lambda: sharpness(np.full((4, 4), np.nan)), ValueError, "NaN"),
        (lambda: sharpness(np.ones((4, 4)), sigma=0), ValueError, "sigma"),
    ],
)
def test_metrics_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_wiener_with_the_true_psf_restores_a_noise_free_field():
    from scipy import fft

    from plate_refocus.metrics import wiener_refocus
    from plate_refocus.optics import Optics, defocus_otf
    from plate_refocus.simulate import simulate_field

    # A noise-free defocused image: the in-focus truth blurred by K_10 / K_0 on a padded grid.
    truth = simulate_field((96, 96), (10.0,), seed=1, channels=("nuclei",)).in_focus[0].astype(float)
    big = (160, 160)
    obj = np.pad(truth - 100.0, 32, mode="symmetric")
    k10 = defocus_otf(big, 10.0, Optics(), real=True)
    k0 = defocus_otf(big, 0.0, Optics(), real=True)
    blurred = fft.irfft2(fft.rfft2(obj) * k10 / np.where(np.abs(k0) > 1e-3, k0, 1), s=big)[32:128, 32:128] + 100
    restored = wiener_refocus(blurred, 10.0, Optics(), balance=1e-4, offset=100.0)
    assert restored.shape == blurred.shape and restored.dtype == np.float32
    assert psnr(truth, restored, data_range=4095) > psnr(truth, blurred, data_range=4095) + 5
    several = wiener_refocus(blurred, 10.0, balance=[1e-4, 1e-2], offset=100.0)
    assert several.shape == (2, 96, 96)
    with pytest.raises(ValueError, match="balance must be positive"):
        wiener_refocus(blurred, 10.0, balance=0.0)


def test_evaluate_stack_and_table():
    from plate_refocus.metrics import evaluate_stack, format_table, summarize
    from plate_refocus.optics import Optics
    from plate_refocus.simulate import simulate_field

    field = simulate_field((64, 64), (0.0, 10.0), seed=2, channels=("nuclei",))
    rows = evaluate_stack(field.images[0], field.in_focus[0], (0.0, 10.0), data_range=4095,
                          refocus=lambda planes: planes.astype(np.float32), optics=Optics(), offset=100.0)
    assert {(r["depth_um"], r["method"]) for r in rows} == {
        (d, m) for d in (0.0, 10.0) for m in ("input", "refocused", "wiener")
    }
    by = {(r["depth_um"], r["method"]): r for r in rows}
    assert by[(10.0, "refocused")]["psnr"] == by[(10.0, "input")]["psnr"]  # identity "model"
    assert by[(10.0, "wiener")]["psnr"] > by[(10.0, "input")]["psnr"]
    table = format_table(summarize(rows))
    assert "| 10 |" in table and "+0.00" in table and "oracle" in table
