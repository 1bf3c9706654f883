"""Storing the refocused images: bytes, files and write speed before/after, and the uint16 error.

Two tables, printed as Markdown:

1. **uint16 against float32** on real U-Net output: simulated fields (seed 7, both channels,
   depths 0-30 um) refocused by the shipped default model; per pixel the error of rounding to
   uint16 (max and rms where the value lies in [-0.5, 65534.5], and the share of pixels
   clipped outside it), beside the noise the images carry (the input's noise at the
   in-focus plane, measured against the noise-free simulation, and the refocused output's
   own error against the noise-free in-focus image), and what rounding changes in PSNR.
2. **write speed and storage** of one refocused 96-well plate (``--wells``, 2 fields x 5 planes,
   ``--size`` px) in one process, the planes cycled from (1):

   - before: today's results store variable ``refocused``, float32, one chunk file per plane,
     no pyramid (Blosc-zstd(1) + shuffle, as ``create_results_store`` writes it);
   - after: :mod:`plate_refocus.plate`, uint16 and float32, with the pyramid
     (``--min-size``), layout "plane" written plane by plane as a run's (well, depth) tasks
     do plus ``write_pyramid`` per well, and layout "field" written a field at a time, or
     plane by plane under a lock (each plane rewrites the field's shard).

   MB/s counts the refocused pixels as float32 (Y x X x 4 bytes a plane), the same work in
   every row; "MB per CPU s" divides by the CPU time of the process (all its threads), which
   other work on a shared machine disturbs less than the wall time; files count everything in
   the store (zarr.json included).

3. A race check: layout "field" written plane by plane by 5 threads at once with no lock
   (what the run's per-depth tasks would do): planes lost.

Usage::

    python benchmarks/bench_refocused_plate.py [--wells 96] [--size 256] [--min-size 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

DEPTHS = (0.0, 5.0, 10.0, 20.0, 30.0)


def refocused_fields(size: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """``n`` simulated fields refocused by the default model.

    Returns (inputs (n, C, Z, Y, X) uint16, refocused (n, C, Z, Y, X) float32, in_focus
    (n, C, Y, X) float32, read noise, camera max).
    """
    from plate_refocus.simulate import DEFAULT_CAMERA, simulate_field
    from plate_refocus.unet import load_model

    model = load_model()
    inputs, refocused, truth = [], [], []
    for k in range(n):
        field = simulate_field((size, size), DEPTHS, seed=7 + k)
        c, z = field.images.shape[:2]
        out = model.predict_batch(field.images.reshape(c * z, size, size), batch_size=8)
        inputs.append(field.images)
        refocused.append(out.reshape(c, z, size, size))
        truth.append(field.in_focus)
    return (np.stack(inputs), np.stack(refocused), np.stack(truth),
            DEFAULT_CAMERA.read_noise, DEFAULT_CAMERA.max_value)


def dtype_table(inputs, refocused, truth, camera_max) -> str:
    from plate_refocus.metrics import psnr
    from plate_refocus.plate import MISSING_UINT16, decode, encode

    values = refocused.astype(np.float64)
    back = decode(encode(refocused, "uint16")).astype(np.float64)
    err = back - values
    inside = (values >= -0.5) & (values <= MISSING_UINT16 - 0.5)
    clipped = 1.0 - inside.mean()
    # The input's noise: the in-focus plane (z = 0) against its noise-free mean.
    input_noise = np.sqrt(np.mean((inputs[:, :, 0].astype(np.float64) - truth) ** 2))
    signal = np.median(truth)
    dark = truth < np.percentile(truth, 25)  # background: the darkest quarter of the pixels
    dark_noise = np.sqrt(np.mean((inputs[:, :, 0].astype(np.float64) - truth)[dark] ** 2))
    rows = [
        "| quantity | counts |",
        "| --- | ---: |",
        f"| rounding error, max (pixels in range) | {np.abs(err[inside]).max():.3f} |",
        f"| rounding error, rms | {np.sqrt(np.mean(err[inside] ** 2)):.3f} |",
        f"| pixels clipped (outside [-0.5, 65534.5]) | {100 * clipped:.4f} % |",
        f"| rounding error, max over all pixels | {np.abs(err).max():.3f} |",
        f"| refocused value range | {values.min():.1f} .. {values.max():.1f} |",
        f"| median noise-free signal (in focus) | {signal:.0f} |",
        f"| input noise, rms (in-focus plane vs noise-free) | {input_noise:.2f} |",
        f"| input noise, rms, darkest quarter of pixels (background) | {dark_noise:.2f} |",
    ]
    for zi, z in enumerate(DEPTHS):
        out_err = np.sqrt(np.mean((values[:, :, zi] - truth) ** 2))
        added = np.sqrt(np.mean((back[:, :, zi] - truth) ** 2)) - out_err
        rows.append(f"| refocused error vs noise-free in focus, rms, z = {z:g} um "
                    f"| {out_err:.2f} (uint16 adds {added:+.4f}) |")
    gains = []
    for i in range(values.shape[0]):
        for c in range(values.shape[1]):
            for zi in range(values.shape[2]):
                a = psnr(truth[i, c], values[i, c, zi], data_range=camera_max)
                b = psnr(truth[i, c], back[i, c, zi], data_range=camera_max)
                gains.append(b - a)
    rows.append(f"| PSNR change uint16 - float32 (dB), worst plane | {min(gains):+.5f} |")
    return "\n".join(rows)


def _files_and_bytes(path: Path) -> tuple[int, int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    chunks = [p for p in files if p.name != "zarr.json"]
    return len(files), len(chunks), sum(p.stat().st_size for p in files)


def write_before(path: Path, planes, n_wells, n_fields) -> None:
    """Today's results-store variable: (well, field, z, y, x) float32, a chunk per plane."""
    import zarr

    from plate_refocus.plate import compressor

    n_z, ny, nx = planes.shape[1:]
    array = zarr.create_array(str(path), shape=(n_wells, n_fields, n_z, ny, nx),
                              chunks=(1, 1, 1, ny, nx), dtype="float32", fill_value=np.nan,
                              compressors=compressor(3))
    for w in range(n_wells):
        for z in range(n_z):
            for f in range(n_fields):
                array[w, f, z] = planes[(w * n_fields + f) % len(planes), z]


def _create(path, n_wells, n_fields, n_z, size, dtype, layout, min_size):
    from plate_refocus.optics import Optics
    from plate_refocus.plate import create_refocused_plate, well_name

    wells = [well_name(w // 12, w % 12 + 1) for w in range(n_wells)]
    return create_refocused_plate(
        path, wells=wells, plate_rows=8 if n_wells <= 96 else 16,
        plate_columns=12 if n_wells <= 96 else 24, n_fields=n_fields, z_um=DEPTHS[:n_z],
        shape=(size, size), optics=Optics(), channel_name="nuclei", dtype=dtype, layout=layout,
        min_size=min_size, max_value=4095)


def write_after(plate, planes, pattern: str) -> None:
    from plate_refocus.plate import write_field, write_pyramid

    n_wells, n_fields, n_z = len(plate.wells), plate.n_fields, plate.n_z
    for w in range(n_wells):
        if pattern == "fields":
            for f in range(n_fields):
                write_field(plate, w, f, planes[(w * n_fields + f) % len(planes)])
            continue
        lock = contextlib.nullcontext() if plate.layout == "field" else None
        for z in range(n_z):  # a (well, depth) task writes that depth of every field
            for f in range(n_fields):
                write_field(plate, w, f, planes[(w * n_fields + f) % len(planes), z], z=z, lock=lock)
        if plate.layout == "plane":
            write_pyramid(plate, w)  # the task that closes the well


def race_check(root: Path, planes, size, min_size) -> str:
    """Layout "field", 5 threads each writing one depth of the same field at once, no lock."""
    from plate_refocus.plate import open_refocused, write_field

    lost = trials = 0
    for trial in range(20):
        plate = _create(root / f"race{trial}.zarr", 1, 1, len(DEPTHS), size, "uint16", "field", min_size)
        barrier = threading.Barrier(len(DEPTHS))

        def task(z, plate=plate, barrier=barrier):
            barrier.wait()
            write_field(plate, 0, 0, planes[0, z], z=z, lock=contextlib.nullcontext())  # lies

        with ThreadPoolExecutor(len(DEPTHS)) as pool:
            list(pool.map(task, range(len(DEPTHS))))
        got = open_refocused(plate.path).values[0, 0]
        lost += int(np.isnan(got).all(axis=(-2, -1)).sum())
        trials += len(DEPTHS)
        shutil.rmtree(plate.path)
    return f"planes lost: {lost} of {trials} ({lost / trials:.0%}) in 20 trials of 5 concurrent plane writes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wells", type=int, default=96)
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--min-size", type=int, default=64,
                        help="smallest pyramid level (64 at 256 px gives 3 levels, as 2160 px at 256 gives 4)")
    parser.add_argument("--sim-fields", type=int, default=4, help="fields simulated and refocused")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each configuration (best kept)")
    args = parser.parse_args()

    print(f"refocusing {args.sim_fields} simulated fields of {args.size} px with the default model ...")
    inputs, refocused, truth, _, camera_max = refocused_fields(args.size, args.sim_fields)
    print("\n### uint16 against float32 (default model, 2 channels, depths "
          f"{', '.join(f'{z:g}' for z in DEPTHS)} um, {args.sim_fields} fields of {args.size} px)\n")
    print(dtype_table(inputs, refocused, truth, camera_max))

    planes = refocused.reshape(-1, len(DEPTHS), args.size, args.size)  # (fields x channels, Z, Y, X)
    n_planes = args.wells * args.fields * len(DEPTHS)
    mb = n_planes * args.size * args.size * 4 / 1e6
    from plate_refocus.plate import level_shapes

    n_levels = len(level_shapes((args.size, args.size), args.min_size))
    configs = [
        ("before: results store, float32, 1 file/plane, no pyramid", None, None, None),
        ("uint16, layout plane (plane writes + write_pyramid)", "uint16", "plane", "planes"),
        ("float32, layout plane (plane writes + write_pyramid)", "float32", "plane", "planes"),
        ("uint16, layout field (whole fields)", "uint16", "field", "fields"),
        ("float32, layout field (whole fields)", "float32", "field", "fields"),
        ("uint16, layout field (plane writes under a lock)", "uint16", "field", "planes"),
    ]
    rows = [
        f"\n### {args.wells} wells x {args.fields} fields x {len(DEPTHS)} planes of {args.size} px "
        f"({n_planes} planes, {mb:.0f} MB as float32; pyramid {n_levels} levels; best of "
        f"{args.repeats}, configurations interleaved)\n",
        "| store | create s | write s | write MB/s | write CPU s | MB per CPU s | files | files / plane "
        "| bytes / plane | bytes vs before |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-refocused-") as tmp:
        root = Path(tmp)
        best: dict[int, tuple[float, float, float]] = {}
        sizes: dict[int, tuple[int, int]] = {}
        for repeat in range(args.repeats):
            for k, (_, dtype, layout, pattern) in enumerate(configs):
                path = root / f"c{k}-{repeat}.zarr"
                start = time.perf_counter()
                if dtype is not None:
                    plate = _create(path, args.wells, args.fields, len(DEPTHS), args.size, dtype,
                                    layout, args.min_size)
                created, cpu = time.perf_counter(), time.process_time()
                if dtype is None:
                    write_before(path, planes, args.wells, args.fields)
                else:
                    write_after(plate, planes, pattern)
                done, cpu = time.perf_counter(), time.process_time() - cpu
                create_s, write_s, cpu_s = best.get(k, (np.inf, np.inf, np.inf))
                best[k] = (min(create_s, created - start), min(write_s, done - created), min(cpu_s, cpu))
                files, _, size = _files_and_bytes(path)
                sizes[k] = (files, size)
                shutil.rmtree(path)
        before_bytes = sizes[0][1]
        for k, (label, *_) in enumerate(configs):
            (create_s, write_s, cpu_s), (files, size) = best[k], sizes[k]
            rows.append(f"| {label} | {create_s:.1f} | {write_s:.1f} | {mb / write_s:.0f} | "
                        f"{cpu_s:.1f} | {mb / cpu_s:.0f} | {files} | "
                        f"{files / n_planes:.2f} | {size / n_planes / 1e3:.0f} kB | "
                        f"{size / before_bytes:.2f}x |")
        print("\n".join(rows))
        print("\n### race check\n")
        print(race_check(root, planes, args.size, args.min_size))


if __name__ == "__main__":
    main()
