"""Can a small network tell |z| near focus, where the power spectrum cannot? (issue 14, an experiment)

Near focus the blind fit's interval often starts at 0 (``|K_z|^2`` has no notch
above the noise), so ``run`` leaves the plane as it is; RL at the true |z| would
gain 2.4-11.7 dB there on the held-out families (``refiner_experiment.py``).
This trains a scalar regressor of |z| from one field's appearance and lets RL
use it only where the blind |z| is unidentifiable:

1. training fields simulated on the fly from the families the benchmark does not
   hold out (as ``refiner_experiment.py``), all three stains, 300-20,000 photons,
   |z| 0-20 um, report optics, 128 px, normalised by the 99.9th percentile;
2. a small CNN (strided 3x3 convolutions, global average pooling, a dense layer)
   with a mean-absolute-error loss on |z| / 10 um;
3. held-out families, 3-field wells of 256 px: the well's |z| is the mean of
   its fields' predictions; PSNR of the input, RL at the blind restoration depth
   (the run's default), RL at the network's |z| where the blind one is
   unidentifiable, and RL at the true |z|.

    python benchmarks/depth_regressor_experiment.py          # ~8 min on 2 cores
    python benchmarks/depth_regressor_experiment.py --quick  # ~1 min, code path only
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from refiner_experiment import (  # noqa: E402
    OPTICS,
    RANGE,
    _family,
    _scale,
    draw_condition,
    fit_with_flips,
    held_out_wells,
    write_report,
)

from plate_refocus.deconvolve import Blur, richardson_lucy  # noqa: E402
from plate_refocus.focus import restoration_depth  # noqa: E402
from plate_refocus.metrics import psnr  # noqa: E402
from plate_refocus.simulate import simulate_field  # noqa: E402

Z_SCALE = 10.0


def training_field(rng: np.random.Generator, size: int, max_z: float) -> tuple[np.ndarray, float]:
    family, stain, camera, z = draw_condition(rng, max_z)
    out = simulate_field((size, size), [z], seed=int(rng.integers(2**31)), optics=OPTICS, camera=camera,
                         channels=(stain,), family=_family(family))
    plane = out.images[0, 0].astype(np.float32)
    return ((plane - camera.offset) / _scale(plane, camera.offset)).astype(np.float32), z


def build(filters: int):
    import keras
    from keras import layers

    inp = keras.Input((None, None, 1))
    x = inp
    for k, f in enumerate((filters, 2 * filters, 4 * filters, 4 * filters, 4 * filters)):
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(f, 3, strides=2 if k < 4 else 1, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(32, activation="relu")(x)
    return keras.Model(inp, layers.Dense(1, activation="softplus")(x))


def predict_z(model, plane: np.ndarray, offset: float) -> float:
    x = ((plane - offset) / _scale(plane, offset))[None, ..., None].astype(np.float32)
    return float(model.predict(x, verbose=0)[0, 0]) * Z_SCALE


def evaluate(model, args) -> list[str]:
    rows = ["| family | photons | \\|z\\| um | blind (restore at) | network \\|z\\| | input | RL blind (run default) "
            "| RL at network \\|z\\| where blind is unidentifiable | RL true \\|z\\| |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    summary = []
    for family, photons, z, camera, noise, planes, truths, estimate in held_out_wells(args):
        z_blind = restoration_depth(estimate)
        z_net = float(np.mean([predict_z(model, p, camera.offset) for p in planes]))
        z_used = z_blind if estimate.identifiable else z_net
        scores = np.zeros((3, 4))
        for i, (plane, truth) in enumerate(zip(planes, truths, strict=True)):
            images = [plane] + [richardson_lucy(plane, Blur.model(OPTICS, d), noise=noise).image
                                for d in (z_blind, z_used, z)]
            scores[i] = [psnr(truth, img, data_range=RANGE) for img in images]
        m = scores.mean(axis=0)
        blind = f"{z_blind:.1f}" + ("" if estimate.identifiable else " (unidentifiable)")
        rows.append(f"| {family} | {photons:g} | {z:g} | {blind} | {z_net:.1f} | {m[0]:.2f} | {m[1]:.2f} "
                    f"| {m[2]:.2f} | {m[3]:.2f} |")
        if not estimate.identifiable:
            summary.append((z, z_net - z, m[2] - m[1], m[3] - m[1]))
    if summary:
        s = np.array(summary)
        depths = ", ".join(f"{v:g}" for v in sorted(set(s[:, 0])))
        rows += ["", f"where the blind |z| is unidentifiable ({len(s)} cells, |z| {depths} um): "
                 f"network |z| error {s[:, 1].min():+.1f}..{s[:, 1].max():+.1f} um (mean |error| "
                 f"{np.abs(s[:, 1]).mean():.1f}); RL at the network's |z| against the run's default "
                 f"{s[:, 2].min():+.2f}..{s[:, 2].max():+.2f} dB (mean {s[:, 2].mean():+.2f}); RL at the true |z| "
                 f"would gain {s[:, 3].min():+.2f}..{s[:, 3].max():+.2f} dB"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--fields", type=int, default=2000, help="training fields")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--max-z", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--families", type=int, default=4)
    parser.add_argument("--out", default="scratch/depth_regressor_experiment.md")
    args = parser.parse_args()
    args.depths = [0.0, 2.0, 5.0, 8.0, 10.0, 15.0]
    args.photons = [2000.0, 500.0]
    if args.quick:
        args.fields, args.epochs, args.families, args.eval_size = 48, 1, 1, 128
        args.depths, args.photons = [5.0], [2000.0]

    import keras

    keras.utils.set_random_seed(11)
    rng = np.random.default_rng(11)
    t0 = time.perf_counter()
    data = [training_field(rng, args.size, args.max_z) for _ in range(args.fields)]
    x = np.stack([d[0] for d in data])[..., None]
    y = np.array([d[1] / Z_SCALE for d in data], np.float32)[:, None]
    t_data = time.perf_counter() - t0
    model = build(args.filters)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae")
    t0 = time.perf_counter()
    history = fit_with_flips(model, x, y, epochs=args.epochs, batch_size=32, drop_at=args.epochs * 2 // 3,
                             image_target=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = evaluate(model, args)
    lines = [f"|z| regressor: {model.count_params()} parameters; {args.fields} training fields of {args.size} px, "
             f"|z| 0-{args.max_z:g} um ({t_data:.0f} s to simulate), {args.epochs} epochs ({t_train:.0f} s); "
             f"validation mean |error| {history[-1][1] * Z_SCALE:.2f} um on the training families; evaluation "
             f"{time.perf_counter() - t0:.0f} s", "", *table]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
