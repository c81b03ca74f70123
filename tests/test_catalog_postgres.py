"""What PostgreSQL adds to the catalog: several writers (hosts) kept to one at a time, a bounded
pool of query threads, and calls that reconnect after the server restarts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import pytest_twisted
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.engines.postgres import running_server
from withcache import catalog as cat
from withcache.catalog_db import make_engine, parse_url
from withcache.tables import artifacts


def art(n: int, size: int = 40) -> cat.Artifact:
    key = f"https://e.com/{n}"
    return cat.Artifact(key, key, f"{n:064x}", size, None, float(n))


def waiting_for_the_write_lock(url: str) -> int:
    """How many sessions wait for the catalog's advisory lock right now (asked on a connection
    of its own: cat.connect would migrate, which waits for that lock too)."""
    conn = make_engine(parse_url(url)).connect()
    try:
        return conn.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        ).scalar_one()
    finally:
        conn.close()


def test_a_write_waits_for_another_hosts_write_to_commit(postgres_url):
    """Two connections (two hosts): the second write transaction begins only once the first
    has committed, and then sees what it wrote (SQLite's BEGIN IMMEDIATE, kept)."""
    first, second = cat.connect(postgres_url), cat.connect(postgres_url)
    seen: list[bool] = []

    def other_host() -> None:
        with cat.transaction(second):
            seen.append(cat.get_artifact(second, art(1).key) is not None)

    try:
        with cat.transaction(first):
            first.execute(
                artifacts.insert().values(
                    key=art(1).key, url=art(1).url, sha256=art(1).sha256, size=40, fetched_at=1.0
                )
            )
            waiter = threading.Thread(target=other_host)
            waiter.start()
            deadline = time.monotonic() + 10
            while waiting_for_the_write_lock(postgres_url) == 0:
                assert time.monotonic() < deadline, "the second write never waited"
                time.sleep(0.02)
            assert seen == []
        waiter.join(10)
        assert seen == [True]
        assert not waiter.is_alive()
    finally:
        first.close()
        second.close()


def test_concurrent_fills_on_several_hosts_never_overrun_max_bytes(postgres_url):
    """Eight hosts' fills land at once under one --max-bytes: each evicts for its own room
    while holding the write lock, so the total never goes over."""
    conns = [cat.connect(postgres_url) for _ in range(8)]
    try:
        with ThreadPoolExecutor(8) as pool:
            # Each host its own connection, five fills one after the other.
            def host(h: int) -> None:
                for n in range(h * 5, h * 5 + 5):
                    cat.put_artifact(conns[h], art(n), 200)

            list(pool.map(host, range(8)))
        assert cat.totals(conns[0])["bytes"] <= 200
        assert cat.totals(conns[0])["artifacts"] == 5
    finally:
        for conn in conns:
            conn.close()


@pytest_twisted.ensureDeferred
async def test_the_catalog_service_runs_postgresql_queries_on_a_bounded_pool(postgres_url):
    from twisted.internet import defer, reactor

    service = cat.Catalog(postgres_url, reactor, threads=3)
    service.startService()
    names: set[str] = set()
    barrier = threading.Barrier(3, timeout=10)

    def together(conn) -> None:
        names.add(threading.current_thread().name)
        barrier.wait()  # three calls at once: only possible on three threads
        conn.execute(text("SELECT 1"))

    try:
        await defer.gatherResults([service.run(together) for _ in range(3)])
        assert len(names) == 3
        assert service._pool.max == 3
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_calls_fail_while_postgresql_is_down_and_work_again_after_it_restarts():
    """A restart loses no committed row; a call while the server is down fails (it does not
    hang, nor wedge the pool), and the first call after it is back reconnects."""
    from twisted.internet import reactor, threads

    with running_server(template=False) as server:
        service = cat.Catalog(server.url(), reactor, threads=2)
        service.startService()
        try:
            await service.run(cat.put_artifact, art(1))
            await threads.deferToThread(server.stop)
            with pytest.raises(OperationalError):
                await service.run(cat.get_artifact, art(1).key)
            await threads.deferToThread(server.start)
            assert (await service.run(cat.get_artifact, art(1).key)) == art(1)
            await service.run(cat.put_artifact, art(2))
            assert {a.key for a in await service.run(cat.list_artifacts)} == {
                art(1).key,
                art(2).key,
            }
        finally:
            await service.stopService()


@pytest_twisted.ensureDeferred
async def test_stopping_the_catalog_waits_for_the_calls_under_way(postgres_url):
    """Its engine is closed after them: a connection given back to a disposed pool stays open."""
    from twisted.internet import reactor

    service = cat.Catalog(postgres_url, reactor, threads=2)
    service.startService()
    release, entered = threading.Event(), threading.Event()

    def slow(conn) -> int:
        entered.set()
        assert release.wait(10)
        return conn.execute(text("SELECT 1")).scalar_one()

    call = service.run(slow)
    assert await threads_wait(entered)
    stopped = service.stopService()
    assert not stopped.called
    release.set()
    assert await call.addTimeout(10, reactor) == 1
    await stopped.addTimeout(10, reactor)
    assert service._engine is None


async def threads_wait(event: threading.Event) -> bool:
    from twisted.internet import threads

    return await threads.deferToThread(event.wait, 10)
