"""Morphology families and simulation optics the estimators do not model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from plate_refocus.morphology import (
    FAMILIES,
    HELD_OUT_FAMILIES,
    STAINS,
    Family,
    describe,
    get_family,
    random_family,
    render_objects,
)
from plate_refocus.optics import Optics, defocus_otf, radial_otf
from plate_refocus.simulate import simulate_field, simulate_objects

SHAPE = (128, 128)


def nucleus_areas_um2(image: np.ndarray, pixel_size_um: float = 0.3) -> np.ndarray:
    labels, n = ndimage.label(image > 0.3 * image.max())
    return np.bincount(labels.ravel())[1:] * pixel_size_um**2 if n else np.array([])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_deterministic_and_draws_every_stain(name):
    a = simulate_objects(SHAPE, seed=3, channels=STAINS, family=name)
    b = simulate_objects(SHAPE, seed=3, channels=STAINS, family=name)
    c = simulate_objects(SHAPE, seed=4, channels=STAINS, family=name)
    assert a.shape == (3, *SHAPE) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert (a >= 0).all() and np.isfinite(a).all()
    fam = get_family(name)
    if not (fam.background or fam.haze):
        np.testing.assert_allclose(a.reshape(3, -1).max(axis=1)[a.reshape(3, -1).max(axis=1) > 0], 1.0)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_differs_from_the_training_family(name):
    train = simulate_objects((256, 256), seed=5, channels=("nuclei", "actin"))
    other = simulate_objects((256, 256), seed=5, channels=("nuclei", "actin"), family=name)
    assert not np.allclose(train, other)
    assert get_family(name).differs and name in describe()


def test_sizes_are_in_micrometres():
    small = np.concatenate([nucleus_areas_um2(simulate_objects((256, 256), seed=s, channels=("nuclei",),
                                                                family="small-nuclei")[0]) for s in range(3)])
    large = np.concatenate([nucleus_areas_um2(simulate_objects((512, 512), seed=s, channels=("nuclei",),
                                                                family="large-nuclei")[0]) for s in range(3)])
    train = np.concatenate([nucleus_areas_um2(simulate_objects((256, 256), seed=s, channels=("nuclei",))[0])
                            for s in range(3)])
    assert np.median(small) < 0.6 * np.median(train) < np.median(train) < 0.5 * np.median(large)
    # the same family at half the pixel size: the same nuclei in um, four times the pixels
    fine = nucleus_areas_um2(render_objects((512, 512), "large-nuclei", seed=1, channels=("nuclei",),
                                            pixel_size_um=0.15)[0], 0.15)
    coarse = nucleus_areas_um2(render_objects((256, 256), "large-nuclei", seed=1, channels=("nuclei",))[0])
    assert 0.5 < np.median(fine) / np.median(coarse) < 2.0


def test_the_training_family_is_unchanged_by_the_new_parameters():
    plain = simulate_field(SHAPE, (0, 6), seed=9, channels=("nuclei", "actin"))
    named = simulate_field(SHAPE, (0, 6), seed=9, channels=("nuclei", "actin"), family="u2os",
                           spherical_rms_waves=0.0)
    np.testing.assert_array_equal(plain.images, named.images)
    np.testing.assert_array_equal(plain.object, named.object)


def test_a_family_field_has_ground_truth_and_noise_like_any_field():
    f = simulate_field(SHAPE, (0, 10), seed=2, channels=("cytoplasm", "nuclei"), family="mitotic")
    assert f.images.shape == (2, 2, *SHAPE) and f.images.dtype == np.uint16
    assert f.in_focus.shape == (2, *SHAPE)


def test_spherical_aberration_changes_the_otf_and_breaks_the_z_symmetry():
    optics = Optics()
    ideal = defocus_otf((64, 64), 4.0, optics)
    np.testing.assert_array_equal(defocus_otf((64, 64), 4.0, optics, spherical_rms_waves=0.0), ideal)
    plus = defocus_otf((64, 64), 4.0, optics, spherical_rms_waves=0.15)
    minus = defocus_otf((64, 64), -4.0, optics, spherical_rms_waves=0.15)
    assert np.abs(plus - ideal).max() > 0.02
    assert np.abs(plus - minus).max() > 0.02
    assert plus[0, 0].real == pytest.approx(1.0)
    freq = np.linspace(0, 1.0, 11)
    assert np.abs(radial_otf(freq, 0.0, optics, spherical_rms_waves=0.15) - radial_otf(freq, 0.0, optics)).max() > 0.02
    aberrated = simulate_field(SHAPE, (0, 6), seed=9, channels=("nuclei",), spherical_rms_waves=0.15)
    plain = simulate_field(SHAPE, (0, 6), seed=9, channels=("nuclei",))
    # the same cells (scaled by the aberrated in-focus peak), imaged through another pupil
    np.testing.assert_allclose(aberrated.object / aberrated.object.max(), plain.object / plain.object.max(),
                               rtol=1e-5, atol=1e-6)
    assert not np.array_equal(aberrated.images, plain.images)


@pytest.mark.parametrize("call, error, match", [
    (lambda: simulate_objects(SHAPE, seed=1, family="neurons"), ValueError, "unknown morphology family"),
    (lambda: simulate_objects(SHAPE, seed=1, family="sparse", channels=("dapi",)), ValueError, "channels"),
    (lambda: simulate_field(SHAPE, (0,), seed=1, channels=("cytoplasm",)), ValueError, "channels"),
    (lambda: simulate_field(SHAPE, (0,), seed=1, spherical_rms_waves=5.0), ValueError, "at most 2 waves"),
    (lambda: get_family(3), TypeError, "name or a Family"),
])
def test_arguments_are_checked(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_custom_family_can_be_passed_directly():
    custom = Family("tiny", "test", nucleus_um=(2.0, 3.0), density=20.0)
    out = render_objects(SHAPE, custom, seed=0, channels=("nuclei",))
    assert out.shape == (1, *SHAPE) and out.max() == pytest.approx(1.0)


def test_random_families_are_reproducible_and_span_the_held_out_kinds_of_cells():
    draws = [random_family(np.random.default_rng(s)) for s in range(400)]
    assert random_family(np.random.default_rng(7)) == draws[7]
    lows = np.array([f.nucleus_um[0] for f in draws])
    assert lows.min() < 3.5 and lows.max() > 15.0  # small to large nuclei
    assert max(f.texture for f in draws) > 0.65 and max(f.chromocentres[1] for f in draws) >= 25
    assert max(f.mitotic for f in draws) > 0.5
    held_out = [get_family(n) for n in HELD_OUT_FAMILIES]
    assert all(f not in held_out for f in draws)
    for s, fam in enumerate(draws[:8]):  # every draw renders every stain
        out = render_objects(SHAPE, fam, seed=s, channels=STAINS)
        assert out.shape == (3, *SHAPE) and np.isfinite(out).all() and (out >= 0).all()


def test_a_plate_of_a_family_records_it(tmp_path, client):
    import zarr

    from plate_refocus.plate import open_plate
    from plate_refocus.simulate import simulate_plate

    path = simulate_plate(tmp_path / "p.zarr", rows=1, columns=1, fields=1, depths_um=(0, 4), size=(64, 64),
                          channels=("cytoplasm", "nuclei"), family="sparse", spherical_rms_waves=0.1, client=client)
    plate = open_plate(path)
    assert list(plate.coords["c"].values) == ["cytoplasm", "nuclei"]
    simulation = zarr.open_group(str(path), mode="r").attrs["plate_refocus"]["simulation"]
    assert simulation["family"] == "sparse" and simulation["spherical_rms_waves"] == 0.1
