"""Blind defocus from pooled power spectra, and the in-focus plane of a stack."""

from __future__ import annotations

import numpy as np
import pytest

from plate_refocus.focus import (
    HANN_INFLATION,
    BlindDefocus,
    PowerSpectra,
    blind_defocus,
    find_focus,
    fit_object_spectrum,
    focus_measure,
    power_spectrum,
    radial_power,
    ring_dof,
)
from plate_refocus.optics import Optics
from plate_refocus.psf import window_weights, windowed_spectrum
from plate_refocus.simulate import simulate_field
from plate_refocus.xp import gpu_available

REPORT = Optics()
SECOND = Optics(na=0.45, wavelength_um=0.46, pixel_size_um=0.325)  # undersampled
SHAPE = (128, 128)
OFFSET = 100.0


def stack(optics, depths, fields=4, seed=11, photons=4000.0):
    """(F, Z, Y, X) camera planes of the training family's nuclei."""
    from plate_refocus.simulate import Camera

    return np.stack([
        simulate_field(SHAPE, depths, seed=np.random.SeedSequence([seed, f]), optics=optics,
                       camera=Camera(photons=photons), channels=("nuclei",)).images[0]
        for f in range(fields)
    ])


@pytest.fixture(scope="module")
def report_stack():
    depths = (0.0, 2.0, 12.0, 20.0)
    return depths, stack(REPORT, depths)


@pytest.fixture(scope="module")
def second_stack():
    depths = (0.0, 6.0, 14.0)
    return depths, stack(SECOND, depths)


def pooled(planes, optics, **kwargs):
    return sum(power_spectrum(p, optics.pixel_size_um, background=OFFSET, **kwargs) for p in planes)


# --------------------------------------------------------------------------- partial sums


def test_power_spectra_add_over_fields_like_one_stack():
    rng = np.random.default_rng(0)
    planes = rng.normal(50, 5, (3, 64, 72))
    whole = power_spectrum(planes, 0.3, backend="numpy")
    parts = sum(power_spectrum(p, 0.3, backend="numpy") for p in planes)
    assert isinstance(parts, PowerSpectra) and parts.count == whole.count == 3
    np.testing.assert_allclose(parts.power, whole.power, rtol=1e-12)
    np.testing.assert_allclose(parts.square, whole.square, rtol=1e-12)
    assert (0 + whole) is whole


def test_power_spectra_of_other_shapes_or_windows_do_not_add():
    a = power_spectrum(np.ones((64, 64)) + np.eye(64), 0.3, backend="numpy")
    b = power_spectrum(np.ones((64, 66)), 0.3, backend="numpy")
    c = power_spectrum(np.ones((64, 64)), 0.3, edges="periodic", backend="numpy")
    with pytest.raises(ValueError, match="pool only fields of one shape"):
        a + b
    with pytest.raises(ValueError, match="border treatment"):
        a + c


def test_ring_power_from_the_shared_transform_equals_power_spectrum():
    rng = np.random.default_rng(1)
    planes = rng.poisson(200, (2, 64, 80)).astype(float)
    spectrum = windowed_spectrum(planes, background=OFFSET, backend="numpy")
    direct = power_spectrum(planes, 0.3, background=OFFSET, backend="numpy")
    np.testing.assert_allclose(radial_power(spectrum, (64, 80), 0.3).power, direct.power, rtol=1e-12)


def test_white_noise_gives_its_variance_and_the_ring_scatter_the_model_assumes():
    rng = np.random.default_rng(2)
    sigma = 3.0
    spectra = sum(power_spectrum(rng.normal(0, sigma, (128, 128)), 0.3, backend="numpy") for _ in range(8))
    rings = slice(6, 60)
    mean = spectra.mean[rings]
    np.testing.assert_allclose(mean.mean(), sigma**2, rtol=0.03)
    # relative variance of a ring average ~ 1 / dof (dof includes the Hann window's inflation)
    ratio = np.var((mean / sigma**2 - 1) * np.sqrt(ring_dof(spectra)[rings]))
    assert 0.6 < ratio < 1.6, ratio
    assert HANN_INFLATION == pytest.approx(1.94, rel=0.01)


# --------------------------------------------------------------------------- blind fit


@pytest.mark.parametrize("index, depth", [(2, 12.0), (3, 20.0)])
def test_blind_fit_recovers_depth_and_its_interval_covers_it(report_stack, index, depth):
    _, planes = report_stack
    est = blind_defocus(pooled(planes[:, index], REPORT), REPORT, max_defocus_um=40.0)
    assert isinstance(est, BlindDefocus)
    assert abs(est.defocus_um - depth) < 1.0, est
    assert est.interval_um[0] <= depth <= est.interval_um[1]
    assert est.defocus_err_um > 0
    assert np.isfinite(est.model[est.band]).all()


@pytest.mark.parametrize("index, depth", [(1, 6.0), (2, 14.0)])
def test_blind_fit_handles_an_undersampling_camera(second_stack, index, depth):
    _, planes = second_stack
    for aliasing in ("fold", "exclude"):
        est = blind_defocus(pooled(planes[:, index], SECOND), SECOND, max_defocus_um=30.0, aliasing=aliasing)
        assert abs(est.defocus_um - depth) < 0.75, (aliasing, est)
        assert est.interval_um[0] <= depth <= est.interval_um[1]


@pytest.mark.parametrize("optics_name", ["report", "second"])
def test_strided_profile_gives_the_estimate_of_the_full_profile(report_stack, second_stack, monkeypatch,
                                                                optics_name):
    """Step 2 evaluates a stride of the near |z| and fills in around low ones: same answer as all of them."""
    import plate_refocus.focus.blind as blind

    optics, (_, planes) = (REPORT, report_stack) if optics_name == "report" else (SECOND, second_stack)
    spectra = [pooled(planes[:k, i], optics) for i in range(planes.shape[1]) for k in (1, planes.shape[0])]
    strided = [blind_defocus(p, optics, max_defocus_um=40.0) for p in spectra]
    monkeypatch.setattr(blind, "PROFILE_STRIDE", 1)
    full = [blind_defocus(p, optics, max_defocus_um=40.0) for p in spectra]
    for a, b in zip(strided, full, strict=True):
        assert a.defocus_um == b.defocus_um and a.interval_um == b.interval_um
        assert a.identifiable == b.identifiable and a.dispersion == b.dispersion


@pytest.mark.parametrize("index", [0, 1])
def test_interval_is_wide_near_focus(report_stack, index):
    depths, planes = report_stack
    est = blind_defocus(pooled(planes[:, index], REPORT), REPORT, max_defocus_um=40.0)
    lo, hi = est.interval_um
    assert lo == 0.0 and hi >= 5.0, est  # the OTF barely changes: not a confident value
    assert lo <= depths[index] <= hi


def test_one_field_gives_a_wider_interval_than_four(report_stack):
    _, planes = report_stack
    one = blind_defocus(pooled(planes[:1, 2], REPORT), REPORT, max_defocus_um=40.0)
    four = blind_defocus(pooled(planes[:, 2], REPORT), REPORT, max_defocus_um=40.0)
    assert one.interval_um[1] - one.interval_um[0] >= four.interval_um[1] - four.interval_um[0]


def test_an_unremoved_offset_does_not_move_the_estimate(report_stack):
    _, planes = report_stack
    with_offset = sum(power_spectrum(p + 400.0, REPORT.pixel_size_um) for p in planes[:, 2])
    a = blind_defocus(with_offset, REPORT, max_defocus_um=40.0)
    b = blind_defocus(pooled(planes[:, 2], REPORT), REPORT, max_defocus_um=40.0)
    assert abs(a.defocus_um - b.defocus_um) < 0.05


@pytest.mark.parametrize("kwargs, error, match", [
    ({"aliasing": "guess"}, ValueError, "aliasing must be one of"),
    ({"max_defocus_um": -1.0}, ValueError, "max_defocus_um must be"),
    ({"confidence": 2.0}, ValueError, "confidence must be"),
])
def test_blind_fit_checks_its_arguments(report_stack, kwargs, error, match):
    _, planes = report_stack
    with pytest.raises(error, match=match):
        blind_defocus(pooled(planes[:1, 2], REPORT), REPORT, **kwargs)


def test_blind_fit_needs_power_spectra():
    with pytest.raises(TypeError, match="PowerSpectra"):
        blind_defocus(np.ones(10), REPORT)


def test_object_spectrum_at_a_known_depth_finds_the_noise_floor(report_stack):
    _, planes = report_stack
    spectrum = fit_object_spectrum(pooled(planes[:, 2], REPORT), REPORT, defocus_um=12.0)
    # the floor is the per-pixel variance, shot noise plus read noise, weighted as the window weights it
    w2 = window_weights(SHAPE) ** 2
    signal = float(np.mean([(w2 * (p - OFFSET)).sum() / w2.sum() for p in planes[:, 2]]))
    assert 0.85 * (signal + 4) < spectrum.noise < 1.15 * (signal + 4.1)
    assert spectrum.exponent > 0 and spectrum.signal(np.array([0.1]))[0] > spectrum.noise


# --------------------------------------------------------------------------- focus in a stack


def test_focus_measure_falls_with_defocus(report_stack):
    depths, planes = report_stack
    values = [focus_measure(pooled(planes[:, j], REPORT), REPORT) for j in range(len(depths))]
    assert values[0] > values[1] > 10 * max(values[2], values[3])


def test_find_focus_in_a_stack_around_focus(report_stack):
    depths, planes = report_stack
    spectra = [pooled(planes[:, j], REPORT) for j in range(len(depths))]
    blind = [blind_defocus(s, REPORT, max_defocus_um=40.0) for s in spectra]
    order = [3, 2, 1, 0, 1, 2, 3]  # a stack from -20 to +20 um around focus
    z = np.array([-20.0, -12.0, -2.0, 0.0, 2.0, 12.0, 20.0])
    found = find_focus(z, [spectra[i] for i in order], REPORT, blind=[blind[i] for i in order])
    assert found is not None and found.index == 3 and found.prominence > 0.5
    assert abs(found.focus_um) < 1.0  # fitted from the planes far from focus


def test_no_plane_in_focus_gives_none(report_stack):
    depths, planes = report_stack
    spectra = [pooled(planes[:, j], REPORT) for j in (2, 3)]
    blind = [blind_defocus(s, REPORT, max_defocus_um=40.0) for s in spectra]
    assert find_focus([12.0], spectra[:1], REPORT, blind=blind[:1]) is None  # single plane far from focus
    assert find_focus([12.0, 20.0], spectra, REPORT, blind=blind) is None
    assert find_focus([12.0], spectra[:1], REPORT) is None  # nothing to decide with


@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_cupy_ring_power_agrees_with_numpy(report_stack):
    _, planes = report_stack
    a = power_spectrum(planes[:, 2], REPORT.pixel_size_um, background=OFFSET, backend="numpy")
    b = power_spectrum(planes[:, 2], REPORT.pixel_size_um, background=OFFSET, backend="cupy")
    np.testing.assert_allclose(b.power, a.power, rtol=1e-9)
    assert blind_defocus(a, REPORT).defocus_um == pytest.approx(blind_defocus(b, REPORT).defocus_um, abs=1e-6)


def test_notch_table_is_the_largest_rise_after_a_dip_within_each_prefix():
    from plate_refocus.focus.blind import notch_table

    rng = np.random.default_rng(3)
    k2 = rng.random((4, 12)) ** 3
    k2[1, 4] = 0.0  # an exact zero of the OTF
    table = notch_table(k2)
    for z in range(4):
        for m in range(13):
            pairs = [k2[z, j] / max(k2[z, i], 1e-300) for i in range(m) for j in range(i + 1, m)]
            assert table[z, m] == pytest.approx(max(pairs, default=0.0), rel=1e-12)
    monotone = np.linspace(1.0, 0.0, 12)[None] ** 2  # no rise after a dip: never above 1
    assert notch_table(monotone).max() <= 1.0
