"""When does `run`'s physics restoration lose to its own input, and can its consistency tell?

Per condition (optics as modelled at 300, 2000 and 20,000 photons; an NA 10 % off what the run is
told; 0.08 and 0.15 waves rms of spherical aberration, which nothing in the project models), five
families, depths 0-40 um, 3-field wells of 260 x 348: `pipeline.process_depth` with the default
method and no reference, run with the guard off (`RL_CONSISTENCY_LIMIT` = inf), and for every
restored field its consistency (reduced chi-square of the output re-blurred against the plane) and
its PSNR gain over the input. Then what a limit on the consistency would reject, per condition.

    python benchmarks/restoration_guard.py          # ~6 min on 2 cores
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses
import math
import sys
import time

import numpy as np

from plate_refocus.deconvolve import NoiseModel
from plate_refocus.metrics import psnr
from plate_refocus.optics import Optics, radial_frequencies
from plate_refocus.pipeline import DEFAULT_METHOD, DepthSettings, compute, process_depth
from plate_refocus.simulate import Camera, simulate_field

OPTICS = Optics()
SIZE = (260, 348)
DEPTHS = [0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0]
FAMILIES = ["u2os", "small-nuclei", "large-nuclei", "textured", "mitotic"]
CONDITIONS = (("2000 photons", Camera(), 0.0, OPTICS),
              ("300 photons", Camera(photons=300.0), 0.0, OPTICS),
              ("20,000 photons, 16-bit", Camera(photons=20000.0, bit_depth=16), 0.0, OPTICS),
              ("0.15 waves spherical", Camera(), 0.15, OPTICS),
              ("0.08 waves spherical", Camera(), 0.08, OPTICS),
              ("NA 0.275, told 0.25", Camera(), 0.0, dataclasses.replace(OPTICS, na=0.275)))
LIMITS = (5.0, 10.0, 20.0, 50.0)


def restorations(name, camera, spherical, sim_optics, seed):
    """(consistency, gain dB) of every field the default method restored, over families and depths."""
    noise = NoiseModel.from_camera(camera)
    settings = DepthSettings(optics=OPTICS, method=DEFAULT_METHOD, reference="blind", background=noise.offset,
                             data_range=4095.0, backend="numpy", read_noise=noise.read_noise)
    freq = radial_frequencies(SIZE, OPTICS.pixel_size_um)
    out = []
    for i, family in enumerate(FAMILIES):
        fields = [simulate_field(SIZE, DEPTHS, seed=np.random.SeedSequence([seed, i, f]), optics=sim_optics,
                                 camera=camera, channels=("nuclei",), spherical_rms_waves=spherical,
                                 family=None if family == "u2os" else family) for f in range(3)]
        planes = np.stack([f.images[0] for f in fields])
        truth = np.stack([f.in_focus[0] for f in fields])
        for j in range(len(DEPTHS)):
            r = process_depth(list(planes[:, j]), settings=settings, freq=freq)
            for f in range(3):
                if r.method_used[f] != compute.METHOD_IDENTITY:
                    gain = (psnr(truth[f], r.refocused[f], data_range=4095.0)
                            - psnr(truth[f], planes[f, j], data_range=4095.0))
                    out.append((float(r.consistency[f]), gain))
    return np.array(out).reshape(-1, 2)


def main() -> int:
    start = time.time()
    compute.RL_CONSISTENCY_LIMIT = math.inf  # measure every restoration, as without the guard
    lines = ["| condition | restored fields | lost to the input | consistency 10th / 50th / 90th / max | "
             "largest consistency of one that gained | "
             + " | ".join(f"limit {lim:g}: rejected (of them gained) / losers kept" for lim in LIMITS) + " |",
             "| --- | ---: | ---: | --- | ---: |" + " --- |" * len(LIMITS)]
    for k, (name, camera, spherical, sim_optics) in enumerate(CONDITIONS):
        rows = restorations(name, camera, spherical, sim_optics, seed=9000 + k)
        trust, gain = rows[:, 0], rows[:, 1]
        q = np.percentile(trust, [10, 50, 90, 100])
        gained = f"{trust[gain > 0].max():.1f}" if (gain > 0).any() else "-"
        cells = [f"{(trust > lim).sum()} ({((trust > lim) & (gain > 0)).sum()}) / {((trust <= lim) & (gain < 0)).sum()}"
                 for lim in LIMITS]
        lines.append(f"| {name} | {len(rows)} | {(gain < 0).sum()} | " + " / ".join(f"{v:.1f}" for v in q)
                     + f" | {gained} | " + " | ".join(cells) + " |")
        print(f"[{time.time() - start:4.0f} s] {name}", file=sys.stderr, flush=True)
    print("\n".join(lines))
    print(f"\n(default method, no reference, 3-field wells of {SIZE[0]} x {SIZE[1]}, families {', '.join(FAMILIES)}, "
          f"depths {DEPTHS} um; {time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
