"""The refocused plate: NGFF 0.5 HCS with pyramids and shards, uint16 or float32, read back lazily."""

from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import zarr

from plate_refocus.errors import NotAPlateError, OutputExistsError
from plate_refocus.optics import Optics
from plate_refocus.plate import (
    MISSING_UINT16,
    create_refocused_plate,
    decode,
    downsample_2x,
    encode,
    level_shapes,
    open_refocused,
    refocused_plate,
    write_field,
    write_pyramid,
)

WELLS = ["A01", "B03", "H12"]
SHAPE = (37, 50)  # odd rows: the pyramid's odd-size rule is exercised at every level
Z_UM = [0.0, 2.0, 6.0]


def make(path, *, dtype="uint16", layout="field", min_size=8, **kwargs):
    return create_refocused_plate(
        path, wells=WELLS, plate_rows=8, plate_columns=12, n_fields=2, z_um=Z_UM, shape=SHAPE,
        optics=Optics(pixel_size_um=0.5), channel_name="nuclei", dtype=dtype, layout=layout,
        min_size=min_size, max_value=4095, **kwargs,
    )


def fields(seed=0):
    """(well, field, z, y, x) float32 camera counts, with one plane missing (NaN)."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(90, 4100, (len(WELLS), 2, len(Z_UM), *SHAPE)).astype(np.float32)
    values[1, 1, 2] = np.nan
    return values


def reference_downsample(plane):
    """Mean of the pixels each 2 x 2 block holds, by explicit loops."""
    ny, nx = plane.shape
    out = np.empty(((ny + 1) // 2, (nx + 1) // 2))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = plane[2 * i:2 * i + 2, 2 * j:2 * j + 2].mean()
    return out


# --- values and levels ---------------------------------------------------------------------------


def test_uint16_encoding_is_within_half_a_count_and_keeps_missing_planes():
    rng = np.random.default_rng(1)
    values = rng.uniform(-0.5, 65534.5, 10_000).astype(np.float32)
    stored = encode(values, "uint16")
    assert stored.dtype == np.uint16 and stored.max() < MISSING_UINT16
    assert np.abs(decode(stored) - values).max() <= 0.5
    edge = np.array([np.nan, -7.0, 70000.0, 1.49, 1.51], dtype=np.float32)
    assert encode(edge, "uint16").tolist() == [MISSING_UINT16, 0, MISSING_UINT16 - 1, 1, 2]
    back = decode(encode(edge, "uint16"))
    assert np.isnan(back[0]) and back.dtype == np.float32
    assert np.array_equal(decode(encode(values, "float32")), values)
    with pytest.raises(ValueError, match="dtype must be one of"):
        encode(values, "int8")


@pytest.mark.parametrize("shape", [(8, 6), (7, 6), (8, 5), (7, 5), (1, 1), (1, 4)])
def test_downsample_is_the_mean_of_each_block_odd_edges_included(shape):
    plane = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    stack = np.stack([plane, np.full(shape, np.nan, np.float32)])
    out = downsample_2x(stack)
    assert out.shape == (2, (shape[0] + 1) // 2, (shape[1] + 1) // 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], reference_downsample(plane), rtol=1e-6, atol=1e-6)
    assert np.isnan(out[1]).all()


def test_levels_halve_down_to_min_size():
    assert level_shapes((2160, 2160)) == [(2160, 2160), (1080, 1080), (540, 540), (270, 270)]
    assert level_shapes((520, 696)) == [(520, 696), (260, 348)]
    assert level_shapes((64, 64)) == [(64, 64)]
    assert level_shapes((37, 50), 8) == [(37, 50), (19, 25), (10, 13)]
    with pytest.raises(ValueError, match="min_size"):
        level_shapes((64, 64), 0)


# --- the plate -----------------------------------------------------------------------------------


def validate(path):
    from ome_zarr_models.exceptions import ValidationWarning
    from ome_zarr_models.v05.hcs import HCS
    from ome_zarr_models.v05.image import Image

    root = zarr.open_group(str(path), mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValidationWarning)
        hcs = HCS.from_zarr(root)
        images = [Image.from_zarr(root[f"{well}/{f}"]) for well in ("A/1", "B/3", "H/12") for f in (0, 1)]
    return hcs, images


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("layout", ["field", "plane"])
def test_whole_fields_validate_and_read_back_at_every_level(tmp_path, dtype, layout):
    values = fields()
    plate = make(tmp_path / "r.zarr", dtype=dtype, layout=layout)
    for w in range(len(WELLS)):
        for f in range(2):
            write_field(plate, WELLS[w], f, values[w, f])

    hcs, images = validate(plate.path)
    meta = hcs.ome_attributes.plate
    assert [r.name for r in meta.rows] == list("ABCDEFGH") and len(meta.columns) == 12
    assert [w.path for w in meta.wells] == ["A/1", "B/3", "H/12"]
    ms = images[0].ome_attributes.multiscales[0]
    assert [a.name for a in ms.axes] == ["c", "z", "y", "x"]
    assert [a.unit for a in ms.axes[1:]] == ["micrometer"] * 3
    scales = [d.coordinateTransformations[0].scale for d in ms.datasets]
    assert scales == [[1.0, 2.0, 0.5, 0.5], [1.0, 2.0, 1.0, 1.0], [1.0, 2.0, 2.0, 2.0]]

    # Level 0 through the results' view: within half a count (uint16) or exact (float32).
    got = open_refocused(plate.path)
    assert got.dims == ("well", "field", "z", "y", "x") and got.dtype == np.float32
    assert got.coords["well"].values.tolist() == WELLS and str(got.coords["c"].values) == "nuclei"
    np.testing.assert_array_equal(got.coords["z_um"].values, Z_UM)
    np.testing.assert_allclose(got.coords["x"].values[:3], [0.0, 0.5, 1.0])
    loaded = got.values
    assert np.array_equal(np.isnan(loaded), np.isnan(values))
    tolerance = 0.5 if dtype == "uint16" else 0.0
    assert np.nanmax(np.abs(loaded - values)) <= tolerance

    # Every level of one field as stored equals the pyramid of its planes.
    expected = values[0, 1]
    for level, shape in enumerate(level_shapes(SHAPE, 8)):
        stored = zarr.open_array(plate.path, path=f"A/1/1/{level}", mode="r")
        assert stored.shape == (1, len(Z_UM), *shape)
        assert stored.dtype == np.dtype(dtype)
        assert np.nanmax(np.abs(decode(stored[0]) - expected)) <= tolerance
        expected = downsample_2x(expected)


@pytest.mark.parametrize("layout", ["field", "plane"])
def test_ome_zarr_py_reads_the_plate_and_every_level(tmp_path, layout):
    """What napari-ome-zarr does: ome_zarr's Reader over parse_url, per image and per plate."""
    pytest.importorskip("ome_zarr", minversion="0.18", reason="ome-zarr >= 0.18 needs Python > 3.11")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    values = fields()
    plate = make(tmp_path / "r.zarr", layout=layout)
    for w in range(len(WELLS)):
        for f in range(2):
            write_field(plate, w, f, values[w, f])
    (image,) = [node for node in Reader(parse_url(str(tmp_path / "r.zarr" / "B" / "3" / "1")))()][:1]
    shapes = [tuple(level.shape) for level in image.data]
    assert shapes == [(1, 3, *s) for s in level_shapes(SHAPE, 8)]
    expected = values[1, 1]
    for level in image.data:
        stored = np.asarray(level)[0]
        missing = stored == MISSING_UINT16
        assert np.array_equal(missing, np.isnan(expected))
        assert np.abs(stored[~missing] - expected[~missing]).max() <= 0.5
        expected = downsample_2x(expected)
    assert image.metadata["channel_names"] == ["nuclei"]
    plate_node = next(iter(Reader(parse_url(str(tmp_path / "r.zarr")))()))
    # The plate mosaic: 8 rows x 12 columns of fields, one per level.
    assert tuple(plate_node.data[0].shape) == (1, 3, 8 * SHAPE[0], 12 * SHAPE[1])
    assert len(plate_node.data) == len(level_shapes(SHAPE, 8))


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_plane_layout_written_plane_by_plane_then_pyramid_equals_whole_fields(tmp_path, dtype):
    """The pipeline's pattern: concurrent tasks each write one depth of every field of a well."""
    values = fields()
    whole = make(tmp_path / "whole.zarr", dtype=dtype, layout="plane")
    planes = make(tmp_path / "planes.zarr", dtype=dtype, layout="plane")
    for f in range(2):
        write_field(whole, 1, f, values[1, f])

    def depth_task(z):
        for f in range(2):
            write_field(planes, "B03", f, values[1, f, z], z=z)

    with ThreadPoolExecutor(len(Z_UM)) as pool:
        list(pool.map(depth_task, range(len(Z_UM))))
    level0 = open_refocused(planes.path).sel(well="B03").values
    assert np.array_equal(np.isnan(level0), np.isnan(values[1]))  # every plane landed
    write_pyramid(planes, "B03")
    tolerance = 1.0 if dtype == "uint16" else 1e-4  # the pyramid of rounded level-0 values
    for f in range(2):
        for level in range(len(whole.levels)):
            a = decode(zarr.open_array(whole.path, path=f"B/3/{f}/{level}")[0])
            b = decode(zarr.open_array(planes.path, path=f"B/3/{f}/{level}")[0])
            assert np.array_equal(np.isnan(a), np.isnan(b))
            assert np.nanmax(np.abs(a - b)) <= tolerance
    # Wells never written read as missing: the fill value is the missing value.
    assert np.isnan(open_refocused(planes.path).sel(well="A01").values).all()


def test_field_layout_refuses_unlocked_single_planes(tmp_path):
    values = fields()
    plate = make(tmp_path / "r.zarr", layout="field")
    with pytest.raises(ValueError, match="lock="):
        write_field(plate, 0, 0, values[0, 0, 1], z=1)
    for z in range(len(Z_UM)):
        write_field(plate, 0, 0, values[0, 0, z], z=z, lock=contextlib.nullcontext())
    got = open_refocused(plate.path).isel(well=0, field=0).values
    assert np.abs(got - values[0, 0]).max() <= 0.5
    level1 = decode(zarr.open_array(plate.path, path="A/1/0/1")[0])
    assert np.abs(level1 - downsample_2x(values[0, 0])).max() <= 0.5


def test_arguments_are_checked(tmp_path):
    plate = make(tmp_path / "r.zarr")
    with pytest.raises(ValueError, match=r"shape \(3, 37, 50\)"):
        write_field(plate, 0, 0, np.zeros((2, *SHAPE)))
    with pytest.raises(ValueError, match="not in the refocused plate"):
        write_field(plate, "C01", 0, np.zeros((3, *SHAPE)))
    with pytest.raises(ValueError, match="z must be"):
        write_field(plate, 0, 0, np.zeros(SHAPE), z=3)
    with pytest.raises(OutputExistsError):
        make(tmp_path / "r.zarr")
    with pytest.raises(ValueError, match="layout must be one of"):
        make(tmp_path / "x.zarr", layout="well")
    with pytest.raises(ValueError, match="outside a plate"):
        create_refocused_plate(tmp_path / "y.zarr", wells=["J01"], plate_rows=8, plate_columns=12,
                               n_fields=1, z_um=[0], shape=(8, 8), optics=Optics(),
                               channel_name="c")


def test_open_refocused_reads_metadata_only_and_refuses_input_plates(tmp_path, tiny_plate, chunk_reads):
    plate = make(tmp_path / "r.zarr")
    assert refocused_plate(plate.path) == plate
    view = open_refocused(plate.path)
    assert chunk_reads.chunks == [] and view.chunks[-2:] == ((SHAPE[0],), (SHAPE[1],))
    with pytest.raises(NotAPlateError, match="not a refocused plate"):
        open_refocused(tiny_plate)


def test_wells_keep_the_writers_order(tmp_path):
    plate = create_refocused_plate(
        tmp_path / "r.zarr", wells=["B03", "A01"], plate_rows=8, plate_columns=12, n_fields=1,
        z_um=[0.0], shape=(8, 8), optics=Optics(), channel_name="actin")
    write_field(plate, "B03", 0, np.full((1, 8, 8), 7.0))
    view = open_refocused(plate.path)
    assert view["well"].values.tolist() == ["B03", "A01"]
    assert float(view.sel(well="B03").max()) == 7.0 and np.isnan(view.sel(well="A01")).all()


def test_overwrite_replaces_only_a_refocused_plate_and_never_an_input(tmp_path, tiny_plate):
    import shutil

    from plate_refocus.errors import OutputLocationError

    first = make(tmp_path / "r.zarr")
    write_field(first, 0, 0, fields()[0, 0])
    again = make(tmp_path / "r.zarr", overwrite=True)  # a refocused plate: replaced
    assert np.isnan(open_refocused(again.path).values).all()
    copy = tmp_path / "simulated.zarr"
    shutil.copytree(tiny_plate, copy)
    with pytest.raises(OutputExistsError):
        make(copy, overwrite=True)  # a simulated plate is never replaced by a refocused one
    with pytest.raises(OutputLocationError, match="is inside the input"):
        make(copy / "refocused.zarr", inputs=[copy])
    assert (copy / "zarr.json").exists()
