"""Feasibility of issue 14's "refine the physics estimate": can a small network beat RL on unseen cells?

An experiment, not project code: it decides whether a network fed the plane and
its Richardson-Lucy restoration (the run's default) earns a place in `run`.

1. Training pairs, simulated on the fly, from the families the benchmark does *not*
   hold out (u2os, smooth, confluent, sparse, clusters, fibroblast, hazy) and all
   three stains, 300-20,000 photons, |z| 0-36 um, report optics: the plane, RL at
   the true |z| plus an error (sd 0.5 um, like the blind estimate's), the in-focus
   truth; all offset-subtracted and divided by the plane's 99.9th percentile.
2. A small residual U-Net (2 channels in: plane and RL; out: RL + a correction),
   trained with MSE.
3. Held-out families of `generalization.py` (small-nuclei, large-nuclei, textured,
   mitotic; nuclei; 2000 photons, and 500 for a dimmer plate), 3-field wells of
   256 px: PSNR (data range 4095) of the input, RL at the well's blind |z|
   (the run's default without a reference), the network on that RL output, and RL at
   the true |z|.

    python benchmarks/refiner_experiment.py                  # ~40 min on 2 cores
    python benchmarks/refiner_experiment.py --quick          # ~3 min, code path only
    python benchmarks/refiner_experiment.py --with-depth     # (a) + (b): also told the blind |z|
    python benchmarks/refiner_experiment.py --pairs 1200 --epochs 30 --min-z 8 --relative-loss \
        --weight-cap 10 --depth-channel --save M.keras       # the shipped refiner's recipe (~25 min)
    python benchmarks/refiner_experiment.py ... --morphology randomised   # half the fields from random_family

``--with-depth`` is issue 14's (a) on top of (b): the network is also given
the well's blind estimate as the run computes it (the restoration depth and the
95 % interval, as constant input channels), and RL is run at that restoration
depth in training too (three fields of a draw pooled for the blind fit, as in a
3-field well), so near focus, where the interval says ``|z|`` cannot be told,
it can learn what to do from the cells instead of from ``|z|``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from plate_refocus.deconvolve import Blur, NoiseModel, richardson_lucy
from plate_refocus.focus import blind_defocus, power_spectrum, restoration_depth
from plate_refocus.metrics import psnr
from plate_refocus.morphology import HELD_OUT_FAMILIES, STAINS, Family, random_family
from plate_refocus.optics import Optics
from plate_refocus.simulate import Camera, simulate_field
from plate_refocus.train.randomised import TRAINING_FAMILIES
from plate_refocus.unet.refiner import RefinerInfo, build_refiner, save_refiner

OPTICS = Optics()
TRAIN_FAMILIES = TRAINING_FAMILIES
HELD_OUT = HELD_OUT_FAMILIES
RANGE = 4095.0


def _family(name: str | Family) -> str | Family | None:
    return None if name == "u2os" else name


#: the product refiner's normalisation (RefinerInfo's defaults), for every variant tried here
_NORMALISATION = RefinerInfo(name="experiment", optics=OPTICS, min_depth_um=0.0, max_depth_um=36.0,
                             depth_channel=True)


def _scale(plane: np.ndarray, offset: float) -> float:
    return _NORMALISATION.scale(plane, offset)


#: "families": the named training families; "randomised": half of the draws from those, half from
#: :func:`~plate_refocus.morphology.random_family` (every parameter at random: cells in general)
MORPHOLOGY = "families"


def draw_condition(rng: np.random.Generator, max_z: float, min_z: float = 0.0) -> tuple[str | Family, str, Camera, float]:
    """One training draw's family, stain, camera (300-20,000 photons, log-uniform) and |z| in [min_z, max_z)."""
    family = random_family(rng) if MORPHOLOGY == "randomised" and rng.random() < 0.5 else str(rng.choice(TRAIN_FAMILIES))
    stain = "nuclei" if family == "u2os" else str(rng.choice(STAINS))
    camera = Camera(photons=float(np.exp(rng.uniform(np.log(300), np.log(20000)))))
    return family, stain, camera, float(rng.uniform(min_z, max_z))


def fit_with_flips(model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int, drop_at: int,
                   image_target: bool, weights: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Train on all but the first tenth (validation), one of the 8 flips and rotations per epoch (of
    the targets too when they are images), the learning rate cut to 0.3x from epoch `drop_at`, each sample's
    loss times `weights` if given; per-epoch (loss, validation loss)."""
    n_val = max(1, len(x) // 10)
    if weights is not None:  # Keras reduces the loss over channels only: one weight per pixel
        weights = np.ascontiguousarray(np.broadcast_to(weights[:, None, None], y.shape[:3]))
    w_train = None if weights is None else weights[n_val:]
    validation = (x[:n_val], y[:n_val]) if weights is None else (x[:n_val], y[:n_val], weights[:n_val])
    history = []
    for epoch in range(epochs):
        xa, ya = np.rot90(x[n_val:], epoch % 4, axes=(1, 2)), y[n_val:]
        if image_target:
            ya = np.rot90(ya, epoch % 4, axes=(1, 2))
        if epoch % 8 >= 4:
            xa = xa[:, ::-1]
            ya = ya[:, ::-1] if image_target else ya
        if epoch == drop_at:
            model.optimizer.learning_rate.assign(0.3 * float(model.optimizer.learning_rate))
        h = model.fit(np.ascontiguousarray(xa), np.ascontiguousarray(ya), batch_size=batch_size, epochs=1,
                      verbose=0, validation_data=validation, sample_weight=w_train)
        history.append((h.history["loss"][-1], h.history["val_loss"][-1]))
        print(f"epoch {epoch + 1}: loss {history[-1][0]:.5f} val {history[-1][1]:.5f}", flush=True)
    return history


def write_report(lines: list[str], out: str) -> None:
    """Print the experiment's report and write it to `out` (markdown)."""
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as fh:
        fh.write(text + "\n")


def training_pair(rng: np.random.Generator, size: int, min_z: float = 0.0,
                  depth_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(2, Y, X) input (plane, RL; and the |z| RL used over 36 um with `depth_channel`) and (Y, X)
    target, normalised; one random field."""
    family, stain, camera, z = draw_condition(rng, 36.0, min_z)
    out = simulate_field((size, size), [z], seed=int(rng.integers(2**31)), optics=OPTICS, camera=camera,
                         channels=(stain,), family=_family(family))
    plane, truth = out.images[0, 0].astype(np.float32), out.in_focus[0]
    z_used = max(0.0, z + float(rng.normal(0.0, 0.5)))
    restored = richardson_lucy(plane, Blur.model(OPTICS, z_used), noise=NoiseModel.from_camera(camera)).image
    s = _scale(plane, camera.offset)
    x = np.stack([(plane - camera.offset) / s, (restored - camera.offset) / s]
                 + ([np.full(plane.shape, z_used / _NORMALISATION.depth_scale_um, np.float32)] if depth_channel else []))
    return x.astype(np.float32), ((truth - camera.offset) / s).astype(np.float32)


def depth_channels(estimate) -> list[float]:
    """The blind estimate as the network sees it: restoration depth and interval, over 36 um."""
    lo, hi, unit = *estimate.interval_um, _NORMALISATION.depth_scale_um
    return [restoration_depth(estimate) / unit, lo / unit, min(hi, 60.0) / unit]


def training_group(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three (5, Y, X) inputs (plane, RL at the blind depth, the blind estimate) and targets, one draw."""
    family, stain, camera, z = draw_condition(rng, 36.0)
    noise = NoiseModel.from_camera(camera)
    seed = int(rng.integers(2**31))
    fields = [simulate_field((size, size), [z], seed=np.random.SeedSequence([seed, f]), optics=OPTICS,
                             camera=camera, channels=(stain,), family=_family(family)) for f in range(3)]
    planes = [f.images[0, 0].astype(np.float32) for f in fields]
    estimate = blind_defocus(power_spectrum(np.stack(planes), OPTICS.pixel_size_um, background=camera.offset,
                                            backend="numpy"), OPTICS)
    blur = Blur.model(OPTICS, restoration_depth(estimate))
    extra = depth_channels(estimate)
    out = []
    for plane, field in zip(planes, fields, strict=True):
        restored = richardson_lucy(plane, blur, noise=noise).image
        s = _scale(plane, camera.offset)
        x = np.stack([(plane - camera.offset) / s, (restored - camera.offset) / s]
                     + [np.full(plane.shape, v, np.float32) for v in extra])
        out.append((x.astype(np.float32), ((field.in_focus[0] - camera.offset) / s).astype(np.float32)))
    return out


def refine(model, plane: np.ndarray, restored: np.ndarray, offset: float, divisor: int,
           extra: list[float] | None = None) -> np.ndarray:
    s = _scale(plane, offset)
    maps = [(plane - offset) / s, (restored - offset) / s] + [np.full(plane.shape, v) for v in extra or []]
    x = np.stack(maps, axis=-1)[None].astype(np.float32)
    ny, nx = plane.shape
    py, px = (-ny) % divisor, (-nx) % divisor
    x = np.pad(x, ((0, 0), (0, py), (0, px), (0, 0)), mode="reflect")
    y = model.predict(x, verbose=0)[0, :ny, :nx, 0]
    return y * s + offset


def held_out_wells(args):
    """Every evaluation well: per held-out family, photons and |z|, 3 simulated fields and their blind
    fit. Yields ``(family, photons, z, camera, noise, planes, truths, estimate)``."""
    for family in args.eval_families[: args.families]:
        for photons in args.photons:
            camera = Camera(photons=photons)
            noise = NoiseModel.from_camera(camera)
            for z in args.depths:
                fields = [simulate_field((args.eval_size,) * 2, [z], seed=np.random.SeedSequence([4242, f, int(z)]),
                                         optics=OPTICS, camera=camera, channels=("nuclei",),
                                         family=_family(family)) for f in range(3)]
                planes = [f.images[0, 0].astype(np.float32) for f in fields]
                truths = [f.in_focus[0] for f in fields]
                spectra = power_spectrum(np.stack(planes), OPTICS.pixel_size_um, background=camera.offset,
                                         backend="numpy")
                yield family, photons, z, camera, noise, planes, truths, blind_defocus(spectra, OPTICS)


def evaluate(model, args, divisor: int) -> list[str]:
    rows = ["| family | photons | \\|z\\| um | blind \\|z\\| | input | RL blind (run default) | refiner on RL blind "
            "| gain over RL | RL true \\|z\\| |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    gains, per_family = [], {}
    for family, photons, z, camera, noise, planes, truths, estimate in held_out_wells(args):
        z_blind = restoration_depth(estimate)
        scores = np.zeros((3, 4))
        for i, (plane, truth) in enumerate(zip(planes, truths, strict=True)):
            rl_blind = richardson_lucy(plane, Blur.model(OPTICS, z_blind), noise=noise).image
            rl_true = richardson_lucy(plane, Blur.model(OPTICS, z), noise=noise).image
            extra = depth_channels(estimate) if args.with_depth else (
                [z_blind / _NORMALISATION.depth_scale_um] if args.depth_channel else None)
            refined = refine(model, plane, rl_blind, camera.offset, divisor, extra)
            scores[i] = [psnr(truth, img, data_range=RANGE) for img in (plane, rl_blind, refined, rl_true)]
        m = scores.mean(axis=0)
        if 10 <= z <= 30:
            gains.append(m[2] - m[1])
            per_family.setdefault(family, []).append(m[2] - m[1])
        rows.append(f"| {family} | {photons:g} | {z:g} | {z_blind:.1f} | {m[0]:.2f} | {m[1]:.2f} | "
                    f"{m[2]:.2f} | {m[2] - m[1]:+.2f} | {m[3]:.2f} |")
    if gains:
        rows.append("")
        rows.append(f"gain of the refiner over RL blind at 10-30 um: min {min(gains):+.2f}, "
                    f"mean {np.mean(gains):+.2f}, max {max(gains):+.2f} dB over {len(gains)} (family, photons, depth)")
        rows.append("per family (min / mean): " + "; ".join(
            f"{k} {min(v):+.2f} / {np.mean(v):+.2f}" for k, v in per_family.items()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pairs", type=int, default=1200, help="training fields")
    parser.add_argument("--size", type=int, default=128, help="training field size")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--families", type=int, default=4)
    parser.add_argument("--min-z", type=float, default=0.0, help="shallowest training |z| (um)")
    parser.add_argument("--relative-loss", action="store_true",
                        help="weight each training field by 1 / RL's own MSE, so every field counts equally in dB")
    parser.add_argument("--eval-families", default=",".join(HELD_OUT),
                        help="comma-separated families to evaluate on (a training family shows what was learnt)")
    parser.add_argument("--depth-channel", action="store_true",
                        help="give the network the |z| RL restored at (a constant channel, over 36 um)")
    parser.add_argument("--optics", choices=["report", "second"], default="report",
                        help="the objective trained and scored: the report's (NA 0.25) or generalization.py's "
                             "second (NA 0.45, 0.46 um, 0.325 um pixels)")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow threads (default: every core)")
    parser.add_argument("--save", default=None, help="save the trained correction network here (.keras)")
    parser.add_argument("--with-depth", action="store_true",
                        help="also give the network the blind |z| and its interval; RL at the blind depth")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's, until half the epochs")
    parser.add_argument("--clipnorm", type=float, default=None,
                        help="clip each gradient's norm (a few fields of tiny RL error can carry a large weight)")
    parser.add_argument("--seed", type=int, default=7, help="the training fields and the initial weights")
    parser.add_argument("--weight-cap", type=float, default=None,
                        help="with --relative-loss: no field weighs more than this times the median field")
    parser.add_argument("--morphology", choices=["families", "randomised"], default="families",
                        help="training cells: the named training families, or half of them drawn from "
                             "random_family (every morphology parameter at random)")
    parser.add_argument("--out", default=None, help="markdown file (default scratch/refiner_experiment[_depth].md)")
    args = parser.parse_args()
    global OPTICS, MORPHOLOGY  # every simulation, restoration and the saved refiner's JSON use them
    MORPHOLOGY = args.morphology
    OPTICS = Optics() if args.optics == "report" else Optics(na=0.45, wavelength_um=0.46, pixel_size_um=0.325)
    args.out = args.out or f"scratch/refiner_experiment{'_depth' if args.with_depth else ''}.md"
    args.eval_families = args.eval_families.split(",")
    args.depths = [0.0, 5.0, 10.0, 20.0, 30.0]
    args.photons = [2000.0, 500.0]
    if args.quick:
        args.pairs, args.epochs, args.families, args.eval_size = 24, 1, 1, 128
        args.depths, args.photons = [20.0], [2000.0]

    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads or os.cpu_count() or 1)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    if args.with_depth:
        pairs = [pair for _ in range(math.ceil(args.pairs / 3)) for pair in training_group(rng, args.size)]
    else:
        pairs = [training_pair(rng, args.size, args.min_z, args.depth_channel) for _ in range(args.pairs)]
    x = np.stack([p[0] for p in pairs]).transpose(0, 2, 3, 1)
    y = np.stack([p[1] for p in pairs])[..., None]
    t_data = time.perf_counter() - t0
    model, correction = build_refiner(args.filters, args.depth, x.shape[-1])
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate, clipnorm=args.clipnorm), loss="mse")
    n_val = max(1, len(x) // 10)
    t0 = time.perf_counter()
    weights = None
    if args.relative_loss:
        weights = (1.0 / np.maximum(np.mean((x[..., 1:2] - y) ** 2, axis=(1, 2, 3)), 1e-8)).astype(np.float32)
        if args.weight_cap:
            weights = np.minimum(weights, args.weight_cap * np.median(weights))
        weights /= weights.mean()
    history = fit_with_flips(model, x, y, epochs=args.epochs, batch_size=16, drop_at=args.epochs // 2,
                             image_target=True, weights=weights)
    t_train = time.perf_counter() - t0
    rl_mse = np.mean((x[:n_val, ..., 1:2] - y[:n_val]) ** 2, axis=(1, 2, 3))
    rl_only = float(np.mean(rl_mse if weights is None else weights[:n_val] * rl_mse))  # as the loss weighs it
    divisor = 2**args.depth
    t0 = time.perf_counter()
    table = evaluate(model, args, divisor)
    t_eval = time.perf_counter() - t0
    plane = np.full((520, 696), 300.0, np.float32)
    if args.save:
        save_refiner(correction, RefinerInfo(
            name=Path(args.save).stem, optics=OPTICS, min_depth_um=args.min_z, max_depth_um=36.0,
            depth_channel=args.depth_channel, divisor=2**args.depth,
            training={"script": "benchmarks/refiner_experiment.py", "argv": sys.argv[1:], "fields": args.pairs,
                      "field_size": args.size, "epochs": args.epochs, "seconds": round(t_train),
                      "families": list(TRAIN_FAMILIES), "morphology": args.morphology, "photons": [300, 20000], "seed": args.seed,
                      "loss": "relative to RL" if args.relative_loss else "mse",
                      "learning_rate": args.learning_rate, "clipnorm": args.clipnorm,
                      "weight_cap": args.weight_cap},
            metrics={"validation_loss": float(history[-1][1]), "validation_loss_rl_alone": rl_only}), args.save)
    extra = [0.5, 0.4, 0.6] if args.with_depth else ([0.5] if args.depth_channel else None)
    refine(model, plane, plane, 100.0, divisor, extra)
    t = math.inf
    for _ in range(3):
        s = time.perf_counter()
        refine(model, plane, plane, 100.0, divisor, extra)
        t = min(t, time.perf_counter() - s)
    lines = [f"refiner{' told the blind |z| (--with-depth)' if args.with_depth else ''}: U-Net depth {args.depth}, {args.filters} filters, {model.count_params()} parameters; "
             f"{args.pairs} training fields of {args.size} px, |z| {args.min_z:g}-36 um "
             f"({t_data:.0f} s to simulate and restore), {'loss relative to RL' if args.relative_loss else 'MSE'}, "
             f"{'told the |z| RL used, ' if args.depth_channel else ''}"
             f"{args.epochs} epochs ({t_train:.0f} s); validation MSE {history[-1][1]:.5f} against "
             f"{rl_only:.5f} for RL alone (normalised units); {1 / t:.1f} images/s at 520 x 696 "
             f"({os.cpu_count()} cores); evaluation {t_eval:.0f} s", "", *table]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
