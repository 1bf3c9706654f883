"""Pooled PSF recovery: partial sums, edges, isotropic projection, support, defocus fit."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.fft
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plate_refocus.optics import Optics, defocus_otf, radial_otf
from plate_refocus.psf import (
    WINDOW_MODEL_BINS,
    PSFEstimate,
    estimate_psf,
    expand_isotropic,
    field_spectra,
    fit_defocus,
    isotropic_operator,
    project_isotropic,
    radial_frequencies,
    recover_psf,
)
from plate_refocus.xp import gpu_available

SECOND = Optics(na=0.45, wavelength_um=0.46, pixel_size_um=0.325)  # undersampled: cutoff > Nyquist
PROPERTY = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- helpers


def blobs(shape, seed, n=40):
    """A positive, cell-like object: Gaussian blobs of random size on a dim floor."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.full(shape, 2.0)
    for _ in range(n):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        s = rng.uniform(0.7, 4.0)
        out += rng.uniform(50, 500) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out


def circular_blur(image, otf_full):
    return np.real(np.fft.ifft2(np.fft.fft2(image) * otf_full))


def padded_blur(shape, z, optics, seed, pad=48):
    """Object on a larger field, blurred without wrap-around, then cropped (as a camera sees it)."""
    big = (shape[0] + 2 * pad, shape[1] + 2 * pad)
    obj = blobs(big, seed, n=int(40 * big[0] * big[1] / 128**2))
    blurred = circular_blur(obj, defocus_otf(big, z, optics))
    crop = (slice(pad, pad + shape[0]), slice(pad, pad + shape[1]))
    return obj[crop], blurred[crop]


def noisy(image, photons_at_peak, seed, offset=100.0, read_noise=2.0):
    rng = np.random.default_rng(seed)
    scale = photons_at_peak / image.max()
    counts = rng.poisson(np.clip(image * scale, 0, None)) + rng.normal(offset, read_noise, image.shape)
    return counts / scale, offset / scale  # back on the object's scale, background in those units


def rel_l2(a, b, mask):
    return float(np.linalg.norm((a - b)[mask]) / np.linalg.norm(b[mask]))


# --------------------------------------------------------------------------- partial sums


def test_stack_equals_sum_of_fields_and_builtin_sum_works():
    rng = np.random.default_rng(0)
    ref = rng.uniform(1, 2, (3, 64, 70))
    dfc = rng.uniform(1, 2, (3, 64, 70))
    whole = field_spectra(ref, dfc)
    parts = sum(field_spectra(r, d) for r, d in zip(ref, dfc, strict=False))
    assert whole.count == parts.count == 3
    assert whole.shape == (64, 36)
    np.testing.assert_allclose(parts.numerator, whole.numerator, rtol=1e-12)
    np.testing.assert_allclose(parts.denominator, whole.denominator, rtol=1e-12)
    np.testing.assert_allclose(parts.window_terms, whole.window_terms, rtol=1e-12)


_ORDER_FIELDS = []


@PROPERTY
@given(order=st.permutations(range(5)))
def test_result_does_not_depend_on_field_order(order):
    optics = Optics()
    if not _ORDER_FIELDS:
        _ORDER_FIELDS.extend(padded_blur((64, 64), 6.0, optics, seed) for seed in range(5))
    fields = _ORDER_FIELDS
    spectra = [field_spectra(o, g) for o, g in fields]
    a, b = sum(spectra), sum(spectra[i] for i in order)
    assert a.window_terms is not None
    np.testing.assert_allclose(b.numerator, a.numerator, rtol=1e-12)
    ref = recover_psf(a, (64, 64), optics, fit=False)
    perm = recover_psf(b, (64, 64), optics, fit=False)
    np.testing.assert_allclose(perm.otf_radial, ref.otf_radial, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(perm.psf, ref.psf, rtol=1e-9, atol=1e-12)


def test_adding_spectra_of_other_shapes_is_refused():
    a = field_spectra(np.ones((16, 16)), np.ones((16, 16)))
    b = field_spectra(np.ones((16, 18)), np.ones((16, 18)))
    with pytest.raises(ValueError, match="same image shape"):
        a + b


def test_dask_distributed_reduction_matches_local_sum():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(1)
    pairs = [(rng.uniform(1, 3, (64, 64)), rng.uniform(1, 3, (64, 64))) for _ in range(4)]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        futures = [client.submit(field_spectra, r, d, backend="numpy", pure=False) for r, d in pairs]
        total = client.submit(sum, futures).result()
    local = sum(field_spectra(r, d) for r, d in pairs)
    assert total.count == 4
    np.testing.assert_allclose(total.numerator, local.numerator, rtol=1e-12)
    np.testing.assert_allclose(total.window_terms, local.window_terms, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"reference": np.ones((8, 8)), "defocused": np.ones((8, 9))}, ValueError, "same shape"),
        ({"reference": np.ones(8), "defocused": np.ones(8)}, ValueError, r"\(Y, X\) or a stack"),
        ({"reference": np.ones((8, 8), bool), "defocused": np.ones((8, 8))}, TypeError, "real numbers"),
        ({"reference": np.full((8, 8), np.nan), "defocused": np.ones((8, 8))}, ValueError, "NaN"),
        ({"reference": np.ones((8, 8)), "defocused": np.ones((8, 8)), "edges": "hann"}, ValueError, "edges"),
        ({"reference": np.ones((8, 8)), "defocused": np.ones((8, 8)),
          "defocused_background": float("inf")}, ValueError, "finite"),
    ],
)
def test_field_spectra_checks_its_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        field_spectra(**kwargs)


# --------------------------------------------------------------------------- edges


def test_periodic_component_matches_direct_poisson_solution():
    from plate_refocus.psf.spectra import _periodic_component
    from plate_refocus.xp import get_xp

    xp, fft = get_xp("numpy")
    u = np.random.default_rng(2).uniform(0, 1, (2, 20, 27)) + np.linspace(0, 5, 27)
    v = np.zeros_like(u)
    v[..., 0, :] += u[..., -1, :] - u[..., 0, :]
    v[..., -1, :] += u[..., 0, :] - u[..., -1, :]
    v[..., :, 0] += u[..., :, -1] - u[..., :, 0]
    v[..., :, -1] += u[..., :, 0] - u[..., :, -1]
    q = np.arange(20)[:, None]
    r = np.arange(27 // 2 + 1)[None, :]
    lap = 2 * np.cos(2 * np.pi * q / 20) + 2 * np.cos(2 * np.pi * r / 27) - 4
    lap[0, 0] = 1
    s_hat = np.fft.rfft2(v) / lap
    s_hat[..., 0, 0] = 0
    np.testing.assert_allclose(_periodic_component(u, xp, fft), np.fft.rfft2(u) - s_hat, atol=1e-10)


@pytest.mark.parametrize("edges", ["periodic", "taper"])
def test_border_treatments_remove_the_border_cross(edges):
    # A ramp is maximally non-periodic: its raw spectrum has a bright cross on the axes.
    ramp = np.add.outer(np.linspace(0, 50, 64), np.linspace(0, 80, 64)) + 10
    raw = field_spectra(ramp, ramp, edges="none").denominator
    treated = field_spectra(ramp, ramp, edges=edges).denominator
    axis = (slice(8, 30), 0)  # beyond the window's main lobe
    assert treated[axis].max() < 1e-2 * raw[axis].max()


def _four_fields(z_um):
    """Four non-periodic 96 x 96 fields blurred by `z_um` (report optics), and a function
    giving the OTF error of pooled spectra: relative L2 against the truth inside 0.8 x cutoff."""
    optics = Optics()
    fields = [padded_blur((96, 96), z_um, optics, seed) for seed in range(4)]
    freq = radial_frequencies((96, 96), optics.pixel_size_um)
    truth = radial_otf(freq, z_um, optics)
    band = freq <= 0.8 * optics.cutoff

    def otf_error(spectra):
        return rel_l2(recover_psf(spectra, (96, 96), optics, fit=False).otf_radial, truth, band)

    return fields, otf_error


def test_border_treatments_improve_recovery_on_non_periodic_fields():
    fields, otf_error = _four_fields(8.0)
    errors = {edges: otf_error(sum(field_spectra(o, g, edges=edges) for o, g in fields))
              for edges in ("none", "periodic", "taper")}
    assert errors["periodic"] < 0.5 * errors["none"]
    assert errors["taper"] < 0.75 * errors["periodic"]
    assert errors["taper"] < 0.04


@pytest.mark.parametrize("shape, taper", [((64, 96), 0.5), ((65, 77), 0.5), ((64, 96), 0.25)])
def test_taper_removes_the_mean_everywhere_but_dc(shape, taper):
    # A constant blurs into itself, so adding it to f and g must not change the
    # spectra at any frequency but zero: the window's leakage of the mean is removed.
    rng = np.random.default_rng(7)
    f = rng.uniform(0, 10, (2, *shape))
    g = rng.uniform(0, 10, (2, *shape))
    base = field_spectra(f, g, taper=taper)
    shifted = field_spectra(f + 300.0, g + 300.0, taper=taper)
    off_dc = np.ones(base.shape, bool)
    off_dc[0, 0] = False
    scale = base.denominator[off_dc].max()
    assert np.abs(shifted.denominator - base.denominator)[off_dc].max() <= 1e-9 * scale
    assert np.abs(shifted.numerator - base.numerator)[off_dc].max() <= 1e-9 * scale
    assert shifted.denominator[0, 0] > 10 * base.denominator[0, 0]  # the flux stays at DC


@pytest.mark.parametrize("shape", [(64, 80), (65, 77)])
def test_window_terms_split_the_denominator(shape):
    # sum_c conj(F_w) W(c) F(nu - c) = |F_w|^2: the 3 x 3 taps are the whole Hann window
    rng = np.random.default_rng(3)
    spectra = field_spectra(rng.uniform(0, 10, (2, *shape)), rng.uniform(0, 10, (2, *shape)))
    size = WINDOW_MODEL_BINS
    block = spectra.denominator[np.arange(-size, size + 1) % shape[0], : size + 1]
    total = spectra.window_terms.sum(axis=0)
    block[size, 0] = 0.0  # the zero frequency is not modelled
    np.testing.assert_allclose(total.real, block, atol=1e-12 * block.max())
    assert np.abs(total.imag).max() <= 1e-12 * block.max()


def test_window_model_is_exact_for_periodic_images():
    # g = f (*) k periodically with an isotropic k whose support lies in the modelled block:
    # the window model recovers k to rounding, the plain ratio of windowed spectra does not.
    optics = Optics(pixel_size_um=0.1)
    shape = (64, 80)
    freq = radial_frequencies(shape, 0.1)
    truth = radial_otf(freq, 3.0, optics)
    otf = expand_isotropic(truth, shape, 0.1, support=optics.cutoff)
    objects = [blobs(shape, seed, n=10) for seed in range(2)]
    spectra = sum(field_spectra(o, np.fft.irfft2(np.fft.rfft2(o) * otf, s=shape)) for o in objects)
    band = freq < optics.cutoff
    exact = recover_psf(spectra, shape, optics, mu=0.0, fit=False).otf_radial
    plain = recover_psf(dataclasses.replace(spectra, window_terms=None), shape, optics, mu=0.0,
                        fit=False).otf_radial
    assert np.abs(exact - truth)[band].max() < 1e-8
    assert np.abs(plain - truth)[band].max() > 1e-2


def test_spectra_with_and_without_window_terms_do_not_add():
    rng = np.random.default_rng(4)
    a = field_spectra(rng.uniform(1, 2, (64, 64)), rng.uniform(1, 2, (64, 64)))
    b = field_spectra(rng.uniform(1, 2, (64, 64)), rng.uniform(1, 2, (64, 64)), taper=0.25)
    assert a.window_terms is not None and b.window_terms is None
    with pytest.raises(ValueError, match="window terms"):
        a + b


def test_a_bright_floor_does_not_bias_the_recovered_otf():
    # Without the mean removal the floor's leakage through the window's main lobe
    # pulled the lowest frequencies towards 1 (errors 5% -> 16% with a floor of 2000).
    fields, otf_error = _four_fields(12.0)
    errors = [otf_error(sum(field_spectra(o + floor, g + floor) for o, g in fields))
              for floor in (0.0, 2000.0)]
    assert errors[1] < 1.1 * errors[0]
    assert errors[1] < 0.06


# --------------------------------------------------------------------------- isotropic projection


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(12, 40), st.integers(12, 40)),
    weighted=st.booleans(),
    alias=st.booleans(),
)
def test_projection_of_an_isotropic_otf_is_itself(seed, shape, weighted, alias):
    rng = np.random.default_rng(seed)
    freq = radial_frequencies(shape, 0.3)
    support = 0.9 * freq[-1]
    profile = rng.normal(size=freq.size)
    profile[freq >= support] = 0
    otf = expand_isotropic(profile, shape, 0.3, support=support, alias=alias)
    weights = rng.uniform(0.1, 10, otf.shape) if weighted else None
    back = project_isotropic(otf, shape, 0.3, weights=weights, support=support, alias=alias)
    np.testing.assert_allclose(back, profile, atol=1e-8 * np.abs(profile).max())


def test_operator_rows_interpolate_linearly_in_radius():
    shape, dx = (16, 20), 0.25
    matrix = isotropic_operator(shape, dx)
    freq = radial_frequencies(shape, dx)
    rho = np.hypot(np.fft.fftfreq(16, dx)[:, None], np.fft.rfftfreq(20, dx)[None, :]).ravel()
    np.testing.assert_allclose(matrix @ freq, rho, atol=1e-12)  # B reproduces a linear profile
    np.testing.assert_allclose(matrix.sum(axis=1).A.ravel(), 1.0)


def test_projection_equals_dense_least_squares():
    shape, dx = (14, 18), 0.3
    rng = np.random.default_rng(3)
    c = rng.normal(size=(14, 10))
    dense = isotropic_operator(shape, dx).toarray()
    # full-plane least squares: half-plane columns 1..8 stand for two points each
    mult = np.full(10, 2.0)
    mult[[0, -1]] = 1
    w = np.broadcast_to(mult, c.shape).ravel()
    expected = np.linalg.solve(dense.T @ (w[:, None] * dense), dense.T @ (w * c.ravel()))
    np.testing.assert_allclose(project_isotropic(c, shape, dx), expected, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------- recovery


@st.composite
def kernels_and_images(draw):
    n = draw(st.integers(32, 48))
    seed = draw(st.integers(0, 2**31 - 1))
    size = draw(st.sampled_from([3, 5, 7]))
    rng = np.random.default_rng(seed)
    kernel = rng.uniform(0, 1, (size, size)) ** draw(st.sampled_from([1, 4]))
    kernel /= kernel.sum()
    image = rng.uniform(0.5, 2.0, (n, n)) + draw(st.floats(0.0, 3.0))  # any positive image
    return kernel, image


@PROPERTY
@given(kernels_and_images())
def test_any_unit_kernel_is_recovered_at_high_snr(case):
    kernel, image = case
    n = image.shape[0]
    full = np.zeros_like(image)
    full[: kernel.shape[0], : kernel.shape[1]] = kernel
    full = np.roll(full, (-(kernel.shape[0] // 2), -(kernel.shape[1] // 2)), axis=(0, 1))
    blurred = np.real(np.fft.ifft2(np.fft.fft2(image) * np.fft.fft2(full)))
    sigma = 1e-6
    blurred += np.random.default_rng(0).normal(0, sigma, blurred.shape)  # high SNR
    spectra = field_spectra(image, blurred, edges="none")
    estimate = spectra.numerator / (spectra.denominator + 1e-12 * spectra.denominator.mean())
    truth = np.fft.rfft2(full)
    # the noise's Fourier coefficients have rms n * sigma; divided by |F| it is the estimate's
    # error, large only where a random image happens to have almost no power (8 rms: never)
    allowed = 1e-3 + 8 * n * sigma / np.sqrt(spectra.denominator)
    assert np.all(np.abs(estimate - truth) <= allowed)
    assert estimate[0, 0].real == pytest.approx(1.0, abs=1e-6)
    # and the spatial kernel, recovered without any optics (support estimated from the data)
    est = recover_psf(spectra, (n, n), None, pixel_size_um=0.3, psf_size=kernel.shape[0])
    assert math.isnan(est.defocus_um)
    assert est.psf.min() >= 0 and est.psf.sum() == pytest.approx(1.0)


@PROPERTY
@given(
    sigmas=st.lists(st.floats(0.8, 3.0), min_size=1, max_size=3),
    weights=st.lists(st.floats(0.1, 1.0), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_isotropic_kernel_and_its_psf_are_recovered(sigmas, weights, seed):
    n, size = 48, 15
    yy, xx = np.mgrid[:n, :n]
    r2 = np.fft.ifftshift((yy - n // 2) ** 2 + (xx - n // 2) ** 2)
    kernel = sum(w * np.exp(-r2 / (2 * s * s)) / s**2 for s, w in zip(sigmas, weights, strict=False))
    kernel /= kernel.sum()
    image = blobs((n, n), seed, n=20)
    blurred = circular_blur(image, np.fft.fft2(kernel))
    est = recover_psf(field_spectra(image, blurred, edges="none"), (n, n), None, pixel_size_um=0.3,
                      psf_size=size)
    assert est.otf_radial[0] == 1.0
    truth = np.fft.fftshift(kernel)[n // 2 - size // 2 : n // 2 + size // 2 + 1,
                                    n // 2 - size // 2 : n // 2 + size // 2 + 1]
    truth = truth / truth.sum()
    assert np.abs(est.psf - truth).max() < 0.03 * truth.max()


def test_otf_normalised_psf_centred_non_negative_and_summing_to_one():
    optics = Optics()
    obj, blurred = padded_blur((96, 96), 4.0, optics, seed=5)
    est = estimate_psf(obj, blurred, optics, psf_size=31)
    assert isinstance(est, PSFEstimate)
    assert est.otf_radial[0] == 1.0
    assert np.all(est.otf_radial[est.freq >= optics.cutoff] == 0)
    assert est.psf.shape == (31, 31)
    assert est.psf.min() >= 0
    assert est.psf.sum() == pytest.approx(1.0, abs=1e-12)
    yy, xx = np.mgrid[:31, :31]
    assert (est.psf * yy).sum() == pytest.approx(15, abs=0.05)
    assert (est.psf * xx).sum() == pytest.approx(15, abs=0.05)
    assert est.cutoff == optics.cutoff and est.count == 1


@pytest.mark.parametrize("z", [3.0, 12.0])
def test_noisy_non_periodic_fields_give_depth_and_otf(z):
    optics = Optics()
    shape = (96, 96)
    spectra = []
    for seed in range(6):
        obj, blurred = padded_blur(shape, z, optics, seed=10 + seed)
        image, background = noisy(blurred, 2000, seed=seed)
        spectra.append(field_spectra(obj, image, defocused_background=background))
    est = recover_psf(sum(spectra), shape, optics)
    freq = est.freq
    assert est.defocus_um == pytest.approx(z, abs=0.5)
    assert 0 < est.defocus_err_um < 1.0
    assert rel_l2(est.otf_radial, radial_otf(freq, z, optics), freq <= 0.8 * optics.cutoff) < 0.06


def test_in_focus_reference_gives_the_relative_otf():
    optics = Optics()
    shape = (96, 96)
    z = 8.0
    spectra = []
    for seed in range(4):
        obj, blurred = padded_blur(shape, z, optics, seed=20 + seed, pad=48)
        _, focused = padded_blur(shape, 0.0, optics, seed=20 + seed, pad=48)
        spectra.append(field_spectra(focused, blurred))
    est = recover_psf(sum(spectra), shape, optics, reference="in-focus")
    freq = est.freq
    band = (freq <= 0.8 * optics.cutoff)
    relative = radial_otf(freq, z, optics) / np.where(band, radial_otf(freq, 0, optics), 1)
    assert est.reference == "in-focus"
    assert rel_l2(est.otf_radial, relative, band) < 0.05
    assert est.defocus_um == pytest.approx(z, abs=1.0)


def test_undersampled_camera_is_handled_by_the_alias_model():
    # NA 0.45 at 0.325 um pixels: cutoff 1.96 > Nyquist 1.54 cycles/um, the sampled OTF is aliased.
    optics = SECOND
    shape, z = (64, 64), 5.0
    image = blobs(shape, 7)
    blurred = circular_blur(image, defocus_otf(shape, z, optics))  # the sampled (aliased) OTF
    spectra = field_spectra(image, blurred, edges="none")
    est = recover_psf(spectra, shape, optics)
    freq = est.freq
    truth = radial_otf(freq, z, optics)
    band = (freq > 1.0 / optics.pixel_size_um - optics.cutoff) & (freq < 0.95 * optics.cutoff)
    assert band.any() and freq[band].max() > optics.nyquist  # recovered beyond Nyquist
    assert np.abs(est.otf_radial - truth)[freq < optics.cutoff].max() < 0.01
    assert est.defocus_um == pytest.approx(z, abs=0.05)
    # without the alias model the same data give a visibly wrong profile in that band
    plain = project_isotropic(spectra.numerator / spectra.denominator, shape, optics.pixel_size_um,
                              weights=spectra.denominator, support=optics.cutoff)
    assert np.abs(plain - truth)[band].max() > 5 * np.abs(est.otf_radial - truth)[band].max()


# --------------------------------------------------------------------------- model and fit


def test_psf_keeps_the_names_of_the_optics_primitives():
    # the radial axis and the radial OTF are defined once, in plate_refocus.optics
    from plate_refocus import optics, psf

    assert psf.radial_frequencies is optics.radial_frequencies
    assert not hasattr(psf, "model_radial_otf")  # one radial OTF: optics.radial_otf


@pytest.mark.parametrize("reference, z", [("object", 2.0), ("in-focus", 9.3), ("object", 27.0)])
def test_fit_recovers_depth_from_a_model_profile(reference, z):
    optics = Optics()
    freq = radial_frequencies((128, 128), optics.pixel_size_um)
    profile = radial_otf(freq, z, optics)
    if reference == "in-focus":
        focus = radial_otf(freq, 0, optics)
        profile = np.divide(profile, focus, out=np.zeros_like(profile), where=focus > 1e-6)
    fit_z, err, na = fit_defocus(freq, profile, optics, reference=reference)
    assert fit_z == pytest.approx(z, abs=1e-3)
    assert err < 1e-3 and na is None
    # the sign of z cannot be seen
    assert fit_defocus(freq, profile, optics, reference=reference)[0] >= 0


def test_fit_of_numerical_aperture():
    truth = dataclasses.replace(Optics(), na=0.27)
    freq = radial_frequencies((128, 128), truth.pixel_size_um)
    profile = radial_otf(freq, 7.0, truth)
    z, _, na = fit_defocus(freq, profile, Optics(), fit_na=True)
    assert na == pytest.approx(0.27, abs=0.003)
    assert z == pytest.approx(7.0, abs=0.1)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"reference": "focus"}, ValueError, "reference must be one of"),
        ({"mu": -1.0}, ValueError, "mu must be a non-negative number"),
        ({"mu": "big"}, ValueError, "mu must be a non-negative number or 'auto'"),
        ({"psf_size": 0}, ValueError, "psf_size must be a positive int"),
        ({"weighting": "flat"}, ValueError, "weighting must be"),
        ({"shape": (32, 30)}, ValueError, "do not belong to images of shape"),
        ({"optics": None}, ValueError, "needs optics or pixel_size_um"),
        ({"optics": "0.25"}, TypeError, "optics must be an Optics"),
        ({"spectra": np.zeros((32, 17))}, TypeError, "spectra must be a FieldSpectra"),
    ],
)
def test_recover_psf_checks_its_arguments(kwargs, error, match):
    spectra = field_spectra(blobs((32, 32), 0), blobs((32, 32), 1))
    args = {"spectra": spectra, "shape": (32, 32), "optics": Optics(), **kwargs}
    with pytest.raises(error, match=match):
        recover_psf(args.pop("spectra"), args.pop("shape"), args.pop("optics"), **args)


# --------------------------------------------------------------------------- CuPy


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_cupy_path_agrees_with_numpy():
    optics = Optics()
    obj = np.stack([padded_blur((128, 128), 6.0, optics, s)[0] for s in range(3)])
    img = np.stack([padded_blur((128, 128), 6.0, optics, s)[1] for s in range(3)])
    cpu = field_spectra(obj, img, defocused_background=0.0, backend="numpy")
    gpu = field_spectra(obj, img, defocused_background=0.0, backend="cupy")
    np.testing.assert_allclose(gpu.denominator, cpu.denominator, rtol=1e-5)
    scale = np.abs(cpu.numerator).max()
    assert np.abs(gpu.numerator - cpu.numerator).max() <= 1e-5 * scale
    assert np.abs(gpu.window_terms - cpu.window_terms).max() <= 1e-5 * np.abs(cpu.window_terms).max()
    a = recover_psf(cpu, (128, 128), optics)
    b = recover_psf(gpu, (128, 128), optics)
    np.testing.assert_allclose(b.otf_radial, a.otf_radial, rtol=1e-5, atol=1e-7)


def test_scipy_fft_is_what_the_numpy_backend_uses():
    # the CPU path must be the threaded scipy.fft, not numpy.fft (the benchmark's premise)
    from plate_refocus.xp import get_xp

    _, fft = get_xp("numpy", workers=2)
    assert fft.rfft2.func is scipy.fft.rfft2 and fft.rfft2.keywords == {"workers": 2}
