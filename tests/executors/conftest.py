"""One real Dask LocalCluster for the session: worker processes, loopback only, closed at the end.

Two workers of one thread each, so a test can kill one while the other goes
on. ``distributed.scheduler.allowed-failures`` is 1 here (an evaluation whose
worker dies gets one retry), which keeps the worker-death tests short. Tests
kill the same worker within seconds of each other, so the session keeps Dask's
``distributed.deploy.lost-worker-timeout`` long, as the README tells users whose
workers hbmagic may end: else a worker lost twice about 15 s apart is closed
for good, nanny and all.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

WORKERS = 2
ALLOWED_FAILURES = 1


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[object]:
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    from hbmagic.executors.dask import KEEP_LOST_WORKERS

    with dask.config.set(KEEP_LOST_WORKERS):  # read on each loss, so for the whole session
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
            cluster = distributed.LocalCluster(
                n_workers=WORKERS,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
            )
        try:
            yield cluster
        finally:
            cluster.close()


@pytest.fixture(scope="session")
def dask_session_client(dask_cluster) -> Iterator[object]:
    from distributed import Client

    client = Client(dask_cluster)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def dask_client(dask_session_client):
    """The session's client, once the cluster has all its workers (a test before may have killed one)."""
    dask_session_client.wait_for_workers(WORKERS, timeout=60)
    return dask_session_client
