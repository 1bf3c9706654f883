"""Faults during a run: a bad well is not a lost plate, and nothing is mistaken for done.

Runs on the session's real LocalCluster (``client``), and through the CLI in a
subprocess where the exit status and the printed summary are the point.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from plate_refocus.results import (
    PLANE_NO_SIGNAL,
    PLANE_NONFINITE,
    WELL_DONE,
    WELL_FAILED,
    open_results,
)
from tests.test_bad_input import checksum, small_plate

pytestmark = pytest.mark.timeout(900)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plate_refocus.cli", *args],
                          capture_output=True, text=True, timeout=600)


def first_chunk(plate: Path, well: str = "A/2") -> Path:
    """The file of plane (c=0, z=1) of field 0 of a well."""
    return plate / well / "0" / "0" / "c" / "0" / "1" / "0" / "0"


def test_a_corrupt_chunk_fails_its_well_only_and_resume_retries_it(tmp_path, tiny_model):
    plate = small_plate(tmp_path / "P.zarr")
    chunk = first_chunk(plate)
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00garbage\xff" * 20)
    before = checksum(plate)
    out = tmp_path / "r.zarr"
    base = ["run", str(plate), str(out), "--model", str(tiny_model), "--workers", "1"]
    done = cli(*base)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "1 wells computed, 1 FAILED of 2" in done.stdout
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed: well A02")]
    assert len(failed) == 1 and "A/2/0/0/c/0/1/0/0" in failed[0] and "plane 1" in failed[0]
    assert "--resume" in done.stdout
    ds = open_results(out)
    assert ds["well_status"].values.tolist() == [WELL_DONE, WELL_FAILED]
    assert "A/2/0/0/c/0/1/0/0" in str(ds["well_error"].values[1])
    assert np.isfinite(ds["defocus_um"].sel(well="A01").values).all()
    assert checksum(plate) == before  # the input is read, never written

    chunk.write_bytes(good)  # the user restores the file from the source
    resumed = cli(*base, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "1 wells computed, 1 already done (skipped) of 2" in resumed.stdout
    fresh = tmp_path / "fresh.zarr"
    assert cli("run", str(plate), str(fresh), "--model", str(tiny_model), "--workers", "1").returncode == 0
    a, b = open_results(out), open_results(fresh)
    assert a["well_status"].values.tolist() == [WELL_DONE, WELL_DONE]
    assert a["well_error"].values.tolist() == ["", ""]
    for name in ("refocused", "otf_radial", "psf", "defocus_um", "sharpness"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-6, atol=1e-9, err_msg=name)


def test_nan_and_inf_planes_are_masked_and_named(tmp_path, tiny_model, client, caplog):
    from plate_refocus.pipeline import run_plate

    rng = np.random.default_rng(0)
    images = (100 + 50 * rng.random((2, 1, 1, 2, 48, 48))).astype(np.float32)
    images[..., 20:28, 20:28] += 2000  # a bright square: signal
    images[1, 0, 0, 1, 5, 5] = np.nan
    images[0, 0, 0, 1, 7, 7] = np.inf
    plate = small_plate(tmp_path / "float.zarr", images=images, dtype=np.float32)
    with caplog.at_level("WARNING", logger="plate_refocus.pipeline"):
        summary = run_plate(plate, tmp_path / "r.zarr", client=client, model=tiny_model)
    assert summary.ok and summary.planes_flagged == {"NaN or infinite pixels (masked)": 2}
    ds = open_results(tmp_path / "r.zarr")
    flags = ds["plane_flags"].values[:, 0, :]  # (well, z)
    assert flags.tolist() == [[0, PLANE_NONFINITE], [0, PLANE_NONFINITE]]
    assert np.isnan(ds["refocused"].values[:, 0, 1]).all()
    assert np.isfinite(ds["refocused"].values[:, 0, 0]).all()
    named = [r.getMessage() for r in caplog.records if "NaN or infinite" in r.getMessage()]
    assert any("well A02 field 0 plane 1" in text for text in named)


@pytest.mark.parametrize("value", [0, 1234])
def test_a_plate_without_signal_gets_nan_defocus_and_a_flag(tmp_path, tiny_model, client, value):
    from plate_refocus.pipeline import run_plate

    images = np.full((2, 1, 1, 2, 48, 48), value, dtype=np.uint16)
    plate = small_plate(tmp_path / "flat.zarr", images=images)
    summary = run_plate(plate, tmp_path / "r.zarr", client=client, model=tiny_model)
    assert summary.ok
    assert summary.planes_flagged == {"no signal above the noise (left out of the PSF)": 4}
    ds = open_results(tmp_path / "r.zarr")
    assert np.isnan(ds["defocus_um"].values).all() and np.isnan(ds["defocus_err_um"].values).all()
    assert (ds["plane_flags"].values == PLANE_NO_SIGNAL).all()


def test_a_layout_killed_before_it_was_complete_is_rebuilt_on_resume(tmp_path, tiny_model, client):
    """A run killed while creating the store leaves only a hidden partial folder, never OUT."""
    from plate_refocus.pipeline import plan_run, run_plate
    from plate_refocus.results import create_results_store, results_template

    plate = small_plate(tmp_path / "P.zarr")
    out = tmp_path / "r.zarr"
    plan = plan_run(plate, out, model=tiny_model)
    template = results_template(plan.layout, attrs=plan.attrs)
    # as if killed between writing the layout and the rename: a hidden partial store ...
    partial = tmp_path / ".r.zarr.incomplete-dead"
    template.to_zarr(partial, mode="w-", compute=False, consolidated=False)
    # ... and, from an older kill mid-layout, an OUT missing some arrays
    create_results_store(out, template)
    shutil.rmtree(out / "well_status")
    summary = run_plate(plate, out, client=client, model=tiny_model, resume=True)
    assert sorted(summary.wells_computed) == ["A01", "A02"] and summary.wells_skipped == []
    assert not partial.exists()
    assert zarr.open_group(str(out), mode="r")["well_status"][:].tolist() == [1, 1]
