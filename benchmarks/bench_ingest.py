"""TIFF-folder -> OME-Zarr throughput of ``plate_refocus.ingest`` against plain ``tifffile.imread``.

Writes a synthetic folder in the BBBC006 layout (one folder per plane, 696x520
uint16 12-bit LZW TIFFs, uuid-suffixed names) into a temporary directory,
then times

- ``imread``: ``tifffile.imread`` of every file, one thread and a thread pool
  (decoding only: the read-only limit of the conversion);
- ``zarr write only``: the same pixels, already decoded, written plane by
  plane into a zarr v3 array with the codecs ``write_plate`` uses (the
  write-only limit);
- ``ingest``: :func:`plate_refocus.ingest` to a zarr plate, on Dask's threaded
  scheduler and on a local distributed cluster of worker processes.

Each run is a fresh process; throughput is uncompressed pixel bytes per
second of wall time, and the peak resident memory of that process is shown
against the plate's size (the conversion streams, so it stays well below).
The files are in the page cache for every run (they were just written, and a
warm-up read precedes the timings), so this measures decoding and writing,
not the disk.

Usage::

    python benchmarks/bench_ingest.py [--wells 8] [--planes 10] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

SHAPE = (520, 696)
NAME = "mcf-z-stacks-03212011_{well}_s{site}_w{channel}{uuid}.tif"


def make_folder(root: Path, *, wells: int, planes: int, seed: int = 0) -> list[Path]:
    """BBBC006-layout folder: ``wells`` wells x 2 sites x 2 channels x ``planes`` planes."""
    import tifffile
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    # A few smooth "nuclei" scenes with the real sample's levels: background ~120 counts, nuclei
    # up to ~800, shot noise of 4-13 counts (so LZW compresses them about as well, ~0.6).
    scenes = []
    for _ in range(4):
        spots = np.zeros(SHAPE)
        idx = rng.integers(0, SHAPE[0] * SHAPE[1], 150)
        spots.flat[idx] = rng.uniform(0.5, 1.0, idx.size)
        blobs = ndimage.gaussian_filter(spots, 7)
        scenes.append(120 + 700 * blobs / blobs.max())
    files = []
    names = [f"{chr(ord('a') + i // 24)}{i % 24 + 1:02d}" for i in range(wells)]
    for z in range(planes):
        folder = root / f"BBBC006_v1_images_z_{z:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        blur = 1 + abs(z - planes // 2)
        for w, well in enumerate(names):
            for site in (1, 2):
                for channel in (1, 2):
                    scene = scenes[(w + site + channel) % len(scenes)]
                    mean = ndimage.gaussian_filter(scene, blur)
                    noisy = mean + rng.normal(size=SHAPE) * np.sqrt(0.3 * mean)
                    pixels = np.clip(np.rint(noisy), 0, 4095).astype(np.uint16)
                    path = folder / NAME.format(well=well, site=site, channel=channel, uuid=uuid.uuid4())
                    tifffile.imwrite(path, pixels, compression="lzw", rowsperstrip=11)  # as BBBC006
                    files.append(path)
    return files


# --- the timed runs, each in a fresh process -------------------------------------------------


def _run_imread(folder: str, threads: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import tifffile

    files = sorted(str(p) for p in Path(folder).rglob("*.tif"))

    def read(path: str) -> np.ndarray:
        return tifffile.imread(path, maxworkers=1)  # one thread per file; files in parallel

    start = time.perf_counter()
    if threads == 1:
        total = sum(read(f).nbytes for f in files)
    else:
        with ThreadPoolExecutor(threads) as pool:
            total = sum(a.nbytes for a in pool.map(read, files))
    return {"seconds": time.perf_counter() - start, "bytes": total}


def _run_zarr_write(folder: str, out: str) -> dict:
    """Write the same pixels, already in memory, plane by plane into a zarr v3 array (1 thread)."""
    import tifffile
    import zarr

    planes = [tifffile.imread(str(p)) for p in sorted(Path(folder).rglob("*.tif"))]
    target = zarr.create_array(out, shape=(len(planes), *SHAPE), chunks=(1, *SHAPE),
                               dtype=np.uint16, fill_value=0, zarr_format=3,  # codecs as write_plate
                               overwrite=True)
    start = time.perf_counter()
    for i, plane in enumerate(planes):
        target[i] = plane
    seconds = time.perf_counter() - start
    disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return {"seconds": seconds, "disk": disk}


def _run_ingest(folder: str, out: str, mode: str, workers: int) -> dict:
    import dask

    from plate_refocus import ingest

    start = time.perf_counter()
    if mode in ("threads", "sync"):
        config = {"scheduler": "threads", "num_workers": workers} if mode == "threads" else {
            "scheduler": "synchronous"}
        with dask.config.set(config):
            ingest(folder, out, preset="bbbc006", overwrite=True)
        seconds = time.perf_counter() - start
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            started = time.perf_counter()
            ingest(folder, out, preset="bbbc006", overwrite=True, client=client)
            seconds = time.perf_counter() - started
            worker_rss = max(client.run(_max_rss).values())
    disk = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    result = {"seconds": seconds, "disk": disk}
    if mode == "processes":
        result["worker_rss"] = worker_rss
    return result


def _max_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(argv: list[str]) -> None:
    kind, *rest = argv
    if kind == "imread":
        result = _run_imread(rest[0], int(rest[1]))
    elif kind == "zarr":
        result = _run_zarr_write(rest[0], rest[1])
    else:
        result = _run_ingest(rest[0], rest[1], rest[2], int(rest[3]))
    result["max_rss"] = _max_rss()
    print(json.dumps(result))


def _timed(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"benchmark run {args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wells", type=int, default=8)
    parser.add_argument("--planes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="runs per row; the best is shown")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import dask
    import tifffile
    import zarr

    import plate_refocus

    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as tmp:
        src = Path(tmp) / "BBBC006_like"
        t0 = time.perf_counter()
        files = make_folder(src, wells=args.wells, planes=args.planes)
        made = time.perf_counter() - t0
        raw = len(files) * SHAPE[0] * SHAPE[1] * 2
        compressed = sum(f.stat().st_size for f in files)
        _timed("imread", str(src), "1")  # warm the page cache
        load = os.getloadavg()[0]
        print(f"# plate_refocus {plate_refocus.__version__}, tifffile {tifffile.__version__}, "
              f"zarr {zarr.__version__}, dask {dask.__version__}, {os.cpu_count()} CPUs")
        print(f"# {len(files)} files ({args.wells} wells x 2 sites x 2 channels x {args.planes} planes), "
              f"{SHAPE[1]}x{SHAPE[0]} uint16, {raw / 1e6:.0f} MB of pixels, "
              f"{compressed / 1e6:.0f} MB as LZW TIFF (ratio {compressed / raw:.2f}); "
              f"made in {made:.1f} s")
        w = str(args.workers)
        rows = [  # (label, command, the imread row it is compared with)
            ("tifffile.imread, 1 thread", ("imread", str(src), "1"), 0),
            (f"tifffile.imread, {w} threads", ("imread", str(src), w), 1),
            ("zarr write only (pixels already in memory), 1 thread",
             ("zarr", str(src), str(Path(tmp) / "z.zarr")), 0),
            ("ingest, 1 thread (dask synchronous)",
             ("ingest", str(src), str(Path(tmp) / "s.zarr"), "sync", "1"), 0),
            (f"ingest, dask threads ({w})",
             ("ingest", str(src), str(Path(tmp) / "t.zarr"), "threads", w), 1),
            (f"ingest, LocalCluster {w} processes x 1 thread",
             ("ingest", str(src), str(Path(tmp) / "p.zarr"), "processes", w), 1),
        ]
        print()
        print("| run | seconds | MB/s (pixels) | of the imread rate at the same parallelism | "
              "peak RSS MB (process / largest worker) | zarr on disk MB |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        rates: list[float] = []
        for label, cmd, base in rows:
            best = min((_timed(*cmd) for _ in range(args.repeat)), key=lambda r: r["seconds"])
            rate = raw / best["seconds"] / 1e6
            rates.append(rate)
            disk = f"{best['disk'] / 1e6:.0f}" if "disk" in best else "-"
            rss = f"{best['max_rss'] / 1e6:.0f}"
            if "worker_rss" in best:
                rss += f" / {best['worker_rss'] / 1e6:.0f}"
            print(f"| {label} | {best['seconds']:.2f} | {rate:.0f} | {rate / rates[base]:.2f} | "
                  f"{rss} | {disk} |")
        print()
        print(f"# plate size in memory would be {raw / 1e6:.0f} MB; the cluster row excludes "
              "cluster start-up; load average (1 min) before/after: "
              f"{load:.1f} / {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
    else:
        main()
