"""Hybrid's second network: the refiner of Richardson-Lucy's output at depth (files, checks, use)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from plate_refocus.errors import ModelError
from plate_refocus.optics import Optics, radial_frequencies
from plate_refocus.pipeline import RL_CONSISTENCY_LIMIT, DepthSettings, process_depth
from plate_refocus.results import METHOD_IDENTITY, METHOD_RL, METHOD_RL_REFINED
from plate_refocus.simulate import Camera, simulate_field
from plate_refocus.unet.refiner import (
    Refiner,
    RefinerInfo,
    build_refiner,
    load_refiner,
    save_refiner,
    shipped_refiner_path,
)

OPTICS, CAMERA = Optics(), Camera()
SHAPE = (96, 96)
INFO = RefinerInfo(name="tiny", optics=OPTICS, min_depth_um=8.0, max_depth_um=36.0, depth_channel=True,
                   divisor=2)


def constant_refiner(value: float) -> Refiner:
    """A real (tiny) refiner whose correction is `value` everywhere, in normalised units."""
    _, correction = build_refiner(filters=2, depth=1, channels=3)
    last = correction.layers[-1]
    kernel, bias = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.full_like(bias, value)])
    return Refiner(correction, INFO)


def scale_of(plane: np.ndarray) -> float:
    return max(float(np.percentile(plane, 99.9)) - CAMERA.offset, 20.0)


def test_a_refiner_file_round_trips_in_safe_mode_and_is_checked(tmp_path):
    refiner = constant_refiner(0.01)
    path = save_refiner(refiner.keras_model, INFO, tmp_path / "r.keras")
    loaded = load_refiner(path)
    assert loaded.info.sha256 and loaded.info.min_depth_um == 8.0 and loaded.info.channels == 3
    rng = np.random.default_rng(0)
    plane = rng.poisson(300, (50, 70)).astype(np.float32) + CAMERA.offset
    restored = plane * 1.1
    out = loaded.refine(plane, restored, CAMERA.offset, 20.0)
    assert out.shape == plane.shape and out.dtype == np.float32  # padded to the divisor and cropped back
    np.testing.assert_allclose(out, restored + 0.01 * scale_of(plane), rtol=1e-5)

    meta = path.with_suffix(".json")
    data = json.loads(meta.read_text())
    meta.write_text(json.dumps({**data, "sha256": "0" * 64}))
    with pytest.raises(ModelError, match="do not belong together"):
        load_refiner(path)
    meta.write_text(json.dumps({**data, "depth_channel": False}))
    with pytest.raises(ModelError, match="2 channels in"):
        load_refiner(path)
    meta.write_text(json.dumps({"name": "a U-Net's metadata"}))
    with pytest.raises(ModelError, match="not a plate-refocus RL refiner"):
        load_refiner(path)


def test_a_refiner_applies_only_to_its_optics_and_depths():
    refiner = constant_refiner(0.0)
    assert refiner.applies(dataclasses.replace(OPTICS, na=0.26), 20.0)  # 4 % off: within tolerance
    assert not refiner.applies(dataclasses.replace(OPTICS, na=0.275), 20.0)
    assert not refiner.applies(OPTICS, 5.0) and not refiner.applies(OPTICS, 40.0)


@pytest.fixture(scope="module")
def planes():
    """Three simulated nuclei fields at focus and at 20 um (C=1)."""
    fields = [simulate_field(SHAPE, (0.0, 20.0), seed=s, channels=("nuclei",)) for s in (1, 2, 3)]
    return np.stack([f.images[0] for f in fields])  # (F, Z, Y, X)


def settings(method: str) -> DepthSettings:
    return DepthSettings(optics=OPTICS, method=method, reference="blind", background=CAMERA.offset,
                         data_range=4095.0, backend="numpy", read_noise=CAMERA.read_noise)


def test_hybrid_refines_richardson_lucy_where_it_restored_at_depth(planes):
    freq = radial_frequencies(SHAPE, OPTICS.pixel_size_um)
    at_depth = list(planes[:, 1])
    rl = process_depth(at_depth, settings=settings("rl"), freq=freq)
    refined = process_depth(at_depth, settings=settings("hybrid"), freq=freq, refiner=constant_refiner(0.002),
                            refocus=lambda s: np.asarray(s, np.float32))
    assert (rl.method_used == METHOD_RL).all()
    assert (refined.method_used == METHOD_RL_REFINED).all()
    for f in range(3):
        np.testing.assert_allclose(refined.refocused[f], rl.refocused[f] + 0.002 * scale_of(at_depth[f]),
                                   rtol=1e-5)
    assert np.all(refined.consistency <= RL_CONSISTENCY_LIMIT)
    # the default method does not use it
    again = process_depth(at_depth, settings=settings("rl"), freq=freq, refiner=constant_refiner(0.002))
    assert (again.method_used == METHOD_RL).all()
    # a correction that no longer explains the plane is dropped: RL's output is kept
    wild = process_depth(at_depth, settings=settings("hybrid"), freq=freq, refiner=constant_refiner(5.0),
                         refocus=lambda s: np.asarray(s, np.float32))
    assert (wild.method_used == METHOD_RL).all()
    np.testing.assert_array_equal(wild.refocused, rl.refocused)
    # near focus RL restores nothing, so there is nothing to refine
    focus = process_depth(list(planes[:, 0]), settings=settings("hybrid"), freq=freq,
                          refiner=constant_refiner(0.002), refocus=lambda s: 3.0 * np.asarray(s, np.float32))
    assert (focus.method_used == METHOD_IDENTITY).all()


def test_the_shipped_refiner_is_chosen_by_optics():
    path = shipped_refiner_path(OPTICS)
    if path is None:
        pytest.skip("no refiner is shipped in this checkout")
    info = load_refiner(path).info
    assert not info.optics.differs_from(OPTICS, rtol=0.05)
    assert info.min_depth_um >= 5.0 and info.training.get("script")  # trained away from focus, reproducibly
    assert shipped_refiner_path(dataclasses.replace(OPTICS, na=0.8)) is None
