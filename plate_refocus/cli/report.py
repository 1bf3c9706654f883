"""``report``: what a results store holds, at a glance."""

from __future__ import annotations

import argparse


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

    from ..report import write_report

    results = Path(args.results)
    out = Path(args.out) if args.out else results.with_name(results.stem + "-report")
    files = write_report(results, out, well=args.well)
    print(files["summary"].read_text(), end="")
    for path in files.values():
        print(f"wrote {path}")
    return 0
