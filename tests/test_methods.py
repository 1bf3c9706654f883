"""Refocusing methods and references: the pure per-(well, depth) function and whole runs.

``process_depth`` is tested on simulated fields without zarr or Dask; the runs
use the session's real LocalCluster.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from plate_refocus.optics import Optics, radial_frequencies
from plate_refocus.pipeline import DepthSettings, process_depth, run_plate
from plate_refocus.results import (
    METHOD_IDENTITY,
    METHOD_RL,
    METHOD_UNET,
    METHOD_WIENER,
    PLANE_INCONSISTENT,
    PLANE_NONFINITE,
    open_results,
)
from plate_refocus.simulate import Camera, simulate_field

pytestmark = pytest.mark.timeout(900)

OPTICS, CAMERA = Optics(), Camera()
SHAPE = (96, 96)


@pytest.fixture(scope="module")
def stacks():
    """Three simulated nuclei fields at 0, 2 and 20 um, with truth (C=1)."""
    fields = [simulate_field(SHAPE, (0.0, 2.0, 20.0), seed=s, channels=("nuclei",)) for s in (1, 2, 3)]
    images = np.stack([f.images[0] for f in fields])  # (F, Z, Y, X)
    truth = np.stack([f.in_focus[0] for f in fields])  # (F, Y, X)
    return images, truth


def settings(method: str, reference: str) -> DepthSettings:
    return DepthSettings(optics=OPTICS, method=method, reference=reference, background=CAMERA.offset,
                         data_range=4095.0, backend="numpy", read_noise=CAMERA.read_noise)


def psnr_gain(result, images, z, truth) -> float:
    from plate_refocus.metrics import psnr

    gains = [psnr(t, r, data_range=4095.0) - psnr(t, g.astype(float), data_range=4095.0)
             for t, r, g in zip(truth, result.refocused, images[:, z], strict=True)]
    return float(np.mean(gains))


def identity(stack):
    return np.asarray(stack, dtype=np.float32)


@pytest.mark.parametrize("method", ["rl", "wiener"])
def test_blind_physics_refocus_gains_at_depth_without_a_reference(stacks, method):
    images, truth = stacks
    freq = radial_frequencies(SHAPE, OPTICS.pixel_size_um)
    result = process_depth(list(images[:, 2]), settings=settings(method, "blind"), freq=freq,
                           truths=list(truth))
    assert abs(result.defocus_blind_um - 20.0) < 2.0
    assert result.defocus_um == result.defocus_blind_um
    assert result.otf_radial[0] == pytest.approx(1.0)
    assert np.isclose(result.psf.sum(), 1.0) and result.psf.min() >= 0
    code = METHOD_RL if method == "rl" else METHOD_WIENER
    assert (result.method_used == code).all()
    if method == "rl":  # measured here: +9.9..+11.4 dB, consistency 1.1-2.1
        assert psnr_gain(result, images, 2, truth) > 6.0
        assert np.all(result.consistency < 10)  # the restored planes explain the data
    else:  # Wiener on 96-px fields: +0.8..+1.8 dB (+2.3..+2.6 at 192 px; see the README)
        assert psnr_gain(result, images, 2, truth) > 0.5


def test_an_unidentifiable_blur_is_left_as_it_is(stacks):
    images, truth = stacks
    freq = radial_frequencies(SHAPE, OPTICS.pixel_size_um)
    result = process_depth(list(images[:, 0]), settings=settings("rl", "blind"), freq=freq)
    # at focus there is nothing to identify: the interval is wide and the planes are not sharpened
    assert result.defocus_blind_err_um > 1.0
    assert (result.method_used == METHOD_IDENTITY).all()
    np.testing.assert_array_equal(result.refocused, images[:, 0].astype(np.float32))


def test_a_restoration_that_does_not_explain_its_plane_is_not_kept():
    # An objective with spherical aberration the run does not model: at focus, on these small
    # fields, the blind fit reads ~57 um and RL there made a 1600-count plane into 18,000 counts
    # (-36 dB); its consistency reads 400-2900. The guard leaves the planes as they are, flagged.
    from plate_refocus.pipeline import RL_CONSISTENCY_LIMIT

    shape = (128, 160)
    fields = [simulate_field(shape, (0.0,), seed=np.random.SeedSequence([5200, f]), channels=("nuclei",),
                             spherical_rms_waves=0.15) for f in range(2)]
    planes = [f.images[0, 0] for f in fields]
    freq = radial_frequencies(shape, OPTICS.pixel_size_um)
    result = process_depth(planes, settings=settings("rl", "blind"), freq=freq)
    assert result.defocus_blind_um > 20.0  # the wrong blur it would have restored with
    assert np.all(result.consistency > RL_CONSISTENCY_LIMIT)  # recorded: why it was not kept
    assert (result.method_used == METHOD_IDENTITY).all()
    assert result.flags.tolist() == [PLANE_INCONSISTENT] * 2
    np.testing.assert_array_equal(result.refocused, np.stack(planes).astype(np.float32))


def test_the_in_focus_plane_as_reference_measures_the_wells_otf(stacks):
    images, truth = stacks
    freq = radial_frequencies(SHAPE, OPTICS.pixel_size_um)
    result = process_depth(list(images[:, 2]), settings=settings("rl", "focal-plane"), freq=freq,
                           references=list(images[:, 0]), truths=list(truth))
    assert abs(result.defocus_um - 20.0) < 1.0
    assert psnr_gain(result, images, 2, truth) > 3.0


def test_hybrid_restores_known_blur_by_physics_and_uses_a_consistent_network_near_focus(stacks):
    images, truth = stacks
    freq = radial_frequencies(SHAPE, OPTICS.pixel_size_um)

    def perfect(stack):  # returns the truth: consistent with the data by construction
        return np.asarray(truth, dtype=np.float32)

    # at 20 um the blind |z| is identifiable: RL, even against a perfect network
    # (on held-out cells RL gains 4-14 dB more than any network tried there)
    result = process_depth(list(images[:, 2]), settings=settings("hybrid", "blind"), freq=freq,
                           refocus=perfect)
    assert (result.method_used == METHOD_RL).all()
    # at focus it is not: the network where its output explains the plane ...
    result = process_depth(list(images[:, 0]), settings=settings("hybrid", "blind"), freq=freq,
                           refocus=perfect)
    assert (result.method_used == METHOD_UNET).all()
    assert np.all(result.consistency < 5)
    np.testing.assert_array_equal(result.refocused, truth.astype(np.float32))

    def wild(stack):  # an output far from anything the plane allows
        return 3.0 * np.asarray(stack, dtype=np.float32)

    # ... and the plane as it is where it does not
    result = process_depth(list(images[:, 0]), settings=settings("hybrid", "blind"), freq=freq,
                           refocus=wild)
    assert (result.method_used == METHOD_IDENTITY).all()
    np.testing.assert_array_equal(result.refocused, images[:, 0].astype(np.float32))
    # the model's own limit (its JSON's consistency_limit, run passes it on) replaces the package's
    strict = dataclasses.replace(settings("hybrid", "blind"), network_limit=1e-3)
    result = process_depth(list(images[:, 0]), settings=strict, freq=freq, refocus=perfect)
    assert (result.method_used == METHOD_IDENTITY).all()


def test_masked_and_missing_planes_are_left_out(stacks):
    images, _ = stacks
    freq = radial_frequencies(SHAPE, OPTICS.pixel_size_um)
    planes = [images[0, 2].astype(np.float32), None, images[2, 2].astype(np.float32)]
    planes[2][3, 3] = np.nan
    result = process_depth(planes, settings=settings("rl", "blind"), freq=freq)
    assert result.flags.tolist() == [0, 1, PLANE_NONFINITE]
    assert np.isnan(result.refocused[1:]).all() and np.isfinite(result.refocused[0]).all()
    assert result.method_used.tolist() == [METHOD_RL, -1, -1]
    assert np.isfinite(result.defocus_blind_um)  # from the one usable field


def test_default_run_records_blind_estimates_reference_and_consistency(default_results):
    out, summary = default_results
    ds = open_results(out)
    assert ds.attrs["method"] == "rl" and ds.attrs["reference"] == "auto"
    assert list(ds["reference_used"].values) == ["focal-plane (recorded)"] * 2
    assert list(ds["focal_plane_used"].values) == [0, 0]
    for name in ("defocus_blind_um", "defocus_blind_err_um"):
        assert ds[name].dims == ("well", "z") and np.isfinite(ds[name].values).all()
    assert ds["consistency"].dims == ("well", "field", "z")
    assert set(np.unique(ds["method_used"].values)) <= {METHOD_IDENTITY, METHOD_RL}
    assert json.loads(ds.attrs["run_settings"])["method"] == "rl"


def test_auto_finds_the_in_focus_plane_when_the_plate_records_none(tiny_plate, client, tmp_path):
    plate = tmp_path / "nofocus.zarr"
    shutil.copytree(tiny_plate, plate)
    meta = plate / "zarr.json"
    data = json.loads(meta.read_text())
    data["attributes"]["plate_refocus"]["focal_plane"] = None
    meta.write_text(json.dumps(data))
    out = tmp_path / "r.zarr"
    run_plate(plate, out, client=client, wells=["A01"])
    ds = open_results(out)
    assert str(ds["reference_used"].values[0]).startswith("focal-plane (found, prominence")
    assert int(ds["focal_plane_used"].values[0]) == 0 and ds["focus_prominence"].values[0] > 0.25
    # the same plate told its in-focus plane on the command line: the same reference
    told = tmp_path / "told.zarr"
    run_plate(plate, told, client=client, wells=["A01"], focal_plane=0)
    assert str(open_results(told)["reference_used"].values[0]) == "focal-plane (recorded)"


def test_blind_reference_and_other_methods_run_end_to_end(tiny_plate, tiny_model, client, tmp_path):
    for method in ("wiener", "hybrid"):
        out = tmp_path / f"{method}.zarr"
        summary = run_plate(tiny_plate, out, client=client, model=tiny_model, method=method,
                            reference="blind", wells=["A02"])
        assert summary.ok
        ds = open_results(out)
        np.testing.assert_array_equal(ds["defocus_um"].values, ds["defocus_blind_um"].values)
        assert np.isfinite(ds["refocused"].sel(well="A02").values).all()


def test_optics_flags_override_the_plate_and_say_so(tiny_plate, tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "plate_refocus.cli", "run", str(tiny_plate),
                           str(tmp_path / "r.zarr"), "--na", "0.3", "--dry-run"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--na 0.3 is used; the plate records 0.25" in done.stderr


def test_a_plate_without_optics_warns_once_with_what_is_assumed(tmp_path):
    from plate_refocus.plate import override_layout, read_layout
    from tests.test_bad_input import edit_plate_metadata, small_plate

    plate = small_plate(tmp_path / "p.zarr")
    edit_plate_metadata(plate, lambda attrs: attrs["plate_refocus"].pop("optics"))
    layout = read_layout(plate)
    with pytest.warns(UserWarning, match=r"records no optics; assuming \{'na': 0.25"):
        override_layout(layout)
    with pytest.warns(UserWarning, match="assuming .*'immersion_index'"):
        override_layout(layout, na=0.45, wavelength_um=0.46)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        told, notes = override_layout(layout, na=0.45, wavelength_um=0.46, immersion_index=1.0)
    assert told.optics.na == 0.45 and told.optics_recorded and notes == []
