"""The report of a results store: summary rows, the self-contained HTML page, and refusals."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import xarray as xr

from plate_refocus.errors import (
    IncompleteResultsWarning,
    NotResultsError,
    PlateLayoutError,
    PlateRefocusError,
    ResultsIncompleteError,
    ResultsNotFoundError,
)
from plate_refocus.report import depth_summary, format_summary, plate_layout, write_report


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


def test_report_is_one_self_contained_page_and_leaves_the_store_alone(results, tmp_path):
    path, _ = results
    copy = tmp_path / "results.zarr"
    shutil.copytree(path, copy)
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    files = write_report(copy, tmp_path / "report", well="A02")
    assert set(files) == {"index", "summary", "wells", "fields"}  # the tables beside the page
    assert files["wells"].parent == tmp_path / "report" / "tables"
    page = files["index"].read_text()
    assert files["summary"].read_text() == format_summary(depth_summary(copy)) + "\n"
    # Everything is inside the page: figures as data URIs, no link to fetch.
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)
    assert page.count('src="data:image/png;base64,') >= 7  # 2 maps, curves, OTFs, 3 montages
    for heading in ("Focus map", "Sharpness gain per well", "Quality per depth",
                    "OTF profiles and PSFs of well A02", "most improved", "least improved",
                    "Wells", "Flagged fields", "run complete: all 2 wells done"):
        assert heading in page, heading
    assert "shaded: the band the |defocus| fit uses" in page and "not available" not in page
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert after == before


def test_report_of_a_partial_run_says_so_and_uses_done_wells_only(results, tmp_path):
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
    with pytest.warns(IncompleteResultsWarning, match="1 of 2 wells done, 0 failed, 1 pending"):
        files = write_report(copy, tmp_path / "r")
    assert "run not finished: 1 of 2 wells done" in files["index"].read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteResultsWarning)
        with pytest.raises(PlateLayoutError, match="not done yet"):
            write_report(copy, tmp_path / "r", well="A02")
        with pytest.raises(PlateLayoutError, match="not in the results"):
            write_report(copy, tmp_path / "r", well="H12")
    done[0] = 0
    with pytest.raises(ResultsIncompleteError, match="--resume") as caught:
        write_report(copy, tmp_path / "r")
    assert "\n" not in str(caught.value)


def test_what_is_not_a_results_store_is_said_in_one_line(tiny_plate, tmp_path):
    cases = [
        (tiny_plate, NotResultsError, "it is an OME-Zarr plate: refocus it with 'plate-refocus run"),
        (tmp_path, NotResultsError, "is not a results store of plate-refocus run; give the OUT"),
        (tmp_path / "nothing.zarr", ResultsNotFoundError, "no results store at"),
    ]
    for path, kind, message in cases:
        with pytest.raises(kind, match=re.escape(message)) as caught:
            write_report(path, tmp_path / "r")
        assert isinstance(caught.value, PlateRefocusError) and "\n" not in str(caught.value)


def test_the_plate_layout_is_the_physical_plate(results, synthetic_results):
    path, _ = results
    ds = xr.open_zarr(path)
    rows, columns = plate_layout(ds)  # from the source plate's NGFF metadata
    assert rows == list("ABCDEFGH") and columns == [str(c) for c in range(1, 13)]
    ds.attrs.update(plate_rows=16, plate_columns=24)  # what the run should store
    assert [len(a) for a in plate_layout(ds)] == [16, 24]
    sparse = synthetic_results(wells=("A01", "P24"))  # no source plate: the standard format
    rows, columns = plate_layout(sparse)
    assert (len(rows), len(columns)) == (16, 24) and rows[-1] == "P"
    assert [len(a) for a in plate_layout(synthetic_results(wells=("B03",)))] == [8, 12]


def test_a_sparse_plate_keeps_its_layout_and_marks_every_state(synthetic_results, tmp_path):
    wells = ("A01", "C07", "P24", "H12")
    status = np.array([1, 2, 1, 0], dtype=np.int8)  # done, failed, done, pending
    ds = synthetic_results(wells=wells, well_status=(("well",), status))
    with pytest.warns(IncompleteResultsWarning, match="2 of 4 wells done, 1 failed, 1 pending"):
        page = write_report(ds, tmp_path / "r")["index"].read_text()
    assert "refocused planes not shown" in page and "input planes not shown" in page
    assert "<td class=\"text\">C07</td><td class=\"text\">failed</td>" in page


# --- in a real browser ----------------------------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browse(page, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *extra, page.as_uri()],
        capture_output=True, text=True, timeout=180, check=False,
    )


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line
            or ("CONSOLE" in line and "error" in line.lower())]


@pytest.mark.skipif(_chromium() is None, reason="needs chromium (apt-get install -y chromium)")
def test_the_page_renders_in_a_headless_browser_without_errors(results, tmp_path):
    from matplotlib.image import imread

    path, _ = results
    index = write_report(path, tmp_path / "report")["index"]

    # The check can fail: a page with a script error is caught.
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    assert _console_errors(_browse(broken, tmp_path, "--dump-dom").stderr)

    dom = _browse(index, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-report="ready"' in dom.stdout  # the page's closing script ran
    assert _console_errors(dom.stderr) == []
    shot = tmp_path / "shot.png"
    run = _browse(index, tmp_path, f"--screenshot={shot}", "--window-size=1400,2000")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    assert _console_errors(run.stderr) == []
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1400)
    assert pixels.std() > 0.05  # not a blank page: headings, maps and curves drawn
    # and in colour: the focus map's two done wells (of 96 positions) and the OTF curves
    assert (pixels.std(axis=-1) > 0.1).mean() > 0.002


def test_report_command(results, tmp_path, capsys):
    from plate_refocus.cli import main

    path, _ = results
    assert main(["report", str(path), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "fitted" in out and "index.html" in out
    assert (tmp_path / "rep" / "index.html").exists()
