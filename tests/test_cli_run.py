"""The `run`, `demo` and `info` commands as a user types them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from plate_refocus.results import open_results


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plate_refocus.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_info_without_a_plate_describes_the_installation_without_keras():
    done = cli("info", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["plate_refocus"] and info["packages"]["dask"] and info["gpu"] in (True, False)
    assert "present" in info["default_model"]
    code = ("import sys, plate_refocus.cli as c; c.main(['info']); "
            "sys.exit(3 if 'keras' in sys.modules or 'tensorflow' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    text = cli("info").stdout  # each shipped refiner says what it learnt from and gains on unseen cells
    assert text.count("refiner of Richardson-Lucy") == len(info["refiners"]) >= 1
    assert text.count("trained on") >= 1 + len(info["refiners"]) and "over RL on held-out families" in text


def test_info_says_what_a_fine_tuned_refiner_learnt_from():
    from plate_refocus.cli.plates import _refiner_trained_on

    line = _refiner_trained_on({"training": {"plate": "stacks.zarr", "target": "focal-plane",
                                             "init": {"name": "plate-refocus-rl-refiner-report"}}})
    assert line == "fine-tuned on stacks.zarr (target focal-plane) from plate-refocus-rl-refiner-report"
    assert _refiner_trained_on({"training": {}}) == "training not recorded"


def test_run_dry_run_prints_the_plan_and_writes_nothing(tiny_plate, tmp_path):
    done = cli("run", str(tiny_plate), str(tmp_path / "r.zarr"), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "plan: 2 wells x 2 fields x 3 planes" in done.stdout
    assert not (tmp_path / "r.zarr").exists()


@pytest.mark.parametrize("make_args, message", [
    (lambda plate, tmp: ["run", str(tmp / "nope.zarr"), str(tmp / "r.zarr")], "does not exist"),
    (lambda plate, tmp: ["run", str(plate), str(tmp / "r.zarr"), "--model", str(tmp / "m.keras"),
                         "--method", "unet"], "does not exist"),
    (lambda plate, tmp: ["run", str(plate), str(plate)], "is the input"),
])
def test_run_bad_input_is_one_line_without_traceback(tiny_plate, tmp_path, make_args, message):
    done = cli(*make_args(tiny_plate, tmp_path), "--workers", "1")
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if "error:" in line]) == 1


def test_run_refuses_a_model_trained_for_other_optics_before_any_work(tiny_plate, tiny_model, tmp_path):
    out = tmp_path / "r.zarr"
    done = cli("run", str(tiny_plate), str(out), "--model", str(tiny_model), "--method", "unet",
               "--na", "0.45", "--workers", "1")
    assert done.returncode == 2, done.stderr
    assert "trained for optics {'na': 0.25}" in done.stderr and "--method rl" in done.stderr
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if "error:" in line]) == 1
    assert not out.exists()
    # 2 % apart: the run goes ahead and says so
    near = cli("run", str(tiny_plate), str(out), "--model", str(tiny_model), "--method", "unet",
               "--pixel-size", "0.306", "--dry-run")
    assert near.returncode == 0, near.stderr
    assert "trained for optics {'pixel_size_um': 0.3}" in near.stderr


def test_run_without_a_model_takes_the_shipped_one_for_the_plates_objective(tiny_plate, tmp_path):
    from plate_refocus.unet import read_model_info, shipped_model_paths
    from plate_refocus.unet.refiner import read_refiner_info, shipped_refiner_path

    shipped = {p: read_model_info(p) for p in shipped_model_paths()}
    if len(shipped) < 2:
        pytest.skip("only one objective has a shipped model in this checkout")
    out = tmp_path / "r.zarr"
    for path, info in shipped.items():
        o = info.optics
        done = cli("run", str(tiny_plate), str(out), "--method", "hybrid", "--na", str(o.na),
                   "--wavelength", str(o.wavelength_um), "--pixel-size", str(o.pixel_size_um), "--dry-run")
        assert done.returncode == 0, done.stderr
        assert f"model: {info.name} ({path})" in done.stdout
        if info.consistency_limit is not None:  # the limit measured for the model reaches the run
            assert f"hybrid keeps its output at consistency <= {info.consistency_limit:g}" in done.stdout
        refiner = shipped_refiner_path(o)  # and the RL refiner for the optics, or that there is none
        assert (f"refiner: {read_refiner_info(refiner).name} ({refiner})" if refiner
                else "refiner: none trained for these optics") in done.stdout
    # an objective no shipped model was trained for: refused before any work, saying what to do
    done = cli("run", str(tiny_plate), str(out), "--method", "unet", "--na", "0.8", "--workers", "1")
    assert done.returncode == 2 and "trained for optics" in done.stderr and "--method rl" in done.stderr
    # ... and naming the objectives the shipped models do cover, in the same one line
    error = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and "the shipped models were trained for:" in error[0]
    for path, info in shipped.items():
        assert f"NA {info.optics.na:g}, {info.optics.wavelength_um:g} um" in error[0] and path.name in error[0]
    assert not out.exists()


def test_run_prints_dashboard_progress_and_summary(tiny_plate, tiny_model, tmp_path):
    out = tmp_path / "r.zarr"
    done = cli("run", str(tiny_plate), str(out), "--model", str(tiny_model), "--workers", "1",
               "--method", "unet")
    assert done.returncode == 0, done.stderr
    assert "dashboard: http://" in done.stdout
    assert "2/2 wells" in done.stderr
    assert "done: 2 wells computed of 2; 4 fields, 12 planes" in done.stdout
    assert f"pr.open_results({str(out)!r})" in done.stdout
    assert "2/2 wells" in done.stderr and "done)" in done.stderr  # the progress line's ETA slot
    assert open_results(out)["refocused"].sizes["well"] == 2
    log = (out / "run.log").read_text()
    assert "well A01 done" in log and "well A02 done" in log and "finished: 2 wells computed" in log
    again = cli("run", str(tiny_plate), str(out), "--model", str(tiny_model), "--workers", "1")
    assert again.returncode == 2 and "pass --resume to finish it or --overwrite" in again.stderr
    # info describes a results store instead of refusing it
    info = cli("info", str(out))
    assert info.returncode == 0, info.stderr
    assert "2 of 2 done" in info.stdout and "complete     yes" in info.stdout
    assert "tiny-test" in info.stdout and "method       unet" in info.stdout
    # -v/-q are accepted after the command as well as before it; -q drops the progress line
    quiet = cli("run", str(tiny_plate), str(out), "--model", str(tiny_model), "--overwrite",
                "--workers", "1", "--method", "unet", "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert "wells (last" not in quiet.stderr and "done: 2 wells computed of 2" in quiet.stdout
    verbose = cli("-q", "info", str(out), "-v")
    assert verbose.returncode == 0
