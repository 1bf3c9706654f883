"""The report of a results store: summary rows from the stored variables, figures on disk."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr

from plate_refocus.errors import PlateLayoutError
from plate_refocus.report import depth_summary, format_summary, write_report


def test_summary_rows_are_the_stored_values_reduced(results):
    path, _ = results
    ds = xr.open_zarr(path)
    rows = depth_summary(path)
    assert [r.z_um for r in rows] == ds["z_um"].values.tolist()
    for i, row in enumerate(rows):
        fit = ds["defocus_um"].isel(z=i).values
        assert row.wells == ds.sizes["well"]
        assert row.defocus_um == pytest.approx(np.nanmean(fit))
        assert row.defocus_sd_um == pytest.approx(np.nanstd(fit))
        sharp = ds["sharpness"].isel(z=i).values
        assert row.sharpness_ratio == pytest.approx(np.median(sharp[..., 1] / sharp[..., 0]))
        psnr = ds["psnr"].isel(z=i).values
        assert row.psnr_gain_db == pytest.approx(np.mean(psnr[..., 1] - psnr[..., 0]))
    table = format_summary(rows)
    assert table.count("\n") == len(rows) + 1 and "fitted" in table


def test_report_writes_figures_and_leaves_the_store_alone(results, tmp_path):
    path, _ = results
    copy = tmp_path / "results.zarr"
    shutil.copytree(path, copy)
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    files = write_report(copy, tmp_path / "report", well="A02")
    assert set(files) == {"summary", "focus_map", "well", "quality"}
    assert files["well"].name == "well_A02.png"
    for name in ("focus_map", "well", "quality"):
        assert files[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["summary"].read_text() == format_summary(depth_summary(copy)) + "\n"
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert after == before


def test_report_of_a_partial_run_uses_done_wells_only(results, tmp_path):
    import zarr

    path, _ = results
    copy = tmp_path / "partial.zarr"
    shutil.copytree(path, copy)
    done = zarr.open_array(str(copy), path="well_status", mode="r+")
    done[1] = 0  # as if the run was killed before A02 finished
    rows = depth_summary(copy)
    assert all(r.wells == 1 for r in rows)
    fit_a01 = xr.open_zarr(copy, consolidated=False)["defocus_um"].isel(well=0).values
    assert [r.defocus_um for r in rows] == pytest.approx(fit_a01.tolist())
    with pytest.raises(PlateLayoutError, match="not done yet"):
        write_report(copy, tmp_path / "r", well="A02")
    with pytest.raises(PlateLayoutError, match="not in the results"):
        write_report(copy, tmp_path / "r", well="H12")
    done[0] = 0
    with pytest.raises(PlateLayoutError, match="--resume"):
        write_report(copy, tmp_path / "r")


def test_report_command(results, tmp_path, capsys):
    from plate_refocus.cli import main

    path, _ = results
    assert main(["report", str(path), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "fitted" in out and "focus_map.png" in out
    assert (tmp_path / "rep" / "well_A01.png").exists()
