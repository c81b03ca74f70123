"""A serving worker's hit index (withcache.web.worker.WorkerCache) against a catalog the host
writes: what makes it forget what it learnt, in process."""

from __future__ import annotations

import io

import pytest
import pytest_twisted

from withcache import catalog as cat
from withcache.store import Store
from withcache.web.worker import WorkerCache

TIMEOUT = 20
A = cat.Artifact("https://v.example/a", "https://v.example/a", "ab" * 32, 3, None, 0.0)


@pytest.fixture
def host_conn(tmp_path):
    """The host's own catalog connection (another process's, for the worker)."""
    conn = cat.connect(str(tmp_path / "cache.db"))
    yield conn
    conn.close()


@pytest.fixture
def worker(tmp_path, host_conn):
    from twisted.internet import reactor

    catalog = cat.Catalog(str(tmp_path / "cache.db"), reactor)
    catalog.startService()
    yield WorkerCache(Store(str(tmp_path)), catalog, "signed", reactor)
    pytest_twisted.blockon(catalog.stopService())


async def sync(worker: WorkerCache) -> None:
    from twisted.internet import defer, reactor

    await defer.ensureDeferred(worker.sync(io.BytesIO())).addTimeout(TIMEOUT, reactor)


@pytest_twisted.ensureDeferred
async def test_hit_counts_the_host_writes_leave_the_workers_index_alone(worker, host_conn):
    cat.put_artifact(host_conn, A)
    await sync(worker)
    assert await worker.learn(A.url) is not None
    for second in range(3):
        # What the host does each second while hits flow: one batch of counts.
        cat.add_hits(host_conn, [(A.key, 40, 100.0 + second)])
        await sync(worker)
        assert worker.cached(A.url) is not None, f"index emptied by hit counts, sync {second}"


@pytest_twisted.ensureDeferred
async def test_misses_and_scrub_stamps_the_host_writes_leave_the_workers_index_alone(
    worker, host_conn
):
    cat.put_artifact(host_conn, A)
    await sync(worker)
    assert await worker.learn(A.url) is not None
    cat.lookup(host_conn, "https://v.example/missing", "https://v.example/missing", 5.0, True)
    cat.set_verified(host_conn, A.sha256, 6.0)
    await sync(worker)
    assert worker.cached(A.url) is not None


@pytest.mark.parametrize(
    "change",
    [
        lambda conn: cat.delete_artifact(conn, A.key),
        lambda conn: cat.put_artifact(conn, cat.Artifact(A.key, A.url, "cd" * 32, 4, None, 1.0)),
        lambda conn: cat.drop_blob(conn, A.sha256),
        lambda conn: cat.set_pinned(conn, A.key, True),
    ],
    ids=["delete", "replace", "quarantine", "pin"],
)
@pytest_twisted.ensureDeferred
async def test_a_change_to_the_artifact_rows_empties_the_workers_index(worker, host_conn, change):
    cat.put_artifact(host_conn, A)
    await sync(worker)
    assert await worker.learn(A.url) is not None
    change(host_conn)
    await sync(worker)
    assert worker.cached(A.url) is None
