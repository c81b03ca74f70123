"""DownloadManager lifecycle with fills the test controls (no network)."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from withcache import catalog as cat
from withcache.downloads import DownloadManager


class Fills:
    """A fill function whose every call waits for the test to finish it."""

    def __init__(self):
        self.started: dict[str, defer.Deferred] = {}
        self.cancelled: list[str] = []

    async def __call__(self, job):
        d = defer.Deferred(lambda _: self.cancelled.append(job.url))
        self.started[job.url] = d
        await d


async def manager(tmp_path, workers=1, step=1, **bounds):
    """A started manager whose clock moves `step` seconds at each reading."""
    from twisted.internet import reactor

    catalog = cat.Catalog(str(tmp_path / "cache.db"), reactor)
    catalog.startService()
    fills = Fills()
    clock = iter(range(0, 1000 * step, step))
    m = DownloadManager(
        catalog, fills, reactor=reactor, workers=workers, now=lambda: next(clock), **bounds
    )
    m.startService()
    return m, fills, catalog


async def stop(m, catalog):
    await within(m.stopService())
    await catalog.stopService()


def within(d, seconds=10):
    """Every wait on the manager is bounded: a hang must fail this test, not the session."""
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


async def settle(catalog):
    """Let the database work queued so far, and the callbacks it sets off, run: with one
    database thread a query ends after every query queued before it (no wall-clock wait)."""
    for _ in range(5):
        await catalog.run(lambda conn: None)


@pytest_twisted.ensureDeferred
async def test_single_flight_per_key_and_the_semaphore_bounds_running_jobs(tmp_path):
    m, fills, catalog = await manager(tmp_path, workers=1)
    try:
        a1, a2 = await defer.gatherResults(
            [defer.ensureDeferred(m.enqueue(f"u?{i}", "k", "auto")) for i in range(2)]
        )
        b = await m.enqueue("v", "k2", "auto")
        assert a1 is a2
        await settle(catalog)
        assert (a1.state, b.state) == ("running", "queued")
        assert list(fills.started) == ["u?0"]
        fills.started["u?0"].callback(None)
        assert (await within(m.wait(a1))).state == "completed"
        await settle(catalog)
        assert b.state == "running"
        fills.started["v"].errback(RuntimeError("origin answered 503 Service Unavailable"))
        done = await within(m.wait(b))
        assert (done.state, done.error) == ("failed", "origin answered 503 Service Unavailable")
        assert m.failed_since("k2", -1) and not m.failed_since("k", -1)
        rows = {r.key: r for r in await catalog.run(cat.list_jobs)}
        assert (rows["k"].state, rows["k2"].state) == ("completed", "failed")
        assert rows["k2"].error == done.error
    finally:
        await stop(m, catalog)


@pytest_twisted.ensureDeferred
async def test_each_waiter_has_its_own_deferred(tmp_path):
    m, fills, catalog = await manager(tmp_path)
    try:
        job = await m.enqueue("u", "k", "auto")
        first, second = m.wait(job), m.wait(job)
        first.cancel()
        first.addErrback(lambda f: f.trap(defer.CancelledError))
        await settle(catalog)
        assert fills.cancelled == [] and job.state == "running"
        fills.started["u"].callback(None)
        assert (await within(second)).state == "completed"
        assert (await within(m.wait(job))).state == "completed"
    finally:
        await stop(m, catalog)


@pytest_twisted.ensureDeferred
async def test_a_committing_job_cannot_be_cancelled(tmp_path):
    m, fills, catalog = await manager(tmp_path)
    try:
        job = await m.enqueue("u", "k", "auto")
        await settle(catalog)
        job.committing = True
        assert not m.cancel(job)
        job.committing = False
        assert m.cancel(job)
        assert (await within(m.wait(job))).state == "cancelled"
        assert fills.cancelled == ["u"]
        assert not m.cancel(job)
    finally:
        await stop(m, catalog)


@pytest_twisted.ensureDeferred
async def test_stopping_leaves_unfinished_jobs_for_the_next_start(tmp_path):
    m, fills, catalog = await manager(tmp_path, workers=1)
    running = await m.enqueue("u", "k", "auto")
    queued = await m.enqueue("v", "k2", "auto")
    await settle(catalog)
    await within(m.stopService())
    rows = {r.key: r.state for r in await catalog.run(cat.list_jobs)}
    assert rows == {"k": "running", "k2": "queued"}
    assert fills.cancelled == ["u"]

    from twisted.internet import reactor

    fills2 = Fills()
    again = DownloadManager(catalog, fills2, reactor=reactor, workers=2, now=lambda: 0)
    again.startService()
    try:
        assert await again.resume() == 2
        await settle(catalog)
        assert sorted(fills2.started) == ["u", "v"]
        assert {j.id for j in again.active_jobs()} == {running.id, queued.id}
        for d in fills2.started.values():
            d.callback(None)
        await settle(catalog)
        assert again.active_jobs() == []
    finally:
        await within(again.stopService())
        await catalog.stopService()


@pytest_twisted.ensureDeferred
async def test_stopping_wakes_the_waiters_of_the_jobs_it_leaves_for_the_next_start(tmp_path):
    m, _fills, catalog = await manager(tmp_path, workers=1)
    try:
        running = await m.enqueue("u", "k", "auto")
        queued = await m.enqueue("v", "k2", "auto")
        await settle(catalog)
        waits = [m.wait(running), m.wait(queued)]
        await within(m.stopService())
        assert [w.called for w in waits] == [True, True]
        assert [w.result.state for w in waits] == ["running", "queued"]
    finally:
        await catalog.stopService()


async def bounded(tmp_path, **bounds):
    return await manager(tmp_path, step=100, **bounds)  # 100 s apart: every refusal gets its row


@pytest_twisted.ensureDeferred
async def test_unbounded_fill_queue_misses_past_max_queued_are_refused_with_the_reason(tmp_path):
    """Finding 9: hundreds of distinct misses no longer queue hundreds of fills."""
    m, _fills, catalog = await bounded(tmp_path, max_queued=2)
    try:
        jobs = [await m.enqueue(f"u{i}", f"k{i}", "auto") for i in range(5)]
        assert [j.state for j in jobs] == ["running", "queued", "queued", "refused", "refused"]
        assert jobs[3].error == "refused: 2 fills already queued (--max-queued)"
        operator = await m.enqueue("op", "kop", "operator")
        assert operator.state == "queued"  # an operator's add is never refused
        rows = {r.key: (r.state, r.error) for r in await catalog.run(cat.list_jobs)}
        assert rows["k4"] == ("refused", "refused: 2 fills already queued (--max-queued)")
    finally:
        await stop(m, catalog)


@pytest_twisted.ensureDeferred
async def test_unbounded_fill_queue_one_client_gets_its_share_and_no_more(tmp_path):
    m, _fills, catalog = await bounded(tmp_path, per_client=2)
    try:
        mine = [await m.enqueue(f"u{i}", f"k{i}", "auto", "10.0.0.7") for i in range(3)]
        theirs = await m.enqueue("v", "kv", "auto", "10.0.0.8")
        assert [j.state for j in mine] == ["running", "queued", "refused"]
        assert "10.0.0.7 already has 2 fills queued or running" in mine[2].error
        assert theirs.state == "queued"
    finally:
        await stop(m, catalog)


@pytest_twisted.ensureDeferred
async def test_a_failed_jobs_error_is_printable_text(tmp_path):
    """An error text can quote an origin (a reason phrase, a Location): it is logged, stored and
    printed on the operator's terminal, so no control characters and no unbounded length."""
    m, fills, catalog = await manager(tmp_path)
    try:
        job = await m.enqueue("u", "k", "auto")
        await settle(catalog)
        fills.started["u"].errback(RuntimeError("origin answered 404 \x1b[2J\x00\xfc" + "x" * 999))
        done = await within(m.wait(job))
        assert done.error.startswith("origin answered 404 ?[2J?\xfcx") and done.error.isprintable()
        assert len(done.error) == 500 and done.error.endswith("x...")
        (row,) = await catalog.run(cat.list_jobs)
        assert row.error == done.error
    finally:
        await m.stopService()
        await catalog.stopService()


@pytest_twisted.ensureDeferred
async def test_finding6_a_job_error_quoting_a_signed_url_is_stored_without_the_signature(
    tmp_path,
):
    m, fills, catalog = await manager(tmp_path)
    try:
        job = await m.enqueue("https://v.example/f?sig=s", "https://v.example/f", "auto")
        await settle(catalog)
        fills.started[job.url].errback(
            RuntimeError("redirected to https://cdn.example/f?v=2&X-Amz-Signature=SECRET: 403")
        )
        done = await within(m.wait(job))
        expected = "redirected to https://cdn.example/f?v=2&X-Amz-Signature=…: 403"
        assert done.error == expected
        (row,) = await catalog.run(cat.list_jobs)
        assert row.error == expected
    finally:
        await stop(m, catalog)
