"""End-to-end throughput of `plate-refocus run` against a bare loop, memory, graph size.

Prints one table:

- planes/second of the whole pipeline (``--method``, default rl: refocus, PSF, blind
  |z|, metrics, the results store and the refocused OME-Zarr plate with pyramids) on a
  LocalCluster of 2 single-threaded worker processes, on a simulated plate
  large enough to run for minutes (a whole 384-well plate x 2 fields x 11
  depths by default; ``--wells 96`` for a quicker check);
- planes/second of a bare loop calling the pipeline's own pure per-(well, depth)
  function (``process_depth``, the same method and reference) in one process without Dask or zarr on
  the same plate (pixels preloaded into memory, untimed);
- their ratio (target: >= 1.3 on 2 cores). The two are timed in alternating
  pairs (``--pairs``, default 2) and each pair gives a ratio: on a shared
  machine the speed of the cores drifts by 10 % over minutes, which a
  pipeline run and a bare loop run far apart would read as a difference
  between them;
- peak RSS per worker for a 6-well and a 24-well plate (target: grows < 20 %);
- the pickled size of the per-well graphs of a 384-well, 2-field, 34-plane plate,
  built without computing anything (target: < 10 MB).

Usage::

    python benchmarks/bench_pipeline.py [--size 256] [--wells 384] [--pairs 2] [--fields 2]
        [--method rl|wiener|unet|hybrid] [--model PATH] [--no-graph]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _start_sampler(dask_worker) -> int:
    """Runs on each worker: sample this process's RSS every 50 ms, keep the peak on the worker."""
    import psutil

    process = psutil.Process()
    dask_worker.bench_peak_rss = process.memory_info().rss

    def sample() -> None:
        while True:
            dask_worker.bench_peak_rss = max(dask_worker.bench_peak_rss,
                                             process.memory_info().rss)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    return os.getpid()


def _peak_rss(dask_worker) -> int:
    return dask_worker.bench_peak_rss


def _run_pipeline(plate: Path, out: Path, model: str | None, workers: int,
                  method: str) -> tuple[float, int, list[int]]:
    from plate_refocus.cluster import start_client
    from plate_refocus.pipeline import run_plate

    # The cluster `plate-refocus run` starts (worker processes, 1 thread, its malloc settings).
    with start_client("local", workers=workers, dashboard_address=":0") as client:
        client.run(_start_sampler)
        # Warm-up: every worker imports TensorFlow and loads the model once (not timed).
        warm = Path(str(out) + ".warm")
        run_plate(plate, warm, client=client, model=model, method=method, wells=["A01"],
                  overwrite=True)
        shutil.rmtree(warm)
        start, cpu = time.perf_counter(), time.process_time()
        summary = run_plate(plate, out, client=client, model=model, method=method, overwrite=True)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        peaks = list(client.run(_peak_rss).values())
    print(f"pipeline run: {seconds:.1f} s, this process (scheduler, client, tables) {cpu:.1f} CPU s, "
          f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return seconds, summary.planes, peaks


def _bare_loop(plate: Path, model_path: str | None, method: str) -> tuple[float, int]:
    """The same work, one process, no Dask, no zarr: the reference the pipeline must beat.

    It calls the pipeline's own pure per-(well, depth) function with the run's method and
    reference (this plate records its in-focus plane), so the work is the same by
    construction; only the reading, writing and scheduling differ.
    """
    from plate_refocus.optics import radial_frequencies
    from plate_refocus.pipeline import DepthSettings, process_depth
    from plate_refocus.plate import open_ground_truth, open_plate, read_layout

    layout = read_layout(plate)
    pixels = np.asarray(open_plate(layout).isel(c=0).values)  # (well, field, z, y, x), untimed
    truth = np.asarray(open_ground_truth(plate)["in_focus"].isel(c=0).values)
    settings = DepthSettings(optics=layout.optics, method=method, reference="focal-plane",
                             background=layout.offset, data_range=layout.data_range,
                             backend="numpy", read_noise=float(layout.camera["read_noise"]))
    freq = radial_frequencies(layout.shape, layout.optics.pixel_size_um)
    focal = layout.focal_plane
    refocus = None
    if method in ("unet", "hybrid"):
        from plate_refocus.unet import load_model

        model = load_model(model_path)
        model.predict(pixels[0, 0, 0].astype(np.float32))  # warm-up

        def refocus(stack):
            return model.predict_batch(stack, batch_size=max(4, len(stack)))

    # NumPy's BLAS is left free to use both cores; on this work it only spins a second thread
    # (measured: OPENBLAS_NUM_THREADS=1 gives the same wall time with half the CPU time)
    start = time.perf_counter()
    for w in range(pixels.shape[0]):
        for z in range(pixels.shape[2]):
            process_depth(list(pixels[w, :, z]), refocus=refocus, settings=settings, freq=freq,
                          references=list(pixels[w, :, focal]), truths=list(truth[w]))
    seconds = time.perf_counter() - start
    return seconds, pixels.shape[0] * pixels.shape[1] * pixels.shape[2]


def _graph_size(tmp: Path, model: str | None) -> tuple[int, int, int, float]:
    """Per-well graphs of a 384-well x 2-field x 34-plane plate, built and pickled, not run."""
    import dask.array as da
    from distributed import Client, LocalCluster

    from plate_refocus.optics import Optics
    from plate_refocus.pipeline import plan_run, plate_graph_size
    from plate_refocus.plate import well_name, write_plate

    plate = tmp / "p384.zarr"
    wells = [well_name(r, c) for r in range(16) for c in range(1, 25)]
    # 48 x 48 planes (a run's minimum is 33) keep the store small; a graph holds keys, no pixels.
    images = da.zeros((384, 2, 1, 34, 48, 48), dtype=np.uint16, chunks=(1, 1, 1, 1, 48, 48))
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster):
        write_plate(plate, images, wells, optics=Optics(),
                    z_um=[2.0 * (i - 16) for i in range(34)], channel_names=["w1"],
                    plate_rows=16, plate_columns=24, focal_plane=16)
    start = time.perf_counter()
    plan = plan_run(plate, tmp / "unused.zarr", model=model)
    size, largest, tasks = plate_graph_size(plan)
    return size, largest, tasks, time.perf_counter() - start


#: wells -> (rows, columns, plate format) of the simulated plates
LAYOUTS = {6: (2, 3, 96), 24: (4, 6, 96), 96: (8, 12, 96), 384: (16, 24, 384)}


def main() -> None:
    from plate_refocus.pipeline import DEFAULT_METHOD, METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="field size in pixels")
    parser.add_argument("--wells", type=int, default=384, choices=(24, 96, 384),
                        help="wells of the throughput plate (default 384: a whole plate)")
    parser.add_argument("--pairs", type=int, default=2,
                        help="alternating pipeline / bare-loop timings on the throughput plate")
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default=None, help="model path (default: the shipped model)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS,
                        help=f"the refocusing method of both (default {DEFAULT_METHOD}, run's default)")
    parser.add_argument("--no-graph", action="store_true",
                        help="skip the 384-well graph's size (2-3 minutes)")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from plate_refocus.simulate import simulate_plate

    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        # The graph first: it is quick, and a failure there must not cost the long timings.
        graph = None if args.no_graph else _graph_size(tmp, args.model)
        plates = {}
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            for wells in sorted({6, 24, args.wells}):
                rows, cols, plate_format = LAYOUTS[wells]
                plates[wells] = simulate_plate(
                    tmp / f"plate{wells}.zarr", rows=rows, columns=cols, fields=args.fields,
                    size=(args.size, args.size), seed=1234, channels=("nuclei",),
                    plate_format=plate_format, client=client)
        runs = {wells: _run_pipeline(plates[wells], tmp / f"r{wells}.zarr", args.model, args.workers,
                                     args.method)
                for wells in (6, 24) if wells != args.wells}
        pairs = []  # (pipeline run, bare-loop seconds), alternating
        for _ in range(args.pairs):
            run = _run_pipeline(plates[args.wells], tmp / f"r{args.wells}.zarr", args.model, args.workers,
                                args.method)
            pairs.append((run, _bare_loop(plates[args.wells], args.model, args.method)[0]))
            print(f"pair {len(pairs)}: pipeline {run[0]:.1f} s, bare loop {pairs[-1][1]:.1f} s",
                  file=sys.stderr, flush=True)
        runs.setdefault(args.wells, pairs[0][0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    planes = pairs[0][0][1]
    t_pipes = [run[0] for run, _ in pairs]
    t_bares = [bare for _, bare in pairs]
    ratios = [bare / run[0] for run, bare in pairs]

    def values(seconds: list[float]) -> str:
        return " / ".join(f"{planes / s:.2f}" for s in seconds)

    peaks6, peaks24 = max(runs[6][2]), max(runs[24][2])
    mib = 2**20
    print(f"method {args.method}; throughput plate: {args.wells} wells x {args.fields} fields x 11 depths, "
          f"{args.size}x{args.size} px, 1 channel ({planes} planes); {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{len(pairs)} alternating pairs of timings; one value per pair, in order")
    print(f"{'measure':<56}{'value':>12}")
    print(f"{'pipeline, planes/s (' + str(args.workers) + ' workers x 1 thread)':<56}{values(t_pipes):>12}")
    print(f"{'  its wall time (s)':<56}{' / '.join(f'{t:.1f}' for t in t_pipes):>12}")
    print(f"{'bare loop, planes/s (1 process, no Dask/zarr)':<56}{values(t_bares):>12}")
    print(f"{'  its wall time (s)':<56}{' / '.join(f'{t:.1f}' for t in t_bares):>12}")
    print(f"{'ratio pipeline / bare, per pair (target >= 1.3)':<56}"
          f"{' / '.join(f'{r:.2f}' for r in ratios):>12}")
    for wells in (6, 24):
        t, n, _ = runs[wells]
        print(f"{f'pipeline, planes/s, {wells} wells ({t:.0f} s: fixed costs weigh more)':<56}{n / t:>12.2f}")
    print(f"{'peak RSS per worker, 6 wells (MiB)':<56}{peaks6 / mib:>12.0f}")
    print(f"{'peak RSS per worker, 24 wells (MiB)':<56}{peaks24 / mib:>12.0f}")
    print(f"{'growth 6 -> 24 wells (target < 20 %)':<56}{100 * (peaks24 / peaks6 - 1):>11.1f}%")
    if args.wells not in (6, 24):
        print(f"{f'peak RSS per worker, {args.wells} wells (MiB)':<56}{max(runs[args.wells][2]) / mib:>12.0f}")
    if graph is not None:
        g_bytes, g_largest, g_tasks, g_seconds = graph
        print(f"{'graph, 384 wells x 2 fields x 34 planes: tasks':<56}{g_tasks:>12d}")
        print(f"{'graph, pickled MB, all wells (target < 10)':<56}{g_bytes / 1e6:>12.2f}")
        print(f"{'graph, pickled kB, largest well (one submission)':<56}{g_largest / 1e3:>12.1f}")
        print(f"{'graph, seconds to build and pickle':<56}{g_seconds:>12.1f}")


if __name__ == "__main__":
    main()
