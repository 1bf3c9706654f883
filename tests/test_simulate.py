"""The field simulator: objects, blur without wrap-around, camera noise, determinism."""

import numpy as np
import pytest
import scipy.fft
import scipy.signal

from plate_refocus.optics import Optics, defocus_psf, radial_frequencies
from plate_refocus.simulate import (
    DEFAULT_DEPTHS_UM,
    Camera,
    _blur,
    _padded_shape,
    field_padding,
    simulate_field,
    simulate_objects,
    true_otf_radial,
)

DEPTHS = (0, 4, 10)


@pytest.fixture(scope="module")
def field():
    return simulate_field((96, 80), DEPTHS, seed=11)


def test_default_depths_are_the_reports():
    assert DEFAULT_DEPTHS_UM == (0, 2, 4, 6, 8, 10, 15, 20, 25, 30, 40)


def test_objects_shape_range_and_determinism():
    obj = simulate_objects((128, 96), seed=3)
    assert obj.shape == (2, 128, 96) and obj.dtype == np.float32
    assert obj.min() >= 0 and obj.max() == pytest.approx(1.0)
    np.testing.assert_array_equal(obj, simulate_objects((128, 96), seed=3))
    assert not np.array_equal(obj, simulate_objects((128, 96), seed=4))
    # The cells do not depend on which channels are drawn.
    np.testing.assert_array_equal(obj[1], simulate_objects((128, 96), seed=3, channels=["actin"])[0])
    np.testing.assert_array_equal(obj[0], simulate_objects((128, 96), seed=np.random.SeedSequence(3),
                                                           channels=("nuclei",))[0])


def test_objects_look_like_cells():
    nuclei, actin = simulate_objects((256, 256), seed=5)
    # Nuclei are compact blobs on a dark background; actin spreads wider around them.
    nuclear_area = (nuclei > 0.1).mean()
    cell_area = (actin > 0.05).mean()
    assert 0.03 < nuclear_area < 0.5
    assert cell_area > 1.5 * nuclear_area
    # Texture: the nuclei are not flat discs.
    inside = nuclei[nuclei > 0.3]
    assert inside.std() / inside.mean() > 0.08
    # Actin has thin bright structures (rims, fibres): lots of high-frequency energy.
    lap = np.abs(np.diff(actin, 2, axis=0)).mean() + np.abs(np.diff(actin, 2, axis=1)).mean()
    assert lap / actin.mean() > 0.2


def test_field_shapes_dtypes_and_ground_truth(field):
    assert field.images.shape == (2, 3, 96, 80) and field.images.dtype == np.uint16
    assert field.object.shape == field.in_focus.shape == (2, 96, 80)
    assert field.object.dtype == field.in_focus.dtype == np.float32
    camera = Camera()
    assert field.object.min() >= 0
    assert field.in_focus.min() >= camera.offset - 1e-3
    assert field.in_focus.max() <= camera.offset + camera.photons * (1 + 1e-6)
    assert field.images.max() <= camera.max_value


def test_field_is_deterministic_and_seed_dependent(field):
    again = simulate_field((96, 80), DEPTHS, seed=11)
    for a, b in zip(field, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = simulate_field((96, 80), DEPTHS, seed=12)
    assert not np.array_equal(field.images, other.images)


def test_in_focus_plane_is_in_focus_image_plus_camera_noise(field):
    camera = Camera()
    expected = field.in_focus.astype(float)
    residual = field.images[:, 0].astype(float) - expected
    variance = (expected - camera.offset) + camera.read_noise**2 + 1 / 12  # Poisson + read + rounding
    z = residual / np.sqrt(variance)
    assert abs(z.mean()) < 0.05
    assert 0.93 < z.std() < 1.07


def test_defocus_blurs_more_with_depth(field):
    def sharpness(img):
        img = img.astype(float)
        return np.mean(np.diff(img, axis=0) ** 2) + np.mean(np.diff(img, axis=1) ** 2)

    for c in range(2):
        s = [sharpness(field.images[c, j]) for j in range(3)]
        assert s[0] > s[1] > s[2]


def test_defocus_conserves_flux():
    # K_z(0) = 1: blurring moves light around but keeps its total, up to what crosses the
    # field's edges (small for a 128 px field at z = 6 um) and the noise.
    camera = Camera(photons=500.0, read_noise=3.0)
    f = simulate_field((128, 128), (0, 6), seed=7, camera=camera, channels=("nuclei",))
    flux_focus = (f.in_focus[0] - camera.offset).sum()
    flux_defocus = (f.images[0, 1].astype(float) - camera.offset).sum()
    assert flux_defocus == pytest.approx(flux_focus, rel=0.05)
    assert (f.object[0].sum()) == pytest.approx(flux_focus, rel=0.05)


def test_blur_has_no_wraparound_inside_the_crop():
    optics = Optics()
    shape = (64, 64)
    for z in (0.0, 10.0, 40.0):
        errors = {}
        for name, pad in (("none", 0), ("full", field_padding(z, optics))):
            big = _padded_shape(shape, pad)
            density = simulate_objects(big, seed=1)[1:].astype(float)
            circular = _blur(scipy.fft.rfft2(density, axes=(-2, -1)), big, z, optics)[0]
            linear = scipy.signal.fftconvolve(density[0], defocus_psf((1025, 1025), z, optics), mode="same")
            y0, x0 = (big[0] - shape[0]) // 2, (big[1] - shape[1]) // 2
            crop = (slice(y0, y0 + shape[0]), slice(x0, x0 + shape[1]))
            errors[name] = np.abs(circular[crop] - linear[crop]).max() / linear.max()
        assert errors["none"] > 0.1  # the comparison does see wrap-around when it is there
        assert errors["full"] < 0.01  # below the photon noise at the default 2000 photons


def test_clipping_and_quantisation():
    camera = Camera(photons=5000.0, offset=100.0, bit_depth=12)
    f = simulate_field((64, 64), (0,), seed=2, camera=camera, channels=("nuclei",))
    assert f.images.max() == 4095  # bright pixels saturate at 2**12 - 1
    low = Camera(photons=50.0, offset=0.0, read_noise=5.0)
    g = simulate_field((64, 64), (0,), seed=2, camera=low, channels=("nuclei",))
    assert g.images.min() == 0  # read noise below zero is clipped, not wrapped to 65535


def test_true_otf_radial_starts_at_one_and_decays_with_depth():
    freq = radial_frequencies((64, 64), 0.3)  # the results' axis: 0 past the corner of the grid
    assert freq[0] == 0 and freq[-1] > np.hypot(1 / 0.6, 1 / 0.6)
    otf = true_otf_radial(DEPTHS, freq)
    assert otf.shape == (3, freq.size)
    np.testing.assert_allclose(otf[:, 0], 1.0, atol=1e-9)
    assert np.abs(otf[0, 1:6]).sum() > np.abs(otf[2, 1:6]).sum()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"photons": 0}, ValueError, "photons"),
        ({"read_noise": -1}, ValueError, "read_noise"),
        ({"bit_depth": 17}, ValueError, "1..16"),
        ({"bit_depth": 12.0}, TypeError, "integer"),
        ({"offset": 5000}, ValueError, "offset"),
        ({"photons": "many"}, TypeError, "number"),
    ],
)
def test_camera_rejects_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        Camera(**kwargs)


def test_camera_round_trips_through_dict():
    camera = Camera(photons=123.0, bit_depth=16)
    assert Camera.from_dict(camera.to_dict()) == camera
    with pytest.raises(ValueError, match="unknown camera keys"):
        Camera.from_dict({"gain": 2})


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: simulate_objects((4, 64), seed=0), ValueError, "shape"),
        (lambda: simulate_objects((64, 64), seed=-1), TypeError, "seed"),
        (lambda: simulate_objects((64, 64), seed=0, channels=("dapi",)), ValueError, "channels"),
        (lambda: simulate_objects((64, 64), seed=0, channels="nuclei"), TypeError, "channels"),
        (lambda: simulate_field((64, 64), (), seed=0), ValueError, "depths_um"),
        (lambda: simulate_field((64, 64), (0, np.nan), seed=0), ValueError, "depths_um"),
        (lambda: simulate_field((64, 64), (0,), seed=0, optics={"na": 0.25}), TypeError, "Optics"),
    ],
)
def test_simulate_rejects_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
