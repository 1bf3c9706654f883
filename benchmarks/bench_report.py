"""Time the HTML report of a real 96-well results store (target: under a minute).

Simulates a 96-well plate (2 fields x 5 depths, ``--size`` px, nuclei; seed 3), runs today's
pipeline on it with the shipped default model on a LocalCluster of 2 single-threaded
workers, then times :func:`plate_refocus.report.write_report` and
:func:`plate_refocus.tables.write_tables` on the store, each ``--repeats`` times (the best is
printed). The plate and the store are kept in ``--work`` and reused when already there.

Usage::

    python benchmarks/bench_report.py [--work DIR] [--size 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def build(work: Path, size: int) -> Path:
    from distributed import Client, LocalCluster

    from plate_refocus.pipeline import run_plate
    from plate_refocus.simulate import simulate_plate

    plate, results = work / "plate96.zarr", work / "results96.zarr"
    if (results / "zarr.json").exists():
        return results
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        if not (plate / "zarr.json").exists():
            start = time.perf_counter()
            simulate_plate(plate, rows=8, columns=12, fields=2, depths_um=(0, 5, 10, 20, 30),
                           size=(size, size), seed=3, channels=("nuclei",), client=client,
                           overwrite=True)
            print(f"simulated {plate} in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        run_plate(plate, results, client=client, overwrite=True, command_line="bench_report")
        print(f"ran the pipeline into {results} in {time.perf_counter() - start:.0f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("bench-report-work"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = build(args.work, args.size)

    from plate_refocus.report import open_for_report, write_report
    from plate_refocus.tables import write_tables

    times = {"write_report": [], "write_tables": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        files = write_report(results, args.work / "report")
        times["write_report"].append(time.perf_counter() - start)
        start = time.perf_counter()
        write_tables(open_for_report(results), args.work)
        times["write_tables"].append(time.perf_counter() - start)
    size = files["index"].stat().st_size
    print(f"\n| step (96 wells x 2 fields x 5 depths, {args.size} px) | best s | all s |")
    print("| --- | ---: | --- |")
    for name, values in times.items():
        print(f"| {name} | {min(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print(f"\nindex.html: {size / 1e6:.2f} MB, {files['index']}")


if __name__ == "__main__":
    main()
