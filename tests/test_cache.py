"""The cache facade and its download manager, in-process with a real origin on 127.0.0.1."""

from __future__ import annotations

import errno
import os
import sqlite3

import pytest
import pytest_twisted
from twisted.internet import defer

from tests import support
from tests.support import payload_sha256
from withcache.cache import Cache, Settings
from withcache.catalog import Artifact, Catalog, put_artifact
from withcache.fetcher import Fetcher
from withcache.origin_client import make_http_client
from withcache.policy import OriginPolicy
from withcache.store import Ingest, Store

TIMEOUT = 60

origin = support.origin_in_process  # the `origin` fixture here: tests/origin.py in process


class Host:
    """A Cache over a temporary data dir, started like makeService starts it."""

    def __init__(self, data_dir, **settings):
        from twisted.internet import reactor

        settings.setdefault("policy", OriginPolicy(allow_private=True))
        # A miss answers at once here, as before streaming (tests/test_streaming*.py wait).
        settings.setdefault("stream_wait", 0)
        self.settings = Settings(**settings)
        self.store = Store(str(data_dir))
        self.catalog = Catalog(str(data_dir / "cache.db"), reactor)
        client = make_http_client(reactor, self.settings.policy)
        self.pool = client.pool
        fetcher = Fetcher(reactor, client, self.settings.policy, backoff=0.01, idle_timeout=5)
        self.cache = Cache(
            self.store, self.catalog, self.settings, reactor=reactor, now=reactor.seconds,
            fetcher=fetcher,
        )  # fmt: skip

    async def start(self):
        self.catalog.startService()
        self.cache.privilegedStartService()
        self.cache.startService()
        await self.cache.recovery
        return self

    async def stop(self):
        await self.cache.stopService()
        await self.pool.closeCachedConnections()
        await self.catalog.stopService()

    async def finished(self, job):
        from twisted.internet import reactor

        return await self.cache.downloads.wait(job).addTimeout(TIMEOUT, reactor)


@pytest.fixture
def host_factory(tmp_path):
    """Hosts started in the test and stopped by it (pytest-twisted has no async fixtures)."""
    return lambda name="data", **settings: Host(tmp_path / name, **settings)


async def stopped_after(host, body):
    await host.start()
    try:
        return await body(host)
    finally:
        await host.stop()


@pytest_twisted.ensureDeferred
async def test_a_miss_queues_one_fill_and_the_next_request_hits(origin, host_factory):
    async def body(host):
        url = f"{origin.base}/f/500000/1/cuda.run?sig=abc"
        assert await host.cache.lookup(url, count_hit=False) is None
        job = host.cache.downloads.active(host.cache.key_for(url))
        assert job is not None and job.source == "auto"
        done = await host.finished(job)
        assert done.state == "completed", done.error
        hit = await host.cache.lookup(url.replace("abc", "def"), count_hit=True)
        assert hit.artifact.sha256 == payload_sha256(500000, 1)
        assert hit.artifact.misses == 1
        # The fill used the full URL, query and all (presigned URLs need it).
        assert origin.seen[0].query == "sig=abc"

    await stopped_after(host_factory(), body)


@pytest_twisted.ensureDeferred
async def test_fifty_concurrent_probes_and_gets_make_one_origin_get(origin, host_factory):
    async def body(host):
        url = f"{origin.base}/f/2000000/2/big.bin?rate=1000000"
        lookups = [host.cache.lookup(url, count_hit=i % 2 == 0) for i in range(100)]
        results = await defer.gatherResults([defer.ensureDeferred(c) for c in lookups])
        assert results == [None] * 100
        job = host.cache.downloads.active(host.cache.key_for(url))
        assert (await host.finished(job)).state == "completed"
        hits = [await host.cache.lookup(url, count_hit=True) for _ in range(10)]
        assert all(h is not None for h in hits)
        assert origin.gets("/f/2000000/2/big.bin") == 1
        await host.cache.sync_index()  # hits are counted in memory and written in batches
        (artifact,) = await host.cache.artifacts()
        assert (artifact.misses, artifact.hits) == (100, 10)

    await stopped_after(host_factory(), body)


@pytest_twisted.ensureDeferred
async def test_curate_records_misses_without_fetching_and_add_fetches(origin, host_factory):
    async def body(host):
        url = f"{origin.base}/f/1000/3/fw.bin"
        assert await host.cache.lookup(url, count_hit=True) is None
        assert host.cache.downloads.active_jobs() == []
        (miss,) = await host.cache.misses()
        assert miss.count == 1 and origin.seen == []
        job = await host.cache.add(url)
        assert job.source == "operator"
        assert (await host.finished(job)).state == "completed"
        assert await host.cache.misses() == []
        assert (await host.cache.lookup(url, count_hit=True)).artifact.misses == 1

    await stopped_after(host_factory(curate=True), body)


@pytest_twisted.ensureDeferred
async def test_allow_host_limits_auto_fetch_but_not_operator_adds(origin, host_factory):
    policy = OriginPolicy(allow_private=True, allow_hosts=("*.nvidia.com",))

    async def body(host):
        url = f"{origin.base}/f/1000/4/x"
        await host.cache.lookup(url, count_hit=False)
        assert host.cache.downloads.active_jobs() == []
        job = await host.cache.add(url)
        assert (await host.finished(job)).state == "completed"

    await stopped_after(host_factory(policy=policy), body)


@pytest_twisted.ensureDeferred
async def test_a_refused_origin_is_a_failed_job_with_a_reason_and_still_a_404(host_factory):
    async def body(host):
        url = "http://127.0.0.1:9/f/10/1/x"
        assert await host.cache.lookup(url, count_hit=False) is None
        job = host.cache.downloads.active(host.cache.key_for(url))
        done = await host.finished(job)
        assert done.state == "failed"
        assert "127.0.0.1 is not a public address" in done.error
        # A failed key is not refetched on every probe.
        assert await host.cache.lookup(url, count_hit=False) is None
        assert host.cache.downloads.active_jobs() == []
        (listed, *_) = await host.cache.jobs()
        assert listed.state == "failed" and listed.error == done.error

    await stopped_after(host_factory(policy=OriginPolicy()), body)


@pytest_twisted.ensureDeferred
async def test_a_write_error_fails_the_job_cleans_tmp_and_serving_goes_on(
    origin, host_factory, monkeypatch
):
    async def body(host):
        good = f"{origin.base}/f/1000/5/good"
        assert (await host.finished(await host.cache.add(good))).state == "completed"
        real_write = Ingest.write

        def full_disk(self, data):
            if self.size > 100_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_write(self, data)

        monkeypatch.setattr(Ingest, "write", full_disk)
        done = await host.finished(await host.cache.add(f"{origin.base}/f/1000000/6/big"))
        assert done.state == "failed" and "No space left on device" in done.error
        assert os.listdir(host.store.tmp_dir) == []
        assert (await host.cache.lookup(good, count_hit=True)) is not None

    await stopped_after(host_factory(), body)


@pytest_twisted.ensureDeferred
async def test_cancel_queued_at_once_and_running_drops_the_connection(origin, host_factory):
    async def body(host):
        slow = await host.cache.add(f"{origin.base}/f/5000000/7/slow?rate=500000")
        queued = await host.cache.add(f"{origin.base}/f/1000/8/queued")
        assert queued.state == "queued"
        waiter_a, waiter_b = host.cache.downloads.wait(queued), host.cache.downloads.wait(queued)
        waiter_a.cancel()  # one waiter giving up does not cancel the job for the other
        waiter_a.addErrback(lambda f: f.trap(defer.CancelledError))
        assert host.cache.cancel(queued)
        assert (await waiter_b).state == "cancelled"
        while slow.bytes_done == 0:
            await deferLater(0.01)
        assert host.cache.cancel(slow)
        done = await host.finished(slow)
        assert done.state == "cancelled"
        assert os.listdir(host.store.tmp_dir) == []
        for _ in range(500):  # the origin hears of the dropped connection a moment later
            if origin.connections_lost:
                break
            await deferLater(0.01)
        assert origin.connections_lost == 1
        assert not host.cache.cancel(slow)
        assert await host.cache.clear_finished() == 2
        assert await host.cache.jobs() == []

    await stopped_after(host_factory(workers=1), body)


@pytest_twisted.ensureDeferred
async def test_interrupted_jobs_resume_on_the_next_start(origin, host_factory):
    url = f"{origin.base}/f/3000000/9/resume?rate=1000000"
    first = host_factory()
    await first.start()
    job = await first.cache.add(url)
    while job.bytes_done == 0:
        await deferLater(0.01)
    await first.stop()  # a shutdown mid-fill leaves the job to the next start
    assert os.listdir(first.store.tmp_dir) == []

    async def body(host):
        (resumed,) = host.cache.downloads.active_jobs()
        assert resumed.id == job.id
        assert (await host.finished(resumed)).state == "completed"
        assert (await host.cache.lookup(url, count_hit=True)) is not None

    await stopped_after(host_factory(), body)


@pytest_twisted.ensureDeferred
async def test_max_bytes_evicts_to_fit_and_a_fill_too_big_fails_clearly(origin, host_factory):
    async def body(host):
        a = await host.cache.add(f"{origin.base}/f/40000/10/a")
        assert (await host.finished(a)).state == "completed"
        assert await host.cache.pin(a.key)
        b = await host.cache.add(f"{origin.base}/f/40000/11/b")
        assert (await host.finished(b)).state == "completed"
        c = await host.cache.add(f"{origin.base}/f/40000/12/c")
        assert (await host.finished(c)).state == "completed"
        assert {x.key for x in await host.cache.artifacts()} == {a.key, c.key}
        assert len(list(host.store.digests())) == 2
        too_big = await host.cache.add(f"{origin.base}/f/70000/13/d")
        done = await host.finished(too_big)
        assert done.state == "failed" and "do not fit in --max-bytes 100000" in done.error
        assert len(list(host.store.digests())) == 2
        stats = await host.cache.stats()
        assert (stats.artifacts, stats.bytes, stats.capacity) == (2, 80000, 100000)

    await stopped_after(host_factory(max_bytes=100_000), body)


def pause_first_referenced_check(monkeypatch):
    """Hold the first "does a row name this blob?" check on its thread: (a Deferred fired
    when it is reached, the Event that lets it go on)."""
    import threading

    from twisted.internet import reactor

    from withcache import catalog as cat

    checking, go_on = defer.Deferred(), threading.Event()
    real_referenced = cat.referenced

    def pause_then_check(conn, sha256):
        if not checking.called:
            reactor.callFromThread(checking.callback, None)
            assert go_on.wait(TIMEOUT)
        return real_referenced(conn, sha256)

    monkeypatch.setattr(cat, "referenced", pause_then_check)
    return checking, go_on


def deferLater(seconds):
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_long_fill_is_written_back_in_the_background_as_it_goes(
    origin, host_factory, monkeypatch
):
    from withcache import writer

    monkeypatch.setattr(writer, "SYNC_EVERY", 200_000)
    synced = []
    real_sync = Ingest.sync

    def counting_sync(self):
        synced.append(self.size)
        real_sync(self)

    monkeypatch.setattr(Ingest, "sync", counting_sync)

    async def body(host):
        job = await host.cache.add(f"{origin.base}/f/2000000/14/big?rate=4000000")
        assert (await host.finished(job)).state == "completed"
        hit = await host.cache.lookup(job.url, count_hit=True)
        assert hit.artifact.sha256 == payload_sha256(2000000, 14)
        # Written back part-way, several times, before the commit's own fsync.
        assert sum(1 for n in synced if 0 < n < 2000000) >= 3

    await stopped_after(host_factory(), body)


@pytest_twisted.ensureDeferred
async def test_scrub_quarantines_a_bad_blob_and_refills_it_in_auto_mode(origin, host_factory):
    from withcache.scrub import Scrubber

    async def body(host):
        url = f"{origin.base}/f/300000/15/fw.bin"
        job = await host.cache.add(url)
        assert (await host.finished(job)).state == "completed"
        (artifact,) = await host.cache.artifacts()
        path = host.store.path_for(artifact.sha256)
        with open(path, "r+b") as f:  # same size, one byte flipped: only a re-hash can tell
            f.seek(1000)
            f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
        scrubber = Scrubber(host.cache, interval=3600, rate=1 << 30)
        assert await scrubber.verify_next() == artifact.sha256
        assert await host.cache.artifacts() == []
        assert os.listdir(host.store.quarantine_dir)
        refill = host.cache.downloads.active(artifact.key)
        assert refill is not None and refill.source == "refill"
        assert (await host.finished(refill)).state == "completed"
        again = await host.cache.lookup(url, count_hit=True)
        assert again.artifact.sha256 == payload_sha256(300000, 15)
        assert await scrubber.verify_next() is None  # the refilled blob is good
        assert origin.gets("/f/300000/15/fw.bin") == 2

    await stopped_after(host_factory(), body)


@pytest_twisted.ensureDeferred
async def test_cancel_before_the_origin_answers_is_a_cancel_not_a_retry(origin, host_factory):
    async def body(host):
        job = await host.cache.add(f"{origin.base}/f/1000/16/late?delay=5")
        while job.state != "running":
            await deferLater(0.01)
        await deferLater(0.2)  # the request is out, no response yet
        assert host.cache.cancel(job)
        done = await host.finished(job)
        assert (done.state, done.error) == ("cancelled", "cancelled while running")
        assert os.listdir(host.store.tmp_dir) == []

    await stopped_after(host_factory(), body)


@pytest_twisted.ensureDeferred
async def test_a_change_by_another_process_empties_the_index_at_the_next_sync(host_factory):
    async def body(host: Host):
        a = Artifact("https://v.example/a", "https://v.example/a", "ab" * 32, 3, None, 0.0)
        path = host.store.path_for(a.sha256)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"abc")
        await host.catalog.run(put_artifact, a)
        await host.cache.sync_index()
        assert await host.cache.lookup(a.url, count_hit=True) is not None
        assert host.cache.cached(a.url) is not None  # remembered
        await host.cache.sync_index()
        assert host.cache.cached(a.url) is not None  # our own writes change nothing
        other = sqlite3.connect(host.catalog.path)  # withcache-admin rm, say
        with other:
            other.execute("DELETE FROM artifacts WHERE key = ?", (a.key,))
        other.close()
        await host.cache.sync_index()
        assert host.cache.cached(a.url) is None
        assert await host.cache.lookup(a.url, count_hit=True) is None

    await stopped_after(host_factory(curate=True), body)


@pytest_twisted.ensureDeferred
async def test_a_miss_whose_caller_hangs_up_is_still_recorded_and_filled(origin, host_factory):
    """Klein cancels a route's Deferred when its client disconnects (a shim probe that gave up):
    the miss's bookkeeping and its fill go on regardless."""

    async def body(host):
        url = f"{origin.base}/f/300000/31/probe-gave-up.bin"
        key = host.cache.key_for(url)
        waiting = defer.ensureDeferred(host.cache.lookup(url, count_hit=False))
        waiting.cancel()  # the client left while the catalog was being asked
        assert waiting.called and isinstance(waiting.result.value, defer.CancelledError)
        waiting.addErrback(lambda _: None)
        await host.catalog.run(lambda conn: None)  # the catalog thread has done the lookup
        job = host.cache.downloads.active(key)
        assert job is not None and job.source == "auto"
        assert (await host.finished(job)).state == "completed"
        assert host.cache.metrics.misses._value.get() == 1
        hit = await host.cache.lookup(url, count_hit=True)
        assert hit.artifact.misses == 1


@pytest.fixture
def tmp_unlinks(monkeypatch):
    """(path, whether on the reactor thread) of every unlink in a data dir's tmp/."""
    from twisted.python import threadable

    seen = []
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if f"{os.sep}tmp{os.sep}" in os.fsdecode(path):
            seen.append((os.fsdecode(path), threadable.isInIOThread()))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    return seen


@pytest_twisted.ensureDeferred
async def test_a_failed_fill_removes_its_temp_file_off_the_reactor_thread(
    origin, host_factory, monkeypatch, tmp_unlinks
):
    """Gigabytes of temp file take a while to unlink: never on the thread serving hits."""
    real_write = Ingest.write

    def full_disk(self, data):
        if self.size > 100_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, data)

    monkeypatch.setattr(Ingest, "write", full_disk)

    async def body(host):
        done = await host.finished(await host.cache.add(f"{origin.base}/f/1000000/17/big"))
        assert done.state == "failed"
        assert os.listdir(host.store.tmp_dir) == []
        assert [on_reactor for _path, on_reactor in tmp_unlinks] == [False]

    await stopped_after(host_factory(), body)


@pytest_twisted.ensureDeferred
async def test_a_delete_whose_caller_hangs_up_still_drops_the_blob_and_the_index(
    origin, host_factory
):
    async def body(host):
        url = f"{origin.base}/f/200000/32/gone.bin"
        await host.cache.lookup(url, count_hit=False)
        await host.finished(host.cache.downloads.active(host.cache.key_for(url)))
        hit = await host.cache.lookup(url, count_hit=True)
        assert host.cache.cached(url) is not None
        deleting = defer.ensureDeferred(host.cache.delete(host.cache.key_for(url)))
        deleting.cancel()
        deleting.addErrback(lambda _: None)
        for _ in range(3):  # get_artifact, delete_artifact, delete_unreferenced
            await host.catalog.run(lambda conn: None)
        assert host.cache.cached(url) is None
        assert not os.path.exists(hit.path)


async def test_a_cancelled_fill_removes_its_temp_file_off_the_reactor_thread(
    origin, host_factory, tmp_unlinks
):
    async def body(host):
        job = await host.cache.add(f"{origin.base}/f/5000000/18/slow?rate=500000")
        while job.bytes_done == 0:
            await deferLater(0.01)
        assert host.cache.cancel(job)
        assert (await host.finished(job)).state == "cancelled"
        assert os.listdir(host.store.tmp_dir) == []
        assert [on_reactor for _path, on_reactor in tmp_unlinks] == [False]

    await stopped_after(host_factory(), body)


@pytest_twisted.ensureDeferred
async def test_a_fill_of_the_same_bytes_during_a_quarantine_keeps_its_blob_and_row(
    origin, host_factory, monkeypatch
):
    """The quarantine of a bad blob and a fill of the good bytes (under another URL) take
    turns: the fill's blob is never the one moved aside, nor its row the one dropped."""
    import fcntl
    import threading

    from twisted.internet import reactor

    async def body(host):
        first = await host.cache.add(f"{origin.base}/f/300000/19/a")
        assert (await host.finished(first)).state == "completed"
        (bad,) = await host.cache.artifacts()
        with open(host.store.path_for(bad.sha256), "r+b") as f:
            f.seek(1000)
            f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
        # The quarantine is about to move the bad blob aside ...
        about_to_move, go_on = defer.Deferred(), threading.Event()
        real_quarantine = host.store.quarantine

        def pause_then_quarantine(sha256):
            reactor.callFromThread(about_to_move.callback, None)
            assert go_on.wait(TIMEOUT)
            return real_quarantine(sha256)

        monkeypatch.setattr(host.store, "quarantine", pause_then_quarantine)
        quarantined = defer.ensureDeferred(host.cache.quarantine(bad.sha256, "a flipped byte"))
        await about_to_move.addTimeout(TIMEOUT, reactor)
        # ... when a fill of the same bytes commits (or waits to).
        waiting = defer.Deferred()
        real_flock = fcntl.flock

        def flock(fd, operation):
            if operation & fcntl.LOCK_EX and not operation & fcntl.LOCK_NB:
                try:
                    return real_flock(fd, operation | fcntl.LOCK_NB)
                except BlockingIOError:
                    reactor.callFromThread(waiting.callback, None)
            return real_flock(fd, operation)

        monkeypatch.setattr(fcntl, "flock", flock)
        second = await host.cache.add(f"{origin.base}/f/300000/19/b")
        finished = host.cache.downloads.wait(second)
        either = defer.DeferredList([waiting, finished], fireOnOneCallback=True)
        await either.addTimeout(TIMEOUT, reactor)
        go_on.set()
        await quarantined.addTimeout(TIMEOUT, reactor)
        assert (await host.finished(second)).state == "completed"
        hit = await host.cache.lookup(second.url, count_hit=False)
        assert hit is not None and hit.artifact.sha256 == bad.sha256
        assert host.store.verify(bad.sha256, bad.size)
        assert await host.cache.lookup(first.url, count_hit=False) is None

    await stopped_after(host_factory(curate=True), body)


@pytest_twisted.ensureDeferred
async def test_stopping_during_a_paced_scrub_stops_its_read_and_judges_nothing(
    host_factory, tmp_path, monkeypatch
):
    """Stopping must not wait for a blob to be read at the scrub's rate (a 4 GiB blob at
    32 MiB/s would outlast systemd's stop timeout): the read stops part-way, and a blob read in
    part is neither verified nor quarantined."""
    from twisted.internet import reactor

    from withcache import catalog as cat
    from withcache.datadir import import_file
    from withcache.scrub import Scrubber
    from withcache.store import CHUNK

    size = 8 * CHUNK
    src = tmp_path / "big.bin"
    src.write_bytes(b"\x5a" * size)

    async def body(host):
        url = "https://e.example.com/big.bin"
        artifact = await host.catalog.run(
            import_file, host.store, url, str(src), query="signed", now=0.0
        )
        read, reading = [], defer.Deferred()
        real_verify = host.store.verify

        def counting_verify(sha256, size=None, pace=None):
            def counted(n):
                read.append(n)
                if len(read) == 1:
                    reactor.callFromThread(reading.callback, None)
                pace(n)

            return real_verify(sha256, size, counted)

        monkeypatch.setattr(host.store, "verify", counting_verify)
        # One chunk a second: the whole blob would take 8 s to read.
        scrubber = Scrubber(host.cache, interval=3600, rate=CHUNK)
        scrubber.startService()
        await reading.addTimeout(TIMEOUT, reactor)
        await defer.maybeDeferred(scrubber.stopService).addTimeout(TIMEOUT, reactor)
        assert 0 < sum(read) < size
        (row,) = await host.cache.artifacts()
        assert row.sha256 == artifact.sha256
        assert real_verify(artifact.sha256, size)
        assert not os.path.exists(host.store.quarantine_dir)
        verified = await host.catalog.run(
            lambda conn: conn.exec_driver_sql("SELECT verified_at FROM artifacts").fetchall()
        )
        assert verified == [(None,)]
        assert await host.catalog.run(cat.next_to_verify) == (artifact.sha256, size)

    await stopped_after(host_factory(curate=True), body)


@pytest_twisted.ensureDeferred
async def test_stopping_during_start_up_recovery_stops_the_sweeps_between_files(
    host_factory, monkeypatch
):
    """A host stopped while it sweeps what a crash left (gigabytes of orphans, maybe) stops
    sweeping at the next file; the rest is swept at the next start."""

    from twisted.internet import reactor

    host = host_factory()
    orphans = [host.store.path_for(c * 64) for c in "abc"]
    for path in orphans:
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(b"renamed into place, never recorded")
    checking, go_on = pause_first_referenced_check(monkeypatch)
    host.catalog.startService()
    host.cache.startService()
    await checking.addTimeout(TIMEOUT, reactor)
    stopped = host.cache.stopService()
    go_on.set()
    await stopped.addTimeout(TIMEOUT, reactor)
    await host.cache.recovery.addTimeout(TIMEOUT, reactor)
    await host.pool.closeCachedConnections()
    await host.catalog.stopService()
    assert [os.path.exists(p) for p in orphans] == [False, True, True]
    monkeypatch.undo()
    again = host_factory()
    await again.start()
    await again.stop()
    assert not any(os.path.exists(p) for p in orphans)


@pytest_twisted.ensureDeferred
async def test_stopping_while_a_fill_evicts_leaves_the_evicted_blobs_for_the_next_start(
    origin, host_factory, monkeypatch
):
    """Stopping waits for a fill that is committing, but not for it to unlink the blobs it
    evicted (gigabytes each, maybe): they are orphans, swept at the next start."""

    from twisted.internet import reactor

    host = await host_factory(max_bytes=130_000).start()
    old = []
    for seed in (20, 21, 22):
        job = await host.cache.add(f"{origin.base}/f/40000/{seed}/old")
        assert (await host.finished(job)).state == "completed"
        old.append(host.store.path_for(payload_sha256(40000, seed)))
    checking, go_on = pause_first_referenced_check(monkeypatch)
    new = await host.cache.add(f"{origin.base}/f/100000/23/new")  # evicts all three
    await checking.addTimeout(TIMEOUT, reactor)  # its row is being written
    stopped = host.cache.stopService()
    go_on.set()
    await stopped.addTimeout(TIMEOUT, reactor)
    await host.pool.closeCachedConnections()
    await host.catalog.stopService()
    assert new.state == "completed"
    assert all(os.path.exists(p) for p in old)
    monkeypatch.undo()

    async def body(again):
        assert not any(os.path.exists(p) for p in old)
        (artifact,) = await again.cache.artifacts()
        assert artifact.sha256 == payload_sha256(100000, 23)

    await stopped_after(host_factory(max_bytes=130_000), body)


@pytest_twisted.ensureDeferred
async def test_a_fill_cancelled_while_its_temp_file_is_being_made_leaves_none(
    origin, host_factory, monkeypatch
):
    import threading

    from twisted.internet import reactor

    async def body(host):
        making, go_on = defer.Deferred(), threading.Event()
        real_ingest = host.store.ingest

        def slow_ingest():
            reactor.callFromThread(making.callback, None)
            assert go_on.wait(TIMEOUT)
            return real_ingest()

        monkeypatch.setattr(host.store, "ingest", slow_ingest)
        job = await host.cache.add(f"{origin.base}/f/1000/24/x")
        await making.addTimeout(TIMEOUT, reactor)
        assert host.cache.cancel(job)
        assert (await host.finished(job)).state == "cancelled"
        closed = defer.Deferred()
        real_close = Ingest.close

        def close(self):
            real_close(self)
            reactor.callFromThread(closed.callback, None)

        monkeypatch.setattr(Ingest, "close", close)
        go_on.set()
        await closed.addTimeout(TIMEOUT, reactor)
        assert os.listdir(host.store.tmp_dir) == []

    await stopped_after(host_factory(), body)
