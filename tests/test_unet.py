"""The U-Net: architecture arithmetic, tiled prediction, normalisation, model files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plate_refocus.errors import (
    ModelError,
    ModelNotFoundError,
    OpticsMismatchWarning,
    PlateRefocusError,
)
from plate_refocus.optics import Optics
from plate_refocus.unet import (
    ModelInfo,
    RefocusModel,
    UNetConfig,
    build_unet,
    default_model_path,
    denormalize,
    load_model,
    normalize,
    percentile_range,
    save_model,
)

keras = pytest.importorskip("keras")

TINY = UNetConfig(depth=2, filters=4, full_resolution="conv")
TINY_PATCH = UNetConfig(depth=2, filters=4, full_resolution="patch")


def _model(config: UNetConfig = TINY, *, seed: int = 1, tile: int = 32, max_tile: int = 64) -> RefocusModel:
    keras_model = build_unet(config, seed=seed)
    # Random, non-trivial weights everywhere (biases too), so every path carries signal.
    rng = np.random.default_rng(seed)
    keras_model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in keras_model.get_weights()])
    info = ModelInfo("tiny", config, Optics(), (0.0, 10.0), tile=tile, max_tile=max_tile)
    return RefocusModel(keras_model, info)


@pytest.fixture(scope="module")
def tiny() -> RefocusModel:
    return _model()


@pytest.fixture(scope="module")
def tiny_patch() -> RefocusModel:
    return _model(TINY_PATCH)


def _image(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + rng.poisson(200, shape) * rng.random(shape) ** 3).astype(np.uint16)


# --- configuration ----------------------------------------------------------------------------


def test_config_margin_halo_divisor():
    # conv: levels 0..D-1 add 6 s each (2 convs + pool down, upconv + 2 convs up), bottom 2 * 2**D
    report = UNetConfig(depth=4, filters=16, full_resolution="conv")
    assert report.receptive_margin == 6 * (1 + 2 + 4 + 8) + 2 * 16
    assert report.divisor == 16 and report.halo == 128
    assert TINY.receptive_margin == 6 * 3 + 8 and TINY.halo == 28
    # patch: 2x2 in/out (+2), then levels 1..D-1, bottom
    assert TINY_PATCH.receptive_margin == 2 + 6 * 2 + 8


def test_config_flops_count_matches_layers():
    """flops_per_pixel agrees with the multiply-adds of the built layers at 64x64."""
    size = 64
    x = np.zeros((1, size, size, 1), "float32")
    for config in (TINY, TINY_PATCH):
        model = build_unet(config)
        convs = [la for la in model.layers if isinstance(la, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
        outputs = keras.Model(model.input, [la.output for la in convs]).predict_on_batch(x)
        macs = 0
        for layer, output in zip(convs, outputs, strict=True):
            h, w = output.shape[1:3]
            k = layer.kernel.shape  # (ky, kx, in, out) or (ky, kx, out, in) for transposed
            if isinstance(layer, keras.layers.Conv2DTranspose):
                macs += h * w * k[2] * k[3]  # 2x2 stride 2: one tap per output pixel
            else:
                macs += h * w * k[0] * k[1] * k[2] * k[3]
        assert 2 * macs / size**2 == pytest.approx(config.flops_per_pixel())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"depth": 0}, ValueError, "depth"),
        ({"depth": 2.0}, TypeError, "depth"),
        ({"filters": 0}, ValueError, "filters"),
        ({"kernel_size": 4}, ValueError, "odd"),
        ({"full_resolution": "half"}, ValueError, "'conv' or 'patch'"),
        ({"residual": 1}, TypeError, "bool"),
    ],
)
def test_config_rejects_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        UNetConfig(**kwargs)


def test_config_dict_round_trip():
    assert UNetConfig.from_dict(TINY_PATCH.to_dict()) == TINY_PATCH
    with pytest.raises(ValueError, match="unknown UNetConfig keys"):
        UNetConfig.from_dict({"depth": 2, "width": 3})


# --- prediction -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(128, 128), (70, 53), (37, 130)])
def test_predict_shape_and_dtype(tiny, shape):
    out = tiny.predict(_image(shape))
    assert out.shape == shape and out.dtype == np.float32
    assert np.isfinite(out).all()


def test_predict_batch_matches_predict(tiny):
    images = np.stack([_image((48, 40), seed=s) for s in range(3)])
    batch = tiny.predict_batch(images, batch_size=2)
    assert batch.shape == (3, 48, 40) and batch.dtype == np.float32
    for image, out in zip(images, batch, strict=True):
        single = tiny.predict(image)
        assert np.abs(single - out).max() / np.abs(single).max() < 1e-5


@pytest.mark.parametrize("fixture", ["tiny", "tiny_patch"])
@pytest.mark.parametrize("tile", [8, 36])
def test_tiled_equals_whole(request, fixture, tile):
    model = request.getfixturevalue(fixture)
    image = _image((150, 97), seed=3)  # not a multiple of the divisor, several tiles per axis
    whole = model.predict(image, tile=1024)
    tiled = model.predict(image, tile=tile, batch_size=3)
    scale = np.abs(whole).max()
    assert np.abs(tiled - whole).max() / scale < 1e-4


def test_default_tiling_of_a_large_image_equals_whole(tiny):
    # max_tile=64: a 150x97 image is cut into tiles of 32 by default.
    image = _image((150, 97), seed=4)
    np.testing.assert_allclose(tiny.predict(image), tiny.predict(image, tile=1024), rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("config", [TINY, TINY_PATCH], ids=["conv", "patch"])
def test_receptive_margin_bounds_the_influence_of_a_pixel(config):
    """A change of one input pixel changes no output farther than the computed margin."""
    model = _model(config, seed=5).keras_model
    size = 96
    rng = np.random.default_rng(0)
    x = rng.random((1, size, size, 1)).astype("float32")
    x2 = x.copy()
    c = 48  # on the pooling grid
    x2[0, c, c, 0] += 10.0
    diff = np.abs(model.predict_on_batch(x2) - model.predict_on_batch(x))[0, ..., 0]
    ys, xs = np.nonzero(diff > 0)
    reach = max(np.abs(ys - c).max(), np.abs(xs - c).max())
    assert reach <= config.receptive_margin
    # and the bound is not loose by more than the pooling alignment
    assert reach >= config.receptive_margin - config.divisor


def test_fresh_residual_network_is_the_identity():
    """The correction layer starts at zero, so an untrained residual model returns its input."""
    model = RefocusModel(build_unet(TINY_PATCH, seed=0), ModelInfo("id", TINY_PATCH, Optics(), (0.0,)))
    image = _image((40, 36), seed=8)
    np.testing.assert_allclose(model.predict(image), image.astype(np.float32), rtol=1e-5, atol=1e-3)


def test_identity_network_returns_the_input_on_its_scale():
    """Residual model with a zero correction: normalise -> network -> denormalise is the identity."""
    model = _model(TINY)
    weights = model.keras_model.get_layer("out").get_weights()
    model.keras_model.get_layer("out").set_weights([np.zeros_like(w) for w in weights])
    image = _image((61, 77), seed=6)
    out = model.predict(image, tile=32)
    np.testing.assert_allclose(out, image.astype(np.float32), rtol=1e-5, atol=1e-3)


def test_normalisation_round_trip():
    image = _image((40, 50)).astype(np.float64) * 3.7
    lo, hi = percentile_range(image, (1, 99.8))
    assert lo == pytest.approx(np.percentile(image, 1)) and hi == pytest.approx(np.percentile(image, 99.8))
    n = normalize(image, lo, hi)
    assert n.dtype == np.float32
    assert np.percentile(n, 1) == pytest.approx(0, abs=1e-5)
    assert np.percentile(n, 99.8) == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(denormalize(n, lo, hi), image, rtol=1e-5)
    # a flat image does not divide by zero
    lo, hi = percentile_range(np.full((8, 8), 5.0))
    assert hi > lo and np.isfinite(normalize(np.full((8, 8), 5.0), lo, hi)).all()


@given(
    shape=st.tuples(st.integers(1, 40), st.integers(2, 40)),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    spread=st.integers(0, 4095),
    low=st.floats(0, 100),
    high=st.floats(0, 100),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=60, deadline=None)
def test_integer_percentiles_equal_numpy(shape, dtype, spread, low, high, seed):
    # camera planes take the histogram path; it must give np.percentile's numbers
    spread = min(spread, np.iinfo(dtype).max)
    low, high = sorted((low, high))
    image = np.random.default_rng(seed).integers(0, spread, shape, endpoint=True).astype(dtype)
    expected = np.percentile(image.astype(np.float64), (low, high))
    lo, hi = percentile_range(image, (low, high))
    assert lo == pytest.approx(expected[0], rel=1e-12, abs=1e-9)
    # high is raised to low + max(1e-6 |low|, 1e-6) when the range is (nearly) flat
    floor = expected[0] + max(1e-6 * abs(expected[0]), 1e-6)
    assert hi == pytest.approx(max(expected[1], floor), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (np.zeros((2, 8, 8)), ValueError, "2 dimensions"),
        (np.full((8, 8), np.nan), ValueError, "NaN"),
        (np.zeros((8, 8), dtype=complex), TypeError, "real numbers"),
    ],
)
def test_predict_rejects_bad_images(tiny, image, error, match):
    with pytest.raises(error, match=match):
        tiny.predict(image)


def test_predict_rejects_bad_options(tiny):
    with pytest.raises(ValueError, match="batch_size"):
        tiny.predict(_image((16, 16)), batch_size=0)
    with pytest.raises(ValueError, match="tile"):
        tiny.predict(_image((16, 16)), tile=-4)


def test_optics_mismatch_warns_with_both_values(tiny):
    assert tiny.check_optics(Optics()) is True
    with pytest.warns(OpticsMismatchWarning, match=r"'na': 0.25.*'na': 0.45"):
        assert tiny.check_optics(Optics(na=0.45)) is False


def test_optics_far_from_the_training_optics_are_refused_when_asked(tiny):
    with pytest.raises(ModelError, match=r"trained for optics \{'na': 0.25\}.*\{'na': 0.45\}.*--method rl"):
        tiny.check_optics(Optics(na=0.45), refuse_beyond=0.05)
    with pytest.warns(OpticsMismatchWarning, match="pixel_size_um"):  # 4 % apart: a warning only
        assert tiny.check_optics(Optics(pixel_size_um=0.312), refuse_beyond=0.05) is False
    assert tiny.check_optics(Optics(), refuse_beyond=0.05) is True


# --- model files ------------------------------------------------------------------------------


def test_save_load_round_trip(tiny, tmp_path):
    path = save_model(tiny, tmp_path / "m.keras")
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["halo"] == TINY.halo and meta["divisor"] == 4
    assert meta["optics"] == Optics().to_dict() and meta["depths_um"] == [0.0, 10.0]
    assert len(meta["sha256"]) == 64 and meta["package_version"] and meta["keras_version"]
    loaded = load_model(path)
    assert loaded.info == tiny.info
    image = _image((45, 33))
    expected = tiny.predict(image)
    assert np.abs(loaded.predict(image) - expected).max() / np.abs(expected).max() < 1e-5


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        load_model(tmp_path / "nope.keras")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, PlateRefocusError)


def test_corrupt_model_file(tiny, tmp_path):
    path = save_model(tiny, tmp_path / "m.keras")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ModelError, match="not a Keras 3 '.keras' archive"):
        load_model(path)
    path.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="not a Keras 3"):
        load_model(path)


def test_weights_and_metadata_must_belong_together(tiny, tmp_path):
    path = save_model(tiny, tmp_path / "m.keras")
    other = save_model(_model(seed=9), tmp_path / "other.keras")
    (tmp_path / "m.json").write_text(other.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="do not belong together"):
        load_model(path)


def test_missing_or_invalid_metadata(tiny, tmp_path):
    path = save_model(tiny, tmp_path / "m.keras")
    meta = path.with_suffix(".json")
    good = json.loads(meta.read_text())
    meta.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(path)
    bad = {**good, "halo": 3, "depths_um": "ten", "norm_percentiles": [99, 1]}
    del bad["optics"]
    meta.write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="missing key 'optics'.*depths_um.*norm_percentiles.*halo is 3"):
        load_model(path)
    meta.write_text(json.dumps({**good, "consistency_limit": -1}))
    with pytest.raises(ModelError, match="consistency_limit must be a positive number"):
        load_model(path)
    meta.unlink()
    with pytest.raises(ModelError, match="no metadata file"):
        load_model(path)


def test_a_model_carries_the_consistency_limit_measured_for_it(tiny, tmp_path):
    import dataclasses

    assert tiny.info.consistency_limit is None  # the package's CONSISTENCY_LIMIT then
    model = RefocusModel(tiny.keras_model, dataclasses.replace(tiny.info, consistency_limit=10.0))
    path = save_model(model, tmp_path / "m.keras")
    assert json.loads(path.with_suffix(".json").read_text())["consistency_limit"] == 10.0
    assert load_model(path).info.consistency_limit == 10.0


def test_safe_mode_refuses_lambda_layer(tmp_path):
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    path = tmp_path / "evil.keras"
    keras.Model(inputs, outputs).save(path)
    info = ModelInfo("evil", TINY, Optics(), (0.0,))
    from plate_refocus.unet.io import sha256_of

    path.with_suffix(".json").write_text(json.dumps({**info.to_dict(), "sha256": sha256_of(path)}))
    with pytest.raises(ModelError, match="safe mode"):
        load_model(path)


def test_default_model_path_is_package_data():
    path = default_model_path()
    assert path.name == "default.keras" and path.parent.name == "models"
    assert path.parent.parent.name == "plate_refocus"


def test_the_shipped_model_is_chosen_by_the_plates_optics(tiny, tmp_path, monkeypatch):
    import dataclasses

    from plate_refocus.unet import io, shipped_model_paths

    second = Optics(na=0.45, wavelength_um=0.46, pixel_size_um=0.325)
    default = save_model(RefocusModel(tiny.keras_model, dataclasses.replace(tiny.info, name="report")),
                         tmp_path / "default.keras")
    other = save_model(RefocusModel(tiny.keras_model, dataclasses.replace(tiny.info, name="second", optics=second)),
                       tmp_path / "na045.keras")
    monkeypatch.setattr(io, "_models_folder", lambda: tmp_path)
    assert shipped_model_paths() == [default, other]
    assert default_model_path() == default
    assert default_model_path(Optics()) == default
    assert default_model_path(dataclasses.replace(second, na=0.46)) == other  # within OPTICS_TOLERANCE
    # none fits: the default, which run refuses for these optics (test_bad_input)
    assert default_model_path(Optics(na=0.8, wavelength_um=0.46, pixel_size_um=0.325)) == default


@pytest.mark.skipif(not default_model_path().exists(), reason="the default model is not shipped in this checkout")
def test_every_shipped_model_loads_and_is_found_for_its_own_optics():
    from plate_refocus.unet import shipped_model_paths

    for path in shipped_model_paths():
        model = load_model(path)
        assert default_model_path(model.info.optics) == path
        out = model.predict(_image((96, 128)))
        assert out.shape == (96, 128) and np.isfinite(out).all()


@pytest.mark.skipif(not default_model_path().exists(), reason="the default model is not shipped in this checkout")
def test_default_model_loads_and_refocuses():
    model = load_model()
    assert model.info.optics == Optics()
    out = model.predict(_image((128, 128)))
    assert out.shape == (128, 128) and out.dtype == np.float32 and np.isfinite(out).all()


# --- imports and backends ---------------------------------------------------------------------


def test_importing_the_package_does_not_import_keras():
    code = "import sys, plate_refocus, plate_refocus.unet, plate_refocus.metrics; print('keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.slow  # a fresh interpreter imports JAX and Keras: 10-60 s
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_jax_backend_runs_a_tensorflow_saved_model(tiny, tmp_path):
    path = save_model(tiny, tmp_path / "m.keras")
    image = _image((70, 53))
    np.save(tmp_path / "image.npy", image)
    expected = tiny.predict(image, tile=16)
    code = textwrap.dedent(
        f"""
        import numpy as np, keras
        from plate_refocus.unet import load_model
        assert keras.backend.backend() == "jax"
        out = load_model({str(path)!r}).predict(np.load({str(tmp_path / 'image.npy')!r}), tile=16)
        np.save({str(tmp_path / 'out.npy')!r}, out)
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    out = np.load(tmp_path / "out.npy")
    assert np.abs(out - expected).max() / np.abs(expected).max() < 1e-4


def test_module_level_warnings_are_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_unet(TINY)


def test_saving_a_compiled_model_drops_the_optimizer(tmp_path):
    plain = _model(TINY_PATCH, seed=2)
    compiled = _model(TINY_PATCH, seed=2)
    compiled.keras_model.compile(optimizer="adam", loss="mse")
    x = np.zeros((2, 16, 16, 1), "float32")
    compiled.keras_model.train_on_batch(x, x)  # creates the optimizer's state
    compiled.keras_model.set_weights(plain.keras_model.get_weights())
    a = save_model(plain, tmp_path / "plain.keras").stat().st_size
    b = save_model(compiled, tmp_path / "compiled.keras").stat().st_size
    assert abs(a - b) < 0.1 * a
    image = _image((32, 32))
    np.testing.assert_array_equal(load_model(tmp_path / "compiled.keras").predict(image), plain.predict(image))


def test_native_startup_lines_go_to_the_log_and_other_lines_pass(capfd, caplog, monkeypatch):
    import logging
    import os

    from plate_refocus.unet import native_startup_lines_to_log

    monkeypatch.delenv("PLATE_REFOCUS_TF_LOGS", raising=False)
    noise = ("I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n"
             "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
             "E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
    with caplog.at_level(logging.DEBUG, logger="plate_refocus.unet"):
        with native_startup_lines_to_log():
            os.write(2, noise.encode())
            os.write(2, b"E0000 00:00:1.0 1 other.cc:1] a real error\n")
    err = capfd.readouterr().err
    assert "a real error" in err  # anything else still reaches the terminal
    assert "oneDNN" not in err and "cuInit" not in err and "absl" not in err
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "oneDNN" in logged and "cuInit" in logged
    # opting out leaves stderr alone
    monkeypatch.setenv("PLATE_REFOCUS_TF_LOGS", "1")
    with native_startup_lines_to_log():
        os.write(2, noise.encode())
    assert "oneDNN" in capfd.readouterr().err
