"""Simulated images per second: the Dask pipeline vs a bare single-threaded NumPy loop.

    python benchmarks/bench_simulate.py [--wells 6,24] [--fields 4] [--size 256] [--workers 2]

An "image" is one (y, x) plane: one channel at one depth of one field. In one run it measures

* the pipeline: ``simulate_plate`` on a local Dask cluster (``--workers`` processes x 1 thread,
  spawned with ``cluster.WORKER_MALLOC_ENV`` as ``simulate_plate`` does) writing an OME-Zarr
  plate with its ground truth, timed on a warm cluster (the cluster start-up is printed
  separately);
* a bare loop: the same ``simulate_field`` calls (cells, one rfft2 per channel, one irfft2 per
  depth, camera noise) in one thread of this process, no Dask, no zarr;
* the FFT convolutions alone (rfft2 of the padded object, one irfft2 per depth), for reference;

and the peak resident memory of each worker (psutil RSS sampled every 20 ms in every worker,
a fresh cluster for each plate) for each number of wells, which should not grow with it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import dask
import numpy as np
import scipy.fft

from plate_refocus.cluster import worker_malloc_config
from plate_refocus.optics import Optics, defocus_otf
from plate_refocus.simulate import (
    DEFAULT_DEPTHS_UM,
    _padded_shape,
    field_padding,
    simulate_field,
    simulate_objects,
    simulate_plate,
)


def _cpu_seconds(process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _start_sampler(dask_worker, interval: float = 0.02) -> int:
    """Sample this worker's RSS in a thread and note its CPU time; state lives on the worker."""
    import psutil

    process = psutil.Process()
    state = {"rss": process.memory_info().rss, "running": True, "cpu": _cpu_seconds(process)}
    dask_worker._bench_peak = state

    def sample():
        while state["running"]:
            state["rss"] = max(state["rss"], process.memory_info().rss)
            time.sleep(interval)

    threading.Thread(target=sample, daemon=True).start()
    return os.getpid()


def _stop_sampler(dask_worker) -> tuple[float, float]:
    """(peak RSS in bytes, CPU seconds used since the start)."""
    import psutil

    state = dask_worker._bench_peak
    state["running"] = False
    return state["rss"], _cpu_seconds(psutil.Process()) - state["cpu"]


def _warm_up(size, depths) -> None:
    # Import and fill the per-process OTF cache outside the timed region, as a long run would.
    simulate_field(size, depths, seed=0)


def bare_loop(n_fields: int, size, depths) -> tuple[float, float]:
    """(wall seconds, CPU seconds)."""
    start, cpu = time.perf_counter(), time.process_time()
    for f in range(n_fields):
        simulate_field(size, depths, seed=np.random.SeedSequence([0, 999, f]))
    return time.perf_counter() - start, time.process_time() - cpu


def fft_only(n_fields: int, size, depths, optics: Optics | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds)."""
    optics = optics or Optics()
    big = _padded_shape(size, field_padding(max(depths), optics))
    objects = [simulate_objects(big, seed=f).astype(np.float64) for f in range(n_fields)]
    otfs = [defocus_otf(big, z, optics, real=True) for z in depths]
    start, cpu = time.perf_counter(), time.process_time()
    for obj in objects:
        spectrum = scipy.fft.rfft2(obj, axes=(-2, -1), workers=1)
        for otf in otfs:
            scipy.fft.irfft2(spectrum * otf, s=big, axes=(-2, -1), workers=1)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", default="6,24", help="comma-separated well counts (default 6,24)")
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bare-fields", type=int, default=8, help="fields timed in the bare loop")
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    size = (args.size, args.size)
    depths = DEFAULT_DEPTHS_UM
    images_per_field = 2 * len(depths)
    wells_list = [int(w) for w in args.wells.split(",")]

    _warm_up(size, depths)
    n_bare = args.bare_fields * images_per_field
    bare_s, bare_cpu = bare_loop(args.bare_fields, size, depths)
    fft_s, fft_cpu = fft_only(args.bare_fields, size, depths)
    bare_rate = n_bare / bare_s

    rows, startups = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n_wells in wells_list:
            # A fresh cluster per plate, so each peak starts from a clean worker.
            t0 = time.perf_counter()
            with dask.config.set(worker_malloc_config()), \
                    LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                 dashboard_address=":0", silence_logs=40) as cluster, Client(cluster) as client:
                startups.append(time.perf_counter() - t0)
                client.run(_warm_up, size, depths)
                client.run(_start_sampler)
                columns = min(n_wells, 6)
                start, cpu = time.perf_counter(), time.process_time()
                out = simulate_plate(Path(tmp) / f"p{n_wells}.zarr", rows=n_wells // columns, columns=columns,
                                     fields=args.fields, size=size, depths_um=depths, client=client,
                                     plate_format=96 if n_wells <= 96 else 384)
                seconds, main_cpu = time.perf_counter() - start, time.process_time() - cpu
                stats = client.run(_stop_sampler)
            n_images = n_wells * args.fields * images_per_field
            disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
            worker_cpu = sum(cpu for _, cpu in stats.values())
            rows.append((n_wells, n_images, seconds, worker_cpu + main_cpu,
                         max(rss for rss, _ in stats.values()) / 2**20, disk / 2**20))
    startup = float(np.mean(startups))

    load = os.getloadavg()
    print(f"bench_simulate: {args.size}x{args.size} px, 2 channels x {len(depths)} depths per field, "
          f"{args.fields} fields per well; {os.cpu_count()} cores, load average {load[0]:.1f} at the end")
    print(f"cluster start-up: {startup:.1f} s ({args.workers} workers x 1 thread, processes)")
    print("wall-clock rates depend on what else runs on the machine; the CPU columns do not: "
          "'CPU-bound rate' = images / (CPU seconds / cores used), what the run would reach on "
          "otherwise idle cores (for the pipeline: worker + client + scheduler CPU, spread over the workers)")
    print()
    print("| run | images | wall s | images/s (wall) | vs bare | CPU s | CPU-bound images/s | vs bare "
          "| peak RSS per worker (MiB) | plate on disk (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    bare_bound = n_bare / bare_cpu
    print(f"| bare NumPy loop (simulate_field, 1 thread) | {n_bare} | {bare_s:.2f} | {bare_rate:.1f} | 1.00x "
          f"| {bare_cpu:.2f} | {bare_bound:.1f} | 1.00x | - | - |")
    print(f"| FFT convolutions only (1 thread) | {n_bare} | {fft_s:.2f} | {n_bare / fft_s:.1f} | "
          f"{n_bare / fft_s / bare_rate:.2f}x | {fft_cpu:.2f} | {n_bare / fft_cpu:.1f} | "
          f"{n_bare / fft_cpu / bare_bound:.2f}x | - | - |")
    for n_wells, n_images, seconds, cpu, peak, disk in rows:
        bound = n_images / (cpu / args.workers)
        print(f"| Dask pipeline, {n_wells} wells -> zarr ({args.workers} workers) | {n_images} | {seconds:.2f} | "
              f"{n_images / seconds:.1f} | {n_images / seconds / bare_rate:.2f}x | {cpu:.2f} | {bound:.1f} | "
              f"{bound / bare_bound:.2f}x | {peak:.0f} | {disk:.1f} |")

if __name__ == "__main__":
    main()
