"""``train`` and ``evaluate``: the refocusing network."""

from __future__ import annotations

import argparse
import sys
import time

from .common import command_line, float_list


def add_train(subparsers) -> None:
    from ..train import TrainConfig
    from ..unet import UNetConfig

    net, tc = UNetConfig(), TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a refocusing U-Net on a plate (simulated, or a real z-stack with a focal plane)",
        description="Train a U-Net that maps every defocused plane of PLATE to its in-focus image: "
        "the ground-truth in-focus image of a simulated plate (--target ground-truth), or the plane "
        "at the focal index of a real z-stack (--target focal-plane). Patches stream from the zarr "
        "plate; wells are split into training and validation sets; the model with the best "
        "validation loss is written to OUT (.keras) with its metadata (.json) after every epoch "
        "that improves it, so it can be stopped at any time.",
    )
    p.add_argument("plate", metavar="PLATE", help="an OME-Zarr HCS plate")
    p.add_argument("--out", required=True, help="model file to write, e.g. model.keras")
    data = p.add_argument_group("data")
    data.add_argument("--target", choices=["ground-truth", "focal-plane"], default="ground-truth",
                      help="what the network learns to produce (default ground-truth)")
    data.add_argument("--focal-index", type=int, default=None,
                      help="0-based in-focus plane for --target focal-plane (default: the plate's)")
    data.add_argument("--depths", type=float_list, default=None,
                      help="train on the planes at these distances from focus in um (default all)")
    arch = p.add_argument_group("network")
    arch.add_argument("--depth", type=int, default=net.depth,
                      help=f"number of poolings (default {net.depth})")
    arch.add_argument("--filters", type=int, default=net.filters,
                      help=f"channels at full resolution, doubled per level (default {net.filters})")
    arch.add_argument("--full-resolution", choices=["patch", "conv"], default=net.full_resolution,
                      help="full-resolution level: 2x2 patch convolutions (lean) or two 3x3 "
                      f"convolutions as in the report (default {net.full_resolution})")
    arch.add_argument("--no-residual", action="store_true",
                      help="predict the image itself instead of a correction added to the input")
    fit = p.add_argument_group("training")
    fit.add_argument("--patch", type=int, default=tc.patch, help=f"patch size (default {tc.patch})")
    fit.add_argument("--batch-size", type=int, default=tc.batch_size,
                     help=f"patches per step (default {tc.batch_size})")
    fit.add_argument("--steps-per-epoch", type=int, default=tc.steps_per_epoch,
                     help=f"(default {tc.steps_per_epoch})")
    fit.add_argument("--epochs", type=int, default=tc.epochs, help=f"at most (default {tc.epochs})")
    fit.add_argument("--max-time", type=float, default=None,
                     help="stop after the epoch that passes this many minutes")
    fit.add_argument("--learning-rate", type=float, default=tc.learning_rate,
                     help=f"Adam's initial rate, halved on plateaus (default {tc.learning_rate:g})")
    fit.add_argument("--patience", type=int, default=tc.patience,
                     help=f"epochs without improvement before halving it (default {tc.patience})")
    fit.add_argument("--loss", choices=["mse", "ssim"], default=tc.loss,
                     help=f"mse, or ssim = MSE + 1 - SSIM (default {tc.loss})")
    fit.add_argument("--weighting", choices=["relative", "none"], default=tc.weighting,
                     help="relative: divide each patch's loss by its input's error, so every depth "
                     f"counts equally in dB (default {tc.weighting})")
    fit.add_argument("--validation-fraction", type=float, default=tc.validation_fraction,
                     help=f"fraction of wells held out (default {tc.validation_fraction:g})")
    fit.add_argument("--validation-patches", type=int, default=tc.validation_patches,
                     help=f"(default {tc.validation_patches})")
    fit.add_argument("--seed", type=int, default=tc.seed, help=f"(default {tc.seed})")
    fit.add_argument("--name", default=None, help="model name (default: the file name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing model at --out (only a model of plate-refocus train)")
    p.add_argument("--init", metavar="MODEL", default=None,
                   help="fine-tune this model (e.g. plate_refocus/models/default.keras) instead of "
                   "starting from random weights; its architecture is kept (the network flags are "
                   "ignored). With --target focal-plane on an ingested z-stack this adapts it to a "
                   "facility's own cells and objective")
    p.set_defaults(func=run_train)


def _train_command(args: argparse.Namespace) -> str:
    """The ``plate-refocus train`` command line that reproduces ``args`` (for the model's metadata)."""
    words = ["plate-refocus", "train", args.plate]
    for key, value in sorted(vars(args).items()):
        if key in ("plate", "func", "command", "verbose") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, list):
            words += [flag, ",".join(f"{v:g}" for v in value)]
        else:
            words += [flag, str(value)]
    return " ".join(words)


def run_train(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, format_progress, train_plate
    from ..unet import UNetConfig

    try:
        config = UNetConfig(depth=args.depth, filters=args.filters,
                            full_resolution=args.full_resolution, residual=not args.no_residual)
        train = TrainConfig(
            patch=args.patch, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch,
            epochs=args.epochs, learning_rate=args.learning_rate, loss=args.loss, seed=args.seed,
            validation_fraction=args.validation_fraction, validation_patches=args.validation_patches,
            patience=args.patience, weighting=args.weighting,
            max_time_s=None if args.max_time is None else 60.0 * args.max_time,
        )
    except (ValueError, TypeError) as error:
        print(f"plate-refocus train: error: {error}", file=sys.stderr)
        return 2
    if args.init:
        config = None  # fine-tuning keeps the architecture of the model it starts from
        print(f"fine-tuning {args.init} on {args.plate} -> {args.out}", flush=True)
    else:
        print(f"training {config} on {args.plate} -> {args.out}", flush=True)
    model = train_plate(
        args.plate, args.out, config=config, train=train, target=args.target, init=args.init,
        focal_index=args.focal_index, depths_um=args.depths, name=args.name,
        command=_train_command(args),
        progress=lambda record: print(format_progress(record), flush=True),
        overwrite=args.overwrite,
    )
    metrics = model.info.metrics
    print(f"best validation loss {metrics['val_loss']:.4g} after {model.info.training['steps']} steps; "
          f"wrote {args.out}")
    return 0


def add_train_refiner(subparsers) -> None:
    p = subparsers.add_parser(
        "train-refiner",
        help="fine-tune hybrid's Richardson-Lucy refiner on a plate (a real z-stack with a focal plane)",
        description="Fine-tune the network that refines Richardson-Lucy inside --method hybrid on "
        "PLATE: every well's defocused planes are restored as 'run --method hybrid' does without a "
        "reference (blind |z|, RL, its consistency check), and the refiner learns to bring RL's "
        "output to the field's in-focus plane (--target focal-plane) or the simulated ground truth. "
        "Wells are held out for validation, where the score is the mean squared error relative to "
        "RL's own (1.0 = RL; below 1 better); the best epoch is written to OUT (.keras) with its "
        "JSON, for 'run --method hybrid --refiner OUT'. PLATE is only read.",
    )
    p.add_argument("plate", metavar="PLATE", help="an OME-Zarr HCS plate (never written to)")
    p.add_argument("--out", required=True, help="refiner file to write, e.g. refiner.keras")
    p.add_argument("--init", default="shipped", metavar="REFINER",
                   help="refiner to start from: 'shipped' (default: the one for the plate's optics), a "
                   ".keras refiner, or 'none' for a new network")
    p.add_argument("--target", choices=["focal-plane", "ground-truth"], default="focal-plane",
                   help="what the refined output should match (default focal-plane)")
    p.add_argument("--focal-index", type=int, default=None,
                   help="0-based in-focus plane (default: the plate's)")
    p.add_argument("--channel", type=int, default=0, help="channel index (default 0)")
    p.add_argument("--wells", default=None,
                   help="comma-separated wells to learn from, e.g. A01,A02,B01 (default: all; the "
                   "patches are held in memory, about 0.2 MB each)")
    p.add_argument("--depths", type=float_list, default=[8.0, 36.0], metavar="MIN,MAX",
                   help="|z| range in um of a new refiner (--init none; default 8,36)")
    p.add_argument("--epochs", type=int, default=20, help="passes over the patches (default 20)")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="Adam's rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="(default 8)")
    p.add_argument("--patch", type=int, default=128, help="patch size (default 128)")
    p.add_argument("--patches-per-plane", type=int, default=8, help="(default 8)")
    p.add_argument("--validation-fraction", type=float, default=0.25,
                   help="fraction of wells held out (default 0.25, at least one)")
    p.add_argument("--seed", type=int, default=0, help="(default 0)")
    p.add_argument("--name", default=None, help="refiner name (default: the file name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing refiner or model at --out (nothing else)")
    p.set_defaults(func=run_train_refiner)


def run_train_refiner(args: argparse.Namespace) -> int:
    from ..errors import ModelNotFoundError
    from ..plate import read_layout
    from ..train import fine_tune_refiner
    from ..unet.refiner import shipped_refiner_path

    init = None if args.init == "none" else args.init
    if init == "shipped":
        optics = read_layout(args.plate).optics
        init = shipped_refiner_path(optics)
        if init is None:
            raise ModelNotFoundError(f"no refiner is shipped for the plate's optics ({optics}); "
                                     "train a new one with --init none")
    if len(args.depths) != 2:
        print("plate-refocus train-refiner: error: --depths takes MIN,MAX", file=sys.stderr)
        return 2
    print(f"fine-tuning {init} on {args.plate} -> {args.out}" if init else
          f"training a new refiner on {args.plate} -> {args.out}", flush=True)
    refiner = fine_tune_refiner(
        args.plate, args.out, init=init, target=args.target, focal_index=args.focal_index,
        channel=args.channel, depths_um=tuple(args.depths), epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, patch=args.patch, patches_per_plane=args.patches_per_plane,
        validation_fraction=args.validation_fraction, seed=args.seed, name=args.name,
        wells=[w.strip() for w in args.wells.split(",")] if args.wells else None,
        command=command_line(), overwrite=args.overwrite,
        progress=lambda line: print(line, flush=True))
    scores = refiner.info.metrics["validation_relative_mse"]
    print(f"validation relative MSE (RL = 1): start {scores['start']:.3f}, best {scores['best']:.3f}; "
          f"wrote {args.out}; use it with 'plate-refocus run --method hybrid --refiner {args.out}'")
    return 0


def add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a model against the ground truth of a simulated plate, per depth",
        description="Refocus every plane of the simulated plate PLATE and print, per depth, PSNR "
        "(data range from the camera bit depth, 4095 for 12-bit) and SSIM against the in-focus "
        "ground truth, mean and spread over fields, for the input, the refocused output and "
        "Wiener deconvolution with the true PSF (the oracle).",
    )
    p.add_argument("plate", metavar="PLATE", help="a simulated plate (with ground truth)")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--depths", type=float_list, default=None, help="only these depths in um")
    p.add_argument("--fields", type=int, default=None, help="only the first N fields")
    p.add_argument("--no-wiener", action="store_true", help="skip the Wiener oracle")
    p.add_argument("--out", action="append", default=[],
                   help="write the table as CSV or JSON (by extension); may be repeated")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from ..metrics import evaluate_plate, format_table, write_table
    from ..unet import load_model

    model = load_model(args.model)
    start = time.perf_counter()
    rows, summary = evaluate_plate(
        args.plate, model, depths_um=args.depths, max_fields=args.fields, wiener=not args.no_wiener,
        progress=lambda done, total: print(f"field {done}/{total}", file=sys.stderr, flush=True),
    )
    print(f"model {model.info.name} ({model.info.sha256[:12]}) on {args.plate}, "
          f"{time.perf_counter() - start:.0f} s")
    print(format_table(summary))
    for path in args.out:
        write_table(summary, path, extra={"plate": str(args.plate), "model": model.info.name,
                                          "model_sha256": model.info.sha256})
        print(f"wrote {path}")
    return 0
