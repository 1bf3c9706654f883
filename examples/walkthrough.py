"""A runnable walk-through: simulate a plate, refocus it, open the results lazily, plot.

Run from a checkout after ``pip install -e .``::

    python examples/walkthrough.py [WORKDIR]

It writes WORKDIR/plate.zarr, WORKDIR/results.zarr and WORKDIR/walkthrough.png
(default WORKDIR: ./walkthrough). The same steps on the command line are
``plate-refocus simulate``, ``plate-refocus run`` and ``plate-refocus info``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write a PNG; no screen needed
import matplotlib.pyplot as plt  # noqa: E402

import plate_refocus as pr  # noqa: E402
from plate_refocus.cluster import start_client  # noqa: E402
from plate_refocus.simulate import simulate_plate  # noqa: E402


def main(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    plate, results = workdir / "plate.zarr", workdir / "results.zarr"
    with start_client("local") as client:
        print("dashboard:", client.dashboard_link)
        if not plate.exists():
            # 1. A small simulated plate: 2 x 3 wells, 2 fields, the report's 11 depths.
            simulate_plate(plate, rows=2, columns=3, fields=2, size=(128, 128), seed=7,
                           channels=("nuclei",), client=client)
        # 2. Refocus every plane and estimate every well's PSF (resumable).
        pr.run_plate(plate, results, client=client, resume=results.exists())

    # 3. Open lazily: nothing is read until values are asked for.
    ds = pr.open_results(results)  # the small variables, and the refocused plate's images
    print(ds)
    well, depth = "A01", 10.0
    sel = {"well": well, "field": 0}
    z = int(abs(ds["z_um"] - depth).argmin("z"))
    raw = pr.open_plate(plate).sel(sel).isel(c=0, z=z)
    truth = pr.open_ground_truth(plate)["in_focus"].sel(sel).isel(c=0)

    # 4. Plot the defocused input, the refocused output and the truth; and the focus map.
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, image, title in zip(
        axes[:3],
        (raw, ds["refocused"].sel(sel).isel(z=z), truth),
        (f"input, {depth:g} um defocus", "refocused (U-Net)", "ground truth in focus"),
        strict=True,
    ):
        image.plot.imshow(ax=ax, cmap="gray", add_colorbar=False)
        ax.set_title(title)
        ax.set_aspect("equal")
    ds["defocus_um"].sel(well=well).plot.line(ax=axes[3], x="z_um", marker="o", label="fitted")
    axes[3].plot(ds["z_um"], abs(ds["z_um"]), "k--", label="true |z|")
    axes[3].set_title(f"well {well}: fitted |defocus|")
    axes[3].legend()
    fig.tight_layout()
    fig.savefig(workdir / "walkthrough.png", dpi=80)
    print("figure:", workdir / "walkthrough.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("walkthrough"))
