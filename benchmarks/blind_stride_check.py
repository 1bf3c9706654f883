"""Check that the blind fit's strided likelihood profile gives the estimates of the full one.

    python benchmarks/blind_stride_check.py [--seed 5000] [--depths 0 2 5 10 15 20 25 30 40]

Step 2 of ``blind_defocus`` evaluates every ``PROFILE_STRIDE``-th near ``|z|``,
the scan's local minima and the neighbourhoods of low points. This fits the
wells of ``generalization.py`` (both optics, its families, spherical
aberration; 3-field groups and the 9-field well) with the default stride and
with ``PROFILE_STRIDE = 1`` (every near ``|z|``), and counts the fits whose
estimate, interval or identifiability differ. About 2-3 minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generalization import REPORT, SECOND, blind_groups, simulate  # noqa: E402

import plate_refocus.focus.blind as blind  # noqa: E402
from plate_refocus.focus import power_spectrum  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--depths", type=float, nargs="+", default=[0, 2, 5, 10, 15, 20, 25, 30, 40])
    args = parser.parse_args(argv)
    stride = blind.PROFILE_STRIDE
    cases = [(REPORT, f, 0.0) for f in ["u2os", "small-nuclei", "large-nuclei", "textured", "mitotic"]]
    cases += [(SECOND, f, 0.0) for f in ["u2os", "small-nuclei", "textured"]]
    cases += [(REPORT, "u2os", 0.15), (SECOND, "u2os", 0.15)]
    fits = same = 0
    seconds = {1: 0.0, stride: 0.0}
    for k, (optics, family, spherical) in enumerate(cases):
        images, _ = simulate(optics, family, args.depths, 9, (520, 696), seed=args.seed + k, spherical=spherical)
        for j, depth in enumerate(args.depths):
            spectra = [power_spectrum(p, optics.pixel_size_um, background=100.0) for p in images[:, j]]
            results = {}
            for s in (1, stride):
                blind.PROFILE_STRIDE = s
                start = time.process_time()
                three, whole = blind_groups(spectra, optics, 9)
                seconds[s] += time.process_time() - start
                results[s] = three + [whole]
            blind.PROFILE_STRIDE = stride
            for a, b in zip(results[1], results[stride], strict=True):
                fits += 1
                if (a.defocus_um, a.interval_um, a.identifiable) == (b.defocus_um, b.interval_um, b.identifiable):
                    same += 1
                else:
                    print(f"differs: NA {optics.na}, {family}, spherical {spherical}, {depth:g} um: "
                          f"{a.defocus_um:.3f} {a.interval_um} -> {b.defocus_um:.3f} {b.interval_um}")
        print(f"{family}, NA {optics.na}, spherical {spherical}: {same}/{fits} identical so far", flush=True)
    print(f"{same}/{fits} fits identical (estimate, interval, identifiability); fit CPU: every near |z| "
          f"{seconds[1]:.1f} s, stride {stride} {seconds[stride]:.1f} s")


if __name__ == "__main__":
    main()
