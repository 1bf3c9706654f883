"""Dask workers as real SLURM batch jobs (dask-jobqueue), against a running SLURM.

Needs `sbatch`/`squeue` and an idle node: as root, `cluster/ci/start-slurm.sh` starts a
single-node SLURM (CI runs it before the tests). Without it these tests skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import as_completed

from plate_refocus import cluster


def _slurm_state() -> str | None:
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


_WHY_NOT = _slurm_state()
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


def _wait_for(condition, timeout: float, what: str):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _slurm_job_id(block: np.ndarray) -> np.ndarray:
    """The SLURM job id of the worker that ran this task, with a little work to spread tasks."""
    time.sleep(0.3)
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


def test_two_worker_jobs_compute_and_are_gone_after(slurm_options, job_name):
    with cluster.start_client("slurm", **slurm_options) as client:
        assert client.scheduler.address.startswith("tls://")
        client.wait_for_workers(2, timeout=60)
        jobs = _squeue(job_name)
        assert len(jobs) == 2 and set(jobs.values()) == {"RUNNING"}, jobs

        ran_on = da.zeros((16, 2), chunks=(1, 2), dtype=int).map_blocks(_slurm_job_id, dtype=int)
        total = da.ones((16, 2), chunks=(1, 2)).sum()
        ids, total = client.compute([ran_on[:, 0], total], sync=True)
        assert total == 32
        # Every task ran inside one of our two batch jobs, and both jobs did work.
        assert set(map(str, ids)) == set(jobs)

    _wait_for(lambda: not _squeue(job_name), 30, f"jobs {sorted(jobs)} to leave squeue")


def test_computation_survives_a_cancelled_worker_job(slurm_options, job_name):
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
