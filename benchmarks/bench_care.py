"""Speed of the shipped U-Net against CSBDeep's CARE on the same machine, in the same run, with
the quality of the network and of the physics baseline beside it.

    pip install csbdeep        # benchmark-only (pip install -e ".[bench]")
    python benchmarks/bench_care.py [--repeats 5] [--no-quality]

Speed: images/s on 520 x 696 fields (the BBBC006 field size) for
``RefocusModel.predict`` (one field per call, and ``predict_batch`` of four)
and for ``CARE.predict`` with the configuration of CSBDeep's denoising2D
example (``Config("YX", 1, 1, unet_kern_size=3, train_batch_size=8,
train_steps_per_epoch=40)``: a depth-2 U-Net with 32 first filters),
untrained. A network's speed does not depend on its weights, so the CARE
model is not trained here and its quality is not measured: the depth issue
reports a generic CARE model trained 35 min on other synthetic nuclei at
+1.2..+4.9 dB at 10-30 um on real nuclei. Median of ``--repeats`` calls after
a warm-up, all cores (TensorFlow's default for both).

Quality: PSNR gain over the input on a held-out morphology family
(``textured``, report optics, 2 fields of 520 x 696 per depth) for the
shipped U-Net, the default method (Richardson-Lucy at the blind |z|, through
the run's own per-depth function) and the oracle Wiener (true depth), from
``generalization.evaluate_well``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = (520, 696)


def median_rate(func, images: int, repeats: int) -> float:
    """Images/s: ``images`` per call of ``func``, the median of ``repeats`` calls after a warm-up."""
    func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return images / statistics.median(times)


def speed(repeats: int) -> list[str]:
    from csbdeep.models import CARE, Config
    from generalization import REPORT, simulate

    from plate_refocus.unet import load_model

    fields, _ = simulate(REPORT, "u2os", [20.0], 4, SIZE, seed=4242)
    planes = fields[:, 0].astype(np.float32)
    ours = load_model()
    config = Config("YX", 1, 1, unet_kern_size=3, train_batch_size=8, train_steps_per_epoch=40)
    care = CARE(config, name=None, basedir=None)
    params = care.keras_model.count_params()
    rows = {
        f"shipped U-Net ({ours.info.config.filters} filters, depth {ours.info.config.depth}, "
        f"{ours.keras_model.count_params():,} parameters), `predict`, one field per call":
            median_rate(lambda: ours.predict(planes[0]), 1, repeats),
        "shipped U-Net, `predict_batch` of 4 fields":
            median_rate(lambda: ours.predict_batch(planes), 4, repeats),
        f"CARE, denoising2D config (depth 2, 32 filters, {params:,} parameters), `predict`, one field per call":
            median_rate(lambda: care.predict(planes[0], "YX"), 1, repeats),
    }
    care_rate = list(rows.values())[-1]
    lines = [f"#### Speed on {SIZE[0]} x {SIZE[1]} fields ({os.cpu_count()} cores, median of {repeats})", "",
             "| network | images/s | x CARE |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {rate:.2f} | {rate / care_rate:.1f} |" for name, rate in rows.items()]
    return lines


def quality() -> list[str]:
    from argparse import Namespace

    from generalization import REPORT, evaluate_well

    from plate_refocus.unet import load_model

    depths = [0.0, 5.0, 10.0, 20.0, 30.0]
    args = Namespace(size=SIZE, fields=2, no_psnr=False, rl_fields=0, pipeline_fields=2)
    rows, _, _ = evaluate_well(load_model(), REPORT, REPORT, "textured", depths, args, seed=9001)
    lines = ["#### Quality beside it: PSNR gain over the input, dB, held-out `textured` family, report optics, "
             "2 fields per depth", "",
             "| depth um | input PSNR | shipped U-Net | default (RL at the blind \\|z\\|) | oracle Wiener (true depth) |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for depth in depths:
        sel = [r for r in rows if r["depth"] == depth]
        mean = {k: float(np.mean([r[k] - r["input"] for r in sel])) for k in ("unet", "default_blind", "oracle")}
        lines.append(f"| {depth:g} | {np.mean([r['input'] for r in sel]):.1f} | {mean['unet']:+.1f} | "
                     f"{mean['default_blind']:+.1f} | {mean['oracle']:+.1f} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-quality", action="store_true", help="only the speed table")
    args = parser.parse_args(argv)
    try:
        import csbdeep  # noqa: F401
    except ImportError:
        sys.exit("bench_care needs CSBDeep: pip install csbdeep (or pip install -e '.[bench]')")
    print("\n".join(speed(args.repeats)))
    if not args.no_quality:
        print()
        print("\n".join(quality()))


if __name__ == "__main__":
    main()
