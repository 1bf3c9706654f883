"""``report``: what a results store holds, at a glance."""

from __future__ import annotations

import argparse


def add_report(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="summarise a results store: a per-depth table and an HTML plate report",
        description="Print, per depth, the fitted |defocus| over wells and the image-quality "
        "gains of the results store RESULTS, and write DIR/index.html (self-contained: plate "
        "maps of fitted defocus and sharpness gain on the full plate layout, quality curves, "
        "OTF profiles, input/refocused montages, the tables) and DIR/summary.md. RESULTS is "
        "not modified; DIR is replaced only if it is an earlier report.",
    )
    p.add_argument("results", metavar="RESULTS", help="a results store from 'plate-refocus run'")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for the files (default: RESULTS without .zarr, plus -report)")
    p.add_argument("--well", default=None, help="the well to draw OTFs and PSFs of (default: the first)")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    import sys
    import warnings
    from pathlib import Path

    from ..report import write_report

    results = Path(args.results)
    out = Path(args.out) if args.out else results.with_name(results.stem + "-report")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = write_report(results, out, well=args.well)
    for warning in caught:
        print(f"plate-refocus report: warning: {warning.message}", file=sys.stderr)
    print(files["summary"].read_text(), end="")
    for path in files.values():
        print(f"wrote {path}")
    return 0
