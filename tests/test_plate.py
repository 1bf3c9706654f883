"""OME-Zarr HCS plates: validity, lazy read-only opening, round trips, ground truth, bad input."""

from __future__ import annotations

import json
import shutil
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from conftest import TINY

from plate_refocus.errors import (
    NotAPlateError,
    OutputExistsError,
    PlateLayoutError,
    PlateNotFoundError,
    PlateRefocusError,
)
from plate_refocus.optics import Optics, radial_frequencies
from plate_refocus.plate import (
    PLATE_FORMATS,
    open_ground_truth,
    open_plate,
    parse_well,
    plate_info,
    row_name,
    well_name,
    write_plate,
)
from plate_refocus.simulate import Camera, simulate_field, simulate_plate


def validate(path, version: str):
    """Validate a whole plate (plate, wells, images) with the reference validator."""
    from ome_zarr_models.exceptions import ValidationWarning

    if version == "0.5":
        from ome_zarr_models.v05.hcs import HCS
    else:
        from ome_zarr_models.v04.hcs import HCS
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValidationWarning)
        hcs = HCS.from_zarr(zarr.open_group(str(path), mode="r"))
    wells = list(hcs.well_groups)
    assert len(wells) == hcs.n_wells
    return hcs


def small_images(wells=2, fields=2, c=2, z=3, y=16, x=24, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, (wells, fields, c, z, y, x)).astype(dtype)


def write_small(path, images=None, **kwargs):
    images = small_images() if images is None else images
    options = dict(
        optics=Optics(), z_um=list(range(images.shape[3])), channel_names=[f"ch{i}" for i in range(images.shape[2])],
        plate_rows=8, plate_columns=12,
    )
    options.update(kwargs)
    wells = options.pop("wells", [well_name(0, i + 1) for i in range(images.shape[0])])
    with dask.config.set(scheduler="synchronous"):
        return write_plate(path, images, wells, **options)


def raise_if_computes(*args, **kwargs):
    raise AssertionError("dask computed something while building a lazy object")


# --- the simulated plate --------------------------------------------------------------------------


def test_simulated_plate_validates_as_ngff_05(tiny_plate):
    hcs = validate(tiny_plate, "0.5")
    plate = hcs.ome_attributes.plate
    assert [r.name for r in plate.rows] == list("ABCDEFGH")
    assert [c.name for c in plate.columns] == [str(i) for i in range(1, 13)]
    assert [w.path for w in plate.wells] == ["A/1", "A/2"]
    assert plate.field_count == 2
    image = zarr.open_group(str(tiny_plate / "A" / "2" / "1"), mode="r")
    ms = image.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    assert all(a.get("unit") == "micrometer" for a in ms["axes"][1:])
    # Depths 0, 4, 10: uneven, so the scale carries the smallest step (4 um).
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 4.0, 0.3, 0.3]
    assert image["0"].chunks == (1, 1, 64, 64)


def test_open_plate_is_labelled_lazy_and_one_chunk_per_plane(tiny_plate):
    with dask.config.set(scheduler=raise_if_computes):
        plate = open_plate(tiny_plate)
    assert plate.dims == ("well", "field", "c", "z", "y", "x")
    assert plate.shape == (2, 2, 2, 3, 64, 64)
    assert plate.dtype == np.uint16
    assert isinstance(plate.data, da.Array)
    assert plate.data.numblocks == (2, 2, 2, 3, 1, 1)
    assert list(plate.well.values) == ["A01", "A02"]
    assert list(plate.row.values) == ["A", "A"]
    assert list(plate.column.values) == [1, 2]
    assert list(plate.c.values) == ["nuclei", "actin"]
    assert list(plate.z_um.values) == [0.0, 4.0, 10.0]
    assert plate.x.values[1] == pytest.approx(0.3) and plate.y.values[-1] == pytest.approx(63 * 0.3)
    assert plate.attrs["optics"] == Optics().to_dict()
    assert plate.attrs["camera"] == Camera().to_dict()
    assert plate.attrs["focal_plane"] == 0
    assert plate.attrs["ngff_version"] == "0.5"


def test_open_plate_reads_no_pixels_and_opens_read_only(tiny_plate, chunk_reads):
    reads = chunk_reads
    plate = open_plate(tiny_plate)
    assert reads.chunks == []
    assert reads.read_only and all(reads.read_only)
    # The counter does see chunk reads: computing one plane reads exactly its chunk.
    with dask.config.set(scheduler="synchronous"):
        plane = plate.sel(well="A02", field=1, c="actin", z=2).values
    assert reads.chunks == ["A/2/1/0/c/1/2/0/0"]
    assert plane.shape == (64, 64) and plane.max() > 0
    assert reads.writes == []


def test_plate_pixels_match_simulate_field_for_the_documented_seed(tiny_plate, client):
    plate = open_plate(tiny_plate)
    truth = open_ground_truth(tiny_plate)
    # Well A02 is row 0, column 2 of a 96-well plate: well index 1.
    expected = simulate_field(TINY["size"], TINY["depths_um"], seed=np.random.SeedSequence([0, 1, 1]))
    images = client.compute(plate.sel(well="A02", field=1).data).result()
    np.testing.assert_array_equal(images, expected.images)
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(truth.object.sel(well="A02", field=1).values, expected.object)
        np.testing.assert_array_equal(truth.in_focus.sel(well="A02", field=1).values, expected.in_focus)


def test_ground_truth_dataset(tiny_plate):
    with dask.config.set(scheduler=raise_if_computes):
        truth = open_ground_truth(tiny_plate)
    assert truth.object.dims == ("well", "field", "c", "y", "x")
    assert truth.object.dtype == np.float32 and truth.in_focus.dtype == np.float32
    assert truth.otf_radial.dims == ("z", "freq") and truth.otf_radial.dtype == np.float64
    with dask.config.set(scheduler="synchronous"):
        otf = truth.otf_radial.values
    np.testing.assert_allclose(otf[:, 0], 1.0, atol=1e-9)
    # the ground truth lies on the results' freq axis (optics.radial_frequencies)
    np.testing.assert_array_equal(truth.freq.values, radial_frequencies(TINY["size"], Optics().pixel_size_um))
    assert list(truth.z_um.values) == [0.0, 4.0, 10.0]


def test_plate_info(tiny_plate):
    info = plate_info(tiny_plate)
    assert info["wells"] == 2 and info["well_names"] == ["A01", "A02"]
    assert info["fields"] == 2
    assert info["channels"] == ["nuclei", "actin"]
    assert info["planes"] == 3
    assert info["shape"] == (2, 2, 2, 3, 64, 64)
    assert info["dtype"] == "uint16"
    assert info["pixel_size_um"] == 0.3
    assert info["z_step_um"] == 4.0
    assert info["plate_format"] == (8, 12)
    assert info["bytes_on_disk"] > 2 * 2 * 2 * 3 * 64 * 64 * 0.3  # compressed, but not empty
    assert info["ground_truth"] is True


# --- writing and round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_write_then_open_round_trips_exactly(tmp_path, version):
    images = small_images()
    path = write_small(tmp_path / "p.zarr", images, ngff_version=version, z_um=[0.0, 2.0, 4.0],
                       focal_plane=1, wells=["B03", "A01"])
    validate(path, version)
    assert (path / ("zarr.json" if version == "0.5" else ".zgroup")).exists()
    plate = open_plate(path)
    assert plate.attrs["ngff_version"] == version
    assert plate.attrs["zarr_format"] == (3 if version == "0.5" else 2)
    # Wells come back in plate order (A01 before B03), with their pixels.
    assert list(plate.well.values) == ["A01", "B03"]
    assert list(plate.row.values) == ["A", "B"] and list(plate.column.values) == [1, 3]
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(plate.values, images[::-1])
    assert plate.attrs["focal_plane"] == 1
    assert list(plate.z_um.values) == [0.0, 2.0, 4.0]
    assert open_ground_truth(path) is None


def test_ngff_04_uses_slash_separated_chunk_keys(tmp_path):
    path = write_small(tmp_path / "p.zarr", ngff_version="0.4")
    meta = json.loads((path / "A" / "1" / "0" / "0" / ".zarray").read_text())
    assert meta["dimension_separator"] == "/"
    assert (path / "A" / "1" / "0" / "0" / "1" / "2" / "0" / "0").exists()


@pytest.mark.parametrize("plate_format", [96, 384, 1536])
def test_every_row_and_column_of_the_physical_plate_is_listed(tmp_path, plate_format):
    n_rows, n_columns = PLATE_FORMATS[plate_format]
    last = well_name(n_rows - 1, n_columns)
    path = write_small(tmp_path / "p.zarr", small_images(wells=2, z=1, c=1, fields=1),
                       wells=["A01", last], plate_rows=n_rows, plate_columns=n_columns)
    hcs = validate(path, "0.5")
    plate = hcs.ome_attributes.plate
    assert len(plate.rows) == n_rows and len(plate.columns) == n_columns
    assert [w.path for w in plate.wells] == ["A/1", f"{row_name(n_rows - 1)}/{n_columns}"]
    assert list(open_plate(path).well.values) == ["A01", last]


def test_simulate_plate_ngff_04_validates_and_has_ground_truth(tmp_path, client):
    path = simulate_plate(tmp_path / "s.zarr", rows=1, columns=1, fields=1, depths_um=(0, 6), size=(32, 40),
                          plate_format=384, ngff_version="0.4", client=client, channels=("actin",))
    hcs = validate(path, "0.4")
    assert len(hcs.ome_attributes.plate.rows) == 16
    plate = open_plate(path)
    assert plate.shape == (1, 1, 1, 2, 32, 40)
    assert open_ground_truth(path).object.shape == (1, 1, 1, 32, 40)


def test_write_plate_refuses_to_overwrite_unless_asked(tmp_path):
    path = write_small(tmp_path / "p.zarr")
    with pytest.raises(OutputExistsError, match="already exists.*overwrite"):
        write_small(path)
    replaced = small_images(seed=5)
    write_small(path, replaced, overwrite=True)
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(open_plate(path).values, replaced)
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a plate written by plate-refocus"):
        write_small(folder, overwrite=True)
    assert (folder / "keep.txt").read_text() == "mine"


def test_write_plate_streams_dask_input_without_computing_it_whole(tmp_path):
    # A lazily built 6-D array: the store call writes it chunk by chunk.
    source = da.from_array(small_images(), chunks=(1, 1, 1, 1, 16, 24))
    path = write_small(tmp_path / "p.zarr", source)
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(open_plate(path).values, source.compute())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ngff_version": "0.6"}, ValueError, "ngff_version"),
        ({"z_um": [0, 1]}, ValueError, "z_um has 2 depths for 3 planes"),
        ({"channel_names": ["a"]}, ValueError, "channel_names"),
        ({"wells": ["A01"]}, ValueError, "well names for 2 wells"),
        ({"wells": ["A01", "A01"]}, ValueError, "repeat"),
        ({"wells": ["A01", "Z99"]}, ValueError, "outside a plate"),
        ({"wells": ["A01", "1A"]}, ValueError, "look like 'A01'"),
        ({"focal_plane": 3}, ValueError, "focal_plane"),
        ({"optics": {"na": 0.25}}, TypeError, "Optics"),
    ],
)
def test_write_plate_rejects_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        write_small(tmp_path / "p.zarr", **kwargs)


def test_well_names():
    assert [row_name(i) for i in (0, 25, 26, 31)] == ["A", "Z", "AA", "AF"]
    assert well_name(31, 48) == "AF48"
    assert parse_well("AF48") == (31, 48) and parse_well("B3") == (1, 3)


# --- bad input ------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere.zarr"
    with pytest.raises(PlateNotFoundError, match="does not exist.*plate-refocus simulate") as info:
        open_plate(missing)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(PlateNotFoundError):
        plate_info(missing)


def test_folder_that_is_not_zarr(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(NotAPlateError, match="not a zarr store"):
        open_plate(tmp_path)


def test_zarr_group_that_is_not_a_plate(tmp_path):
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w", attributes={"ome": {"version": "0.5"}})
    with pytest.raises(NotAPlateError, match="not an OME-Zarr HCS plate") as info:
        open_plate(tmp_path / "g.zarr")
    assert isinstance(info.value, ValueError)
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(4, 4), dtype="uint8")
    with pytest.raises(NotAPlateError, match="single zarr array"):
        open_plate(tmp_path / "a.zarr")


def test_fields_that_disagree_in_shape(tmp_path):
    path = write_small(tmp_path / "p.zarr")
    group = zarr.open_group(str(path / "A" / "2" / "1"), mode="a")
    group.create_array("0", shape=(2, 3, 16, 20), chunks=(1, 1, 16, 20), dtype="uint16", overwrite=True,
                       dimension_names=["c", "z", "y", "x"])
    with pytest.raises(PlateLayoutError, match=r"'A/2/1' has .*shape \(2, 3, 16, 20\).*crop or pad"):
        open_plate(path)


def test_wells_that_disagree_in_field_count(tmp_path):
    path = write_small(tmp_path / "p.zarr")
    well = zarr.open_group(str(path / "A" / "2"), mode="a")
    attrs = well.attrs.asdict()
    attrs["ome"]["well"]["images"] = attrs["ome"]["well"]["images"][:1]
    well.attrs.put(attrs)
    with pytest.raises(PlateLayoutError, match="field count: A02 has 1, A01 has 2"):
        open_plate(path)


def test_listed_well_missing_from_store(tmp_path):
    path = write_small(tmp_path / "p.zarr")
    shutil.rmtree(path / "A" / "2")
    with pytest.raises(PlateLayoutError, match="'A/2'.*incomplete"):
        open_plate(path)


def _foreign_plate(path, axes, shape, version="0.5"):
    """A plate written by 'another tool': NGFF metadata only, none of ours."""
    wrap = (lambda d: {"ome": {"version": "0.5", **d}}) if version == "0.5" else (lambda d: d)
    root = zarr.open_group(str(path), mode="w", zarr_format=3,
                           attributes=wrap({"plate": {"version": version, "rows": [{"name": "A"}],
                                                      "columns": [{"name": "1"}],
                                                      "wells": [{"path": "A/1", "rowIndex": 0, "columnIndex": 0}]}}))
    well = root.create_group("A").create_group("1", attributes=wrap({"well": {"images": [{"path": "0"}]}}))
    scale = [1.0 if a in ("t", "c") else (2.5 if a == "z" else 0.65) for a in axes]
    image = well.create_group("0", attributes=wrap({
        "multiscales": [{"axes": [{"name": a, "type": {"t": "time", "c": "channel"}.get(a, "space")} for a in axes],
                         "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}],
        "omero": {"channels": [{"label": f"w{i + 1}"} for i in range(shape[axes.index("c")])]} if "c" in axes else {},
    }))
    array = image.create_array("0", shape=shape, chunks=(1,) * (len(shape) - 2) + shape[-2:], dtype="uint16")
    array[...] = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    return path


def test_foreign_plate_with_t_axis_and_no_metadata_of_ours(tmp_path):
    path = _foreign_plate(tmp_path / "f.zarr", ["t", "c", "z", "y", "x"], (1, 2, 3, 8, 10))
    with pytest.warns(UserWarning, match="no plate_refocus optics"):
        plate = open_plate(path)
    assert plate.shape == (1, 1, 2, 3, 8, 10)
    assert list(plate.c.values) == ["w1", "w2"]
    assert list(plate.z_um.values) == [0.0, 2.5, 5.0]
    assert plate.attrs["optics"]["pixel_size_um"] == 0.65
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(plate.values[0, 0], np.arange(480, dtype=np.uint16).reshape(2, 3, 8, 10))


def test_foreign_plate_without_c_and_z(tmp_path):
    path = _foreign_plate(tmp_path / "f.zarr", ["y", "x"], (8, 10))
    with pytest.warns(UserWarning):
        plate = open_plate(path)
    assert plate.shape == (1, 1, 1, 1, 8, 10)


def test_time_series_is_refused_with_advice(tmp_path):
    path = _foreign_plate(tmp_path / "f.zarr", ["t", "c", "y", "x"], (2, 1, 8, 10))
    with pytest.raises(PlateLayoutError, match=r"time series \(t=2\)"):
        open_plate(path)


def test_errors_are_plate_refocus_errors():
    for error in (PlateNotFoundError, NotAPlateError, PlateLayoutError, OutputExistsError):
        assert issubclass(error, PlateRefocusError)
