"""Per-well and per-field tables: the stored values, the flags, and tables of unfinished runs."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from plate_refocus.tables import (
    FIELD_COLUMNS,
    WELL_COLUMNS,
    fields_table,
    wells_table,
    write_tables,
)


def test_tables_of_a_real_run_hold_the_stored_values(results):
    path, _ = results
    ds = xr.open_zarr(path)
    fields = fields_table(ds)
    assert list(fields.columns) == list(FIELD_COLUMNS)
    n_w, n_f, n_z = ds.sizes["well"], ds.sizes["field"], ds.sizes["z"]
    assert len(fields) == n_w * n_f * n_z
    row = fields[(fields.well == "A02") & (fields.field == 1) & (fields.z == 2)].iloc[0]
    sharp = ds["sharpness"].sel(well="A02", field=1, z=2).values
    assert (row.sharpness_input, row.sharpness_refocused) == pytest.approx(tuple(sharp))
    assert row.sharpness_gain == pytest.approx(sharp[1] / sharp[0])
    psnr = ds["psnr"].sel(well="A02", field=1, z=2).values
    assert row.psnr_gain_db == pytest.approx(psnr[1] - psnr[0])
    assert row.z_um == 10.0 and row.image_path == "A/2/1" and row.status == "done"
    assert row.consistency == pytest.approx(float(ds["consistency"].sel(well="A02", field=1, z=2)),
                                            nan_ok=True)

    wells = wells_table(ds)
    assert list(wells.columns) == list(WELL_COLUMNS)
    assert len(wells) == n_w * n_z
    np.testing.assert_allclose(wells["defocus_um"], ds["defocus_um"].values.reshape(-1))
    np.testing.assert_allclose(wells["defocus_blind_um"], ds["defocus_blind_um"].values.reshape(-1))
    a01 = wells[(wells.well == "A01") & (wells.z == 1)].iloc[0]
    ratio = ds["sharpness"].sel(well="A01", z=1).values
    assert a01.sharpness_gain_median == pytest.approx(np.median(ratio[:, 1] / ratio[:, 0]))
    assert a01.fields == n_f and a01.reference == "refocused" and a01.method == "unet"
    assert wells.attrs["complete"] and wells.attrs["wells_done"] == n_w


def test_every_column_is_documented():
    for function, columns in ((fields_table, FIELD_COLUMNS), (wells_table, WELL_COLUMNS)):
        doc = inspect.getdoc(function)
        for name in columns:
            assert name.split("_")[0] in doc, name


def test_rows_are_in_plate_order(synthetic_results):
    ds = synthetic_results(wells=("B01", "A10", "A02", "AA01"), depths_um=(0.0, 4.0))
    wells = wells_table(ds)
    assert wells["well"].drop_duplicates().tolist() == ["A02", "A10", "B01", "AA01"]
    assert wells[wells.well == "A10"]["z"].tolist() == [0, 1]


def test_flags_find_the_fields_that_look_wrong(synthetic_results):
    n_w, n_f, n_z = 6, 2, 3
    consistency = np.full((n_w, n_f, n_z), 0.9) + np.random.default_rng(1).normal(0, 0.01, (n_w, n_f, n_z))
    consistency[2, 1, 1] = 0.2  # one field the re-blurred output does not explain
    ds = synthetic_results(consistency=(("well", "field", "z"), consistency))
    sharp = ds["sharpness"].values.copy()
    sharp[4, 0, 2, 1] = sharp[4, 0, 2, 0] * 0.5  # refocusing made this plane blurrier
    sharp[0, 1, 0] = np.nan  # a missing plane
    ds["sharpness"] = (("well", "field", "z", "stage"), sharp)
    flags = ds["plane_flags"].values.copy()
    flags[5, 0, 2] = 4 | 8  # the run left it out of the PSF: no signal, no usable reference
    ds["plane_flags"] = (("well", "field", "z"), flags)
    fields = fields_table(ds)
    flagged = {(r.well, r.field, r.z): r.flags for r in fields[fields.flagged].itertuples()}
    assert flagged[("B01", 1, 1)] == "consistency_outlier"
    assert "sharpness_drop" in flagged[("C05", 0, 2)] and "sharpness_outlier" in flagged[("C05", 0, 2)]
    assert flagged[("A01", 1, 0)] == "missing"
    assert flagged[("H12", 0, 2)] == "no_signal;no_reference"
    assert fields.set_index(["well", "field", "z"]).loc[("H12", 0, 2), "plane_flags"] == 12
    assert set(flagged) == {("B01", 1, 1), ("C05", 0, 2), ("A01", 1, 0), ("H12", 0, 2)}
    wells = wells_table(ds, fields)
    assert wells.set_index(["well", "z"]).loc[("C05", 2), "fields_flagged"] == 1
    assert wells.set_index(["well", "z"]).loc[("A01", 0), "fields"] == 1


def test_an_unfinished_run_does_not_look_complete(synthetic_results, tmp_path):
    n_w = 6
    status = np.array([1, 2, 1, 0, 1, 1], dtype=np.int8)  # A02 failed, B02 never ran
    error = np.array(["", "MemoryError on worker tcp://10.0.0.3", "", "", "", ""], dtype=object)
    blind = np.full((n_w, 3), 4.0)
    ds = synthetic_results(well_status=(("well",), status), well_error=(("well",), error),
                           defocus_blind_um=(("well", "z"), blind))
    wells = wells_table(ds)
    by_well = wells.drop_duplicates("well").set_index("well")
    assert by_well["status"].to_dict() == {"A01": "done", "A02": "failed", "B01": "done",
                                           "B02": "pending", "C05": "done", "H12": "done"}
    assert by_well.loc["A02", "error"].startswith("MemoryError")
    assert wells[wells.status != "done"][["defocus_um", "defocus_blind_um",
                                          "sharpness_gain_median"]].isna().all().all()
    assert (wells[wells.status == "done"]["defocus_blind_um"] == 4.0).all()
    fields = fields_table(ds)
    assert not fields[fields.status != "done"]["flagged"].any()
    assert fields[fields.status != "done"]["sharpness_gain"].isna().all()

    files = write_tables(ds, tmp_path, csv=True)
    assert set(files) == {"wells", "fields", "wells_csv", "fields_csv"}
    back = pd.read_parquet(files["wells"])
    assert back.attrs["complete"] is False and back.attrs["wells_done"] == 4
    assert back.attrs["wells_failed"] == 1 and back.attrs["columns"] == WELL_COLUMNS
    pd.testing.assert_frame_equal(back, wells, check_like=False)
    csv = pd.read_csv(files["fields_csv"], keep_default_na=False)
    assert list(csv.columns) == list(FIELD_COLUMNS) and set(csv["status"]) == {"done", "failed", "pending"}
    assert (tmp_path / "tables" / "fields.parquet") == files["fields"]


def test_write_tables_of_a_complete_run(results, tmp_path):
    path, _ = results
    files = write_tables(xr.open_zarr(path), tmp_path)
    assert set(files) == {"wells", "fields"}
    fields = pd.read_parquet(files["fields"])
    assert fields.attrs["complete"] is True and fields.attrs["source_plate"].endswith("tiny.zarr")
    assert fields["flagged"].dtype == bool and fields["column"].dtype == np.int64



def _boom(block):
    raise AssertionError("the tables read refocused pixels")


def test_tables_read_no_pixels(results):
    import dask.array as da

    from plate_refocus.results import open_results

    path, _ = results
    ds = open_results(path)
    pixels = ds["refocused"].data
    ds["refocused"] = ds["refocused"].copy(data=da.map_blocks(_boom, pixels, dtype=pixels.dtype))
    wells_table(ds)
