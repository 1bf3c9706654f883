"""``run`` and ``demo``: a whole plate on a Dask cluster."""

from __future__ import annotations

import argparse

from ..pipeline import DEFAULT_METHOD, METHODS, REFERENCES
from .common import add_optics_arguments, command_line, optics_overrides, progress_printer


def add_run(subparsers) -> None:
    from .cluster_flags import add_cluster_arguments

    p = subparsers.add_parser(
        "run",
        help="refocus a whole plate and estimate every well's PSF into a results store",
        description="Refocus every field of PLATE with the U-Net and estimate the defocus PSF "
        "of every well at every depth, on a Dask cluster, into the zarr store OUT "
        "(open it with xr.open_zarr(OUT) or plate_refocus.open_results(OUT)).",
    )
    p.add_argument("plate", metavar="PLATE", help="input OME-Zarr HCS plate (never written to)")
    p.add_argument("out", metavar="OUT", help="results store to write (zarr)")
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                   help="how planes are refocused: rl (Richardson-Lucy against the well's OTF, "
                   "the default: best on held-out cells, see the README), wiener, unet (the "
                   "network), hybrid (rl wherever the well's blur is known, refined there by the RL "
                   "refiner network shipped for the plate's optics, if any; near focus, where the "
                   "blur is not known, the network where its output is consistent with the plane)")
    p.add_argument("--model", help="a .keras model from 'plate-refocus train' for the methods "
                   "that use the network (default: the shipped model)")
    p.add_argument("--refiner", metavar="PATH", default=None,
                   help="hybrid's RL refiner: a .keras file from 'plate-refocus train-refiner', or "
                   "'none' (default: the one shipped for the plate's optics, if any)")
    p.add_argument("--channel", help="channel name or index to refocus (default: the first)")
    p.add_argument("--reference", choices=list(REFERENCES), default="auto",
                   help="where the well's blur is measured against: auto (default: the stack's "
                   "in-focus plane if recorded or found, else the blind estimate), focal-plane, "
                   "blind (the fields' power spectra alone), refocused (the network's output)")
    p.add_argument("--focal-plane", type=int, default=None, metavar="N",
                   help="the stack's in-focus plane index (0-based), for a plate that records "
                   "none or records another")
    p.add_argument("--wells", help="comma-separated wells to process, e.g. A01,B02 (default: all)")
    p.add_argument("--z-step", type=float, default=None, metavar="UM",
                   help="spacing of the planes in um, for a plate whose metadata has no distinct z "
                   "positions (counted from the focal plane when it is recorded)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="finish an interrupted run with the same settings: compute the wells "
                      "not done (failed wells are retried)")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace an existing OUT (only a results store of plate-refocus run "
                      "or an empty folder is ever removed)")
    p.add_argument("--dtype", choices=["uint16", "float32"], default="uint16",
                   help="how the refocused plate stores the images: camera counts rounded to "
                   "uint16 (default; the rounding is far below the images' noise) or float32")
    p.add_argument("--csv", action="store_true",
                   help="write the per-well and per-field tables as CSV too (OUT/tables/)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (and the batch job script for jobqueue clusters) "
                   "and exit without running")
    add_optics_arguments(p, defaults=False)
    add_cluster_arguments(p)
    p.set_defaults(func=run_run)


def _progress(args: argparse.Namespace):
    """The progress line, unless -q."""
    return progress_printer() if getattr(args, "verbosity", 0) >= 0 else None


def _print_summary(summary) -> None:
    print(
        f"done: {len(summary.wells_computed)} wells computed"
        + (f", {len(summary.wells_skipped)} already done (skipped)" if summary.wells_skipped else "")
        + (f", {len(summary.wells_failed)} FAILED" if summary.wells_failed else "")
        + f" of {summary.wells_total}; {summary.fields} fields, {summary.planes} planes "
        f"in {summary.seconds:.1f} s ({summary.planes_per_second:.2f} planes/s)"
    )
    for text, count in summary.planes_flagged.items():
        print(f"flagged: {count} planes {text}")
    for well, error in summary.wells_failed.items():
        print(f"failed: well {well}: {error}")
    if summary.wells_failed:
        print("the other wells are written; fix the cause and run again with --resume to retry "
              "only the failed wells")
    print(f"results: {summary.out} (refocused plate: {summary.out / 'refocused'}; tables: "
          f"{summary.out / 'tables'})")
    print(f'open them with:  python -c "import plate_refocus as pr; '
          f'print(pr.open_results({str(summary.out)!r}))"')


def run_run(args: argparse.Namespace) -> int:
    from ..pipeline import execute_run, plan_run
    from .cluster_flags import client_from_args, job_script_for_args

    wells = [w.strip() for w in args.wells.split(",")] if args.wells else None
    # Everything is checked before a cluster starts: a refusal costs no job and no dashboard.
    plan = plan_run(
        args.plate, args.out, model=args.model, method=args.method, channel=args.channel,
        reference=args.reference, optics=optics_overrides(args), focal_plane=args.focal_plane,
        resume=args.resume, overwrite=args.overwrite, wells=wells,
        gpu=getattr(args, "gpu", False), z_step_um=args.z_step, dtype=args.dtype,
        command_line=command_line(), refiner=args.refiner,
    )
    if args.dry_run:
        layout = plan.layout
        print(f"plan: {len(plan.wells)} wells x {layout.n_fields} fields x {layout.n_z} planes "
              f"-> {args.out}" + (f" ({len(plan.skipped)} done wells skipped)" if plan.skipped else ""))
        if plan.model_info:
            limit = plan.job.settings.network_limit
            print(f"model: {plan.model_info.get('name')} ({plan.job.model_path}), trained for "
                  f"{plan.model_info.get('optics')}" + (
                      f"; hybrid keeps its output at consistency <= {limit:g}" if limit is not None else ""))
        if args.method == "hybrid":
            r = plan.refiner_info
            print(f"refiner: {r['name']} ({plan.job.refiner_path}), refines Richardson-Lucy at "
                  f"|z| {r['min_depth_um']:g}-{r['max_depth_um']:g} um" + (
                      f"; keeps its output at consistency <= {r['consistency_limit']:g} (calibrated on "
                      "its validation wells)" if r.get("consistency_limit") else "") if r else
                  "refiner: none" + ("" if args.refiner == "none" else " trained for these optics")
                  + "; hybrid keeps Richardson-Lucy's output as it is")
        script = job_script_for_args(args)
        if script:
            print("batch job script for each worker job:")
            print(script)
        return 0
    with client_from_args(args) as client:
        print(f"dashboard: {client.dashboard_link}", flush=True)
        summary = execute_run(plan, client, on_well_done=_progress(args), tables_csv=args.csv)
    _print_summary(summary)
    return 0 if summary.ok else 1


def add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="simulate a small plate and run it end to end on a local cluster",
        description="Simulate a small plate (6 wells, 2 fields, 11 depths, 128x128) into "
        "DIR/plate.zarr and refocus it with the shipped model into DIR/results.zarr on a "
        "local Dask cluster. Re-running replaces a previous demo's folder.",
    )
    p.add_argument("dir", metavar="DIR", nargs="?", default="plate-refocus-demo",
                   help="folder for the demo's plate and results (default: ./plate-refocus-demo)")
    p.add_argument("--workers", type=int, default=None,
                   help="local Dask worker processes (default: one per core)")
    p.add_argument("--size", type=int, default=128, help="field size in pixels (default 128)")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from ..cluster import start_client
    from ..outputs import DEMO_MARKER, prepare_output
    from ..pipeline import run_plate
    from ..simulate import simulate_plate

    folder = prepare_output(args.dir, kind="demo", overwrite=True)  # only ever a previous demo
    folder.mkdir(parents=True)
    (folder / DEMO_MARKER).write_text("made by plate-refocus demo\n")
    plate, results = folder / "plate.zarr", folder / "results.zarr"
    with start_client("local", n_workers=args.workers) as client:
        print(f"dashboard: {client.dashboard_link}", flush=True)
        print(f"simulating {plate} ...", flush=True)
        simulate_plate(plate, rows=2, columns=3, fields=2, size=(args.size, args.size), seed=1,
                       client=client)
        print(f"refocusing into {results} ...", flush=True)
        summary = run_plate(plate, results, client=client, on_well_done=_progress(args),
                            command_line=command_line())
    _print_summary(summary)
    return 0 if summary.ok else 1
