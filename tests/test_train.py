"""Training: well split, patch streaming, a short run that learns, determinism, plates, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from plate_refocus.errors import PlateRefocusError
from plate_refocus.simulate import simulate_field
from plate_refocus.train import PatchSampler, TrainConfig, split_wells, train_model, train_plate
from plate_refocus.unet import UNetConfig, load_model

pytest.importorskip("keras")

TINY = UNetConfig(depth=2, filters=4, full_resolution="patch")
DEPTHS = (0.0, 4.0, 10.0)


@pytest.fixture(scope="module")
def arrays():
    """Three wells of one 64x64 field, one channel, in memory (the layout of open_plate)."""
    images, targets = [], []
    for w in range(3):
        field = simulate_field((64, 64), DEPTHS, seed=w, channels=("nuclei",))
        images.append(field.images[None])
        targets.append(field.in_focus[None])
    wells = ["A01", "A02", "A03"]
    images = xr.DataArray(np.stack(images), dims=("well", "field", "c", "z", "y", "x"),
                          coords={"well": wells, "z_um": ("z", list(DEPTHS))},
                          attrs={"camera": {"bit_depth": 12}})
    targets = xr.DataArray(np.stack(targets), dims=("well", "field", "c", "y", "x"), coords={"well": wells})
    return images, targets


def test_split_wells_is_disjoint_complete_and_seeded():
    wells = [f"B{i:02d}" for i in range(1, 11)]
    train, val = split_wells(wells, 0.2, seed=3)
    assert not set(train) & set(val) and sorted(train + val) == wells and len(val) == 2
    assert split_wells(wells, 0.2, seed=3) == (train, val)
    assert split_wells(wells, 0.2, seed=4) != (train, val)
    assert split_wells(["A01", "A02"], 0.01, seed=0)[1]  # at least one validation well
    assert split_wells(["A01"], 0.5, seed=0) == (["A01"], [])


def test_patch_sampler_pairs_and_normalisation(arrays):
    images, targets = arrays
    sampler = PatchSampler(images, images.isel(z=0), ["A01", "A02"], [0], patch=32, seed=0)
    for _ in range(8):
        x, y, lo, hi, z = sampler.draw()
        assert x.shape == y.shape == (32, 32) and x.dtype == np.float32 and z == 0
        # target = input plane: the augmentation moves both alike
        np.testing.assert_array_equal(x, y)
    sampler = PatchSampler(images, targets, ["A03"], [1, 2], patch=32, seed=1, augment=False)
    x, y, lo, hi, z = sampler.draw()
    plane = images.sel(well="A03").isel(field=0, c=0, z=z).values
    assert lo == pytest.approx(np.percentile(plane, 1)) and hi == pytest.approx(np.percentile(plane, 99.8))
    xb, yb, err = sampler.batch(3)
    assert xb.shape == yb.shape == (3, 32, 32, 1)
    np.testing.assert_allclose(err, np.mean((xb - yb) ** 2, axis=(1, 2, 3)), rtol=1e-6)


def test_patch_larger_than_the_plane_is_refused(arrays):
    images, targets = arrays
    with pytest.raises(PlateRefocusError, match="smaller --patch"):
        PatchSampler(images, targets, ["A01"], [0], patch=128)


def _train(arrays, tmp_path, name, **options):
    images, targets = options.pop("pairs", arrays)
    config = TrainConfig(**{"patch": 32, "batch_size": 4, "steps_per_epoch": 5, "epochs": 2,
                            "validation_patches": 6, "learning_rate": 1e-3, **options})
    records = []
    model = train_model(images, targets, DEPTHS, out=tmp_path / f"{name}.keras", config=TINY,
                        train=config, progress=records.append)
    return model, records


def test_short_training_lowers_the_loss_and_saves_the_best(arrays, tmp_path):
    # A target a 4-filter network can learn in 20 steps (twice the in-focus plane), so that
    # this checks the training machinery in seconds; refocusing itself needs hours (benchmarks/).
    images, _ = arrays
    pairs = (images, 2.0 * images.isel(z=0).astype("float32"))
    model, records = _train(arrays, tmp_path, "m", epochs=4, learning_rate=1e-2, pairs=pairs)
    history = model.info.metrics["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4]  # epoch 0: the untrained network
    # relative weighting: the untrained residual network (the identity) scores 1.0
    assert history[0]["val_loss"] == pytest.approx(1.0)
    assert min(h["val_loss"] for h in history[1:]) < 0.8
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["metrics"]["val_loss"] == pytest.approx(min(h["val_loss"] for h in history[1:]))
    assert set(saved["training"]["train_wells"]).isdisjoint(saved["training"]["validation_wells"])
    assert saved["depths_um"] == list(DEPTHS)
    assert set(saved["metrics"]["val_psnr_by_depth_um"]) == {"0", "4", "10"}
    assert len(records) == 4 and all("val_loss" in r for r in records)
    loaded = load_model(tmp_path / "m.keras")
    assert loaded.info.sha256 == saved["sha256"]


def test_training_is_deterministic_for_a_seed(arrays, tmp_path):
    a, _ = _train(arrays, tmp_path, "a", epochs=1, seed=5)
    b, _ = _train(arrays, tmp_path, "b", epochs=1, seed=5)
    c, _ = _train(arrays, tmp_path, "c", epochs=1, seed=6)
    for wa, wb in zip(a.keras_model.get_weights(), b.keras_model.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert any(
        not np.array_equal(wa, wc)
        for wa, wc in zip(a.keras_model.get_weights(), c.keras_model.get_weights(), strict=True)
    )


def test_ssim_loss_trains(arrays, tmp_path):
    model, _ = _train(arrays, tmp_path, "s", loss="ssim", weighting="none", epochs=1)
    assert np.isfinite(model.info.metrics["val_loss"])


def test_depth_selection(arrays, tmp_path):
    images, targets = arrays
    config = TrainConfig(patch=32, batch_size=2, steps_per_epoch=1, epochs=1, validation_patches=2)
    model = train_model(images, targets, DEPTHS, out=tmp_path / "d.keras", config=TINY, train=config,
                        depths_um=[10])
    assert model.info.depths_um == (10.0,)
    with pytest.raises(PlateRefocusError, match="depth 7 um is not in the plate"):
        train_model(images, targets, DEPTHS, out=tmp_path / "e.keras", config=TINY, train=config,
                    depths_um=[7])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": "l1"}, "loss"),
        ({"weighting": "depth"}, "weighting"),
        ({"patch": 0}, "patch"),
        ({"learning_rate": 2.0}, "learning_rate"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_patch_must_fit_the_pooling_grid(arrays, tmp_path):
    images, targets = arrays
    with pytest.raises(ValueError, match="multiple of the model's divisor"):
        train_model(images, targets, DEPTHS, out=tmp_path / "x.keras", config=TINY,
                    train=TrainConfig(patch=30))


# --- plates -----------------------------------------------------------------------------------


def test_train_on_a_plate_ground_truth_and_focal_plane(tiny_plate, tmp_path):
    config = TrainConfig(patch=32, batch_size=2, steps_per_epoch=2, epochs=1, validation_patches=3)
    model = train_plate(tiny_plate, tmp_path / "gt.keras", config=TINY, train=config)
    info = model.info
    assert info.training["target"] == "ground-truth" and len(info.training["plate_metadata_sha256"]) == 64
    assert info.depths_um == (0.0, 4.0, 10.0)
    assert info.training["train_wells"] and info.training["validation_wells"]
    model = train_plate(tiny_plate, tmp_path / "fp.keras", config=TINY, train=config,
                        target="focal-plane", depths_um=[4, 10])
    assert model.info.training["target"] == "focal-plane" and model.info.depths_um == (4.0, 10.0)
    with pytest.raises(PlateRefocusError, match="outside the plate's planes"):
        train_plate(tiny_plate, tmp_path / "x.keras", config=TINY, train=config,
                    target="focal-plane", focal_index=9)


def test_cli_train_and_evaluate(tiny_plate, tmp_path, capsys):
    from plate_refocus.cli import main

    out = tmp_path / "cli.keras"
    status = main(["train", str(tiny_plate), "--out", str(out), "--depth", "2", "--filters", "4",
                   "--full-resolution", "conv", "--patch", "32", "--batch-size", "2",
                   "--steps-per-epoch", "2", "--epochs", "2", "--validation-patches", "3"])
    assert status == 0
    text = capsys.readouterr().out
    assert text.count("\nepoch ") + text.startswith("epoch ") == 2 and "val_loss" in text
    assert json.loads(out.with_suffix(".json").read_text())["training"]["command"].startswith("plate-refocus train")
    table = tmp_path / "table.csv"
    status = main(["evaluate", str(tiny_plate), "--model", str(out), "--fields", "2", "--out", str(table),
                   "--out", str(tmp_path / "table.json")])
    assert status == 0
    text = capsys.readouterr().out
    assert "| depth um | input PSNR | refocused PSNR | wiener PSNR |" in text
    lines = table.read_text().splitlines()
    assert lines[0].startswith("depth_um,method,n,psnr_mean") and len(lines) == 1 + 3 * 3
    summary = json.loads((tmp_path / "table.json").read_text())["summary"]
    assert {e["n"] for e in summary} == {4}  # 2 fields x 2 channels


def test_cli_evaluate_missing_model(tiny_plate, tmp_path, capsys):
    from plate_refocus.cli import main

    assert main(["evaluate", str(tiny_plate), "--model", str(tmp_path / "none.keras")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fine_tuning_starts_from_a_model_on_real_fields(tiny_model, tmp_path, capsys):
    """``train --init MODEL --target focal-plane`` on a z-stack made of the real BBBC006 fields
    (their nuclei blurred by the optical model: a real-cell stack with a known in-focus plane)."""
    import tifffile

    from plate_refocus.cli import main
    from plate_refocus.optics import Optics, defocus_otf
    from plate_refocus.plate import write_plate
    from tests.test_ingest import SAMPLE, needs_sample

    if not (SAMPLE / "BBBC006_v1_images_z_00").is_dir():
        pytest.skip(needs_sample.kwargs["reason"])
    files = sorted((SAMPLE / "BBBC006_v1_images_z_00").glob("*.tif"))[:4]
    optics, depths = Optics(), (0.0, 4.0, 10.0)
    rng = np.random.default_rng(0)
    stacks = []
    for path in files:
        field = tifffile.imread(path)[100:196, 100:196].astype(np.float64)
        spectrum = np.fft.rfft2(field - field.min())
        planes = [np.fft.irfft2(spectrum * defocus_otf(field.shape, z, optics, real=True), s=field.shape)
                  for z in depths]
        stacks.append([np.clip(rng.poisson(np.clip(p, 0, None)) + 100, 0, 4095) for p in planes])
    images = np.asarray(stacks, dtype=np.uint16).reshape(2, 2, 1, len(depths), 96, 96)
    plate = write_plate(tmp_path / "real.zarr", images, ["A01", "A02"], optics=optics,
                        z_um=list(depths), channel_names=["Hoechst"], plate_rows=8, plate_columns=12,
                        focal_plane=0, camera={"bit_depth": 12, "offset": 100.0})
    out = tmp_path / "tuned.keras"
    status = main(["train", str(plate), "--out", str(out), "--init", str(tiny_model),
                   "--target", "focal-plane", "--patch", "32", "--batch-size", "2",
                   "--steps-per-epoch", "2", "--epochs", "1", "--validation-patches", "3"])
    assert status == 0, capsys.readouterr().err
    assert "fine-tuning" in capsys.readouterr().out
    start, tuned = load_model(tiny_model), load_model(out)
    assert tuned.info.config == start.info.config
    assert tuned.info.training["init"]["sha256"] == start.info.sha256
    assert tuned.info.training["target"] == "focal-plane"
    assert not np.allclose(tuned.keras_model.get_weights()[0], start.keras_model.get_weights()[0])
