"""Tests for plate_refocus.ingest: TIFF folders (BBBC006 and pattern-named) -> OME-Zarr plates."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import uuid
from pathlib import Path

import dask
import numpy as np
import pytest
import tifffile

from plate_refocus import Optics
from plate_refocus.errors import IngestError, OutputExistsError, PlateNotFoundError
from plate_refocus.ingest import (
    PRESETS,
    Scan,
    compile_template,
    ingest,
    inspect_plane,
    lazy_planes,
    read_plane,
    scan,
)
from plate_refocus.plate import missing_planes

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbbc006-sample"
needs_sample = pytest.mark.skipif(
    not (SAMPLE / "BBBC006_v1_images_z_00").is_dir(),
    reason=f"the real BBBC006 sample is not at {SAMPLE} (it lives in ../shared beside the repo)",
)
BBBC006_NAME = "mcf-z-stacks-03212011_{well}_s{site}_w{channel}{uuid}.tif"


def write_bbbc006_like(root: Path, *, wells=("a01", "b03"), sites=(1, 2), channels=(1, 2),
                       planes=(0, 1, 2, 3), shape=(24, 40), seed=0, skip=(),
                       structured=False) -> dict:
    """A small folder in the BBBC006 layout: one folder per plane, 12-bit LZW uint16 TIFFs.

    ``skip`` holds (well, site, channel, plane) tuples not to write. Pixels are
    uniform noise, or with ``structured`` smooth blobs over a little noise (an
    image with signal, as a PSF fit needs). Returns (well, site, channel,
    plane) -> (path, pixels) of the files written.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    written = {}
    for z in planes:
        folder = root / f"BBBC006_v1_images_z_{z:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for w in wells:
            for s in sites:
                for c in channels:
                    if (w, s, c, z) in skip:
                        continue
                    pixels = rng.integers(0, 4096, size=shape, dtype=np.uint16)
                    if structured:
                        blobs = ndimage.gaussian_filter(rng.random(shape) ** 8, 3.0)
                        smooth = 100 + 3000 * blobs / blobs.max() + rng.normal(0, 5, shape)
                        pixels = np.clip(np.rint(smooth), 0, 4095).astype(np.uint16)
                    path = folder / BBBC006_NAME.format(well=w, site=s, channel=c, uuid=uuid.uuid4())
                    tifffile.imwrite(path, pixels, compression="lzw")
                    written[w, s, c, z] = (path, pixels)
    return written


class raise_if_computes:
    """A scheduler that fails the test if anything is computed (xarray's raise_if_dask_computes)."""

    def __enter__(self):
        def scheduler(dsk, keys, **kwargs):
            raise RuntimeError("building the graph must compute nothing")

        self._config = dask.config.set(scheduler=scheduler)
        self._config.__enter__()

    def __exit__(self, *exc):
        self._config.__exit__(*exc)


# --- templates ----------------------------------------------------------------------------------


def test_bbbc006_template_matches_real_names_with_uuid_after_channel():
    regex = compile_template(PRESETS["bbbc006"].template)
    m = regex.fullmatch(
        "BBBC006_v1_images_z_33/mcf-z-stacks-03212011_p24_s2_w12703a47b-7574-461a-85e2-afc38bc0adae.tif"
    )
    assert m is not None
    assert m.groupdict() == {"z": "33", "well": "p24", "site": "2", "channel": "1"}
    assert regex.fullmatch("BBBC006_v1_images_z_33/other_p24_s2_w1.tif") is None


def test_template_wildcard_stays_within_one_name_and_literals_are_escaped():
    regex = compile_template("plate.{well}*.tif")
    assert regex.fullmatch("plate.A01_whatever.TIF")
    assert regex.fullmatch("plateXA01.tif") is None  # '.' is literal
    assert regex.fullmatch("plate.A01/x.tif") is None  # '*' does not cross folders


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{well}_{colour}.tif", r"unknown field \{colour\}.*known fields are \{well\}"),
        ("{well}_{z}_{z}.tif", r"field \{z\} appears twice"),
        ("{well_{z}.tif", r"unbalanced .\{. at position 0"),
        ("{well}_{z.tif", r"unbalanced '\{'"),
        ("{well}}.tif", r"unbalanced '\}'"),
        ("s{site}_{z}.tif", r"does not locate the well.*\{well\}.*\{row\} and \{column\}"),
        ("{row}_{well}.tif", r"both \{well\} and \{row\}/\{column\}"),
        ("{well:[}.tif", r"invalid regular expression"),
    ],
)
def test_template_errors_say_what_is_wrong(template, message):
    with pytest.raises(ValueError, match=message):
        compile_template(template)


def test_template_field_with_own_regex_containing_braces():
    regex = compile_template(r"{well}_{z:\d{3}}.tif")
    assert regex.fullmatch("B07_012.tif")["z"] == "012"
    assert regex.fullmatch("B07_12.tif") is None


# --- scanning -----------------------------------------------------------------------------------


def test_scan_detects_planes_sites_channels_and_the_384_well_format(tmp_path):
    write_bbbc006_like(tmp_path, wells=("a01", "p24"), planes=range(5))
    found = scan(tmp_path, preset="bbbc006")
    assert found.wells == ("A01", "P24")
    assert found.sites == (1, 2)
    assert found.channels == ("1", "2")
    assert found.planes == (0, 1, 2, 3, 4)  # detected, not assumed
    assert found.plate_format == 384  # row P is beyond a 96-well plate
    assert found.shape == (2, 2, 2, 5)
    assert found.missing == ()
    assert found.missing_summary() == "no planes missing"


@pytest.mark.parametrize(
    ("wells", "expected"),
    [(("a01", "h12"), 96), (("a01", "i01"), 384), (("a13",), 384), (("af48", "a01"), 1536)],
)
def test_plate_format_is_the_smallest_that_holds_every_well(tmp_path, wells, expected):
    write_bbbc006_like(tmp_path, wells=wells, sites=(1,), channels=(1,), planes=(0,), shape=(4, 4))
    found = scan(tmp_path)
    assert found.plate_format == expected
    if expected == 1536:
        assert found.wells == ("A01", "AF48")  # two-letter rows come after Z


def test_given_plate_format_too_small_is_refused(tmp_path):
    write_bbbc006_like(tmp_path, wells=("a01", "p24"), sites=(1,), channels=(1,), planes=(0,), shape=(4, 4))
    assert scan(tmp_path, plate_format=1536).plate_format == 1536
    with pytest.raises(IngestError, match=r"beyond a 96-well plate.*highest row P, highest column 24"):
        scan(tmp_path, plate_format=96)
    with pytest.raises(ValueError, match=r"plate_format must be one of \[6, 12, 24, 48, 96, 384, 1536\]"):
        scan(tmp_path, plate_format=100)


def test_missing_file_and_missing_plane_are_reported_by_well_site_channel_plane(tmp_path):
    write_bbbc006_like(tmp_path, planes=(0, 1, 3), skip={("b03", 2, 2, 1)})  # plane 2 absent everywhere
    found = scan(tmp_path)
    assert found.planes == (0, 1, 2, 3)  # the gap in the numbering is a missing plane
    assert ("B03", 2, "2", 1) in found.missing
    assert len(found.missing) == 2 * 2 * 2 + 1
    assert found.missing_summary() == (
        "9 of 32 planes missing: plane 2 missing in every well; well B03 site 2 channel 2: plane 1"
    )


def test_missing_summary_names_whole_fields_and_channels_and_is_cut_short(tmp_path):
    write_bbbc006_like(
        tmp_path, wells=("a01", "a02"), planes=(0, 1),
        skip={("a01", 2, 1, 0), ("a01", 2, 1, 1), ("a01", 2, 2, 0), ("a01", 2, 2, 1),
              ("a02", 1, 2, 0), ("a02", 1, 2, 1)},
    )
    found = scan(tmp_path)
    assert found.missing_summary() == (
        "6 of 16 planes missing: well A01 site 2: no files; well A02 site 1 channel 2: all planes"
    )
    assert found.missing_summary(limit=1).endswith("well A01 site 2: no files; ... and 1 more")


def test_scan_of_the_real_sample_finds_six_fields(caplog):
    if not SAMPLE.is_dir():
        pytest.skip(f"the real BBBC006 sample is not at {SAMPLE}")
    found = scan(SAMPLE)  # the BBBC006 preset is the default
    assert found.wells == ("A01", "A19", "B01", "I07", "N06", "P24")
    assert found.sites == (1, 2) and found.channels == ("1",) and found.planes == (0,)
    assert found.plate_format == 384
    assert len(found.files) == 6
    # each well has one of its two sites in the sample
    assert "well A01 site 2: no files; well A19 site 1: no files" in found.missing_summary()


def test_unmatched_tiffs_are_logged_and_no_match_names_what_is_there(tmp_path, caplog):
    write_bbbc006_like(tmp_path, wells=("a01",), sites=(1,), channels=(1,), planes=(0,), shape=(4, 4))
    tifffile.imwrite(tmp_path / "BBBC006_v1_images_z_00" / "thumbnail.tif", np.zeros((4, 4), np.uint8))
    (tmp_path / "BBBC006_v1_images_z_00" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="plate_refocus.ingest"):
        found = scan(tmp_path)
    assert found.unmatched == ("BBBC006_v1_images_z_00/thumbnail.tif",)
    assert "1 TIFF file(s)" in caplog.text and "thumbnail.tif" in caplog.text
    with pytest.raises(IngestError, match=r"no file 0 folder\(s\) below .* matches pattern '\{well\}\.tif'"
                       r".*pass pattern="):
        scan(tmp_path, pattern="{well}.tif")
    with pytest.raises(IngestError, match=r"files there look like \['BBBC006_v1_images_z_00/mcf"):
        scan(tmp_path, pattern="z{z}/{well}.tif")


def test_scan_argument_errors(tmp_path):
    with pytest.raises(PlateNotFoundError, match=r"source folder .*nowhere.* does not exist"):
        scan(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"unknown preset 'bbbc005'; known presets are \['bbbc006'\]"):
        scan(tmp_path, preset="bbbc005")
    with pytest.raises(TypeError, match="pattern must be a str template or a re.Pattern"):
        scan(tmp_path, pattern=42)
    with pytest.raises(TypeError, match="source must be a path"):
        scan(None)


def test_two_files_for_one_plane_are_refused(tmp_path):
    write_bbbc006_like(tmp_path, wells=("a01",), sites=(1,), channels=(1,), planes=(0,), shape=(4, 4))
    tifffile.imwrite(tmp_path / "BBBC006_v1_images_z_00" / BBBC006_NAME.format(
        well="A01", site=1, channel=1, uuid="x"), np.zeros((4, 4), np.uint16))
    with pytest.raises(IngestError, match=r"two files for well A01 site 1 channel 1 plane 0: .*remove one"):
        scan(tmp_path)


def test_row_column_pattern_with_plane_and_time_in_the_name(tmp_path):
    # Operetta/Opera-style names: numeric rows, z and time in the name, all in one folder.
    for t in (1, 2):
        for z in (1, 2):
            tifffile.imwrite(tmp_path / f"r03c11f01p{z:02d}-ch1sk{t}fk1fl1.tiff",
                             np.full((4, 4), 10 * t + z, np.uint16))
    template = "r{row}c{column}f{site}p{z}-ch{channel}sk{t}fk1fl1.tiff"
    with pytest.raises(IngestError, match=r"2 time points found \(1-2\); pass timepoint="):
        scan(tmp_path, pattern=template)
    found = scan(tmp_path, pattern=template, timepoint=2)
    assert found.wells == ("C11",) and found.planes == (1, 2) and found.plate_format == 96
    assert lazy_planes(found)[0, 0, 0, :, 0, 0].compute().tolist() == [21, 22]
    with pytest.raises(IngestError, match=r"timepoint 3 not found; time points are 1-2"):
        scan(tmp_path, pattern=template, timepoint=3)


def test_a_compiled_regex_is_accepted_and_checked(tmp_path):
    tifffile.imwrite(tmp_path / "B02.tif", np.ones((4, 4), np.uint16))
    found = scan(tmp_path, pattern=re.compile(r"(?P<well>[A-H]\d\d)\.tif"))
    assert found.wells == ("B02",) and found.shape == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="does not locate the well"):
        scan(tmp_path, pattern=re.compile(r"(?P<z>\d+)\.tif"))


# --- reading ------------------------------------------------------------------------------------


def test_read_plane_reads_lzw_and_names_bad_files(tmp_path):
    pixels = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, pixels, compression="lzw")
    np.testing.assert_array_equal(read_plane(good, shape=(12, 16), dtype=np.uint16), pixels)

    assert inspect_plane(good) == ((12, 16), np.dtype(np.uint16))
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"not a tiff at all")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((3, 4, 4), np.uint16))
    for check in (read_plane, inspect_plane):
        with pytest.raises(IngestError, match=r"TIFF '.*garbage\.tif' cannot be read: TiffFileError: "
                           r"not a TIFF file.*; replace or remove it"):
            check(garbage)
        with pytest.raises(IngestError, match=r"TIFF '.*truncated\.tif' (cannot be read|is truncated)"):
            check(truncated)
        with pytest.raises(IngestError, match=r"'.*good\.tif' has shape \(12, 16\), but the plate's "
                           r"planes are \(8, 8\)"):
            check(good, shape=(8, 8))
        with pytest.raises(IngestError, match=r"has dtype uint16, but the plate's planes are uint8"):
            check(good, dtype=np.uint8)
        with pytest.raises(IngestError, match=r"holds an array of shape \(3, 4, 4\), not one 2-D plane"):
            check(stack)


def test_lazy_planes_builds_one_task_per_plane_without_reading(tmp_path):
    written = write_bbbc006_like(tmp_path, planes=(0, 1, 2), skip={("a01", 1, 2, 1)})
    found = scan(tmp_path)
    with raise_if_computes():
        images = lazy_planes(found, shape=(24, 40), dtype=np.uint16)
    assert images.shape == (2, 2, 2, 3, 24, 40)
    assert images.chunksize == (1, 1, 1, 1, 24, 40)
    assert images.dtype == np.uint16
    values = images.compute()
    for (w, s, c, z), (_, pixels) in written.items():
        index = (found.wells.index(w.upper()), found.sites.index(s), found.channels.index(str(c)), z)
        np.testing.assert_array_equal(values[index], pixels)
    assert not values[0, 0, 1, 1].any()  # the missing file reads as zeros


def test_lazy_planes_probes_the_first_file_and_names_an_unreadable_one(tmp_path):
    written = write_bbbc006_like(tmp_path, wells=("a01",), sites=(1,), channels=(1,), planes=(0, 1))
    found = scan(tmp_path)
    images = lazy_planes(found)
    assert images.shape == (1, 1, 1, 2, 24, 40)
    bad = written["a01", 1, 1, 1][0]
    bad.write_bytes(b"broken")
    with pytest.raises(IngestError, match=re.escape(repr(str(bad)))):
        images.compute()
    with pytest.raises(TypeError, match="found must be a Scan"):
        lazy_planes(tmp_path)
    assert isinstance(found, Scan)


# --- writing plates -----------------------------------------------------------------------------


def _validate_hcs(path: Path) -> None:
    import zarr
    from ome_zarr_models.v05.hcs import HCS

    HCS.from_zarr(zarr.open_group(path, mode="r"))


@needs_sample
def test_real_sample_becomes_a_valid_plate_with_the_tiffs_pixels(tmp_path):
    from plate_refocus.plate import open_plate

    with pytest.warns(UserWarning, match=r"6 of 12 planes missing: well A01 site 2: no files"):
        out = ingest(SAMPLE, tmp_path / "bbbc006.zarr")
    assert out == tmp_path / "bbbc006.zarr"
    _validate_hcs(out)
    plate = open_plate(out)
    assert dict(plate.sizes) == {"well": 6, "field": 2, "c": 1, "z": 1, "y": 520, "x": 696}
    assert plate.dtype == np.uint16
    assert list(plate.well.values) == ["A01", "A19", "B01", "I07", "N06", "P24"]
    assert list(plate.c.values) == ["Hoechst"]
    assert plate.z_um.values.tolist() == [-32.0]  # plane 00 is 16 planes x 2 um from focus
    assert plate.attrs["focal_plane"] is None  # plane 16 is not in the sample
    assert plate.attrs["optics"]["pixel_size_um"] == 0.3
    files = scan(SAMPLE).files
    assert len(files) == 6
    for (well, site, _, _), path in files.items():
        np.testing.assert_array_equal(
            plate.sel(well=well).isel(field=site - 1, c=0, z=0).values, tifffile.imread(path)
        )
    for well, site in [("A01", 2), ("P24", 1)]:  # missing fields are zeros
        assert not plate.sel(well=well).isel(field=site - 1).any()
    missing = missing_planes(plate)
    assert missing.dims == ("well", "field", "c", "z")
    assert missing.sum() == 6 and bool(missing.sel(well="A01").isel(field=1, c=0, z=0))


def test_synthetic_stack_ingests_with_metadata_and_every_pixel(tmp_path):
    from plate_refocus.plate import open_plate

    written = write_bbbc006_like(tmp_path / "src", wells=("a01", "c05"), planes=range(15, 19))
    out = ingest(tmp_path / "src", tmp_path / "plate.zarr", on_missing="refuse")
    _validate_hcs(out)
    plate = open_plate(out)
    assert dict(plate.sizes) == {"well": 2, "field": 2, "c": 2, "z": 4, "y": 24, "x": 40}
    assert list(plate.c.values) == ["Hoechst", "phalloidin"]
    assert plate.z_um.values.tolist() == [-2.0, 0.0, 2.0, 4.0]  # (plane - 16) * 2 um
    assert plate.attrs["focal_plane"] == 1  # plane 16 is the second plane of the plate
    assert missing_planes(plate).sum() == 0
    values = plate.values
    for (w, s, c, z), (_, pixels) in written.items():
        np.testing.assert_array_equal(values[["a01", "c05"].index(w), s - 1, c - 1, z - 15], pixels)


def test_fill_and_refuse_of_a_missing_file_and_a_missing_plane(tmp_path):
    from plate_refocus.plate import open_plate

    src = tmp_path / "src"
    written = write_bbbc006_like(src, planes=(0, 1, 3), skip={("b03", 2, 2, 1)})
    with pytest.raises(IngestError, match=(
        r"9 of 32 planes missing: plane 2 missing in every well; well B03 site 2 channel 2: "
        r"plane 1 \(under '.*src'\); add the files, or pass on_missing='fill'"
    )):
        ingest(src, tmp_path / "refused.zarr", on_missing="refuse")
    assert not (tmp_path / "refused.zarr").exists()

    with pytest.warns(UserWarning, match="9 of 32 planes missing.*written as zeros"):
        out = ingest(src, tmp_path / "filled.zarr", on_missing="fill")
    plate = open_plate(out)
    missing = missing_planes(plate)
    assert int(missing.sum()) == 9
    assert bool(missing.sel(well="B03", c="phalloidin").isel(field=1, z=1))
    assert missing.isel(z=2).all()
    assert not plate.isel(z=2).any()
    assert not plate.sel(well="B03", c="phalloidin").isel(field=1, z=1).any()
    np.testing.assert_array_equal(plate.sel(well="B03", c="phalloidin").isel(field=1, z=3).values,
                                  written["b03", 2, 2, 3][1])


def test_unreadable_truncated_and_mismatched_files_are_listed_before_anything_is_written(tmp_path):
    written = write_bbbc006_like(tmp_path / "src", planes=(0, 1))
    garbage, truncated, small = (written[k][0] for k in
                                 [("a01", 1, 1, 0), ("b03", 1, 2, 1), ("b03", 2, 1, 0)])
    garbage.write_bytes(b"not a tiff")
    truncated.write_bytes(truncated.read_bytes()[:-500])
    tifffile.imwrite(small, np.zeros((8, 8), np.uint16), compression="lzw")
    with pytest.raises(IngestError) as caught:
        ingest(tmp_path / "src", tmp_path / "plate.zarr")
    message = str(caught.value)
    assert message.startswith("3 of 16 TIFF files cannot be used: ")
    assert f"{str(garbage)!r} cannot be read: TiffFileError: not a TIFF file" in message
    assert f"{str(truncated)!r} is truncated: its pixel data ends at byte" in message
    assert (f"{str(small)!r} has shape (8, 8), but the plate's planes are (24, 40) "
            "(every file of a plate must have the same size)") in message
    assert message.endswith("replace or remove them (with on_missing='fill' removed files are "
                            "written as zeros)")
    assert not (tmp_path / "plate.zarr").exists()  # checked from the headers first

    for path in (garbage, truncated, small):
        path.unlink()
    with pytest.warns(UserWarning, match="3 of 16 planes missing"):
        ingest(tmp_path / "src", tmp_path / "plate.zarr")
    assert int(missing_planes(tmp_path / "plate.zarr").sum()) == 3


def test_corrupt_compressed_data_is_found_while_writing_and_named(tmp_path):
    written = write_bbbc006_like(tmp_path / "src", wells=("a01",), planes=(0, 1))
    corrupt = written["a01", 2, 1, 1][0]
    with tifffile.TiffFile(corrupt) as tif:  # scramble the LZW strip, keep the header intact
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(corrupt.read_bytes())
    data[offset : offset + count] = np.random.default_rng(1).integers(0, 256, count, np.uint8).tobytes()
    corrupt.write_bytes(bytes(data))
    assert inspect_plane(corrupt) == ((24, 40), np.dtype(np.uint16))  # the header is fine
    with pytest.raises(IngestError, match=re.escape(f"TIFF {str(corrupt)!r} cannot be read: ")):
        ingest(tmp_path / "src", tmp_path / "plate.zarr")


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    write_bbbc006_like(tmp_path / "src", wells=("a01",), sites=(1,), channels=(1,), planes=(0,))
    out = tmp_path / "plate.zarr"
    out.mkdir()
    with pytest.raises(OutputExistsError, match=r"'.*plate\.zarr' already exists; nothing was changed: pass --overwrite"):
        ingest(tmp_path / "src", out)
    ingest(tmp_path / "src", out, overwrite=True)
    _validate_hcs(out)
    with pytest.raises(ValueError, match="is the input"):
        ingest(tmp_path / "src", tmp_path / "src", overwrite=True)


def test_generic_pattern_needs_pixel_size_and_z_step(tmp_path):
    from plate_refocus.plate import open_plate

    src = tmp_path / "src"
    src.mkdir()
    for z in (3, 4):
        for c in ("DAPI", "GFP"):
            tifffile.imwrite(src / f"G07_{c}_z{z}.tif", np.full((8, 8), z, np.uint16))
    pattern = "{well}_{channel}_z{z}.tif"
    with pytest.raises(IngestError, match=r"pixel size is unknown: pass pixel_size_um="):
        ingest(src, tmp_path / "p.zarr", pattern=pattern)
    with pytest.raises(IngestError, match=r"2 planes found but the z step is unknown: pass z_step_um="):
        ingest(src, tmp_path / "p.zarr", pattern=pattern, pixel_size_um=0.65)
    with pytest.raises(IngestError, match=r"channel_names has 1 names \['x'\] for 2 channels"):
        ingest(src, tmp_path / "p.zarr", pattern=pattern, pixel_size_um=0.65, z_step_um=1.0,
               channel_names=["x"])
    with pytest.raises(IngestError, match=r"channel_names has channels \['RFP'\] that are not in the files"):
        ingest(src, tmp_path / "p.zarr", pattern=pattern, pixel_size_um=0.65, z_step_um=1.0,
               channel_names={"RFP": "x"})
    out = ingest(src, tmp_path / "p.zarr", pattern=pattern, pixel_size_um=0.65, z_step_um=0.5,
                 focal_plane=4, channel_names={"GFP": "tubulin"},
                 optics=Optics(na=0.45, pixel_size_um=1.0))
    plate = open_plate(out)
    assert list(plate.c.values) == ["DAPI", "tubulin"]
    assert plate.z_um.values.tolist() == [-0.5, 0.0]
    assert plate.attrs["focal_plane"] == 1
    assert plate.attrs["optics"]["na"] == 0.45 and plate.attrs["optics"]["pixel_size_um"] == 0.65
    assert plate.sel(well="G07").isel(field=0, c=1, z=1).values.max() == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"on_missing": "skip"}, ValueError, r"on_missing must be 'fill' or 'refuse', got 'skip'"),
        ({"overwrite": "yes"}, TypeError, r"overwrite must be a bool, got 'yes'"),
        ({"focal_plane": 1.5}, TypeError, r"focal_plane must be an int plane number"),
        ({"z_step_um": -2}, ValueError, r"z_step_um must be positive and finite, got -2"),
        ({"pixel_size_um": "0.3"}, TypeError, r"pixel_size_um must be a number, got '0.3'"),
        ({"optics": {"na": 0.3}}, TypeError, r"optics must be a plate_refocus.Optics"),
        ({"channel_names": "Hoechst"}, TypeError, r"channel_names must be a sequence or a mapping"),
        ({"channel_names": ["a", "a"]}, ValueError, r"channel names must be unique, got \['a', 'a'\]"),
    ],
)
def test_ingest_argument_errors(tmp_path, kwargs, error, message):
    write_bbbc006_like(tmp_path / "src", wells=("a01",), sites=(1,), planes=(0,), shape=(4, 4))
    with pytest.raises(error, match=message):
        ingest(tmp_path / "src", tmp_path / "p.zarr", **kwargs)


def test_ingest_streams_plane_by_plane_in_bounded_memory(tmp_path):
    import tracemalloc

    write_bbbc006_like(tmp_path / "warm", wells=("a01",), sites=(1,), channels=(1,), planes=(0,))
    ingest(tmp_path / "warm", tmp_path / "warm.zarr")  # imports zarr & co. outside the trace
    write_bbbc006_like(tmp_path / "src", wells=("a01", "a02"), planes=range(8), shape=(256, 256))
    plate_bytes = 2 * 2 * 2 * 8 * 256 * 256 * 2  # 8 MiB in 64 planes of 128 KiB
    with dask.config.set(scheduler="synchronous"):
        tracemalloc.start()
        try:
            ingest(tmp_path / "src", tmp_path / "plate.zarr")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < plate_bytes / 4, f"peak {peak} bytes for a {plate_bytes}-byte plate"


def test_ingest_on_a_distributed_cluster(tmp_path, client):
    from plate_refocus.plate import open_plate

    written = write_bbbc006_like(tmp_path / "src", wells=("a01",), planes=(0, 1))
    out = ingest(tmp_path / "src", tmp_path / "plate.zarr", client=client)
    plate = open_plate(out)
    np.testing.assert_array_equal(plate.isel(well=0, field=1, c=1, z=1).values,
                                  written["a01", 2, 2, 1][1])
    bad = written["a01", 2, 2, 1][0]
    bad.write_bytes(b"garbage")  # the worker's IngestError reaches the caller, naming the file
    with pytest.raises(IngestError, match=re.escape(repr(str(bad)))):
        ingest(tmp_path / "src", tmp_path / "again.zarr", client=client)


def test_package_attribute_is_the_function_even_after_importing_the_module():
    import plate_refocus
    import plate_refocus.ingest  # noqa: F401  (binds the submodule on the package if done lazily)

    assert plate_refocus.ingest is ingest
    assert callable(plate_refocus.ingest)


# --- command line -------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plate_refocus.cli", "ingest", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_ingests_and_reports_errors_in_one_line(tmp_path):
    from plate_refocus.plate import open_plate

    src = tmp_path / "src"
    write_bbbc006_like(src, wells=("a01",), planes=(0, 1, 2), skip={("a01", 1, 1, 2)})
    done = _cli(str(src), str(tmp_path / "dry.zarr"), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "11 files under" in done.stdout and "96-well plate, 1 wells x 2 sites" in done.stdout
    assert "1 of 12 planes missing: well A01 site 1 channel 1: plane 2" in done.stdout
    assert not (tmp_path / "dry.zarr").exists()

    refused = _cli(str(src), str(tmp_path / "p.zarr"), "--on-missing", "refuse")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("plate-refocus ingest: error: 1 of 12 planes missing: well A01 site 1")
    assert "Traceback" not in refused.stderr

    done = _cli(str(src), str(tmp_path / "p.zarr"), "--channel-names", "1=DNA,2=actin",
                "--focal-plane", "1")
    assert done.returncode == 0, done.stderr
    assert "warning: 1 of 12 planes missing" in done.stderr
    plate = open_plate(tmp_path / "p.zarr")
    assert list(plate.c.values) == ["DNA", "actin"]
    assert plate.attrs["focal_plane"] == 1 and plate.z_um.values.tolist() == [-2.0, 0.0, 2.0]

    again = _cli(str(src), str(tmp_path / "p.zarr"))
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"plate-refocus ingest: error: {str(tmp_path / 'p.zarr')!r} already exists; nothing was "
        "changed: pass --overwrite to replace it, or choose another path"
    )
    missing = _cli(str(tmp_path / "nowhere"), str(tmp_path / "q.zarr"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "does not exist or is not a folder" in missing.stderr
