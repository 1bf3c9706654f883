"""Shared fixtures: one real Dask cluster and one tiny simulated plate per test session."""

from __future__ import annotations

import pytest

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
    """A real ``distributed.LocalCluster``: 2 single-threaded worker processes, no dashboard."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as cluster:
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
