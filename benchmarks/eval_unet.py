"""Quality of the refocusing U-Net on a held-out simulated plate, per depth.

    python benchmarks/eval_unet.py [--plate PATH] [--model PATH] [--fields N] [--out PREFIX]

Without ``--plate`` it simulates the held-out plate first (seed 2026, never
used for training: the default model was trained on seed 1): 3 x 4 wells x 2
fields = 24 fields of 512 x 512 px, both channels, the report's depths
0-40 um. Prints PSNR (data range 4095) and SSIM against the in-focus ground
truth, mean +- std over fields and channels, for the input, the refocused
output and Wiener deconvolution with the true PSF (best regularisation per
depth: an oracle), then checks the bars of the project's issue.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plate", default=None, help="a simulated plate (default: simulate the held-out one)")
    parser.add_argument("--workdir", default="/tmp/plate_refocus_eval", help="where to simulate it")
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--fields", type=int, default=None, help="only the first N fields")
    parser.add_argument("--out", default=None, help="write PREFIX.csv and PREFIX.json")
    parser.add_argument("--baseline-cache", default=None,
                        help="JSON file for the input and Wiener rows, which do not depend on the "
                        "model: computed and written when missing, read when present")
    args = parser.parse_args()

    from plate_refocus.metrics import evaluate_plate, format_table, summarize, write_table
    from plate_refocus.unet import load_model

    plate = args.plate
    if plate is None:
        from plate_refocus.simulate import simulate_plate

        plate = Path(args.workdir) / "eval_seed2026.zarr"
        if not plate.exists():
            start = time.perf_counter()
            simulate_plate(plate, rows=3, columns=4, fields=2, size=(512, 512), seed=2026)
            print(f"simulated {plate} in {time.perf_counter() - start:.0f} s")
    model = load_model(args.model)
    print(f"model {model.info.name} ({model.info.sha256[:12]}), trained on "
          f"{model.info.training.get('plate', '?')} (seed of that plate: see its metadata)")
    start = time.perf_counter()
    cache = Path(args.baseline_cache) if args.baseline_cache else None
    if cache is not None and cache.exists():
        baseline = json.loads(cache.read_text())
        if baseline["plate"] != str(plate) or baseline["fields"] != args.fields:
            raise SystemExit(f"{cache} was computed for another plate or --fields; delete it")
        base_rows = baseline["rows"]
        print(f"input and Wiener rows read from {cache}")
    else:
        base_rows, _ = evaluate_plate(plate, False, max_fields=args.fields)
        if cache is not None:
            cache.write_text(json.dumps({"plate": str(plate), "fields": args.fields, "rows": base_rows}))
    model_rows, _ = evaluate_plate(plate, model, max_fields=args.fields, wiener=False)
    rows = base_rows + [r for r in model_rows if r["method"] == "refocused"]
    summary = summarize(rows)
    print(f"plate {plate}: evaluated in {time.perf_counter() - start:.0f} s")
    print(format_table(summary))

    by = {(e["depth_um"], e["method"]): e["psnr_mean"] for e in summary}
    depths = sorted({e["depth_um"] for e in summary})
    gain = {d: by[(d, "refocused")] - by[(d, "input")] for d in depths}
    mid = [d for d in depths if 10 <= d <= 30]
    behind = {d: by[(d, "wiener")] - by[(d, "refocused")] for d in mid}
    print()
    print("bars (issue 7):")
    print(f"  every depth 10-30 um gains >= +2.5 dB: {all(gain[d] >= 2.5 for d in mid)} "
          f"(worst {min(gain[d] for d in mid):+.2f} dB at {min(mid, key=gain.get):g} um)")
    print(f"  mean gain over 10-30 um >= +3 dB: {np.mean([gain[d] for d in mid]) >= 3} "
          f"({np.mean([gain[d] for d in mid]):+.2f} dB)")
    for d in (0.0, 2.0):
        if d in gain:
            print(f"  {d:g} um no worse than -0.2 dB: {gain[d] >= -0.2} ({gain[d]:+.2f} dB)")
    print(f"  within 1 dB of oracle Wiener at 10-30 um (ambition): {all(b <= 1 for b in behind.values())} "
          f"(behind by {min(behind.values()):+.2f} .. {max(behind.values()):+.2f} dB)")
    if args.out:
        extra = {"plate": str(plate), "model": model.info.name, "model_sha256": model.info.sha256}
        for suffix in (".csv", ".json"):
            print(f"wrote {write_table(summary, args.out + suffix, extra=extra)}")


if __name__ == "__main__":
    main()
