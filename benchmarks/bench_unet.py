"""Speed of the refocusing U-Net: megapixels/s, FLOPs/pixel, achieved GFLOP/s vs the matmul ceiling.

    python benchmarks/bench_unet.py [--model PATH] [--batch 4] [--repeats 5]

For 512x512 and 696x520 fields, after a warm-up call, the median of
``--repeats`` timed calls of ``RefocusModel.predict_batch`` on a batch of
``--batch`` fields (end to end: percentile normalisation, padding to the
pooling grid, tiling, the network, and back) and of the bare network on the
padded batch. FLOPs/pixel are counted from the architecture (2 per
multiply-add, convolutions only) per *output* pixel; the achieved GFLOP/s
counts the pixels the network actually runs on (padded to the divisor).
The ceiling is a float32 matrix multiply of 2048x2048 matrices with the same
Keras backend, measured in the same run. On a GPU (when Keras sees one) the
same rows are repeated there.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np


def _median_time(func, repeats: int) -> float:
    func()  # warm-up (tracing, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling(repeats: int, n: int = 2048) -> dict[str, float]:
    """float32 GFLOP/s of an n x n matmul with the Keras backend and with NumPy."""
    import keras
    from keras import ops

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    ta, tb = ops.convert_to_tensor(a), ops.convert_to_tensor(b)

    def backend_matmul():
        np.asarray(ops.matmul(ta, tb))

    flops = 2.0 * n**3
    return {
        keras.backend.backend(): flops / _median_time(backend_matmul, repeats) / 1e9,
        "numpy": flops / _median_time(lambda: a @ b, repeats) / 1e9,
    }


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--batch", type=int, default=4, help="fields per call (default 4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls, median (default 5)")
    args = parser.parse_args()

    import keras

    from plate_refocus.unet import load_model

    model = load_model(args.model)
    config = model.info.config
    flops = config.flops_per_pixel()
    print(f"model {model.info.name}: {config}")
    print(f"halo {model.info.halo} px, divisor {model.info.divisor}, {flops / 1e3:.1f} kFLOP per output pixel")
    print(f"machine: {_cpu_name()}, {os.cpu_count()} cores, Keras {keras.__version__} on "
          f"{keras.backend.backend()}, batch {args.batch}, median of {args.repeats}")
    before = matmul_ceiling(args.repeats)
    rng = np.random.default_rng(0)
    d = model.info.divisor
    results = []
    for ny, nx in ((512, 512), (520, 696)):
        images = (100 + rng.poisson(300, (args.batch, ny, nx))).astype(np.uint16)
        padded = np.zeros((args.batch, math.ceil(ny / d) * d, math.ceil(nx / d) * d, 1), np.float32)
        run_pixels = padded.shape[1] * padded.shape[2] * args.batch
        rows = [
            ("predict_batch (end to end)", lambda images=images: model.predict_batch(images, batch_size=args.batch)),
            ("network only", lambda padded=padded: model.keras_model.predict_on_batch(padded)),
        ]
        for what, func in rows:
            seconds = _median_time(func, args.repeats)
            results.append((f"{nx}x{ny}", what, args.batch * ny * nx / seconds / 1e6, run_pixels * flops / seconds / 1e9))
    after = matmul_ceiling(args.repeats)
    best = max(*before.values(), *after.values())
    for label, values in (("before", before), ("after", after)):
        print(f"float32 matmul 2048^3 {label} the model runs: "
              + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in values.items()))
    print(f"ceiling used below: the best of these, {best:.1f} GFLOP/s (the machine is shared, so load varies)")
    print()
    print("| field | what | MP/s | kFLOP/px | achieved GFLOP/s | % of matmul ceiling |")
    print("|---|---|---|---|---|---|")
    for field, what, mps, gflops in results:
        print(f"| {field} | {what} | {mps:.2f} | {flops / 1e3:.1f} | {gflops:.1f} | {100 * gflops / best:.0f}% |")

if __name__ == "__main__":
    main()
