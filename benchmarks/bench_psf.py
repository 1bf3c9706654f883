"""Throughput of the pooled PSF estimate on 696 x 520 fields.

Prints fields/second for

* ``rfft2 limit``: two bare ``scipy.fft.rfft2`` calls per field on the same
  data (the FFT-only limit the pooled estimate is measured against),
* ``pooled (per field)``: ``field_spectra`` called once per field and summed
  (as the Dask reduction does), plus one ``recover_psf`` at the end,
* ``pooled (stack)``: one ``field_spectra`` call on the whole (F, Y, X) stack,
* ``naive loop``: per field a full complex ``fft2`` pair and the division
  ``conj(F) G / (|F|^2 + mu)``, averaged over fields, no pooling of sums,

all with the same number of ``scipy.fft`` worker threads, best of a few
repeats (the machine may be shared). With ``--backend cupy`` every row runs on
the GPU through ``cupyx.scipy.fft`` instead, each starting from the uint16
fields in host memory (as a Dask task gets them from zarr) and ending when the
GPU is done. Run::

    .venv/bin/python benchmarks/bench_psf.py [--fields 16] [--workers 1] [--repeats 3] [--backend cupy]
"""

from __future__ import annotations

import os

# One BLAS thread, as in a Dask worker (distributed sets these in every worker process);
# threaded OpenBLAS on small matrices costs more than it gains on a shared machine.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.fft  # noqa: E402
import scipy.ndimage  # noqa: E402

from plate_refocus.optics import Optics  # noqa: E402
from plate_refocus.psf import field_spectra, recover_psf  # noqa: E402
from plate_refocus.xp import get_xp  # noqa: E402


def make_fields(n: int, shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Camera-like uint16 pairs: a smooth random scene with Poisson noise and an offset."""
    rng = np.random.default_rng(seed)
    spec = scipy.fft.rfft2(rng.normal(size=(n, *shape)), axes=(-2, -1))
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    scene = scipy.fft.irfft2(spec * np.exp(-(fy**2 + fx**2) / 0.01), s=shape, axes=(-2, -1))
    scene = 300 * (scene - scene.min()) / np.ptp(scene)
    sharp = (rng.poisson(scene) + 100).astype(np.uint16)
    blurred = (rng.poisson(scipy.ndimage.uniform_filter(scene, size=(1, 9, 9))) + 100).astype(np.uint16)
    return sharp, blurred


def best_rates(funcs: dict, fields: int, repeats: int) -> dict[str, float]:
    """Fields/second of each function, best of `repeats` rounds run in turn (fair under load)."""
    best = dict.fromkeys(funcs, np.inf)
    for _ in range(repeats):
        for name, func in funcs.items():
            start = time.perf_counter()
            func()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: fields / seconds for name, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=18)
    parser.add_argument("--workers", type=int, default=1, help="scipy.fft threads (1: as in a Dask task)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--height", type=int, default=520)
    parser.add_argument("--width", type=int, default=696)
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    args = parser.parse_args(argv)
    shape = (args.height, args.width)
    sharp, blurred = make_fields(args.fields, shape)
    optics = Optics()
    workers = args.workers
    backend = args.backend
    xp, fft = get_xp(backend, workers=workers)
    # GPU calls return before the work is done: every timed row ends by waiting for it
    synchronize = xp.cuda.Device().synchronize if backend == "cupy" else (lambda: None)

    def fft_limit():
        for f, g in zip(sharp, blurred, strict=False):
            fft.rfft2(xp.asarray(f, dtype=xp.float64))
            fft.rfft2(xp.asarray(g, dtype=xp.float64))
        synchronize()

    def pooled_per_field():
        return sum(
            field_spectra(f, g, reference_background=100.0, defocused_background=100.0,
                          backend=backend, workers=workers)
            for f, g in zip(sharp, blurred, strict=False)
        )

    def pooled_stack():
        return field_spectra(sharp, blurred, reference_background=100.0, defocused_background=100.0,
                             backend=backend, workers=workers)

    def pooled_wells():
        total = pooled_per_field()
        for _ in range(int(np.ceil(args.fields / 9))):
            recover_psf(total, shape, optics)

    def naive():
        mean = xp.zeros(shape, complex)
        for f, g in zip(sharp, blurred, strict=False):
            fh = fft.fft2(xp.asarray(f, dtype=xp.float64) - 100.0)
            gh = fft.fft2(xp.asarray(g, dtype=xp.float64) - 100.0)
            power = xp.abs(fh) ** 2
            mean += xp.conj(fh) * gh / (power + 1e-3 * xp.median(power))
        synchronize()
        return mean / len(sharp)

    # the end-of-well recover_psf (projection + fit) once, untimed, so its caches are warm
    recover_psf(pooled_stack(), shape, optics)
    start = time.perf_counter()
    recover_psf(field_spectra(sharp[:1], blurred[:1], backend=backend), shape, optics)
    recover_s = time.perf_counter() - start

    rates = best_rates(
        {
            "rfft2 limit (2 per field)": fft_limit,
            "pooled (per field + sum)": pooled_per_field,
            "pooled (stack)": pooled_stack,
            "pooled + recover, 9-field wells": pooled_wells,
            "naive loop (fft2 pair + divide)": naive,
        },
        args.fields,
        args.repeats,
    )
    limit = rates["rfft2 limit (2 per field)"]
    where = "GPU (cupyx.scipy.fft)" if backend == "cupy" else f"CPU, scipy.fft workers={workers}"
    print(f"PSF throughput, {args.fields} fields of {shape[1]}x{shape[0]} (X x Y), "
          f"{where}, BLAS threads={os.environ['OPENBLAS_NUM_THREADS']}, "
          f"best of {args.repeats} interleaved rounds")
    print(f"{'method':34s} {'fields/s':>9s} {'/ limit':>8s}")
    for name, rate in rates.items():
        print(f"{name:34s} {rate:9.1f} {rate / limit:8.2f}")
    print(f"recover_psf (projection, PSF, |z| fit) per (well, depth): {recover_s * 1e3:.0f} ms, warm caches")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
