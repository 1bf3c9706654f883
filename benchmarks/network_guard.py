"""Which consistency limit keeps a model's good outputs near focus and rejects its harmful ones.

`--method hybrid` keeps the network's output near focus (where the blind |z| is not identifiable)
only where its consistency with the plane (re-blurred at focus, reduced chi-square under the
camera's noise) is at most the model's `consistency_limit`. This script measures, per shipped model
and its objective, on 3-field wells of 260 x 348 (u2os and the held-out families, nuclei stain;
0, 2, 5 um at NA 0.25 and 0, 1, 2 um at NA 0.45, where each objective's blind |z| is not
identifiable), for five conditions (2000, 300 and 20,000 photons; 0.15 and 0.08 waves rms of
spherical aberration that nothing in the project models): how many outputs that gained over the
input and how many that lost each limit keeps, and the worst kept.

    python benchmarks/network_guard.py          # about a minute on 2 cores
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in a Dask worker; before NumPy loads BLAS

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generalization as g  # noqa: E402

from plate_refocus.deconvolve import Blur, NoiseModel, consistency  # noqa: E402
from plate_refocus.metrics import psnr  # noqa: E402
from plate_refocus.morphology import HELD_OUT_FAMILIES  # noqa: E402
from plate_refocus.simulate import Camera  # noqa: E402
from plate_refocus.unet import default_model_path, load_model  # noqa: E402

CONDITIONS = (("2000 photons", Camera(), 0.0), ("300 photons", Camera(photons=300.0), 0.0),
              ("20,000 photons, 16 bit", Camera(photons=20000.0, bit_depth=16), 0.0),
              ("0.15 waves spherical", Camera(), 0.15), ("0.08 waves spherical", Camera(), 0.08))
LIMITS = (5.0, 10.0, 20.0, 30.0, 50.0)
NEAR_FOCUS = {g.REPORT: [0.0, 2.0, 5.0], g.SECOND: [0.0, 1.0, 2.0]}


def outputs(model, optics, camera, spherical):
    """(consistency, PSNR gain over the input) of every near-focus network output."""
    noise = NoiseModel.from_camera(camera)
    data_range = float(camera.max_value)
    focus = Blur.model(optics, 0.0)
    out = []
    for i, family in enumerate(["u2os", *HELD_OUT_FAMILIES]):
        depths = NEAR_FOCUS[optics]
        images, truth = g.simulate(optics, family, depths, 3, (260, 348), seed=900 + 13 * i,
                                   spherical=spherical, camera=camera)
        for j in range(len(depths)):
            net = model.predict_batch(images[:, j])
            for f in range(len(images)):
                gain = psnr(truth[f], net[f], data_range=data_range) - psnr(truth[f], images[f, j],
                                                                           data_range=data_range)
                out.append((consistency(images[f, j], net[f], focus, noise=noise), gain))
    return np.asarray(out)


def main() -> int:
    start = time.time()
    heads = " | ".join(f"limit {limit:g}: gainers / losers kept (worst kept, dB)" for limit in LIMITS)
    lines = ["| model | condition | consistency of gainers (max) / losers (min) | " + heads + " |",
             "| --- | --- | --- |" + " --- |" * len(LIMITS)]
    for optics in (g.REPORT, g.SECOND):
        model = load_model(default_model_path(optics))
        for name, camera, spherical in CONDITIONS:
            a = outputs(model, optics, camera, spherical)
            gained, lost = a[a[:, 1] >= 0, 0], a[a[:, 1] < 0, 0]
            cells = []
            for limit in LIMITS:
                kept = a[a[:, 0] <= limit]
                worst = f"{kept[:, 1].min():+.1f}" if kept.size else "-"
                cells.append(f"{int((gained <= limit).sum())}/{gained.size} / {int((lost <= limit).sum())}/{lost.size} "
                             f"({worst})")
            extremes = (f"{gained.max():.1f}" if gained.size else "-") + " / " + (f"{lost.min():.1f}" if lost.size else "-")
            lines.append(f"| {model.info.name} (NA {optics.na:g}; its limit "
                         f"{model.info.consistency_limit if model.info.consistency_limit is not None else 'package'}) "
                         f"| {name} | {extremes} | " + " | ".join(cells) + " |")
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines) + f"\n\n(near focus: 0/2/5 um at NA 0.25, 0/1/2 um at NA 0.45; {time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
