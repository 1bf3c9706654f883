"""What fine-tuning hybrid's RL refiner on a facility's own z-stacks buys, measured on other plates of those cells.

A facility's cells are simulated as a family no network of this project trained on (default
``mitotic``, the one where the shipped refiner loses most), optionally through an objective the
physics does not model (``--spherical 0.15``: 0.15 waves rms of spherical aberration). Steps:

1. a "calibration" z-stack plate of those cells (its in-focus plane recorded, 2000 photons),
   written by ``simulate_plate`` as any plate;
2. ``fine_tune_refiner`` on it with ``target="focal-plane"`` (the noisy in-focus plane, as a
   facility has it, not the simulator's truth), starting from the shipped refiner: what
   ``plate-refocus train-refiner PLATE --out R.keras`` runs;
3. a second plate of the same cells (another seed: other cells, never trained on), run through
   ``process_depth`` as ``run --method hybrid`` runs it (blind |z|), without a refiner, with the
   shipped one and with the fine-tuned one, scored per field against the in-focus truth
   (PSNR, data range 4095; mean over fields per depth).

    python benchmarks/refiner_finetune.py                       # ~15 min on 2 cores
    python benchmarks/refiner_finetune.py --spherical 0.15 --family textured
    python benchmarks/refiner_finetune.py --optics second       # NA 0.45, its own shipped refiner
    python benchmarks/refiner_finetune.py --quick               # the code path, ~2 min
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in a Dask worker; before NumPy loads BLAS

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generalization as g  # noqa: E402

from plate_refocus.optics import radial_frequencies  # noqa: E402
from plate_refocus.pipeline.compute import process_depth  # noqa: E402
from plate_refocus.pipeline.plan import depth_settings  # noqa: E402
from plate_refocus.plate import open_ground_truth, open_plate, read_layout  # noqa: E402
from plate_refocus.results import METHOD_RL_REFINED  # noqa: E402
from plate_refocus.simulate import Camera, simulate_plate  # noqa: E402
from plate_refocus.train import fine_tune_refiner  # noqa: E402
from plate_refocus.unet.refiner import load_refiner, shipped_refiner_path  # noqa: E402

OPTICS = {"report": g.REPORT, "second": g.SECOND}


def score(plate: Path, refiners: dict[str, object], depths: list[float]) -> dict[str, dict[float, list[float]]]:
    """Per column and depth, the fields' PSNR (input, RL alone, each refiner) and the refined counts."""
    layout = read_layout(plate)
    images = open_plate(plate)
    truth = open_ground_truth(plate)["in_focus"]
    settings = depth_settings(layout, method="hybrid", reference="blind", backend="numpy")
    freq = radial_frequencies(layout.shape, layout.optics.pixel_size_um)
    z_um = [float(z) for z in images.coords["z_um"].values]
    out: dict[str, dict[float, list[float]]] = {}
    for w in range(images.sizes["well"]):
        truths = list(np.asarray(truth.isel(well=w, c=0).values, np.float32))
        for depth in depths:
            planes = list(np.asarray(images.isel(well=w, c=0, z=z_um.index(depth)).values, np.float32))
            for name, refiner in {"rl": None, **refiners}.items():
                result = process_depth(planes, settings=settings, freq=freq, truths=truths, refiner=refiner,
                                       refocus=lambda stack: stack.astype(np.float32))
                if name == "rl":
                    out.setdefault("input", {}).setdefault(depth, []).extend(result.quality[:, 0, 1])
                out.setdefault(name, {}).setdefault(depth, []).extend(result.quality[:, 1, 1])
                if refiner is not None:
                    refined = int(np.sum(result.method_used == METHOD_RL_REFINED))
                    out.setdefault(f"{name} refined", {}).setdefault(depth, []).append(refined)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="mitotic", help="the facility's cells (default mitotic, held out)")
    parser.add_argument("--spherical", type=float, default=0.0, help="waves rms of Z(4,0) in both plates")
    parser.add_argument("--optics", choices=list(OPTICS), default="report",
                        help="report: NA 0.25 (default); second: generalization.py's NA 0.45 objective")
    parser.add_argument("--photons", type=float, default=2000.0, help="at the brightest in-focus pixel")
    parser.add_argument("--wells", type=int, default=8, help="wells of the calibration stack (default 8)")
    parser.add_argument("--eval-wells", type=int, default=4, help="wells of the plate scored (default 4)")
    parser.add_argument("--fields", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--quick", action="store_true", help="tiny plates, 2 epochs")
    parser.add_argument("--keep", default=None, help="folder to keep the plates and the refiner in")
    args = parser.parse_args()
    if args.quick:
        args.wells, args.eval_wells, args.fields, args.size, args.epochs = 3, 1, 2, 128, 2
    depths = [10.0, 15.0, 20.0, 25.0, 30.0]
    stack_depths = [0.0, 10.0, 12.5, 15.0, 17.5, 20.0, 22.5, 25.0, 27.5, 30.0]
    optics = OPTICS[args.optics]
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="refiner_finetune_"))
    common = dict(fields=args.fields, size=(args.size, args.size), channels=("nuclei",), family=args.family,
                  spherical_rms_waves=args.spherical, optics=optics, camera=Camera(photons=args.photons),
                  workers=2, overwrite=True)
    start = time.perf_counter()
    simulate_plate(folder / "calibration.zarr", rows=1, columns=args.wells, depths_um=stack_depths, seed=11,
                   **common)
    simulate_plate(folder / "scored.zarr", rows=1, columns=args.eval_wells, depths_um=depths, seed=12, **common)
    print(f"plates simulated ({time.perf_counter() - start:.0f} s)", flush=True)
    shipped = shipped_refiner_path(optics)
    tuned = fine_tune_refiner(folder / "calibration.zarr", folder / "tuned.keras", init=shipped,
                              target="focal-plane", epochs=args.epochs, learning_rate=args.learning_rate,
                              overwrite=True, progress=lambda line: print(line, flush=True))
    print(f"fine-tuned ({time.perf_counter() - start:.0f} s)", flush=True)
    table = score(folder / "scored.zarr", {"shipped": load_refiner(shipped), "tuned": tuned}, depths)
    print(f"scored ({time.perf_counter() - start:.0f} s)\n")
    m = {name: {d: float(np.mean(v)) for d, v in cols.items()} for name, cols in table.items()}
    n_fields = args.eval_wells * args.fields
    print(f"family {args.family}, {args.optics} optics, spherical {args.spherical:g} waves, {args.photons:g} photons; "
          f"calibration stack "
          f"{args.wells} wells x {args.fields} fields of {args.size}px, scored plate {args.eval_wells} wells "
          f"(other cells); validation relative MSE (RL = 1): shipped {tuned.info.metrics['validation_relative_mse']['start']:.3f}, "
          f"tuned {tuned.info.metrics['validation_relative_mse']['best']:.3f}\n")
    print("| depth um | input PSNR | RL (hybrid, no refiner) | shipped refiner over RL | fine-tuned over RL | refined (shipped / tuned) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in depths:
        print(f"| {d:g} | {m['input'][d]:.2f} | {m['rl'][d]:.2f} | {m['shipped'][d] - m['rl'][d]:+.2f} | "
              f"{m['tuned'][d] - m['rl'][d]:+.2f} | {int(sum(table['shipped refined'][d]))}/{n_fields} / "
              f"{int(sum(table['tuned refined'][d]))}/{n_fields} |")
    gains = {k: [m[k][d] - m["rl"][d] for d in depths] for k in ("shipped", "tuned")}
    print(f"\nover RL at 10-30 um, min / mean: shipped {min(gains['shipped']):+.2f} / {np.mean(gains['shipped']):+.2f}, "
          f"fine-tuned {min(gains['tuned']):+.2f} / {np.mean(gains['tuned']):+.2f}; "
          f"{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
