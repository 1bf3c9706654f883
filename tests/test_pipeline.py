"""The whole-plate pipeline on a real LocalCluster, against the pieces run directly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import dask
import numpy as np
import pytest
import xarray as xr
import zarr

from plate_refocus.errors import OutputExistsError, PlateLayoutError
from plate_refocus.optics import Optics
from plate_refocus.results import open_results

pytestmark = pytest.mark.timeout(900)


def test_dataset_layout_coordinates_and_attributes(results, tiny_plate):
    from plate_refocus import open_results
    from plate_refocus.plate import open_plate

    out, summary = results
    plate = open_plate(tiny_plate)
    ds = open_results(out)
    assert sorted(summary.wells_computed) == ["A01", "A02"] and summary.planes == 2 * 2 * 3
    assert dict(ds["refocused"].sizes) == {"well": 2, "field": 2, "z": 3, "y": 64, "x": 64}
    assert ds["refocused"].dtype == np.float32
    assert ds["otf_radial"].dims == ("well", "z", "freq")
    assert ds["psf"].dims == ("well", "z", "py", "px")
    assert ds["defocus_um"].dims == ("well", "z")
    for name in ("sharpness", "psnr", "ssim"):
        assert ds[name].dims == ("well", "field", "z", "stage")
    assert list(ds["well"].values) == ["A01", "A02"]
    assert list(ds["row"].values) == ["A", "A"] and list(ds["column"].values) == [1, 2]
    np.testing.assert_allclose(ds["z_um"].values, [0, 4, 10])
    np.testing.assert_allclose(ds["x"].values, plate["x"].values)
    assert ds["freq"].attrs["units"] == "cycles/um"
    for key in ("optics", "model_name", "model_sha256", "plate_refocus_version", "command_line",
                "created", "source_plate"):
        assert ds.attrs[key], key
    assert ds.attrs["model_name"] == "tiny-test"
    assert list(ds["well_status"].values) == [1, 1] and list(ds["well_error"].values) == ["", ""]
    assert ds["plane_flags"].dims == ("well", "field", "z") and int(ds["plane_flags"].sum()) == 0
    assert ds.attrs["format"] == "plate_refocus.results/2"


def test_results_open_lazily_with_plain_xarray(results):
    out, _ = results
    ds = xr.open_zarr(out)  # the small variables; the images are in the refocused plate
    assert ds["otf_radial"].chunks is not None and "refocused" not in ds
    ds = open_results(out)
    assert ds["refocused"].chunks is not None  # dask-backed, nothing read yet
    assert ds["refocused"].data.chunksize == (1, 1, 1, 64, 64)


def test_values_equal_the_pieces_run_directly(results, tiny_plate, tiny_model):
    from plate_refocus.metrics import sharpness
    from plate_refocus.plate import open_plate
    from plate_refocus.psf import field_spectra, recover_psf
    from plate_refocus.unet import load_model

    out, _ = results
    ds = open_results(out)
    plate = open_plate(tiny_plate).isel(c=0)
    model = load_model(tiny_model)
    offset = plate.attrs["camera"]["offset"]
    w, z = 1, 2
    raws = [np.asarray(plate.isel(well=w, field=f, z=z).values, dtype=np.float64) for f in range(2)]
    refs = [model.predict(r) for r in raws]
    # stored as uint16 (the default): rounded to the nearest count
    np.testing.assert_allclose(ds["refocused"].isel(well=w, z=z).values, np.stack(refs),
                               rtol=0, atol=0.5 + 1e-3)
    spectra = sum(field_spectra(r.astype(np.float64), g, reference_background=offset,
                                defocused_background=offset) for r, g in zip(refs, raws, strict=True))
    est = recover_psf(spectra, (64, 64), Optics.from_dict(plate.attrs["optics"]),
                      reference="in-focus", psf_size=33)
    np.testing.assert_allclose(ds["otf_radial"].isel(well=w, z=z).values, est.otf_radial,
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ds["psf"].isel(well=w, z=z).values, est.psf, rtol=1e-6, atol=1e-12)
    assert float(ds["defocus_um"].isel(well=w, z=z)) == pytest.approx(est.defocus_um, rel=1e-6)
    assert float(ds["sharpness"].isel(well=w, field=0, z=z, stage=0)) == pytest.approx(
        sharpness(raws[0]), rel=1e-9)


def test_physical_invariants_hold(results):
    ds = open_results(results[0])
    np.testing.assert_allclose(ds["otf_radial"].values[..., 0], 1.0, atol=1e-9)
    psf = ds["psf"].values
    np.testing.assert_allclose(psf.sum(axis=(-1, -2)), 1.0, atol=1e-9)
    assert psf.min() >= 0
    assert np.isfinite(ds["psnr"].values).all()


def test_existing_output_is_refused_without_resume_or_overwrite(results, tiny_plate, tiny_model,
                                                                client):
    from plate_refocus.pipeline import run_plate

    out, _ = results
    with pytest.raises(OutputExistsError, match="pass --resume to finish it or --overwrite"):
        run_plate(tiny_plate, out, client=client, model=tiny_model, method="unet",
                  reference="refocused")
    summary = run_plate(tiny_plate, out, client=client, model=tiny_model, method="unet",
                        reference="refocused", resume=True)
    assert summary.wells_computed == [] and sorted(summary.wells_skipped) == ["A01", "A02"]


def test_bad_channel_and_reference_are_explained(tiny_plate, tiny_model, client, tmp_path):
    from plate_refocus.pipeline import run_plate

    with pytest.raises(PlateLayoutError, match=r"channel 'dapi' is not in the plate; choose one of"):
        run_plate(tiny_plate, tmp_path / "r.zarr", client=client, model=tiny_model, channel="dapi")
    with pytest.raises(ValueError, match="reference must be one of"):
        run_plate(tiny_plate, tmp_path / "r.zarr", client=client, model=tiny_model,
                  reference="object")
    assert not (tmp_path / "r.zarr").exists()


def test_building_well_graphs_computes_nothing_and_stays_small(tiny_plate, tiny_model, tmp_path):
    import cloudpickle

    from plate_refocus.pipeline import plan_run, plate_graph_size, well_graph

    def refuse(*args, **kwargs):
        raise AssertionError("building the graph computed something")

    plan = plan_run(tiny_plate, tmp_path / "unused.zarr", model=tiny_model)
    assert plan.job.settings.network_limit is None  # the tiny model measured none: CONSISTENCY_LIMIT
    with dask.config.set(scheduler=refuse):
        graph = dict(well_graph(plan, 0).__dask_graph__())
        total, largest, tasks = plate_graph_size(plan)
    # 3 depths: 3 depth tasks (U-Net on both fields, PSF, quality), 1 writer per well.
    assert len(graph) == 4 and tasks == 8
    # The model travels as a path and pixels are read by the tasks: nothing heavy is pickled.
    payload = cloudpickle.dumps(graph)
    assert b"keras.src" not in payload and b"tensorflow" not in payload
    assert largest == len(payload) < 20_000 and total < 2 * 20_000
    assert not (tmp_path / "unused.zarr").exists()


def test_dashboard_answers_while_running(tiny_plate, tiny_model, tmp_path):
    from plate_refocus.cluster import start_client
    from plate_refocus.pipeline import run_plate

    statuses = []
    with start_client("local", workers=1, dashboard_address=":0") as client:
        link = client.dashboard_link

        def check(well, done, total):
            with urllib.request.urlopen(link, timeout=10) as response:
                statuses.append(response.status)

        run_plate(tiny_plate, tmp_path / "r.zarr", client=client, model=tiny_model,
                  on_well_done=check)
    assert statuses == [200, 200]


def _run_cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "plate_refocus.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.slow
def test_killed_run_resumes_only_unfinished_wells(tiny_model, client, tmp_path):
    from plate_refocus.simulate import simulate_plate

    plate = simulate_plate(tmp_path / "plate.zarr", rows=2, columns=4, fields=2,
                           depths_um=(0, 4, 10), size=(96, 96), seed=3, client=client,
                           channels=("nuclei",))
    out = tmp_path / "results.zarr"
    base = ["run", str(plate), str(out), "--model", str(tiny_model), "--workers", "1"]
    proc = _run_cli(*base, start_new_session=True)
    done = np.zeros(8, bool)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and (out / "well_status").exists():
            try:
                done = np.asarray(zarr.open_group(str(out), mode="r")["well_status"][:]) == 1
            except Exception:  # the store may be mid-creation
                pass
            if done.any():
                break
        try:  # wait on the process itself, at most 50 ms per look at the store
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    done = np.asarray(zarr.open_group(str(out), mode="r")["well_status"][:]) == 1
    assert 0 < done.sum() < 8, f"could not stop the run part way (done: {done})"
    resumed = _run_cli(*base, "--resume")
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert f"{8 - done.sum()} wells computed, {done.sum()} already done (skipped)" in stdout

    fresh = tmp_path / "fresh.zarr"
    again = _run_cli("run", str(plate), str(fresh), "--model", str(tiny_model), "--workers", "1")
    again.communicate(timeout=600)
    assert again.returncode == 0
    a, b = open_results(out), open_results(fresh)
    for name in ("refocused", "otf_radial", "psf", "defocus_um", "sharpness", "psnr", "ssim"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-6, atol=1e-9,
                                   err_msg=name)


def test_focal_plane_reference_uses_the_stacks_own_in_focus_plane(tiny_plate, tiny_model, client,
                                                                   tmp_path):
    from plate_refocus.pipeline import run_plate
    from plate_refocus.plate import open_plate

    assert open_plate(tiny_plate).attrs["focal_plane"] == 0
    out = tmp_path / "r.zarr"
    run_plate(tiny_plate, out, client=client, model=tiny_model, reference="focal-plane",
              channel="nuclei")
    ds = open_results(out)
    assert ds.attrs["reference"] == "focal-plane"
    # At the focal plane the reference is the image itself: the relative OTF is 1 in the passband.
    otf0 = ds["otf_radial"].isel(z=0).values
    inside = ds["freq"].values < 0.5 * Optics().cutoff
    np.testing.assert_allclose(otf0[:, inside], 1.0, atol=1e-6)
    assert np.all(ds["defocus_um"].isel(z=0).values < 0.5)


def test_missing_planes_of_an_ingested_plate_are_nan_and_left_out(tiny_model, client, tmp_path):
    import warnings

    from plate_refocus.ingest import ingest
    from plate_refocus.pipeline import run_plate
    from tests.test_ingest import write_bbbc006_like

    write_bbbc006_like(tmp_path / "src", wells=("a01",), sites=(1, 2), channels=(1,),
                       planes=(0, 1, 2), shape=(48, 64), skip={("a01", 2, 1, 1)},
                       structured=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plate = ingest(tmp_path / "src", tmp_path / "plate.zarr", focal_plane=0, client=client)
    out = tmp_path / "r.zarr"
    run_plate(plate, out, client=client, model=tiny_model)
    ds = open_results(out)
    refocused = ds["refocused"].isel(well=0).values  # (field, z, y, x)
    assert np.isnan(refocused[1, 1]).all()
    assert np.isfinite(np.delete(refocused.reshape(6, -1), 1 * 3 + 1, axis=0)).all()
    assert np.isnan(ds["sharpness"].isel(well=0, field=1, z=1).values).all()
    assert np.isfinite(ds["otf_radial"].values).all()  # the other field still gives a PSF
    flags = ds["plane_flags"].isel(well=0).values
    # bit 16 (an RL restoration that did not explain its plane) may be set: the planes of this
    # fake stack are unrelated blobs, not defocus; no other plane is masked or left out
    assert flags[1, 1] == 1 and (np.delete(flags.ravel(), 1 * 3 + 1) & ~np.uint8(16)).tolist() == [0] * 5
