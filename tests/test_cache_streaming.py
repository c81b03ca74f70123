"""The cache facade's side of streaming, in-process with a real origin on 127.0.0.1: a miss waits
for the fill's headers (within settings.stream_wait), a servable fill is handed out, streamed GETs
are counted on the artifact once it is committed, and a fill's end reaches its stream."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer

from tests.support import payload
from tests.test_cache import host_factory, origin, stopped_after  # noqa: F401 - fixtures
from withcache.cache import Hit, Streaming


@pytest_twisted.ensureDeferred
async def test_a_miss_waits_for_the_fills_headers_and_gets_the_stream(origin, host_factory):  # noqa: F811
    async def body(host):
        url = f"{origin.base}/f/4000000/1/a.run?rate=1000000"
        found = await host.cache.lookup(url, count_hit=False)
        assert isinstance(found, Streaming)
        stream = found.stream
        assert (stream.servable, stream.total) == (True, 4000000)
        assert stream.content_type == "application/octet-stream"
        job = host.cache.downloads.active(host.cache.key_for(url))
        assert job.stream is stream
        await host.finished(job)
        assert stream.size == 4000000 and stream.error is None

    await stopped_after(host_factory(stream_wait=10), body)


@pytest_twisted.ensureDeferred
async def test_a_miss_whose_origin_is_slow_to_answer_gets_none_after_the_wait(
    origin,  # noqa: F811
    host_factory,  # noqa: F811
):
    from twisted.internet import reactor

    async def body(host):
        url = f"{origin.base}/f/1000/2/slow.run?delay=30"
        started = reactor.seconds()
        assert await host.cache.lookup(url, count_hit=False) is None
        assert 0.2 <= reactor.seconds() - started < 5
        job = host.cache.downloads.active(host.cache.key_for(url))
        assert job is not None and not job.stream.servable
        host.cache.cancel(job)
        await host.finished(job)
        assert job.stream.error is not None  # the cancelled fill failed its stream

    await stopped_after(host_factory(stream_wait=0.2), body)


@pytest_twisted.ensureDeferred
async def test_streamed_gets_count_hits_on_the_artifact_once_committed(origin, host_factory):  # noqa: F811
    async def body(host):
        url = f"{origin.base}/f/2000000/3/b.run?rate=2000000"
        first = await host.cache.lookup(url, count_hit=False)  # the probe: a miss, then a stream
        assert isinstance(first, Streaming)
        gets = [await host.cache.lookup(url, count_hit=True) for _ in range(3)]
        assert all(isinstance(g, Streaming) and g.stream is first.stream for g in gets)
        assert first.stream.hits == 3
        await host.finished(host.cache.downloads.active(host.cache.key_for(url)))
        hit = await host.cache.lookup(url, count_hit=True)
        assert isinstance(hit, Hit)
        await host.cache.sync_index()
        (artifact,) = await host.cache.artifacts()
        assert (artifact.hits, artifact.misses) == (4, 1)
        with open(hit.path, "rb") as f:
            assert f.read() == payload(2000000, 3)

    await stopped_after(host_factory(stream_wait=10), body)


@pytest_twisted.ensureDeferred
async def test_a_fill_that_fails_ends_its_stream_and_a_miss_gets_none(origin, host_factory):  # noqa: F811
    async def body(host):
        url = f"{origin.base}/f/1000/4/gone.run?fail=404"
        assert await host.cache.lookup(url, count_hit=False) is None
        job = host.cache.downloads.active(host.cache.key_for(url))
        done = await host.finished(job)
        assert done.state == "failed"
        assert "404" in job.stream.error
        assert (await job.stream.when_servable()) is False

    await stopped_after(host_factory(stream_wait=10), body)


@pytest_twisted.ensureDeferred
async def test_a_wait_ends_when_its_queued_job_is_cancelled(origin, host_factory):  # noqa: F811
    from twisted.internet import reactor

    async def body(host):
        busy = await host.cache.add(f"{origin.base}/f/100000/5/busy.run?delay=30")
        queued = await host.cache.add(f"{origin.base}/f/1000/6/queued.run")
        assert queued.state == "queued"  # behind the one worker's slow fill
        started = reactor.seconds()
        lookup = defer.ensureDeferred(host.cache.lookup(queued.url, count_hit=False))
        # The lookup's catalog read is done once this one (on the same database thread) is.
        await host.cache.catalog.run(lambda conn: None)
        assert not lookup.called  # waiting for the queued fill's headers
        host.cache.cancel(queued)
        assert await lookup is None
        assert reactor.seconds() - started < 10  # not the 30 s --stream-wait
        host.cache.cancel(busy)

    await stopped_after(host_factory(stream_wait=30, workers=1), body)
