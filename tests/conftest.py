"""Shared fixtures: one real Dask cluster and one tiny simulated plate per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr
import zarr.storage

TINY = {
    "rows": 1,
    "columns": 2,
    "fields": 2,
    "depths_um": (0, 4, 10),
    "size": (64, 64),
    "seed": 0,
    "channels": ("nuclei", "actin"),
}


@pytest.fixture(scope="session")
def local_cluster():
    """A real ``distributed.LocalCluster``: 2 single-threaded worker processes (dashboard on a free port)."""
    import dask
    from distributed import LocalCluster

    from plate_refocus.cluster import worker_malloc_config

    with dask.config.set(worker_malloc_config()), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0", silence_logs=40) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def client(local_cluster):
    """A client of :func:`local_cluster` (not set as the default scheduler)."""
    from distributed import Client

    with Client(local_cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="session")
def tiny_plate(tmp_path_factory, client):
    """Path of a simulated NGFF 0.5 plate with ground truth.

    Wells A01 and A02 of a 96-well plate, 2 fields each, channels nuclei and
    actin, depths 0, 4, 10 um (plane 0 in focus), 64 x 64 px, seed 0, default
    Optics and Camera. Read it; do not write to it (copy it first).
    """
    from plate_refocus.simulate import simulate_plate

    out = tmp_path_factory.mktemp("tiny") / "tiny.zarr"
    return simulate_plate(out, client=client, **TINY)


class ChunkReads:
    """Counts reads of chunk keys (not metadata) through any LocalStore, and any writes."""

    METADATA = ("zarr.json", ".zattrs", ".zgroup", ".zarray", ".zmetadata")

    def __init__(self, monkeypatch):
        self.chunks: list[str] = []
        self.writes: list[str] = []
        self.read_only: list[bool] = []
        get, init, set_ = zarr.storage.LocalStore.get, zarr.storage.LocalStore.__init__, zarr.storage.LocalStore.set
        counter = self

        async def counting_get(self, key, *args, **kwargs):
            if not key.endswith(counter.METADATA):
                counter.chunks.append(key)
            return await get(self, key, *args, **kwargs)

        async def recording_set(self, key, value):
            counter.writes.append(key)
            return await set_(self, key, value)

        def recording_init(self, root, *, read_only=False):
            counter.read_only.append(read_only)
            init(self, root, read_only=read_only)

        monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
        monkeypatch.setattr(zarr.storage.LocalStore, "set", recording_set)
        monkeypatch.setattr(zarr.storage.LocalStore, "__init__", recording_init)


@pytest.fixture
def chunk_reads(monkeypatch) -> ChunkReads:
    """Records, in this process, every chunk key read through a zarr LocalStore, every key
    written, and the read_only flag of every LocalStore opened (``.chunks``, ``.writes``,
    ``.read_only``)."""
    return ChunkReads(monkeypatch)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained depth-2, 4-filter U-Net saved with its metadata (fast, deterministic)."""
    from plate_refocus.optics import Optics
    from plate_refocus.unet import ModelInfo, RefocusModel, UNetConfig, build_unet, save_model

    config = UNetConfig(depth=2, filters=4)
    info = ModelInfo(name="tiny-test", config=config, optics=Optics(), depths_um=(0.0, 4.0, 10.0))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    save_model(RefocusModel(build_unet(config, seed=0), info), path)
    return path


@pytest.fixture(scope="session")
def results(tiny_plate, tiny_model, client, tmp_path_factory):
    """``(path, RunSummary)`` of one network run of :func:`tiny_plate` with :func:`tiny_model`
    (``method="unet"``, PSF against the network's output): the U-Net path, checked piece by piece.

    Read it; do not write to it.
    """
    from plate_refocus.pipeline import run_plate

    out = tmp_path_factory.mktemp("results") / "results.zarr"
    summary = run_plate(tiny_plate, out, client=client, model=tiny_model, method="unet",
                        reference="refocused", command_line="test")
    return out, summary


@pytest.fixture(scope="session")
def default_results(tiny_plate, client, tmp_path_factory):
    """``(path, RunSummary)`` of a run of :func:`tiny_plate` with the defaults (method, reference).

    Read it; do not write to it.
    """
    from plate_refocus.pipeline import run_plate

    out = tmp_path_factory.mktemp("default") / "results.zarr"
    summary = run_plate(tiny_plate, out, client=client, command_line="test")
    return out, summary


def make_results(wells=("A01", "A02", "B01", "B02", "C05", "H12"), *, fields=2, depths_um=(0.0, 5.0, 10.0),
                 truth=True, seed=0, **extra_vars):
    """A synthetic results dataset with the variables and coordinates a run writes (no pixels).

    Fitted |defocus| = nominal |z| + noise, sharpness that falls with depth and rises after
    refocusing, OTF profiles and PSFs of plausible shape, no plane flagged, every well done
    (``well_status`` 1), attrs as a run's.
    ``extra_vars`` are added as they are (e.g. ``consistency=(("well", "field", "z"), array)``).
    """
    import numpy as np
    import xarray as xr

    from plate_refocus.plate import parse_well, row_name
    from plate_refocus.results import RESULTS_FORMAT, WELL_DONE

    rng = np.random.default_rng(seed)
    n_w, n_f, n_z = len(wells), fields, len(depths_um)
    z = np.abs(np.asarray(depths_um, dtype=float))
    freq = np.linspace(0, 2.0, 40)
    sharp_in = 1e-3 / (1 + z / 5)[None, None, :] * rng.uniform(0.8, 1.2, (n_w, n_f, n_z))
    sharp_out = sharp_in * (1 + z / 4)[None, None, :] * rng.uniform(0.95, 1.15, (n_w, n_f, n_z))
    otf = np.exp(-(freq[None, :] * (1 + z[:, None]) / 3) ** 2)
    psf = np.zeros((n_w, n_z, 9, 9))
    psf[:, :, 4, 4] = 1.0
    data = {
        "defocus_um": (("well", "z"), z[None, :] + rng.normal(0, 0.3, (n_w, n_z))),
        "defocus_err_um": (("well", "z"), np.full((n_w, n_z), 0.4)),
        "sharpness": (("well", "field", "z", "stage"), np.stack([sharp_in, sharp_out], axis=-1)),
        "otf_radial": (("well", "z", "freq"), np.broadcast_to(otf, (n_w, n_z, freq.size)).copy()),
        "psf": (("well", "z", "py", "px"), psf),
        "plane_flags": (("well", "field", "z"), np.zeros((n_w, n_f, n_z), dtype=np.uint8)),
        "well_status": (("well",), np.full(n_w, WELL_DONE, dtype=np.int8)),
        "well_error": (("well",), np.array([""] * n_w, dtype=object)),
    }
    if truth:
        base = 30 - z
        data["psnr"] = (("well", "field", "z", "stage"),
                        np.stack([np.broadcast_to(base, (n_w, n_f, n_z)),
                                  np.broadcast_to(base + 3, (n_w, n_f, n_z))], axis=-1).copy())
        data["ssim"] = (("well", "field", "z", "stage"),
                        np.stack([np.broadcast_to(0.9 - z / 40, (n_w, n_f, n_z)),
                                  np.broadcast_to(0.95 - z / 60, (n_w, n_f, n_z))], axis=-1).copy())
    data.update(extra_vars)
    positions = [parse_well(w) for w in wells]
    coords = {
        "well": list(wells),
        "row": ("well", [row_name(r) for r, _ in positions]),
        "column": ("well", [c for _, c in positions]),
        "field": np.arange(n_f),
        "z": np.arange(n_z),
        "z_um": ("z", np.asarray(depths_um, dtype=float)),
        "freq": freq,
        "stage": ["input", "refocused"],
    }
    attrs = {"format": RESULTS_FORMAT, "reference": "refocused", "method": "unet",
             "source_plate": "", "created": "2026-01-01T00:00:00+00:00", "optics": "{}"}
    return xr.Dataset(data, coords=coords, attrs=attrs)


@pytest.fixture
def synthetic_results():
    """The factory :func:`make_results` (a synthetic results dataset, in memory)."""
    return make_results
