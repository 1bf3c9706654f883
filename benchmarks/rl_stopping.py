"""Where Richardson-Lucy should stop: PSNR against the truth for each overrun past its stopping rule.

`richardson_lucy` stops by the discrepancy principle (chi2 <= 1) or when chi2 falls by less than
0.1 % an iteration ("stalled"), then runs `overrun` times as many iterations again. This script
restores simulated fields at their true |z| (report optics; the simulator's `u2os` and the four
held-out families; 3 cameras: 2000 and 300 photons at 12 bit, 20,000 photons at 16 bit; 10-40 um)
with several overruns and prints the gain over the input per cell and a summary: the table
`deconvolve.rl.OVERRUN` was chosen from.

    python benchmarks/rl_stopping.py              # ~15 min on 2 cores
    python benchmarks/rl_stopping.py --quick      # ~2 min
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in a Dask worker; before NumPy loads BLAS

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generalization as g  # noqa: E402

from plate_refocus.deconvolve import Blur, NoiseModel, richardson_lucy  # noqa: E402
from plate_refocus.deconvolve.rl import OVERRUN  # noqa: E402
from plate_refocus.metrics import psnr  # noqa: E402
from plate_refocus.morphology import HELD_OUT_FAMILIES  # noqa: E402
from plate_refocus.simulate import Camera  # noqa: E402

CAMERAS = (("2000 photons", Camera()), ("300 photons", Camera(photons=300.0)),
           ("20,000 photons, 16 bit", Camera(photons=20000.0, bit_depth=16)))
OVERRUNS = (0.0, 0.5, 1.0, 2.0)


def score(cameras, families, depths, fields, size):
    """Rows of (camera, family, depth, iterations at the rule, stop, gain per overrun)."""
    rows = []
    for cam_name, camera in cameras:
        noise = NoiseModel.from_camera(camera)
        data_range = float(camera.max_value)
        for i, family in enumerate(families):
            images, truth = g.simulate(g.REPORT, family, depths, fields, size, seed=7000 + 7 * i, camera=camera)
            for j, depth in enumerate(depths):
                blur = Blur.model(g.REPORT, depth)
                for f in range(fields):
                    plane, t = images[f, j], truth[f]
                    base = psnr(t, plane, data_range=data_range)
                    outs = [richardson_lucy(plane, blur, noise=noise, overrun=o) for o in OVERRUNS]
                    rows.append({"camera": cam_name, "family": family, "depth": depth,
                                 "iterations": outs[0].iterations, "stop": outs[0].stop,
                                 "gain": [psnr(t, o.image, data_range=data_range) - base for o in outs]})
            print(f"{cam_name} {family}", file=sys.stderr, flush=True)
    return rows


def tables(rows):
    by = defaultdict(list)
    for r in rows:
        by[(r["camera"], r["family"], r["depth"])].append(r)
    heads = " | ".join(f"overrun {o:g}" for o in OVERRUNS)
    lines = ["#### Gain over the input at the true |z| (dB, mean over fields)", "",
             f"| camera | family | \\|z\\| um | iterations at the rule (stop) | {heads} |",
             "| --- | --- | ---: | --- |" + " ---: |" * len(OVERRUNS)]
    cells = []
    for (cam, fam, depth), members in by.items():
        gains = np.mean([m["gain"] for m in members], axis=0)
        cells.append(gains)
        stops = ", ".join(f"{m['iterations']} ({m['stop']})" for m in members)
        lines.append(f"| {cam} | {fam} | {depth:g} | {stops} | " + " | ".join(f"{x:+.2f}" for x in gains) + " |")
    diff = np.asarray(cells) - np.asarray(cells)[:, :1]
    lines += ["", "#### Over stopping at the rule (overrun 0), per cell", "",
              "| overrun | min | median | mean | max | cells below -0.5 dB |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for k, o in enumerate(OVERRUNS[1:], start=1):
        d = diff[:, k]
        lines.append(f"| {o:g}{' (default)' if o == OVERRUN else ''} | {d.min():+.2f} | {np.median(d):+.2f} | "
                     f"{d.mean():+.2f} | {d.max():+.2f} | {int((d < -0.5).sum())}/{d.size} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one camera, two families, two depths")
    parser.add_argument("--out", default="scratch/rl_stopping.md")
    args = parser.parse_args(argv)
    start = time.time()
    if args.quick:
        rows = score(CAMERAS[:1], ["u2os", "small-nuclei"], [10.0, 30.0], 1, (128, 160))
    else:
        rows = score(CAMERAS, ["u2os", *HELD_OUT_FAMILIES], [10.0, 20.0, 30.0, 40.0], 2, (260, 348))
    text = (f"RL stopping (report optics, RL at the true |z|, {'quick' if args.quick else 'full'})\n\n"
            + tables(rows) + f"\n\n(total {time.time() - start:.0f} s)")
    g.publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
