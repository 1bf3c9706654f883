"""The domain-randomised training set: what it draws, that it stays off the held-out families, and
that train_model trains on it and records what it was trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from plate_refocus.morphology import HELD_OUT_FAMILIES
from plate_refocus.optics import Optics
from plate_refocus.train import TrainConfig, train_model
from plate_refocus.train.randomised import (
    TRAINING_FAMILIES,
    Randomisation,
    randomised_training_set,
    summarise_conditions,
)
from plate_refocus.unet import UNetConfig

OPTICS = Optics()
SMALL = Randomisation(depths_um=(0.0, 10.0, 30.0))


@pytest.fixture(scope="module")
def small_set():
    return randomised_training_set(OPTICS, wells=12, fields=1, size=64, seed=3, randomisation=SMALL)


def test_the_held_out_families_are_never_trained_on():
    assert "u2os" in TRAINING_FAMILIES and len(TRAINING_FAMILIES) == 7
    assert not set(TRAINING_FAMILIES) & set(HELD_OUT_FAMILIES)


def test_every_well_draws_its_own_condition_within_the_ranges(small_set):
    images, targets, depths, conditions = small_set
    assert images.shape == (12, 1, 1, 3, 64, 64) and images.dtype == np.uint16
    assert targets.shape == (12, 1, 1, 64, 64) and targets.dtype == np.float32
    np.testing.assert_array_equal(depths, [0.0, 10.0, 30.0])
    assert images.attrs["optics"] == OPTICS.to_dict()  # the nominal optics the model is for
    for c in conditions:
        assert c["family"] in TRAINING_FAMILIES
        assert c["family"] != "u2os" or c["stain"] in ("nuclei", "actin")
        assert 200 <= c["photons"] <= 20000
        for key in ("na", "wavelength_um", "pixel_size_um"):
            assert abs(c[key] / getattr(OPTICS, key) - 1) <= 0.05
    summary = summarise_conditions(conditions)
    assert summary["wells"] == 12 and len(summary["families"]) > 2  # it varies
    assert summary["photons"][1] / summary["photons"][0] > 2
    # bright wells do not saturate: the 16-bit camera holds 20,000 photons
    assert images.values.max() < 2**16 - 1


def test_the_set_is_reproducible_for_a_seed(small_set):
    images, _, _, conditions = randomised_training_set(OPTICS, wells=12, fields=1, size=64, seed=3,
                                                       randomisation=SMALL)
    np.testing.assert_array_equal(images.values, small_set[0].values)
    assert conditions == small_set[3]
    other = randomised_training_set(OPTICS, wells=2, fields=1, size=64, seed=4, randomisation=SMALL)
    assert not np.array_equal(other[0].values, small_set[0].values[:2])


@pytest.mark.parametrize("kwargs, match", [
    ({"families": ("textured-ish",)}, "families"),
    ({"stains": ()}, "stains"),
    ({"photons": (500.0, 100.0)}, "photons"),
    ({"optics_jitter": 0.6}, "optics_jitter"),
    ({"depths_um": (-1.0, 5.0)}, "depths_um"),
])
def test_bad_randomisation_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Randomisation(**kwargs)


def test_train_model_trains_on_it_and_records_the_randomisation(small_set, tmp_path):
    images, targets, depths, conditions = small_set
    out = tmp_path / "randomised.keras"
    model = train_model(images, targets, depths, out=out, config=UNetConfig(depth=2, filters=4),
                        train=TrainConfig(patch=32, batch_size=2, steps_per_epoch=2, epochs=1, validation_patches=3),
                        training_info={"plate": SMALL.describe(), "target": "ground-truth",
                                       "randomisation": SMALL.to_dict(), "drawn": summarise_conditions(conditions)})
    assert model.info.optics == OPTICS
    record = json.loads(out.with_suffix(".json").read_text())["training"]
    assert record["plate"].startswith("domain-randomised simulation: 7 families")
    assert record["randomisation"]["photons"] == [200.0, 20000.0]
    assert record["drawn"]["wells"] == 12
