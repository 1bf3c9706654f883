"""``plate-refocus``: a thin command line over the library.

Every command is a library function first; this module only parses
arguments, calls it, and prints. Errors a user can cause
(:class:`~plate_refocus.errors.PlateRefocusError`) are printed as one line
without a traceback and exit with status 2.

Each command has a ``_add_<name>(subparsers)`` that declares its arguments
and a ``_cmd_<name>(args) -> int`` that runs it; both are listed in
``_COMMANDS`` at the bottom.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence

from . import __version__
from .errors import PlateRefocusError
from .optics import Optics

log = logging.getLogger("plate_refocus")


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like '0,2,4,10', got {text!r}"
        ) from None


def _add_optics_arguments(parser: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """The optics flags shared by the commands that take them."""
    d = Optics() if defaults else None
    group = parser.add_argument_group("optics")
    group.add_argument("--na", type=float, default=d and d.na,
                       help="numerical aperture" + (f" (default {d.na})" if d else ""))
    group.add_argument("--wavelength", type=float, default=d and d.wavelength_um,
                       help="emission wavelength in um" + (f" (default {d.wavelength_um})" if d else ""))
    group.add_argument("--immersion-index", type=float, default=d and d.immersion_index,
                       help="immersion refractive index" + (f" (default {d.immersion_index})" if d else ""))
    group.add_argument("--pixel-size", type=float, default=d and d.pixel_size_um,
                       help="pixel size at the sample in um" + (f" (default {d.pixel_size_um})" if d else ""))


def _optics_from_args(args: argparse.Namespace) -> Optics:
    return Optics(
        na=args.na,
        wavelength_um=args.wavelength,
        immersion_index=args.immersion_index,
        pixel_size_um=args.pixel_size,
    )


# --- commands ---------------------------------------------------------------------------------
# Each command: _add_<name>(subparsers) and _cmd_<name>(args) -> int.


def _add_run(subparsers) -> None:
    from .cluster import add_cluster_arguments

    p = subparsers.add_parser(
        "run",
        help="refocus a whole plate and estimate every well's PSF into a results store",
        description="Refocus every field of PLATE with the U-Net and estimate the defocus PSF "
        "of every well at every depth, on a Dask cluster, into the zarr store OUT "
        "(open it with xr.open_zarr(OUT) or plate_refocus.open_results(OUT)).",
    )
    p.add_argument("plate", metavar="PLATE", help="input OME-Zarr HCS plate (never written to)")
    p.add_argument("out", metavar="OUT", help="results store to write (zarr)")
    p.add_argument("--model", help="a .keras model from 'plate-refocus train' "
                   "(default: the shipped model)")
    p.add_argument("--channel", help="channel name or index to refocus (default: the first)")
    p.add_argument("--reference", choices=["refocused", "focal-plane"], default="refocused",
                   help="sharp reference for the PSF: the U-Net output (default) or the stack's "
                   "in-focus plane")
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
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (and the batch job script for jobqueue clusters) "
                   "and exit without running")
    add_cluster_arguments(p)
    p.set_defaults(func=_cmd_run)


def _progress_printer(stream=sys.stderr) -> Callable[[str, int, int], None]:
    start = time.perf_counter()
    tty = stream.isatty()

    def show(well: str, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        rate = done / max(time.perf_counter() - start, 1e-9)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} wells "
                f"(last {well}, {rate * 60:.1f} wells/min)")
        if tty:
            stream.write("\r" + line + ("\n" if done == total else ""))
        elif done == total or done % max(1, total // 10) == 0:
            stream.write(line + "\n")
        stream.flush()

    return show


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
    print(f"results: {summary.out}")
    print(f'open them with:  python -c "import xarray as xr; print(xr.open_zarr({str(summary.out)!r}))"')


def _cmd_run(args: argparse.Namespace) -> int:
    from .cluster import client_from_args, job_script
    from .pipeline import execute_run, plan_run

    wells = [w.strip() for w in args.wells.split(",")] if args.wells else None
    # Everything is checked before a cluster starts: a refusal costs no job and no dashboard.
    plan = plan_run(
        args.plate, args.out, model=args.model, channel=args.channel, reference=args.reference,
        resume=args.resume, overwrite=args.overwrite, wells=wells,
        gpu=getattr(args, "gpu", False), z_step_um=args.z_step,
        command_line=" ".join(["plate-refocus", *sys.argv[1:]]),
    )
    if args.dry_run:
        layout = plan.layout
        print(f"plan: {len(plan.wells)} wells x {layout.n_fields} fields x {layout.n_z} planes "
              f"-> {args.out}" + (f" ({len(plan.skipped)} done wells skipped)" if plan.skipped else ""))
        script = job_script(args)
        if script:
            print("batch job script for each worker job:")
            print(script)
        return 0
    with client_from_args(args) as client:
        print(f"dashboard: {client.dashboard_link}", flush=True)
        summary = execute_run(plan, client, on_well_done=_progress_printer())
    _print_summary(summary)
    return 0 if summary.ok else 1


def _add_demo(subparsers) -> None:
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
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .cluster import start_client
    from .outputs import DEMO_MARKER, prepare_output
    from .pipeline import run_plate
    from .simulate import simulate_plate

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
        summary = run_plate(plate, results, client=client, on_well_done=_progress_printer(),
                            command_line=" ".join(["plate-refocus", *sys.argv[1:]]))
    _print_summary(summary)
    return 0 if summary.ok else 1


def _add_ingest(subparsers) -> None:
    from .cluster import add_cluster_arguments
    from .ingest import PRESETS
    from .plate import PLATE_FORMATS

    p = subparsers.add_parser(
        "ingest",
        help="convert a folder of TIFF planes (BBBC006 or pattern-named) into an OME-Zarr plate",
        description="Read the TIFF planes under SRC (one file per well, site, channel and "
        "z-plane) and write them, streaming, as the OME-Zarr HCS plate OUT. Without --preset or "
        "--pattern the BBBC006 layout is assumed. A pattern is the file path below SRC with "
        "fields in braces: {well} (a01) or {row} and {column}, and optionally {site}, "
        "{channel}, {z}, {t}; {name:regex} sets a field's regex, '*' matches anything, e.g. "
        "'BBBC006_v1_images_z_{z}/mcf-z-stacks-*_{well}_s{site}_w{channel:\\d}*.tif'. "
        "Runs on threads in this process unless --cluster/--scheduler/--workers is given.",
    )
    p.add_argument("source", metavar="SRC", help="folder of TIFF files (never written to)")
    p.add_argument("out", metavar="OUT", help="plate to write (.zarr)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="a known layout and its metadata (default: bbbc006 unless --pattern)")
    p.add_argument("--pattern", help="file-name template, see above (overrides the preset's)")
    p.add_argument("--plate-format", type=int, choices=sorted(PLATE_FORMATS),
                   help="wells on the plate (default: inferred from the wells found)")
    p.add_argument("--z-step", type=float, help="distance between planes in um "
                   "(BBBC006: 2; required for other multi-plane layouts)")
    p.add_argument("--focal-plane", type=int,
                   help="in-focus plane number as in the file names (BBBC006: 16)")
    p.add_argument("--channel-names", help="comma-separated names in channel order, or "
                   "value=name pairs, e.g. '1=Hoechst,2=phalloidin'")
    p.add_argument("--timepoint", type=int, help="with a {t} field: the time point to keep")
    p.add_argument("--on-missing", choices=["fill", "refuse"], default="fill",
                   help="missing planes: write zeros and list them in the metadata (default) "
                   "or refuse")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--dry-run", action="store_true",
                   help="print what was found (wells, fields, channels, planes, missing) and exit")
    p.add_argument("--no-progress", action="store_true",
                   help="do not show the progress bar (shown only on a terminal)")
    _add_optics_arguments(p, defaults=False)
    add_cluster_arguments(p)
    p.set_defaults(func=_cmd_ingest)


def _cmd_ingest(args: argparse.Namespace) -> int:
    import contextlib
    import warnings

    from .cluster import client_from_args
    from .ingest import ingest, preset_for, scan

    names = None
    if args.channel_names:
        items = [item.strip() for item in args.channel_names.split(",") if item.strip()]
        if all("=" in item for item in items):
            names = dict(item.split("=", 1) for item in items)
        else:
            names = items
    if args.dry_run:
        found = scan(args.source, preset=args.preset, pattern=args.pattern,
                     plate_format=args.plate_format, timepoint=args.timepoint)
        print(f"{len(found.files)} files under {args.source}: {found.plate_format}-well plate, "
              f"{len(found.wells)} wells x {len(found.sites)} sites {list(found.sites)} x "
              f"{len(found.channels)} channels {list(found.channels)} x {len(found.planes)} "
              f"planes {found.planes[0]}-{found.planes[-1]}")
        print(found.missing_summary())
        return 0
    given = {name: getattr(args, flag) for name, flag in (
        ("na", "na"), ("wavelength_um", "wavelength"), ("immersion_index", "immersion_index"))
        if getattr(args, flag) is not None}
    preset = preset_for(args.preset, args.pattern)
    pixel = args.pixel_size if args.pixel_size is not None else preset and preset.pixel_size_um
    optics = Optics(**given, pixel_size_um=pixel) if given and pixel is not None else None
    use_cluster = bool(args.scheduler or args.cluster != "local" or args.workers)
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(client_from_args(args)) if use_cluster else None
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always", UserWarning)
        try:
            out = ingest(
                args.source, args.out, preset=args.preset, pattern=args.pattern,
                plate_format=args.plate_format, pixel_size_um=args.pixel_size,
                z_step_um=args.z_step, focal_plane=args.focal_plane, channel_names=names,
                optics=optics, timepoint=args.timepoint, on_missing=args.on_missing,
                overwrite=args.overwrite, client=client,
                progress=not args.no_progress and sys.stderr.isatty(),
            )
        except (ValueError, TypeError) as error:  # bad flag values: one line, like library errors
            if isinstance(error, PlateRefocusError):
                raise
            print(f"plate-refocus ingest: error: {error}", file=sys.stderr)
            return 2
    for warning in caught:
        print(f"plate-refocus ingest: warning: {warning.message}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 8:
        raise argparse.ArgumentTypeError(f"expected a size like 256 or 256x192 (Y x X, >= 8), got {text!r}")
    return values[0], values[1]


def _add_simulate(subparsers) -> None:
    from .plate import PLATE_FORMATS
    from .simulate import CHANNELS, DEFAULT_DEPTHS_UM, Camera

    camera = Camera()
    p = subparsers.add_parser(
        "simulate",
        help="simulate a plate of U2OS-like cells with defocus stacks (OME-Zarr HCS)",
        description="Simulate a plate of U2OS-like fields (nuclei and actin) imaged at several "
        "defocus depths with camera noise, as a Dask graph on a local cluster that writes the "
        "wells in parallel, into the OME-Zarr HCS plate OUT (NGFF 0.5, zarr v3), with the ground "
        "truth (object, in-focus image, true OTF per depth) in OUT/ground_truth.",
    )
    p.add_argument("out", metavar="OUT", help="plate to write, e.g. plate.zarr")
    layout = p.add_argument_group("plate")
    layout.add_argument("--rows", type=_positive_int, default=2,
                        help="rows of wells to acquire, from A (default 2)")
    layout.add_argument("--columns", type=_positive_int, default=3,
                        help="columns of wells to acquire, from 1 (default 3)")
    layout.add_argument("--fields", type=_positive_int, default=2, help="fields per well (default 2)")
    layout.add_argument("--plate-format", type=int, default=96, choices=sorted(PLATE_FORMATS),
                        help="wells on the physical plate (default 96)")
    layout.add_argument("--depths", type=_float_list, default=list(DEFAULT_DEPTHS_UM),
                        help="comma-separated defocus depths in um (default "
                        + ",".join(f"{z:g}" for z in DEFAULT_DEPTHS_UM) + ")")
    layout.add_argument("--size", type=_size, default=(128, 128),
                        help="field size in pixels, N or YxX (default 128)")
    layout.add_argument("--channels", default=",".join(CHANNELS),
                        help="comma-separated stains among " + ", ".join(CHANNELS)
                        + " (default " + ",".join(CHANNELS) + ")")
    layout.add_argument("--seed", type=int, default=0, help="random seed of the plate (default 0)")
    layout.add_argument("--ngff-version", choices=["0.5", "0.4"], default="0.5",
                        help="0.5 writes zarr v3 (default), 0.4 writes zarr v2 for older readers")
    _add_optics_arguments(p)
    cam = p.add_argument_group("camera")
    cam.add_argument("--photons", type=float, default=camera.photons,
                     help=f"photo-electrons at the brightest in-focus pixel (default {camera.photons:g})")
    cam.add_argument("--read-noise", type=float, default=camera.read_noise,
                     help=f"read noise in ADU (default {camera.read_noise:g})")
    cam.add_argument("--offset", type=float, default=camera.offset,
                     help=f"camera offset in ADU (default {camera.offset:g})")
    cam.add_argument("--bit-depth", type=int, default=camera.bit_depth,
                     help=f"camera bit depth (default {camera.bit_depth})")
    run = p.add_argument_group("run")
    run.add_argument("--workers", type=_positive_int, default=None,
                     help="worker processes of the local Dask cluster (default: one per core)")
    run.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    run.add_argument("--no-progress", action="store_true",
                     help="do not show the progress bar and dashboard link (shown only on a terminal)")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import Camera, simulate_plate

    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    if args.verbose < 2:
        import distributed  # noqa: F401  (its import sets its log level; quieten it after)

        logging.getLogger("distributed").setLevel(logging.WARNING)
    start = time.perf_counter()
    try:
        optics = _optics_from_args(args)
        camera = Camera(photons=args.photons, read_noise=args.read_noise, offset=args.offset,
                        bit_depth=args.bit_depth)
        out = simulate_plate(
            args.out, rows=args.rows, columns=args.columns, fields=args.fields, depths_um=args.depths,
            size=args.size, seed=args.seed, optics=optics, camera=camera, channels=channels,
            plate_format=args.plate_format, ngff_version=args.ngff_version, workers=args.workers,
            overwrite=args.overwrite, progress=not args.no_progress and sys.stdout.isatty(),
        )
    except (ValueError, TypeError) as error:
        if isinstance(error, PlateRefocusError):
            raise
        print(f"plate-refocus simulate: error: {error}", file=sys.stderr)
        return 2
    n = args.rows * args.columns
    print(f"wrote {out}: {n} wells x {args.fields} fields x {len(channels)} channels x "
          f"{len(args.depths)} planes of {args.size[0]}x{args.size[1]} px "
          f"in {time.perf_counter() - start:.1f} s")
    print(f"see it with:  plate-refocus info {out}")
    return 0


def _add_info(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a plate: wells, fields, channels, planes, shape, pixel size, size on disk",
        description="Describe the OME-Zarr HCS plate PLATE from its metadata (no pixels are read): "
        "wells, fields, channels, planes and their depths, shape, dtype, pixel size, z step, "
        "size on disk and whether it carries simulation ground truth.",
    )
    p.add_argument("plate", metavar="PLATE", nargs="?", default=None,
                   help="an OME-Zarr HCS plate (NGFF 0.5 or 0.4); without it, describe the "
                   "installation (versions, GPU, default model)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--z-step", type=float, default=None, metavar="UM",
                   help="spacing of the planes in um, for a plate whose metadata has no distinct z "
                   "positions")
    p.set_defaults(func=_cmd_info)


def installation_info() -> dict:
    """Versions, GPU and default model of this installation (imports no Keras)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from .unet import default_model_path, read_model_info
    from .xp import gpu_available

    versions = {}
    for name in ("numpy", "scipy", "dask", "distributed", "zarr", "xarray", "tensorflow",
                 "keras", "dask-jobqueue", "ome-zarr-models", "cupy-cuda12x"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    path = default_model_path()
    model = {"path": str(path), "present": path.exists()}
    if path.exists():
        info = read_model_info(path)
        model.update(name=info.name, sha256=info.sha256, optics=info.optics.to_dict(),
                     depths_um=list(info.depths_um))
    return {"plate_refocus": __version__, "python": platform.python_version(),
            "packages": versions, "gpu": gpu_available(), "default_model": model}


def _cmd_info(args: argparse.Namespace) -> int:
    import json
    import warnings

    from .plate import format_info, plate_info

    if args.plate is None:
        info = installation_info()
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(f"plate-refocus {info['plate_refocus']} on Python {info['python']}")
        print("  " + ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v))
        print(f"  GPU (CuPy + CUDA): {'yes' if info['gpu'] else 'no; everything runs on NumPy'}")
        model = info["default_model"]
        if model["present"]:
            print(f"  default model: {model['name']} ({model['sha256'][:12]}), trained for "
                  f"{model['optics']}, depths {model['depths_um']} um")
        else:
            print(f"  default model: MISSING at {model['path']}; pass --model to run/evaluate")
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = plate_info(args.plate, z_step_um=args.z_step)
    for warning in caught:
        print(f"plate-refocus info: warning: {warning.message}", file=sys.stderr)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _add_train(subparsers) -> None:
    from .train import TrainConfig
    from .unet import UNetConfig

    net, tc = UNetConfig(), TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a refocusing U-Net on a plate (simulated, or a real z-stack with a focal plane)",
        description="Train a U-Net that maps every defocused plane of PLATE to its in-focus image: "
        "the ground-truth in-focus image of a simulated plate (--target ground-truth), or the plane "
        "at the focal index of a real z-stack (--target focal-plane). Patches stream from the zarr "
        "plate; wells are split into training and validation sets; the model with the best "
        "validation loss is written to OUT (.keras) with its metadata (.json) after every epoch "
        "that improves it, so it can be stopped at any time.",
    )
    p.add_argument("plate", metavar="PLATE", help="an OME-Zarr HCS plate")
    p.add_argument("--out", required=True, help="model file to write, e.g. model.keras")
    data = p.add_argument_group("data")
    data.add_argument("--target", choices=["ground-truth", "focal-plane"], default="ground-truth",
                      help="what the network learns to produce (default ground-truth)")
    data.add_argument("--focal-index", type=int, default=None,
                      help="0-based in-focus plane for --target focal-plane (default: the plate's)")
    data.add_argument("--depths", type=_float_list, default=None,
                      help="train on the planes at these distances from focus in um (default all)")
    arch = p.add_argument_group("network")
    arch.add_argument("--depth", type=int, default=net.depth,
                      help=f"number of poolings (default {net.depth})")
    arch.add_argument("--filters", type=int, default=net.filters,
                      help=f"channels at full resolution, doubled per level (default {net.filters})")
    arch.add_argument("--full-resolution", choices=["patch", "conv"], default=net.full_resolution,
                      help="full-resolution level: 2x2 patch convolutions (lean) or two 3x3 "
                      f"convolutions as in the report (default {net.full_resolution})")
    arch.add_argument("--no-residual", action="store_true",
                      help="predict the image itself instead of a correction added to the input")
    fit = p.add_argument_group("training")
    fit.add_argument("--patch", type=int, default=tc.patch, help=f"patch size (default {tc.patch})")
    fit.add_argument("--batch-size", type=int, default=tc.batch_size,
                     help=f"patches per step (default {tc.batch_size})")
    fit.add_argument("--steps-per-epoch", type=int, default=tc.steps_per_epoch,
                     help=f"(default {tc.steps_per_epoch})")
    fit.add_argument("--epochs", type=int, default=tc.epochs, help=f"at most (default {tc.epochs})")
    fit.add_argument("--max-time", type=float, default=None,
                     help="stop after the epoch that passes this many minutes")
    fit.add_argument("--learning-rate", type=float, default=tc.learning_rate,
                     help=f"Adam's initial rate, halved on plateaus (default {tc.learning_rate:g})")
    fit.add_argument("--patience", type=int, default=tc.patience,
                     help=f"epochs without improvement before halving it (default {tc.patience})")
    fit.add_argument("--loss", choices=["mse", "ssim"], default=tc.loss,
                     help=f"mse, or ssim = MSE + 1 - SSIM (default {tc.loss})")
    fit.add_argument("--weighting", choices=["relative", "none"], default=tc.weighting,
                     help="relative: divide each patch's loss by its input's error, so every depth "
                     f"counts equally in dB (default {tc.weighting})")
    fit.add_argument("--validation-fraction", type=float, default=tc.validation_fraction,
                     help=f"fraction of wells held out (default {tc.validation_fraction:g})")
    fit.add_argument("--validation-patches", type=int, default=tc.validation_patches,
                     help=f"(default {tc.validation_patches})")
    fit.add_argument("--seed", type=int, default=tc.seed, help=f"(default {tc.seed})")
    fit.add_argument("--name", default=None, help="model name (default: the file name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing model at --out (only a model of plate-refocus train)")
    p.set_defaults(func=_cmd_train)


def _train_command(args: argparse.Namespace) -> str:
    """The ``plate-refocus train`` command line that reproduces ``args`` (for the model's metadata)."""
    words = ["plate-refocus", "train", args.plate]
    for key, value in sorted(vars(args).items()):
        if key in ("plate", "func", "command", "verbose") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif isinstance(value, list):
            words += [flag, ",".join(f"{v:g}" for v in value)]
        else:
            words += [flag, str(value)]
    return " ".join(words)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, format_progress, train_plate
    from .unet import UNetConfig

    try:
        config = UNetConfig(depth=args.depth, filters=args.filters,
                            full_resolution=args.full_resolution, residual=not args.no_residual)
        train = TrainConfig(
            patch=args.patch, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch,
            epochs=args.epochs, learning_rate=args.learning_rate, loss=args.loss, seed=args.seed,
            validation_fraction=args.validation_fraction, validation_patches=args.validation_patches,
            patience=args.patience, weighting=args.weighting,
            max_time_s=None if args.max_time is None else 60.0 * args.max_time,
        )
    except (ValueError, TypeError) as error:
        print(f"plate-refocus train: error: {error}", file=sys.stderr)
        return 2
    print(f"training {config} on {args.plate} -> {args.out}", flush=True)
    model = train_plate(
        args.plate, args.out, config=config, train=train, target=args.target,
        focal_index=args.focal_index, depths_um=args.depths, name=args.name,
        command=_train_command(args),
        progress=lambda record: print(format_progress(record), flush=True),
        overwrite=args.overwrite,
    )
    metrics = model.info.metrics
    print(f"best validation loss {metrics['val_loss']:.4g} after {model.info.training['steps']} steps; "
          f"wrote {args.out}")
    return 0


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a model against the ground truth of a simulated plate, per depth",
        description="Refocus every plane of the simulated plate PLATE and print, per depth, PSNR "
        "(data range from the camera bit depth, 4095 for 12-bit) and SSIM against the in-focus "
        "ground truth, mean and spread over fields, for the input, the refocused output and "
        "Wiener deconvolution with the true PSF (the oracle).",
    )
    p.add_argument("plate", metavar="PLATE", help="a simulated plate (with ground truth)")
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--depths", type=_float_list, default=None, help="only these depths in um")
    p.add_argument("--fields", type=int, default=None, help="only the first N fields")
    p.add_argument("--no-wiener", action="store_true", help="skip the Wiener oracle")
    p.add_argument("--out", action="append", default=[],
                   help="write the table as CSV or JSON (by extension); may be repeated")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .metrics import evaluate_plate, format_table, write_table
    from .unet import load_model

    model = load_model(args.model)
    start = time.perf_counter()
    rows, summary = evaluate_plate(
        args.plate, model, depths_um=args.depths, max_fields=args.fields, wiener=not args.no_wiener,
        progress=lambda done, total: print(f"field {done}/{total}", file=sys.stderr, flush=True),
    )
    print(f"model {model.info.name} ({model.info.sha256[:12]}) on {args.plate}, "
          f"{time.perf_counter() - start:.0f} s")
    print(format_table(summary))
    for path in args.out:
        write_table(summary, path, extra={"plate": str(args.plate), "model": model.info.name,
                                          "model_sha256": model.info.sha256})
        print(f"wrote {path}")
    return 0


def _add_report(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="summarise a results store: a per-depth table and figures",
        description="Print, per depth, the fitted |defocus| over wells and the image-quality "
        "gains of the results store RESULTS, and write summary.md, focus_map.png (the plate's "
        "fitted defocus per well), well_<WELL>.png (OTF profiles and PSFs) and quality.png "
        "into DIR. Reads only the small variables; RESULTS is not modified.",
    )
    p.add_argument("results", metavar="RESULTS", help="a results store from 'plate-refocus run'")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the files (default: RESULTS without .zarr, plus -report)")
    p.add_argument("--well", default=None, help="the well to draw OTFs and PSFs of (default: the first)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import write_report

    results = Path(args.results)
    out = Path(args.out) if args.out else results.with_name(results.stem + "-report")
    files = write_report(results, out, well=args.well)
    print(files["summary"].read_text(), end="")
    for path in files.values():
        print(f"wrote {path}")
    return 0


# --- entry point ------------------------------------------------------------------------------

_COMMANDS: list[tuple[str, Callable]] = []  # (name, _add_<name>) in --help order
_COMMANDS.append(("simulate", _add_simulate))
_COMMANDS.append(("info", _add_info))
_COMMANDS.append(("ingest", _add_ingest))
_COMMANDS.append(("run", _add_run))
_COMMANDS.append(("demo", _add_demo))
_COMMANDS.append(("train", _add_train))
_COMMANDS.append(("evaluate", _add_evaluate))
_COMMANDS.append(("report", _add_report))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to check that ``--help`` is complete)."""
    parser = argparse.ArgumentParser(
        prog="plate-refocus",
        description="Refocus whole screening plates (OME-Zarr HCS) with a U-Net on Dask "
        "and recover the defocus PSF of every well.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Dask's own INFO lines (workers joining, comms closing) are noise at -v; -vv shows them.
    # distributed sets its loggers up from Dask's config when first imported, so set both.
    import dask

    quiet = "debug" if args.verbose >= 2 else "warning"
    dask.config.set({"logging.distributed": quiet, "logging.dask_jobqueue": quiet})
    for name in ("distributed", "dask_jobqueue"):
        logging.getLogger(name).setLevel(quiet.upper())
    try:
        return int(args.func(args) or 0)
    except PlateRefocusError as error:
        print(f"plate-refocus {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"plate-refocus {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
