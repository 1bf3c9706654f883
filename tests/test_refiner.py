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
    # unless the refiner was calibrated to a higher limit on its own validation wells (train-refiner)
    calibrated = constant_refiner(5.0)
    calibrated.info = dataclasses.replace(INFO, consistency_limit=1e9)
    kept = process_depth(at_depth, settings=settings("hybrid"), freq=freq, refiner=calibrated,
                         refocus=lambda s: np.asarray(s, np.float32))
    assert (kept.method_used == METHOD_RL_REFINED).all() and np.all(kept.consistency > RL_CONSISTENCY_LIMIT)
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


# --- fine-tuning on a plate (plate-refocus train-refiner) -------------------------------------------


def tree_digest(root) -> dict[str, bytes]:
    """Every file under `root` and its bytes: to show a plate was not written to."""
    from pathlib import Path

    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stack_plate(tmp_path_factory, client):
    """Three wells of two 96 x 96 nuclei fields, planes at 0 (in focus, recorded), 20 and 25 um."""
    from plate_refocus.simulate import simulate_plate

    out = tmp_path_factory.mktemp("stack") / "stack.zarr"
    return simulate_plate(out, rows=1, columns=3, fields=2, depths_um=(0.0, 20.0, 25.0), size=(96, 96),
                          channels=("nuclei",), seed=4, client=client)


def test_refiner_examples_are_what_hybrid_hands_the_refiner(stack_plate):
    from plate_refocus.plate import open_plate
    from plate_refocus.train.refiner import refiner_examples

    examples = refiner_examples(stack_plate, INFO, patch=96, patches_per_plane=1)
    # every (well, depth, field) that run's Richardson-Lucy restored and kept, in order, with RL's output
    images = open_plate(stack_plate)
    freq = radial_frequencies(SHAPE, OPTICS.pixel_size_um)
    n = 0
    for w, well in enumerate(["A01", "A02", "A03"]):
        focal = np.asarray(images.isel(well=w, c=0, z=0).values, np.float32)
        for z in (1, 2):
            planes = list(np.asarray(images.isel(well=w, c=0, z=z).values, np.float32))
            rl = process_depth(planes, settings=settings("rl"), freq=freq)
            for f in np.flatnonzero(rl.method_used == METHOD_RL):
                assert examples.wells[n] == well and 8.0 <= examples.depths_um[n] <= 36.0  # the blind |z|
                expected, scale = INFO.network_input(planes[f], rl.refocused[f], CAMERA.offset, examples.depths_um[n])
                np.testing.assert_allclose(examples.inputs[n], expected, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(examples.targets[n, ..., 0], (focal[f] - CAMERA.offset) / scale,
                                           rtol=1e-5, atol=1e-6)  # the target: the field's focal plane
                rl_error = np.mean((expected[..., 1] - examples.targets[n, ..., 0]) ** 2)
                assert examples.weights[n] == pytest.approx(1.0 / rl_error, rel=1e-4)  # RL's own error counts 1
                n += 1
    assert n == len(examples.wells) >= 6


def test_train_refiner_fine_tunes_on_a_stack_and_run_hybrid_uses_it(stack_plate, tmp_path, capsys):
    from plate_refocus.cli import main

    start = save_refiner(constant_refiner(0.0).keras_model, INFO, tmp_path / "start.keras")
    before = tree_digest(stack_plate)
    out = tmp_path / "tuned.keras"
    argv = ["train-refiner", str(stack_plate), "--out", str(out), "--init", str(start), "--epochs", "2",
            "--patch", "64", "--patches-per-plane", "2", "--learning-rate", "1e-3"]
    assert main(argv) == 0
    assert tree_digest(stack_plate) == before  # the plate is only read
    tuned = load_refiner(out)
    training, scores = tuned.info.training, tuned.info.metrics["validation_relative_mse"]
    assert training["init"]["sha256"] == load_refiner(start).info.sha256 and training["target"] == "focal-plane"
    assert training["plate"] == str(stack_plate) and len(training["wells"]["validation"]) == 1
    assert scores["rl"] == 1.0 and scores["best"] <= scores["start"] and len(scores["per_epoch"]) == 2
    # a zero correction is RL: its validation score is RL's (1.0) up to float32 rounding
    assert scores["start"] == pytest.approx(1.0, abs=1e-3)
    through = tuned.info.metrics["validation_through_hybrid"]  # the held-out well run as hybrid runs it
    assert through["planes"] >= 1 and through["kept"] <= through["planes"]
    limit = tuned.info.consistency_limit
    assert limit is None or limit > RL_CONSISTENCY_LIMIT  # raised only above RL's own, never lowered
    assert "validation relative MSE (RL = 1)" in capsys.readouterr().out

    assert main(argv) == 2  # never replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--epochs", "1"]) == 0

    results = tmp_path / "results.zarr"
    assert main(["run", str(stack_plate), str(results), "--method", "hybrid", "--refiner", str(out),
                 "--dry-run"]) == 0
    assert f"refiner: tuned ({out})" in capsys.readouterr().out
    assert main(["run", str(stack_plate), str(results), "--refiner", str(out), "--dry-run"]) == 2
    assert "--method hybrid" in capsys.readouterr().err
    other = save_refiner(constant_refiner(0.0).keras_model,
                         dataclasses.replace(INFO, optics=dataclasses.replace(OPTICS, na=0.45)), tmp_path / "na.keras")
    assert main(["run", str(stack_plate), str(results), "--method", "hybrid", "--refiner", str(other),
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "train-refiner" in err and "--refiner none" in err and len(err.strip().splitlines()) == 1
    assert main(["run", str(stack_plate), str(results), "--method", "hybrid", "--refiner", "none",
                 "--dry-run"]) == 0
    assert "refiner: none;" in capsys.readouterr().out
    assert not results.exists()


def test_train_refiner_refuses_a_stack_without_planes_at_its_depths(tmp_path, client):
    from plate_refocus.errors import PlateRefocusError
    from plate_refocus.simulate import simulate_plate
    from plate_refocus.train.refiner import refiner_examples

    near = simulate_plate(tmp_path / "near.zarr", rows=1, columns=2, fields=1, depths_um=(0.0, 2.0, 4.0),
                          size=(96, 96), channels=("nuclei",), client=client)
    with pytest.raises(PlateRefocusError, match="reaches those depths"):
        refiner_examples(near, INFO, patch=64)
    with pytest.raises(ModelError, match="--init none"):
        refiner_examples(near, dataclasses.replace(INFO, optics=dataclasses.replace(OPTICS, na=0.45)), patch=64)


def test_a_refiner_that_loses_to_rl_on_validation_wells_is_held_to_rl_s_limit(stack_plate):
    from plate_refocus.train.refiner import _calibrate_limit, _HybridPlanes

    planes = _HybridPlanes.open(stack_plate, INFO, target="focal-plane", focal_index=None, channel=0)
    worse = _calibrate_limit(planes, ["A01", "A02"], constant_refiner(5.0))  # adds a bright haze
    assert worse["planes"] >= 2 and worse["gain_over_rl_db"]["max"] < 0
    assert worse["consistency_limit"] is None and worse["kept"] == 0 and worse["gain_as_run_db"] == 0.0
    same = _calibrate_limit(planes, ["A01", "A02"], constant_refiner(0.0))  # RL itself: nothing to trust more
    assert same["consistency_limit"] is None and same["gain_over_rl_db"]["max"] == pytest.approx(0.0, abs=1e-3)


def test_refiner_examples_can_be_limited_to_some_wells(stack_plate):
    from plate_refocus.errors import PlateRefocusError
    from plate_refocus.train.refiner import refiner_examples

    some = refiner_examples(stack_plate, INFO, patch=64, patches_per_plane=1, wells=["A01", "A03"])
    assert set(some.wells) <= {"A01", "A03"} and len(some.wells) >= 2
    with pytest.raises(PlateRefocusError, match="Z99 are not in"):
        refiner_examples(stack_plate, INFO, patch=64, wells=["A01", "Z99"])


def test_train_refiner_fine_tunes_the_shipped_refiner_on_real_fields(tmp_path, capsys):
    """The code path on real cells: the six real BBBC006 fields (256 px crops), blurred by the optical
    model to 20 um beside their own plane as the in-focus one, fine-tune the shipped refiner."""
    import tifffile

    from plate_refocus.cli import main
    from plate_refocus.optics import defocus_otf
    from plate_refocus.plate import write_plate
    from tests.test_ingest import SAMPLE, needs_sample

    if not (SAMPLE / "BBBC006_v1_images_z_00").is_dir():
        pytest.skip(needs_sample.kwargs["reason"])
    shipped = shipped_refiner_path(OPTICS)
    if shipped is None:
        pytest.skip("no refiner is shipped in this checkout")
    rng = np.random.default_rng(0)
    stacks = []
    for path in sorted((SAMPLE / "BBBC006_v1_images_z_00").glob("*.tif")):
        field = tifffile.imread(path)[:256, :256].astype(np.float64)
        spectrum = np.fft.rfft2(field - field.min())
        planes = [np.fft.irfft2(spectrum * defocus_otf(field.shape, z, OPTICS, real=True), s=field.shape)
                  for z in (0.0, 20.0)]
        stacks.append([np.clip(rng.poisson(np.clip(p, 0, None)) + 100, 0, 4095) for p in planes])
    images = np.asarray(stacks, dtype=np.uint16).reshape(3, 2, 1, 2, 256, 256)
    plate = write_plate(tmp_path / "real.zarr", images, ["A01", "A02", "A03"], optics=OPTICS, z_um=[0.0, 20.0],
                        channel_names=["Hoechst"], plate_rows=8, plate_columns=12, focal_plane=0,
                        camera={"bit_depth": 12, "offset": 100.0, "read_noise": 2.0})
    before = tree_digest(plate)
    out = tmp_path / "ours.keras"
    status = main(["train-refiner", str(plate), "--out", str(out), "--epochs", "1", "--patch", "64",
                   "--patches-per-plane", "2"])
    assert status == 0, capsys.readouterr().err
    assert f"fine-tuning {shipped}" in capsys.readouterr().out
    assert tree_digest(plate) == before
    tuned, start = load_refiner(out), load_refiner(shipped)
    assert tuned.info.training["init"]["sha256"] == start.info.sha256
    assert (tuned.info.min_depth_um, tuned.info.max_depth_um) == (start.info.min_depth_um, start.info.max_depth_um)
    assert tuned.info.metrics["validation_through_hybrid"]["planes"] >= 1
