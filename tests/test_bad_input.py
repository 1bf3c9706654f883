"""Bad input is refused in one line, before anything starts, and nothing is lost.

Every case runs the command as a user types it (``plate_refocus.cli.main``
in this process, or a subprocess where the exit path matters) and checks:
exit status 2, no traceback, one error line naming the problem and the fix,
the input plate byte for byte unchanged, no cluster started, and nothing left
at OUT that ``--resume`` could mistake for finished work.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plate_refocus.cli import main
from plate_refocus.errors import PlateRefocusError
from plate_refocus.optics import Optics

pytestmark = pytest.mark.timeout(900)


def checksum(path: Path) -> str:
    """Names and bytes of every file under ``path``."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def refuse(capsys, *argv: str, match: str) -> str:
    """Run the CLI, expect exit 2 with one error line matching ``match``; return that line."""
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 2, (code, captured.out, captured.err)
    errors = [line for line in captured.err.splitlines() if ": error: " in line]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert "dashboard:" not in captured.out, "a cluster started before the input was checked"
    assert match in errors[0], errors[0]
    return errors[0]


def small_plate(path: Path, *, shape=(48, 48), dtype=np.uint16, images=None, z_um=(0.0, 4.0),
                focal_plane: int | None = 0) -> Path:
    """A tiny real plate on disk (2 wells x 1 field x 1 channel x len(z_um) planes) with signal."""
    from scipy import ndimage

    from plate_refocus.plate import write_plate

    if images is None:
        rng = np.random.default_rng(1)
        blobs = ndimage.gaussian_filter(rng.random((2, 1, 1, len(z_um), *shape)) ** 8,
                                        (0, 0, 0, 0, 3, 3))
        images = (100 + 3000 * blobs / blobs.max() + rng.normal(0, 4, blobs.shape)).astype(dtype)
    return write_plate(path, images, ["A01", "A02"], optics=Optics(), z_um=list(z_um),
                       channel_names=["nuclei"], plate_rows=8, plate_columns=12,
                       focal_plane=focal_plane, camera={"bit_depth": 12, "offset": 100.0})


def edit_field_metadata(plate: Path, edit) -> None:
    """Apply ``edit(multiscales_dict)`` to every field's zarr.json of a plate."""
    for meta in plate.glob("*/*/*/zarr.json"):
        data = json.loads(meta.read_text())
        ome = data["attributes"]["ome"]
        edit(ome["multiscales"][0])
        meta.write_text(json.dumps(data))


def edit_plate_metadata(plate: Path, edit) -> None:
    meta = plate / "zarr.json"
    data = json.loads(meta.read_text())
    edit(data["attributes"])
    meta.write_text(json.dumps(data))


@pytest.fixture
def plate(tmp_path) -> Path:
    return small_plate(tmp_path / "P.zarr")


# --- 1, 2, 6: where the output goes -----------------------------------------------------------


def test_overwrite_never_deletes_a_folder_holding_the_input_plate(plate, tmp_path, capsys):
    folder = tmp_path / "D"
    folder.mkdir()
    inside = folder / "P.zarr"
    shutil.copytree(plate, inside)
    before = checksum(folder)
    refuse(capsys, "run", str(inside), str(folder), "--overwrite", match="contains the input")
    assert checksum(folder) == before
    # a symlink to that folder is resolved
    link = tmp_path / "link"
    link.symlink_to(folder)
    refuse(capsys, "run", str(inside), str(link), "--overwrite", match="contains the input")
    assert checksum(folder) == before


def test_overwrite_never_deletes_a_users_folder(plate, tmp_path, capsys):
    folder = tmp_path / "my-analysis"
    folder.mkdir()
    (folder / "notes.txt").write_text("irreplaceable")
    refuse(capsys, "run", str(plate), str(folder), "--overwrite",
           match="not a results store of plate-refocus run")
    assert (folder / "notes.txt").read_text() == "irreplaceable"
    # the same rule for simulate, ingest (of a real plate) and train
    before = checksum(plate)
    refuse(capsys, "simulate", str(plate), "--overwrite", match="not a plate written by plate-refocus simulate")
    refuse(capsys, "simulate", str(folder), "--overwrite", match="not a plate written by plate-refocus simulate")
    model = tmp_path / "model.keras"
    model.write_text("not a model of ours")
    refuse(capsys, "train", str(plate), "--out", str(model), "--overwrite",
           match="not a model written by plate-refocus train")
    refuse(capsys, "train", str(plate), "--out", str(model), match="already exists")
    assert model.read_text() == "not a model of ours"
    assert checksum(plate) == before and (folder / "notes.txt").exists()


def test_output_inside_the_input_plate_is_refused(plate, capsys):
    before = checksum(plate)
    refuse(capsys, "run", str(plate), str(plate / "out.zarr"), match="is inside the input")
    refuse(capsys, "run", str(plate), str(plate), match="is the input")
    assert checksum(plate) == before


def test_output_under_a_file_or_in_an_unwritable_folder_is_refused(plate, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    refuse(capsys, "run", str(plate), str(afile / "out.zarr"), match="is a file, not a folder")
    if os.geteuid() == 0:
        locked = Path("/sys")  # root writes anywhere permission bits allow; sysfs refuses mkdir
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
    refuse(capsys, "run", str(plate), str(locked / "out.zarr"), match="is not writable here")
    refuse(capsys, "simulate", str(locked / "sim.zarr"), match="is not writable here")


# --- 3: resume checks what it resumes -----------------------------------------------------------


def test_resume_with_other_settings_names_each_difference(results, tiny_plate, tiny_model, capsys):
    out, _ = results
    before = checksum(out)
    line = refuse(capsys, "run", str(tiny_plate), str(out), "--model", str(tiny_model), "--resume",
                  "--channel", "actin", "--reference", "focal-plane",
                  match="written with other settings")
    assert "channel 'nuclei' -> 'actin'" in line and "reference 'refocused' -> 'focal-plane'" in line
    assert "--overwrite" in line
    line = refuse(capsys, "run", str(tiny_plate), str(out), "--resume", match="other settings")
    assert "model_sha256" in line  # the shipped model is not the one the store was written with
    assert checksum(out) == before


def test_resume_of_something_else_is_refused(plate, tmp_path, capsys):
    folder = tmp_path / "other.zarr"
    folder.mkdir()
    (folder / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                  "attributes": {}}))
    refuse(capsys, "run", str(plate), str(folder), "--resume", match="is not a results store")


# --- 8, 9, 12: sizes and z metadata -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8), (8, 64)])
def test_images_smaller_than_the_minimum_are_refused_with_the_minimum(tmp_path, capsys, shape):
    rng = np.random.default_rng(0)
    tiny = small_plate(tmp_path / "tiny.zarr", shape=shape,
                       images=rng.integers(0, 4000, (2, 1, 1, 2, *shape)).astype(np.uint16))
    refuse(capsys, "run", str(tiny), str(tmp_path / "r.zarr"), match="needs at least 33 x 33 px")
    assert not (tmp_path / "r.zarr").exists()


def test_a_scale_without_a_z_entry_is_explained(plate, tmp_path, capsys):
    edit_field_metadata(plate, lambda ms: ms["datasets"][0]["coordinateTransformations"][0].update(
        scale=[1.0, 0.3, 0.3]))
    for argv in (["info", str(plate)], ["run", str(plate), str(tmp_path / "r.zarr")]):
        refuse(capsys, *argv, match="has 3 entries for the 4 axes")


def test_zero_z_scale_without_positions_needs_a_z_step(plate, tmp_path, capsys):
    edit_field_metadata(plate, lambda ms: ms["datasets"][0]["coordinateTransformations"][0].update(
        scale=[1.0, 0.0, 0.3, 0.3]))
    edit_plate_metadata(plate, lambda attrs: attrs["plate_refocus"].pop("z_um"))
    for argv in (["info", str(plate)], ["run", str(plate), str(tmp_path / "r.zarr")]):
        refuse(capsys, *argv, match="--z-step")
    assert main(["info", str(plate), "--z-step", "2"]) == 0
    assert "z step       2 um" in capsys.readouterr().out


# --- 10: models that do not fit -----------------------------------------------------------------


def _save_keras(model, path: Path) -> Path:
    from plate_refocus.unet import ModelInfo, RefocusModel, UNetConfig, save_model

    info = ModelInfo(name="odd", config=UNetConfig(depth=2, filters=4), optics=Optics(),
                     depths_um=(0.0, 4.0))
    return save_model(RefocusModel(model, info), path)


def test_models_whose_input_or_output_do_not_fit_are_refused(plate, tmp_path, capsys):
    import keras

    fixed_in = keras.Input((64, 64, 1))
    fixed = keras.Model(fixed_in, keras.layers.Conv2D(1, 3, padding="same")(fixed_in))
    any_in = keras.Input((None, None, 1))
    three = keras.Model(any_in, keras.layers.Conv2D(3, 3, padding="same")(any_in))
    for model, message in ((fixed, "fixes the image size"), (three, "output shape")):
        path = _save_keras(model, tmp_path / f"{message.split()[0]}.keras")
        refuse(capsys, "run", str(plate), str(tmp_path / "r.zarr"), "--model", str(path),
               "--method", "unet", match="does not fit plate-refocus")
        assert not (tmp_path / "r.zarr").exists()


# --- the rest of the battery: one line each, before a cluster starts ------------------------------


BAD = [
    (lambda p, t: ["run", str(t / "nope.zarr"), str(t / "r.zarr")], "does not exist"),
    (lambda p, t: ["run", str(p / "A"), str(t / "r.zarr")], "not an OME-Zarr HCS plate"),
    (lambda p, t: ["run", str(p / "A" / "1" / "0" / "0" / "c"), str(t / "r.zarr")],
     "is not a zarr store"),
    (lambda p, t: ["run", str(p / "A" / "1" / "0" / "0"), str(t / "r.zarr")], "single zarr array"),
    (lambda p, t: ["run", str(p), str(t / "r.zarr"), "--model", str(t / "m.keras"), "--method",
                   "hybrid"], "does not exist"),
    # The default method uses no network, but a model the user names is checked all the same.
    (lambda p, t: ["run", str(p), str(t / "r.zarr"), "--model", str(t / "m.keras")], "does not exist"),
    (lambda p, t: ["run", str(p), str(t / "r.zarr"), "--channel", "dapi"], "channel 'dapi' is not"),
    (lambda p, t: ["run", str(p), str(t / "r.zarr"), "--channel", "7"], "out of range"),
    (lambda p, t: ["run", str(p), str(t / "r.zarr"), "--wells", "H13"], "not in the plate"),
    (lambda p, t: ["info", str(t / "nope.zarr")], "does not exist"),
    (lambda p, t: ["report", str(p)], "not a results store"),
    (lambda p, t: ["ingest", str(t / "no-such-folder"), str(t / "i.zarr")], "does not exist"),
    (lambda p, t: ["evaluate", str(p)], "no ground truth"),
]


@pytest.mark.parametrize("make_args, message", BAD)
def test_bad_input_gives_one_line(plate, tmp_path, capsys, make_args, message):
    before = checksum(plate)
    refuse(capsys, *make_args(plate, tmp_path), match=message)
    assert checksum(plate) == before
    assert not (tmp_path / "r.zarr").exists()


def test_focal_plane_reference_without_a_focal_plane(tmp_path, capsys):
    plate = small_plate(tmp_path / "nofocus.zarr", focal_plane=None)
    refuse(capsys, "run", str(plate), str(tmp_path / "r.zarr"), "--reference", "focal-plane",
           match="give it with --focal-plane N")


def test_a_refusal_in_a_real_subprocess_is_one_line(plate, tmp_path):
    done = subprocess.run([sys.executable, "-m", "plate_refocus.cli", "run", str(plate),
                           str(plate / "x.zarr")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "dashboard" not in done.stdout
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        line for line in done.stderr.splitlines() if "error:" in line]


# --- malformed metadata never gives anything but a plate or our error ------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=False, width=32)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def plate_metadata(draw):
    """Plate/well/multiscales metadata that is valid JSON and often nearly right."""
    well = {"path": draw(st.sampled_from(["A/1", "B/2", "A", 7])),
            "rowIndex": draw(st.sampled_from([0, 1, -1, "0", 99])),
            "columnIndex": draw(st.sampled_from([0, 1, -1, None]))}
    plate = {"rows": draw(st.sampled_from([[{"name": "A"}, {"name": "B"}], [], [{"x": 1}], "A"])),
             "columns": draw(st.sampled_from([[{"name": "1"}, {"name": "2"}], [], None])),
             "wells": draw(st.sampled_from([[well], [], [well, well], None, [1]]))}
    if draw(st.booleans()):
        plate[draw(st.sampled_from(["rows", "columns", "wells", "field_count"]))] = draw(json_values)
    images = draw(st.sampled_from([[{"path": "0"}], [], [{"path": 0}], [{}], None]))
    axes = draw(st.sampled_from([
        [{"name": "c", "type": "channel"}, {"name": "z"}, {"name": "y"}, {"name": "x"}],
        ["z", "y", "x"], [{"name": "y"}, {"name": "x"}], [], "cyx"]))
    scale = draw(st.sampled_from([[1, 2, 0.3, 0.3], [1, 0.3, 0.3], [1, 0, 0.3, 0.3], [], "s", [None] * 4]))
    ms = {"axes": axes, "datasets": draw(st.sampled_from([
        [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        [{"path": "0"}], [], [{"path": "9"}]]))}
    if draw(st.booleans()):
        ms[draw(st.sampled_from(["axes", "datasets", "coordinateTransformations"]))] = draw(json_values)
    ours = draw(st.sampled_from([{}, {"z_um": [0, 0]}, {"optics": {"na": 9}}, {"focal_plane": 5},
                                 {"camera": "x"}, "junk", {"z_um": "a", "channel_names": [1]}]))
    return plate, images, [ms], ours


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=plate_metadata())
def test_random_metadata_gives_a_plate_or_a_plate_refocus_error(tmp_path_factory, meta):
    from plate_refocus.plate import open_plate

    plate_meta, images, multiscales, ours = meta
    path = tmp_path_factory.mktemp("fuzz") / "p.zarr"
    small_plate(path)
    edit_plate_metadata(path, lambda a: (a["ome"].update(plate=plate_meta),
                                         a.update(plate_refocus=ours)))
    for meta_file in path.glob("*/*/zarr.json"):
        data = json.loads(meta_file.read_text())
        if "well" in data["attributes"].get("ome", {}):
            data["attributes"]["ome"]["well"]["images"] = images
            meta_file.write_text(json.dumps(data))
    for meta_file in path.glob("*/*/*/zarr.json"):
        data = json.loads(meta_file.read_text())
        if "multiscales" in data["attributes"].get("ome", {}):
            data["attributes"]["ome"]["multiscales"] = multiscales
            meta_file.write_text(json.dumps(data))
    try:
        plate = open_plate(path)
    except PlateRefocusError:
        return
    assert plate.ndim == 6
