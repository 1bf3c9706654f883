"""Networks against the physics on cells they never saw: the table that decides which model ships.

For each model given, on the morphology families no network of this project trains on
(`plate_refocus.morphology.HELD_OUT_FAMILIES`, and the simulator's own `u2os` for reference), report
optics, three conditions (2000 photons; 300 photons; 2000 photons through a pupil with 0.15 waves
rms of spherical aberration that nothing in the project models) and depths 0-40 um, scored per
field against the in-focus truth (PSNR, data range 4095):

- input; `run`'s default (`pipeline.process_depth`, Richardson-Lucy at the well's blind |z|), and
  `run --method wiener` (Wiener at the blind |z|, the other physics baseline the network issue names);
- each network alone (`--method unet`) and `run --method hybrid` with it (`process_depth`: RL
  wherever the well's blur is known; near focus, where it is not, the network where its output
  is consistent with the plane under the model's `consistency_limit`);
- the oracle: Wiener with the true depth and optics, balance chosen by PSNR against the truth.

Then the network issue's bars per model (>= run default + 1 dB at each depth 10-30 um, >= input at
0-5 um), each model's images/s on 520 x 696, and the six real BBBC006 fields (no truth: sharpness
and consistency, from generalization.py). `--optics second` scores the second objective of
generalization.py (NA 0.45, 0.46 um, 0.325 um pixels) instead of the report's; the BBBC006 fields
are only scored with the report optics (their own).

    python benchmarks/network_comparison.py --model shipped --model scratch/randomised8.keras
    python benchmarks/network_comparison.py --quick --model shipped     # ~2 min
    python benchmarks/network_comparison.py --optics second --model plate_refocus/models/na045.keras
    python benchmarks/network_comparison.py --model shipped --refiner shipped   # + hybrid with the RL refiner
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in a Dask worker; before NumPy loads BLAS

import argparse
import dataclasses
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generalization as g  # noqa: E402

from plate_refocus.deconvolve import NoiseModel  # noqa: E402
from plate_refocus.metrics import WIENER_BALANCES, psnr, wiener_refocus  # noqa: E402
from plate_refocus.morphology import HELD_OUT_FAMILIES  # noqa: E402
from plate_refocus.optics import radial_frequencies  # noqa: E402
from plate_refocus.pipeline import DEFAULT_METHOD, DepthSettings, process_depth  # noqa: E402
from plate_refocus.results import METHOD_RL, METHOD_RL_REFINED  # noqa: E402
from plate_refocus.simulate import Camera  # noqa: E402
from plate_refocus.unet import load_model  # noqa: E402
from plate_refocus.unet.refiner import load_refiner, shipped_refiner_path  # noqa: E402

OPTICS = {"report": g.REPORT, "second": g.SECOND}
RANGE = g.RANGE
CONDITIONS = (("2000 photons", Camera(), 0.0), ("300 photons", Camera(photons=300.0), 0.0),
              ("0.15 waves spherical", Camera(), 0.15))


def score_well(models, planes, truth, depth, camera, optics, refiner=None):
    """Per-field PSNR of every column at one depth (the oracle Wiener knows the depth, not an aberration);
    with a `refiner`, also each hybrid with it (RL refined wherever RL restored at its depths)."""
    noise = NoiseModel.from_camera(camera)
    settings = DepthSettings(optics=optics, method=DEFAULT_METHOD, reference="blind", background=noise.offset,
                             data_range=RANGE, backend="numpy", read_noise=noise.read_noise)
    freq = radial_frequencies(tuple(planes.shape[-2:]), optics.pixel_size_um)
    cols = {"default": process_depth(list(planes), settings=settings, freq=freq).refocused,
            "wiener": process_depth(list(planes), settings=dataclasses.replace(settings, method="wiener"),
                                    freq=freq).refocused}
    for name, model in models.items():
        net = model.predict_batch(planes)
        cols[name] = net
        hybrid = process_depth(list(planes), freq=freq,
                               settings=dataclasses.replace(settings, method="hybrid",
                                                            network_limit=model.info.consistency_limit),
                               refocus=lambda _, net=net: net)
        cols[f"{name} hybrid"] = hybrid.refocused
        if refiner is not None:
            refined = process_depth(list(planes), freq=freq, refiner=refiner,
                                    settings=dataclasses.replace(settings, method="hybrid",
                                                                 network_limit=model.info.consistency_limit),
                                    refocus=lambda _, net=net: net)
            cols[f"{name} hybrid + refiner"] = refined.refocused
            kept = refined.method_used == METHOD_RL_REFINED
            restored = kept | (refined.method_used == METHOD_RL)
            refined_consistency = np.where(kept, refined.consistency, np.nan)
    rows = []
    for f, (plane, t) in enumerate(zip(planes, truth, strict=True)):
        row = {"input": psnr(t, plane, data_range=RANGE)}
        if refiner is not None:  # whether hybrid kept the refined output of this field (where RL restored it)
            row.update(refiner_kept=bool(kept[f]), rl_restored=bool(restored[f]),
                       refined_consistency=float(refined_consistency[f]))
        row.update({k: psnr(t, v[f], data_range=RANGE) for k, v in cols.items()})
        oracle = wiener_refocus(plane, depth, optics, balance=WIENER_BALANCES, offset=noise.offset)
        row["oracle"] = max(psnr(t, r, data_range=RANGE) for r in oracle)
        rows.append(row)
    return rows


def per_depth_table(rows, columns, title):
    by = defaultdict(list)
    for r in rows:
        by[(r["condition"], r["family"], r["depth"])].append(r)
    lines = [f"#### {title}", "", "gain over the input, dB (mean over fields); input PSNR in dB", "",
             "| condition | family | \\|z\\| um | input | " + " | ".join(columns) + " |",
             "| --- | --- | ---: | ---: |" + " ---: |" * len(columns)]
    for (cond, fam, depth), members in by.items():
        inp = np.mean([m["input"] for m in members])
        cells = [f"{np.mean([m[c] - m['input'] for m in members]):+.2f}" for c in columns]
        lines.append(f"| {cond} | {fam} | {depth:g} | {inp:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bars_table(rows, networks):
    """Per network column: the issue's bars over held-out families, per condition."""
    by = defaultdict(list)
    for r in rows:
        by[(r["condition"], r["family"], r["depth"])].append(r)
    lines = ["#### The network issue's bars on held-out families (per family and depth, mean over fields)", "",
             "| condition | method | 10-30 um: over run default, dB (min / mean) | 10-30 um: over Wiener at the "
             "blind \\|z\\| (min / mean) | 10-30 um: over oracle Wiener (min / mean) | 0-5 um: over input (min) "
             "| cells meeting the bars |",
             "| --- | --- | --- | --- | --- | ---: | ---: |"]
    for cond, _, _ in CONDITIONS:
        for col in networks:
            deep, deep_wiener, deep_oracle, near, ok, total = [], [], [], [], 0, 0
            for (c, fam, depth), members in by.items():
                if c != cond or fam not in HELD_OUT_FAMILIES:
                    continue
                def mean(key, ms=members):
                    return float(np.mean([m[key] for m in ms]))

                if 10 <= depth <= 30:
                    d = mean(col) - mean("default")
                    deep.append(d)
                    deep_wiener.append(mean(col) - mean("wiener"))
                    deep_oracle.append(mean(col) - mean("oracle"))
                    ok, total = ok + (d >= 1.0), total + 1
                elif depth <= 5:
                    d = mean(col) - mean("input")
                    near.append(d)
                    ok, total = ok + (d >= 0.0), total + 1
            if not total:
                continue
            lines.append(f"| {cond} | {col} | {min(deep):+.2f} / {np.mean(deep):+.2f} | "
                         f"{min(deep_wiener):+.2f} / {np.mean(deep_wiener):+.2f} | {min(deep_oracle):+.2f} / {np.mean(deep_oracle):+.2f} | {min(near):+.2f} | {ok}/{total} |")
    return "\n".join(lines)


def refiner_table(rows):
    """How often hybrid kept the refined output where RL restored (held-out families, 10-30 um)."""
    lines = ["#### The RL refiner in hybrid (held-out families, 10-30 um, per field where RL restored)", "",
             "| condition | refined output kept | its consistency (median / max) |", "| --- | ---: | --- |"]
    for cond, _, _ in CONDITIONS:
        sel = [r for r in rows if r["condition"] == cond and r["family"] in HELD_OUT_FAMILIES
               and 10 <= r["depth"] <= 30 and r.get("rl_restored")]
        kept = [r["refined_consistency"] for r in sel if r["refiner_kept"]]
        spread = f"{np.median(kept):.2f} / {max(kept):.2f}" if kept else "-"
        lines.append(f"| {cond} | {len(kept)} of {len(sel)} | {spread} |")
    return "\n".join(lines)


def speed_table(models, repeats=3):
    """images/s of each model on 520 x 696 fields, batches of 4, median of `repeats` after a warm-up."""
    rng = np.random.default_rng(0)
    fields = (100 + rng.poisson(300, size=(4, 520, 696))).astype(np.uint16)
    lines = ["#### Speed (`predict_batch` of 4 fields of 520 x 696, median of 3 after a warm-up)", "",
             "| model | parameters | images/s |", "| --- | ---: | ---: |"]
    for name, model in models.items():
        model.predict_batch(fields)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model.predict_batch(fields)
            times.append(time.perf_counter() - t)
        lines.append(f"| {name} | {model.keras_model.count_params():,} | {len(fields) / np.median(times):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True,
                        help="a .keras model, or 'shipped' for the package's default; repeat to compare")
    parser.add_argument("--quick", action="store_true", help="small fields, fewer depths (~2 min per model)")
    parser.add_argument("--fields", type=int, default=3, help="fields per well (default 3)")
    parser.add_argument("--optics", choices=sorted(OPTICS), default="report",
                        help="the objective simulated and told to the run (default: the report's)")
    parser.add_argument("--refiner", default=None,
                        help="an RL refiner (.keras with its JSON), or 'shipped' for the one trained for the "
                             "optics: adds each hybrid with it")
    parser.add_argument("--out", default="scratch/network_comparison.md")
    args = parser.parse_args(argv)
    models = {}
    for path in args.model:
        model = load_model(None if path == "shipped" else path)
        models[f"{Path(path).stem} ({model.info.name})" if path != "shipped" else f"shipped ({model.info.name})"] = model
    size = (128, 160) if args.quick else (260, 348)
    depths = [0.0, 5.0, 10.0, 30.0] if args.quick else [0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0]
    families = ["u2os", *HELD_OUT_FAMILIES]
    optics = OPTICS[args.optics]
    refiner = None
    if args.refiner:
        refiner = load_refiner(shipped_refiner_path(optics) if args.refiner == "shipped" else args.refiner)
    start = time.time()
    rows = []
    for k, (cond, camera, spherical) in enumerate(CONDITIONS):
        for i, family in enumerate(families):
            planes, truth = g.simulate(optics, family, depths, args.fields, size, seed=5000 + 100 * k + 7 * i,
                                       spherical=spherical, camera=camera)
            for j, depth in enumerate(depths):
                for r in score_well(models, planes[:, j], truth, depth, camera, optics, refiner):
                    rows.append({"condition": cond, "family": family, "depth": depth, **r})
            print(f"[{time.time() - start:5.0f} s] {cond} {family}", file=sys.stderr, flush=True)
    networks = [c for name in models
                for c in (name, f"{name} hybrid", *([f"{name} hybrid + refiner"] if refiner else []))]
    sections = [f"Network comparison ({'quick' if args.quick else 'full'}): {args.optics} optics ({optics}), fields {size[0]} x "
                f"{size[1]}, {args.fields} per well, nuclei stain; held-out families {', '.join(HELD_OUT_FAMILIES)}.",
                bars_table(rows, networks),
                *([refiner_table(rows)] if refiner is not None else []),
                per_depth_table(rows, ["default", "wiener", *networks, "oracle"], "Per family and depth"),
                speed_table(models)]
    for name, model in models.items() if args.optics == "report" else ():
        sections.append(f"##### {name}\n\n" + g.bbbc006(model, g.BBBC006, refiner))
    sections.append(f"(total {time.time() - start:.0f} s)")
    g.publish("\n\n".join(sections), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
