"""What running the shipped U-Net on optics it was not trained for costs (why ``run`` refuses beyond 5 %).

    python benchmarks/optics_tolerance.py        # about 2 minutes on 2 cores

The model's own training family (``u2os``), 4 fields of 256 x 256 per depth,
seed 31337, simulated with the training optics and with the NA or the pixel
size scaled by -10..+10 %; the model is run as shipped (it is not told the
optics). Prints the mean PSNR gain over the input, dB (data range 4095).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generalization import RANGE, REPORT, simulate  # noqa: E402

from plate_refocus.metrics import psnr  # noqa: E402

DEPTHS = [5.0, 10.0, 20.0, 30.0]
FIELDS = 4


def main() -> None:
    from plate_refocus.unet import load_model

    model = load_model()
    cases = [("as trained", REPORT)] + [
        (f"{name} {change:+.0%}", dataclasses.replace(REPORT, **{name: getattr(REPORT, name) * (1 + change)}))
        for name in ("na", "pixel_size_um") for change in (0.02, 0.05, 0.10, -0.05, -0.10)]
    print("| optics | " + " | ".join(f"{d:g} um" for d in DEPTHS) + " |")
    print("| --- |" + " ---: |" * len(DEPTHS))
    for label, optics in cases:
        images, truth = simulate(optics, "u2os", DEPTHS, FIELDS, (256, 256), seed=31337)
        gains = []
        for j in range(len(DEPTHS)):
            out = model.predict_batch(images[:, j])
            gains.append(np.mean([psnr(truth[f], out[f], data_range=RANGE)
                                  - psnr(truth[f], images[f, j], data_range=RANGE) for f in range(FIELDS)]))
        print(f"| {label} | " + " | ".join(f"{g:+.2f}" for g in gains) + " |", flush=True)


if __name__ == "__main__":
    main()
