"""`plate-refocus simulate` and `plate-refocus info`: help, output, and bad input without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from plate_refocus.cli import build_parser
from plate_refocus.optics import Optics
from plate_refocus.simulate import DEFAULT_DEPTHS_UM, Camera


def cli(*args, timeout=600):
    """Run the installed command line in a fresh interpreter, as a user would."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "plate_refocus.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def assert_one_line_error(result, *patterns):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for pattern in patterns:
        assert pattern in lines[0], lines[0]


def subparser(name):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


def test_simulate_help_is_complete_and_exact():
    parser = subparser("simulate")
    text = parser.format_help()
    flags = ["--rows", "--columns", "--fields", "--depths", "--size", "--seed", "--na", "--wavelength",
             "--immersion-index", "--pixel-size", "--photons", "--read-noise", "--offset", "--bit-depth",
             "--channels", "--plate-format", "--ngff-version", "--workers", "--overwrite", "--no-progress"]
    # -v/-q are accepted after every command's name as well as before it
    declared = {s for a in parser._actions for s in a.option_strings} - {
        "-h", "--help", "-v", "--verbose", "-q", "--quiet"}
    assert declared == set(flags)
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in text
        if action.option_strings and action.help is None:
            pytest.fail(f"{action.option_strings} has no help")
    # The defaults the help states are the defaults the library uses.
    optics, camera = Optics(), Camera()
    assert f"(default {optics.na})" in text and f"(default {optics.wavelength_um})" in text
    assert f"(default {optics.pixel_size_um})" in text
    assert f"(default {camera.photons:g})" in text and f"(default {camera.bit_depth})" in text
    assert ",".join(f"{z:g}" for z in DEFAULT_DEPTHS_UM) in text.replace("\n", "").replace(" ", "")
    args = parser.parse_args(["out.zarr"])
    assert args.depths == list(DEFAULT_DEPTHS_UM) and args.size == (128, 128) and args.plate_format == 96
    assert (args.na, args.wavelength, args.pixel_size) == (optics.na, optics.wavelength_um, optics.pixel_size_um)


def test_info_help_is_complete():
    parser = subparser("info")
    declared = {s for a in parser._actions for s in a.option_strings} - {
        "-h", "--help", "-v", "--verbose", "-q", "--quiet"}
    assert declared == {"--json", "--z-step"}
    assert "PLATE" in parser.format_help()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "4"], "expected a size like 256"),
        (["--size", "12xq"], "expected a size like 256"),
        (["--rows", "0"], "expected a positive integer"),
        (["--depths", "0,a"], "comma-separated numbers"),
        (["--plate-format", "100"], "invalid choice"),
    ],
)
def test_simulate_parser_rejects_bad_values(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["simulate", "out.zarr", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_simulate_then_info(tmp_path):
    out = tmp_path / "cli.zarr"
    result = cli("simulate", out, "--rows", 1, "--columns", 2, "--fields", 1, "--depths", "0,5",
                 "--size", "40x48", "--channels", "nuclei", "--workers", 2, "--seed", 3,
                 "--photons", 800, "--plate-format", 384)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"wrote {out}: 2 wells x 1 fields x 1 channels x 2 planes of 40x48 px" in result.stdout
    plate = zarr.open_group(str(out), mode="r")
    assert plate.attrs["plate_refocus"]["camera"]["photons"] == 800.0
    assert len(plate.attrs["ome"]["plate"]["rows"]) == 16

    info = cli("info", out)
    assert info.returncode == 0, info.stderr
    for expected in ("wells        2: A01, A02", "fields       1 per well", "channels     1: nuclei",
                     "planes       2 at z = 0, 5 um (in focus: plane 0)", "image        40 x 48 px, uint16",
                     "pixel size   0.3 um", "z step       5 um", "size on disk", "384-well (16 rows x 24 columns)"):
        assert expected in info.stdout
    as_json = json.loads(cli("info", out, "--json").stdout)
    assert as_json["shape"] == [2, 1, 1, 2, 40, 48] and as_json["dtype"] == "uint16"

    again = cli("simulate", out, "--rows", 1, "--columns", 1)
    assert_one_line_error(again, "already exists", "--overwrite")


def test_info_on_a_missing_path(tmp_path):
    assert_one_line_error(cli("info", tmp_path / "nope.zarr"), "plate-refocus info: error:", "does not exist")


def test_info_on_a_zarr_that_is_not_a_plate(tmp_path):
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    assert_one_line_error(cli("info", tmp_path / "g.zarr"), "not an OME-Zarr HCS plate")
    (tmp_path / "folder").mkdir()
    assert_one_line_error(cli("info", tmp_path / "folder"), "not a zarr store")


def test_info_on_a_plate_whose_fields_disagree(tmp_path):
    from plate_refocus.plate import write_plate

    images = np.zeros((1, 2, 1, 1, 8, 8), dtype=np.uint16)
    path = write_plate(tmp_path / "p.zarr", images, ["A01"], optics=Optics(), z_um=[0], channel_names=["a"],
                       plate_rows=8, plate_columns=12)
    zarr.open_group(str(path / "A" / "1" / "1"), mode="a").create_array(
        "0", shape=(1, 1, 8, 9), dtype="uint16", overwrite=True)
    assert_one_line_error(cli("info", path), "disagree", "shape (1, 1, 8, 9)")


def test_simulate_bad_library_values_are_one_line_errors(tmp_path):
    assert_one_line_error(cli("simulate", tmp_path / "a.zarr", "--rows", 9), "do not fit a 96-well plate")
    assert_one_line_error(cli("simulate", tmp_path / "b.zarr", "--channels", "dapi"), "channels")
    assert_one_line_error(cli("simulate", tmp_path / "c.zarr", "--na", 1.2), "immersion index")
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
def test_24_well_plate_4_fields_11_depths_256px_and_lazy_open(tmp_path, chunk_reads):
    """The issue's requirement, end to end through the command line."""
    from plate_refocus.plate import open_plate

    out = tmp_path / "p24.zarr"
    result = cli("simulate", out, "--plate-format", 24, "--rows", 4, "--columns", 6, "--fields", 4,
                 "--size", 256)
    assert result.returncode == 0, result.stderr
    plate = open_plate(out)
    assert plate.shape == (24, 4, 2, 11, 256, 256)
    assert plate.data.numblocks == (24, 4, 2, 11, 1, 1)
    assert chunk_reads.chunks == []  # opening read no pixels
    assert list(plate.z_um.values) == list(map(float, DEFAULT_DEPTHS_UM))
