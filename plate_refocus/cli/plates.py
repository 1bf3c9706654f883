"""``simulate``, ``ingest`` and ``info``: make plates and describe them."""

from __future__ import annotations

import argparse
import logging
import sys
import time

from .. import __version__
from ..errors import PlateRefocusError
from ..optics import Optics
from .common import add_optics_arguments, float_list, optics_from_args, positive_int, size


def add_simulate(subparsers) -> None:
    from ..plate import PLATE_FORMATS
    from ..simulate import CHANNELS, DEFAULT_DEPTHS_UM, Camera

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
    layout.add_argument("--rows", type=positive_int, default=2,
                        help="rows of wells to acquire, from A (default 2)")
    layout.add_argument("--columns", type=positive_int, default=3,
                        help="columns of wells to acquire, from 1 (default 3)")
    layout.add_argument("--fields", type=positive_int, default=2, help="fields per well (default 2)")
    layout.add_argument("--plate-format", type=int, default=96, choices=sorted(PLATE_FORMATS),
                        help="wells on the physical plate (default 96)")
    layout.add_argument("--depths", type=float_list, default=list(DEFAULT_DEPTHS_UM),
                        help="comma-separated defocus depths in um (default "
                        + ",".join(f"{z:g}" for z in DEFAULT_DEPTHS_UM) + ")")
    layout.add_argument("--size", type=size, default=(128, 128),
                        help="field size in pixels, N or YxX (default 128)")
    layout.add_argument("--channels", default=",".join(CHANNELS),
                        help="comma-separated stains among " + ", ".join(CHANNELS)
                        + " (default " + ",".join(CHANNELS) + ")")
    layout.add_argument("--seed", type=int, default=0, help="random seed of the plate (default 0)")
    layout.add_argument("--ngff-version", choices=["0.5", "0.4"], default="0.5",
                        help="0.5 writes zarr v3 (default), 0.4 writes zarr v2 for older readers")
    add_optics_arguments(p)
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
    run.add_argument("--workers", type=positive_int, default=None,
                     help="worker processes of the local Dask cluster (default: one per core)")
    run.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    run.add_argument("--no-progress", action="store_true",
                     help="do not show the progress bar and dashboard link (shown only on a terminal)")
    p.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    from ..simulate import Camera, simulate_plate

    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    if args.verbose < 2:
        import distributed  # noqa: F401  (its import sets its log level; quieten it after)

        logging.getLogger("distributed").setLevel(logging.WARNING)
    start = time.perf_counter()
    try:
        optics = optics_from_args(args)
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


def add_ingest(subparsers) -> None:
    from ..ingest import PRESETS
    from ..plate import PLATE_FORMATS
    from .cluster_flags import add_cluster_arguments

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
    add_optics_arguments(p, defaults=False)
    add_cluster_arguments(p)
    p.set_defaults(func=run_ingest)


def run_ingest(args: argparse.Namespace) -> int:
    import contextlib
    import warnings

    from ..ingest import ingest, preset_for, scan
    from .cluster_flags import client_from_args

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


def add_info(subparsers) -> None:
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
    p.set_defaults(func=run_info)


def _model_summary(path) -> dict:
    """What `info` says about one shipped model file (its JSON alone; no Keras)."""
    from ..unet import read_model_info

    model = {"path": str(path), "present": path.exists()}
    if path.exists():
        info = read_model_info(path)
        training = info.training or {}
        model.update(name=info.name, sha256=info.sha256, optics=info.optics.to_dict(),
                     depths_um=list(info.depths_um),
                     trained_on={key: training.get(key) for key in ("plate", "target", "steps")},
                     fine_tuned_from=(training.get("init") or {}).get("name"))
    return model


def installation_info() -> dict:
    """Versions, GPU and shipped models of this installation (imports no Keras)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from ..unet import default_model_path, shipped_model_paths
    from ..xp import gpu_available

    versions = {}
    for name in ("numpy", "scipy", "dask", "distributed", "zarr", "xarray", "tensorflow",
                 "keras", "dask-jobqueue", "ome-zarr-models", "cupy-cuda12x"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    default = default_model_path()
    others = [_model_summary(p) for p in shipped_model_paths() if p != default]
    return {"plate_refocus": __version__, "python": platform.python_version(),
            "packages": versions, "gpu": gpu_available(), "default_model": _model_summary(default),
            "other_models": others, "refiners": _refiner_summaries()}


def _refiner_summaries() -> list[dict]:
    """What `info` says about each shipped RL refiner (its JSON alone; no Keras)."""
    from ..errors import ModelError
    from ..unet.refiner import read_refiner_info, shipped_refiner_paths

    out = []
    for path in shipped_refiner_paths():
        try:
            info = read_refiner_info(path)
        except ModelError as error:
            out.append({"path": str(path), "error": str(error)})
            continue
        out.append({"path": str(path), "name": info.name, "sha256": info.sha256, "optics": info.optics.to_dict(),
                    "depths_um": [info.min_depth_um, info.max_depth_um], "training": info.training,
                    "metrics": info.metrics})
    return out


def _refiner_trained_on(refiner: dict) -> str:
    """One line: what a refiner learnt from (simulated families, or a plate it was fine-tuned on) and
    what its record says it gains over RL on cells it never saw."""
    training, metrics = refiner.get("training") or {}, refiner.get("metrics") or {}
    if "plate" in training:
        init = training.get("init") or {}
        text = f"fine-tuned on {training['plate']} (target {training.get('target')})" + (
            f" from {init['name']}" if init.get("name") else "")
    elif "fields" in training:
        photons = training.get("photons") or ["?", "?"]
        text = (f"{training['fields']} simulated fields of {', '.join(training.get('families', []))}, "
                f"{photons[0]}-{photons[1]} photons, loss {training.get('loss', '?')}")
    else:
        return "training not recorded"
    gain = metrics.get("gain_over_rl_at_blind_z_10_30um_db")
    if gain:
        text += (f"; over RL on held-out families ({', '.join(gain['families'])}) at 10-30 um: "
                 f"min {gain['min']:+.2f}, mean {gain['mean']:+.2f} dB")
    return text


def _print_model(label: str, model: dict) -> None:
    if not model["present"]:
        print(f"  {label}: MISSING at {model['path']}; pass --model to run/evaluate")
        return
    print(f"  {label}: {model['name']} ({model['sha256'][:12]}), trained for "
          f"{model['optics']}, depths {model['depths_um']} um")
    trained = model["trained_on"]
    print(f"    trained on {trained['plate']} (target {trained['target']}, {trained['steps']} steps)"
          + (f", fine-tuned from {model['fine_tuned_from']}" if model["fine_tuned_from"] else ""))


def run_info(args: argparse.Namespace) -> int:
    import json
    import warnings

    from ..plate import format_info, plate_info

    if args.plate is None:
        info = installation_info()
        if args.json:
            print(json.dumps(info, indent=2))
            return 0
        print(f"plate-refocus {info['plate_refocus']} on Python {info['python']}")
        print("  " + ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v))
        print(f"  GPU (CuPy + CUDA): {'yes' if info['gpu'] else 'no; everything runs on NumPy'}")
        _print_model("default model", info["default_model"])
        for model in info["other_models"]:
            _print_model("model for other optics", model)
        for refiner in info["refiners"]:
            print(f"  refiner of Richardson-Lucy (hybrid): {refiner['name']} ({refiner['sha256'][:12]}), trained "
                  f"for {refiner['optics']} at |z| {refiner['depths_um'][0]:g}-{refiner['depths_um'][1]:g} um"
                  if "name" in refiner else f"  refiner {refiner['path']}: {refiner['error']}")
            if "name" in refiner:
                print(f"    trained on {_refiner_trained_on(refiner)}")
        print("  --method unet and hybrid use the shipped model trained for the plate's optics, unless "
              "--model names one (the default method, rl, uses no network); hybrid refines "
              "Richardson-Lucy with the refiner trained for those optics, where there is one")
        return 0
    from ..outputs import is_ours

    if is_ours(args.plate, "results"):
        from ..results import format_results_info, results_info

        info = results_info(args.plate)
        print(json.dumps(info, indent=2) if args.json else format_results_info(info))
        return 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = plate_info(args.plate, z_step_um=args.z_step)
    for warning in caught:
        print(f"plate-refocus info: warning: {warning.message}", file=sys.stderr)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
