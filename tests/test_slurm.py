"""Dask workers as real SLURM batch jobs (dask-jobqueue), against a running SLURM.

Needs `sbatch`/`squeue` and an idle node: as root, `cluster/ci/start-slurm.sh` starts a
single-node SLURM (CI runs it before the tests). Without it these tests skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from distributed import as_completed

from plate_refocus import cluster
from plate_refocus.results import open_results


def slurm_state() -> str | None:
    """Why SLURM cannot run jobs here, or None when it can."""
    for command in ("sbatch", "squeue", "sinfo", "scancel"):
        if shutil.which(command) is None:
            return f"{command} not on PATH"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"sinfo failed: {error}"
    states = set(out.stdout.split())
    if out.returncode != 0 or not states & {"idle", "mixed", "allocated", "completing"}:
        return f"no usable SLURM node (sinfo: {(out.stdout + out.stderr).strip()!r})"
    return None


_WHY_NOT = slurm_state()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        _WHY_NOT is not None,
        reason=f"SLURM is not running ({_WHY_NOT}); as root: cluster/ci/start-slurm.sh",
    ),
]


def _squeue(name: str) -> dict[str, str]:
    """Job id -> state of this user's jobs called ``name``."""
    out = subprocess.run(["squeue", "-h", "--name", name, "-o", "%i %T"], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def _wait_for(condition, timeout: float, what: str, every: float = 0.5):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        threading.Event().wait(every)  # the pause between looks; the deadline bounds the loop
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _slurm_job_id(block: np.ndarray) -> np.ndarray:
    """The SLURM job id of the worker that ran this task, after some real work (a few tenths of
    a second of SVDs) so that the tasks spread over both workers and a cancel lands mid-run."""
    matrix = np.random.default_rng(0).random((200, 200))
    for _ in range(40):
        np.linalg.svd(matrix)
    return np.full(block.shape, int(os.environ["SLURM_JOB_ID"]))


@pytest.fixture
def job_name():
    return f"prtest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def slurm_options(tmp_path, job_name):
    """Two one-core worker jobs, TLS on, on the loopback interface of this one node."""
    return {
        "jobs": 2, "cores": 1, "memory": "1GB", "walltime": "00:10:00", "interface": "lo",
        "dashboard_address": ":0", "job_name": job_name,
        "log_directory": str(tmp_path / "logs"), "shared_temp_directory": str(tmp_path),
        # The workers unpickle this module's task functions by name.
        "job_script_prologue": [f"export PYTHONPATH={Path(__file__).resolve().parent}"],
    }


def test_cancelled_worker_job_is_replaced_and_the_computation_completes(slurm_options,
                                                                          job_name):
    # Notice lost workers quickly (the default waits 15 s before replacing a job).
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "2s"}):
        with cluster.start_client("slurm", **slurm_options) as client:
            client.wait_for_workers(2, timeout=60)
            first_jobs = set(_squeue(job_name))

            n = 40
            blocks = da.zeros((n, 2), chunks=(1, 2), dtype=int).map_blocks(_slurm_job_id,
                                                                            dtype=int)
            futures = client.compute(blocks.to_delayed().ravel().tolist())
            done = as_completed(futures)
            for _ in range(4):  # both workers are busy; cancel one mid-run
                next(done)
            victim = sorted(first_jobs)[0]
            subprocess.run(["scancel", victim], check=True, timeout=10)

            results = np.concatenate([f.result(timeout=80)[:, 0] for f in futures])
            assert results.shape == (n,)
            # The cancelled job is replaced by a fresh one, so the cluster keeps its size.
            replaced = _wait_for(lambda: set(_squeue(job_name)) - first_jobs, 45,
                                 "a replacement worker job")
            assert victim not in _squeue(job_name)
            assert len(replaced) == 1
            client.wait_for_workers(2, timeout=45)
            # Every result came from one of our jobs (results lost with the cancelled job
            # were recomputed elsewhere).
            assert set(map(str, results)) <= first_jobs | replaced

    _wait_for(lambda: not _squeue(job_name), 30, "the worker jobs to leave squeue")


# --- plate-refocus run --cluster slurm, end to end ---------------------------------------------

_VARIABLES = ("refocused", "otf_radial", "psf", "defocus_um", "sharpness", "psnr", "ssim")




@pytest.fixture(scope="module")
def plate_and_local_results(tmp_path_factory, client, tiny_model):
    """A 24-well plate (2 fields, 3 depths, 64 px) and its results from a local cluster.

    Large enough that a run lasts a few seconds after its workers start, so a worker job can
    be cancelled while wells remain, even on an idle machine.
    """
    from plate_refocus.pipeline import run_plate
    from plate_refocus.simulate import simulate_plate

    folder = tmp_path_factory.mktemp("slurm-e2e")
    plate = simulate_plate(folder / "plate.zarr", rows=3, columns=8, fields=2,
                           depths_um=(0, 4, 10), size=(64, 64), seed=5, channels=("nuclei",),
                           client=client)
    local = folder / "local.zarr"
    run_plate(plate, local, client=client, model=tiny_model, command_line="local")
    return plate, tiny_model, local


def _run_on_slurm(plate, model, out, tmp_path, job_name) -> tuple[subprocess.Popen, Path]:
    """Start `plate-refocus run --cluster slurm` with two one-core worker jobs."""
    env = dict(os.environ,
               DASK_JOBQUEUE__SLURM__NAME=job_name,
               DASK_JOBQUEUE__SLURM__LOG_DIRECTORY=str(tmp_path / "logs"),
               DASK_JOBQUEUE__SLURM__SHARED_TEMP_DIRECTORY=str(tmp_path),
               DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT="2s")
    log = tmp_path / "run.log"
    with open(log, "w") as stream:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plate_refocus.cli", "run", str(plate), str(out),
             "--model", str(model), "--cluster", "slurm", "--jobs", "2", "--cores", "1",
             "--memory", "3GB", "--walltime", "00:10:00", "--interface", "lo"],
            stdout=stream, stderr=subprocess.STDOUT, env=env, text=True,
        )
    return proc, log


def _assert_same_results(out: Path, local: Path) -> None:
    a, b = open_results(out), open_results(local)
    assert a.sizes == b.sizes and a.attrs["model_name"] == b.attrs["model_name"]
    for name in _VARIABLES:
        # The defocus fit is an optimiser with its own tolerance.
        atol = 1e-6 if name == "defocus_um" else 1e-9
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-6, atol=atol,
                                   err_msg=name)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 150) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    return text


def test_run_on_slurm_equals_a_local_run(plate_and_local_results, tmp_path, job_name):
    plate, model, local = plate_and_local_results
    out = tmp_path / "slurm.zarr"
    proc, log = _run_on_slurm(plate, model, out, tmp_path, job_name)
    seen: dict[str, str] = {}
    while proc.poll() is None:  # watch the worker jobs while the run goes
        jobs = _squeue(job_name)
        seen.update(jobs)
        if sum(state == "RUNNING" for state in jobs.values()) == 2:
            break
        try:  # wait on the run itself between looks at squeue
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    text = _finish(proc, log)
    assert len(seen) == 2, f"expected two worker jobs in squeue, saw {seen}"
    assert "dashboard: http://" in text
    assert "done: 24 wells computed of 24" in text
    _assert_same_results(out, local)
    _wait_for(lambda: not _squeue(job_name), 30, f"jobs {sorted(seen)} to leave squeue")


def test_run_on_slurm_survives_a_cancelled_worker_job(plate_and_local_results, tmp_path,
                                                      job_name):
    plate, model, local = plate_and_local_results
    out = tmp_path / "slurm.zarr"
    proc, log = _run_on_slurm(plate, model, out, tmp_path, job_name)

    def first_well_done():
        if proc.poll() is not None:
            return True  # finished (or failed) before we could cancel: _finish tells
        try:
            done = zarr.open_group(str(out), mode="r")["well_status"][:]
        except Exception:  # not created yet, or mid-creation
            return False
        return bool((np.asarray(done) == 1).any())

    _wait_for(first_well_done, 120, "the first well to be written", every=0.05)
    jobs = _squeue(job_name)
    assert proc.poll() is None and len(jobs) == 2, "the run ended before a job could be cancelled"
    victim = sorted(jobs)[0]
    subprocess.run(["scancel", victim], check=True, timeout=10)
    done_at_cancel = int((np.asarray(zarr.open_group(str(out), mode="r")["well_status"][:]) == 1).sum())

    text = _finish(proc, log)
    assert done_at_cancel < 24, "all wells were done before the cancel: nothing was tested"
    assert "done: 24 wells computed of 24" in text
    _assert_same_results(out, local)
    _wait_for(lambda: not _squeue(job_name), 30, "the worker jobs to leave squeue")
