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


def test_sharpness_orders_blur_and_ignores_scale():
    a = np.random.default_rng(4).random((64, 64)) * 1000 + 100
    s0 = sharpness(a)
    s1 = sharpness(ndimage.gaussian_filter(a, 1))
    s2 = sharpness(ndimage.gaussian_filter(a, 3))
    assert s0 > s1 > s2 > 0
    assert sharpness(3.0 * a) == pytest.approx(s0)
    assert sharpness(np.full((8, 8), 7.0)) == 0.0
    assert sharpness(np.zeros((8, 8))) == 0.0


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
    ],
)
def test_metrics_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
