"""How close `plate-refocus run`'s fitted |defocus| comes to the truth, per PSF reference.

Simulates a held-out plate (seed 4242, never used for training), runs the
whole pipeline on it on a local cluster with the default method and each PSF
reference -- ``auto`` (the default; this plate records its in-focus plane, so
that plane), ``blind`` (the fields' power spectra alone: what a plate without
a recorded or findable focal plane gets) and ``refocused`` (the U-Net's output,
the old default, with ``--method unet``) -- and prints per depth the true |z|,
the fitted ``defocus_um`` (mean +- standard deviation over wells), the blind
``defocus_blind_um``, and the mean PSNR gain of each run. Run::

    python benchmarks/pipeline_accuracy.py [--size 256] [--rows 2 --columns 3] [--channel nuclei]

Accuracy only: the machine's load does not change these numbers.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

#: (reference, method) of the runs compared.
RUNS = (("auto", "rl"), ("blind", "rl"), ("refocused", "unet"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="field size in pixels")
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("--fields", type=int, default=2)
    parser.add_argument("--channel", default="nuclei", choices=("nuclei", "actin"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    from plate_refocus.cluster import start_client
    from plate_refocus.pipeline import open_results, run_plate
    from plate_refocus.simulate import simulate_plate

    tmp = Path(tempfile.mkdtemp(prefix="pipeline_accuracy_"))
    results = {}
    try:
        with start_client("local", workers=args.workers, dashboard_address=":0") as client:
            plate = simulate_plate(tmp / "plate.zarr", rows=args.rows, columns=args.columns,
                                   fields=args.fields, size=(args.size, args.size), seed=4242,
                                   channels=(args.channel,), client=client)
            for reference, method in RUNS:
                out = tmp / f"{reference}.zarr"
                run_plate(plate, out, client=client, reference=reference, method=method)
                ds = open_results(out)
                results[reference] = {
                    "z_um": np.abs(ds["z_um"].values),
                    "fit": ds["defocus_um"].values,  # (well, z)
                    "blind": ds["defocus_blind_um"].values,
                    "gain": (ds["psnr"].sel(stage="refocused") - ds["psnr"].sel(stage="input"))
                    .mean(("well", "field")).values,
                }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    z = results["auto"]["z_um"]
    n_wells = results["auto"]["fit"].shape[0]
    print(f"plate: {n_wells} wells x {args.fields} fields, {args.size}x{args.size} px, {args.channel}, "
          "seed 4242; fitted |defocus| in um, mean +- sd over wells; PSNR gain over the input, dB")
    print("| true \\|z\\| | auto (in-focus plane) | error | blind | error | U-Net output as reference "
          "| error | gain: rl, auto | gain: rl, blind | gain: unet |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, depth in enumerate(z):
        row = [f"{depth:.0f}"]
        for reference, key in (("auto", "fit"), ("auto", "blind"), ("refocused", "fit")):
            fit = results[reference][key][:, i]
            row += [f"{np.nanmean(fit):.2f} +- {np.nanstd(fit):.2f}", f"{np.nanmean(fit) - depth:+.2f}"]
        row += [f"{results[r]['gain'][i]:+.2f}" for r, _ in RUNS]
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
