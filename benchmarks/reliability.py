"""Faults and bad inputs, tried as a user would: what survives, and what each refusal says.

Prints two markdown tables for the README:

1. faults injected into real runs of ``plate-refocus run`` on a small simulated plate (a local
   cluster of 2 worker processes): SIGKILL of a worker mid-run; SIGKILL of the whole run at
   several moments (planning, store creation, mid-run, end) followed by ``--resume``; a
   corrupt chunk (run, restore the file, ``--resume``); two runs into one OUT at once
   (``--resume`` both); ``scancel`` of a SLURM worker job of ``run --cluster slurm`` when a
   SLURM is running (as root: ``bash cluster/ci/start-slurm.sh``). For each:
   runs that completed, and wells lost (wells whose final results differ from an undisturbed
   run's, or are missing);
2. every bad input tried (>= 25), with the exit status and the one line it printed.

Usage::

    python benchmarks/reliability.py [--kills 6] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "plate_refocus.cli"]


def run(*args: str, timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def results_equal(a: Path, b: Path) -> tuple[int, int]:
    """(wells equal, wells in all) of two results stores."""
    from plate_refocus.results import open_results

    x, y = open_results(a), open_results(b)
    equal = 0
    for w in range(y.sizes["well"]):
        same = int(x["well_status"][w]) == 1
        for name in ("refocused", "otf_radial", "psf", "defocus_um", "sharpness"):
            u, v = x[name].isel(well=w).values, y[name].isel(well=w).values
            # The defocus fit is an optimiser with its own tolerance.
            atol = 1e-6 if name == "defocus_um" else 1e-9
            same = same and np.allclose(u, v, rtol=1e-6, atol=atol, equal_nan=True)
        equal += bool(same)
    return equal, y.sizes["well"]


def checksum(folder: Path) -> str:
    """SHA-256 over every file's path and bytes: any change to the input plate shows."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def worker_pids(parent: int) -> list[int]:
    import psutil

    try:
        children = psutil.Process(parent).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c.pid for c in children if "distributed" in " ".join(c.cmdline()) or
            "multiprocessing" in " ".join(c.cmdline())]


def wells_done(out: Path) -> int:
    """Wells a results store records as done (raises while the store is not created yet)."""
    import zarr

    return int((np.asarray(zarr.open_group(str(out), mode="r")["well_status"][:]) == 1).sum())


def wait_for_done_well(out: Path, proc: subprocess.Popen, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if wells_done(out):
                return True
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.05)
    return False


def faults(tmp: Path, plate: Path, reference: Path, kills: int) -> list[tuple[str, int, int, int, str]]:
    """Rows: (fault, tries, runs completed, wells lost, note)."""
    base = ["--workers", "2"]
    rows = []

    # SIGKILL of one worker process mid-run: the run itself must finish, no --resume needed.
    completed = lost = 0
    for i in range(2):
        out = tmp / f"worker-kill-{i}.zarr"
        proc = start("run", str(plate), str(out), *base)
        if wait_for_done_well(out, proc):
            pids = worker_pids(proc.pid)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
        proc.communicate(timeout=900)
        if proc.returncode == 0:
            completed += 1
            equal, n = results_equal(out, reference)
            lost += n - equal
    rows.append(("SIGKILL of a worker process mid-run", 2, completed, lost, "the run finishes by itself"))

    # SIGKILL of the whole run at several moments, then --resume.
    completed = lost = 0
    delays = np.linspace(0.5, 25.0, kills)
    for i, delay in enumerate(delays):
        out = tmp / f"run-kill-{i}.zarr"
        proc = start("run", str(plate), str(out), *base)
        time.sleep(float(delay))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        resumed = run("run", str(plate), str(out), *base, "--resume")
        if resumed.returncode == 0:
            completed += 1
            equal, n = results_equal(out, reference)
            lost += n - equal
    rows.append((f"SIGKILL of the run at {delays[0]:.1f}-{delays[-1]:.1f} s (planning, store "
                 "creation, mid-run, end), then --resume", kills, completed, lost, ""))

    # A corrupt chunk: the well fails with the chunk named, the rest finish; restore, --resume.
    damaged = tmp / "damaged.zarr"
    shutil.copytree(plate, damaged)
    chunk = next(damaged.glob("A/2/0/0/c/0/1/0/0"))
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00garbage" * 32)
    out = tmp / "corrupt.zarr"
    first = run("run", str(damaged), str(out), *base)
    chunk.write_bytes(good)
    second = run("run", str(damaged), str(out), *base, "--resume")
    equal, n = results_equal(out, reference)
    note = next((line for line in first.stdout.splitlines() if line.startswith("failed:")), "")
    rows.append(("corrupt chunk in one field (exit 1, well named), file restored, --resume", 1,
                 int(first.returncode == 1 and second.returncode == 0), n - equal, note[:90]))

    # Two runs into one OUT at the same time.
    out = tmp / "concurrent.zarr"
    a = start("run", str(plate), str(out), *base, "--resume")
    b = start("run", str(plate), str(out), *base, "--resume")
    a.communicate(timeout=900)
    b.communicate(timeout=900)
    final = run("run", str(plate), str(out), *base, "--resume")
    equal, n = results_equal(out, reference)
    rows.append(("two runs into one OUT at once (--resume both), then --resume", 1,
                 int(final.returncode == 0), n - equal,
                 f"exit codes {a.returncode}, {b.returncode}"))

    rows.append(scancel_row(tmp, plate, reference))
    return rows


def scancel_row(tmp: Path, plate: Path, reference: Path) -> tuple[str, int, int, int, str]:
    """`run --cluster slurm` with two worker jobs; scancel one once the first well is written."""
    name = "scancel of a SLURM worker job mid-run (2 one-core jobs), no --resume"
    from tests.test_slurm import slurm_state

    why = slurm_state()
    if why:
        return (name, 0, 0, 0, f"not tried: {why} (as root: bash cluster/ci/start-slurm.sh); "
                               "CI runs tests/test_slurm.py against a real SLURM")
    job = f"reliab-{os.getpid()}"
    env = dict(os.environ, DASK_JOBQUEUE__SLURM__NAME=job,
               DASK_JOBQUEUE__SLURM__LOG_DIRECTORY=str(tmp / "slurm-logs"),
               DASK_JOBQUEUE__SLURM__SHARED_TEMP_DIRECTORY=str(tmp),
               DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT="2s")
    out = tmp / "scancel.zarr"
    proc = subprocess.Popen([*CLI, "run", str(plate), str(out), "--cluster", "slurm", "--jobs", "2",
                             "--cores", "1", "--memory", "3GB", "--walltime", "00:10:00",
                             "--interface", "lo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    note = "the run ended before a job could be cancelled"
    if wait_for_done_well(out, proc, timeout=300):
        jobs = subprocess.run(["squeue", "-h", "--name", job, "-o", "%i"], capture_output=True,
                              text=True, timeout=10).stdout.split()
        if jobs:
            victim = sorted(jobs)[0]
            subprocess.run(["scancel", victim], timeout=10)
            note = f"job {victim} cancelled with {wells_done(out)} wells written; the keeper replaced it"
    try:
        proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    subprocess.run(["scancel", "--name", job], timeout=10)
    if proc.returncode != 0:
        return (name, 1, 0, 0, f"{note}; the run exited {proc.returncode}")
    equal, n = results_equal(out, reference)
    return (name, 1, 1, n - equal, note)


def bad_inputs(tmp: Path, plate: Path, results: Path) -> list[tuple[str, int, str]]:
    """Rows: (case, exit status, the error line)."""
    from tests.test_bad_input import edit_field_metadata, edit_plate_metadata, small_plate

    cases: list[tuple[str, list[str]]] = []
    folder = tmp / "D"
    folder.mkdir()
    shutil.copytree(plate, folder / "P.zarr")
    user = tmp / "analysis"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    afile = tmp / "afile"
    afile.write_text("x")
    small = small_plate(tmp / "small.zarr", shape=(8, 64),
                        images=np.ones((2, 1, 1, 2, 8, 64), np.uint16))
    noz = small_plate(tmp / "noz.zarr")
    edit_field_metadata(noz, lambda ms: ms["datasets"][0]["coordinateTransformations"][0].update(
        scale=[1.0, 0.3, 0.3]))
    zero = small_plate(tmp / "zero.zarr")
    edit_field_metadata(zero, lambda ms: ms["datasets"][0]["coordinateTransformations"][0].update(
        scale=[1.0, 0.0, 0.3, 0.3]))
    edit_plate_metadata(zero, lambda attrs: attrs["plate_refocus"].pop("z_um"))
    nofocus = small_plate(tmp / "nofocus.zarr", focal_plane=None)
    bad_json = small_plate(tmp / "badjson.zarr")
    edit_plate_metadata(bad_json, lambda attrs: attrs["ome"]["plate"].update(wells=[{"path": 7}]))
    from plate_refocus.pipeline import plan_run
    from plate_refocus.results import create_results_store, results_template

    pending = tmp / "pending.zarr"  # the layout of a run that has not finished a well yet
    plan = plan_run(plate, pending)
    create_results_store(pending, results_template(plan.layout, attrs=plan.attrs))
    notmodel = tmp / "notes.keras"
    notmodel.write_text("x")
    r = str(tmp / "r.zarr")
    cases += [
        ("OUT is a folder holding the input plate, --overwrite", ["run", str(folder / "P.zarr"), str(folder), "--overwrite"]),
        ("OUT is a user's folder, --overwrite", ["run", str(plate), str(user), "--overwrite"]),
        ("OUT inside the input plate", ["run", str(plate), str(plate / "out.zarr")]),
        ("OUT is the input plate", ["run", str(plate), str(plate)]),
        ("OUT under a regular file", ["run", str(plate), str(afile / "out.zarr")]),
        ("OUT in a folder that cannot be written", ["run", str(plate), "/sys/out.zarr"]),
        ("OUT exists, no --resume/--overwrite", ["run", str(plate), str(results)]),
        ("--resume with another channel and reference", ["run", str(plate), str(results), "--resume", "--channel", "actin", "--reference", "focal-plane"]),
        ("--resume of a folder that is not a results store", ["run", str(plate), str(user), "--resume"]),
        ("plate path does not exist", ["run", str(tmp / "nope.zarr"), r]),
        ("plate is a folder without zarr metadata", ["run", str(user), r]),
        ("plate is a row group, not a plate", ["run", str(plate / "A"), r]),
        ("plate is a single zarr array", ["run", str(plate / "A" / "1" / "0" / "0"), r]),
        ("malformed plate metadata (a well path that is a number)", ["run", str(bad_json), r]),
        ("images of 8 x 64 px", ["run", str(small), r]),
        ("multiscales scale without a z entry (run)", ["run", str(noz), r]),
        ("multiscales scale without a z entry (info)", ["info", str(noz)]),
        ("z scale 0 and no z positions", ["run", str(zero), r]),
        ("--reference focal-plane without a focal plane", ["run", str(nofocus), r, "--reference", "focal-plane"]),
        ("channel name not in the plate", ["run", str(plate), r, "--channel", "dapi"]),
        ("channel index out of range", ["run", str(plate), r, "--channel", "7"]),
        ("unknown well", ["run", str(plate), r, "--wells", "H13"]),
        ("model file does not exist", ["run", str(plate), r, "--model", str(tmp / "m.keras")]),
        ("model file is not a Keras archive", ["run", str(plate), r, "--model", str(notmodel)]),
        ("simulate --overwrite onto a plate it did not simulate", ["simulate", str(nofocus), "--overwrite"]),
        ("simulate --overwrite onto a user's folder", ["simulate", str(user), "--overwrite"]),
        ("train --out onto a file that is not our model, --overwrite", ["train", str(plate), "--out", str(notmodel), "--overwrite"]),
        ("ingest from a folder that does not exist", ["ingest", str(tmp / "none"), str(tmp / "i.zarr")]),
        ("ingest into its own source folder", ["ingest", str(user), str(user / "p.zarr")]),
        ("report of a plate (not a results store)", ["report", str(plate)]),
        ("evaluate a plate without ground truth", ["evaluate", str(nofocus)]),
        ("report into a folder holding other files", ["report", str(results), "--out", str(user)]),
        ("report of a run still in progress (no well done yet)", ["report", str(pending)]),
    ]
    rows = []
    for name, argv in cases:
        done = run(*argv)
        lines = [line for line in done.stderr.splitlines() if "error:" in line]
        shown = lines[0].split("error: ", 1)[-1] if len(lines) == 1 else f"{len(lines)} error lines"
        if "Traceback" in done.stderr:
            shown = "TRACEBACK: " + shown
        rows.append((name, done.returncode, shown))
    assert (user / "notes.txt").read_text() == "mine"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=6, help="kills of the whole run at spread moments")
    parser.add_argument("--keep", default=None, help="keep the work folder here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="reliability_"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        plate = tmp / "plate.zarr"
        done = run("simulate", str(plate), "--rows", "2", "--columns", "4", "--fields", "2",
                   "--depths", "0,4,10,20", "--size", "96", "--seed", "5", "--channels", "nuclei,actin")
        assert done.returncode == 0, done.stderr
        before = checksum(plate)
        reference = tmp / "reference.zarr"
        done = run("run", str(plate), str(reference), "--workers", "2")
        assert done.returncode == 0, done.stderr
        fault_rows = faults(tmp, plate, reference, args.kills)
        bad_rows = bad_inputs(tmp, plate, reference)
        after = checksum(plate)
        print("| fault injected | tries | runs completed | wells lost | note |")
        print("| --- | ---: | ---: | ---: | --- |")
        for name, tries, completed, lost, note in fault_rows:
            print(f"| {name} | {tries} | {completed} | {lost} | {note} |")
        print()
        print(f"input plate unchanged through all of it (SHA-256 over every file): {before == after}")
        print()
        print("| bad input | exit | what it says |")
        print("| --- | ---: | --- |")
        for name, code, line in bad_rows:
            print(f"| {name} | {code} | {line.replace('|', '/')} |")
        print()
        print(f"{len(bad_rows)} bad inputs, {sum(code == 2 for _, code, _ in bad_rows)} refused "
              f"with exit 2, {sum('TRACEBACK' in line for _, _, line in bad_rows)} tracebacks")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
