"""When a fill tries again, on a Clock: the Fetcher over treq with a recording agent, then
the download manager and the cache with their threads handing back through the Clock.

The sockets-and-origin tests (test_fetcher.py, test_cache.py) prove the fill works against a
real origin; these pin down its timing, which those cannot see: each retry's delay, the
Retry-After cap, the backoff cap, the idle and header timeouts.
"""

from __future__ import annotations

import pytest
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.python.failure import Failure

from tests.clocked import RecordingAgent, ThreadClock, response
from withcache.cache import Cache, Settings
from withcache.catalog import Catalog
from withcache.fetcher import Fetcher, FetchError
from withcache.policy import OriginPolicy
from withcache.store import Store

URL = "https://origin.example/big.iso"


class MemorySink:
    """A Sink in memory (the Fetcher's view of an ingest)."""

    def __init__(self) -> None:
        self.data = b""

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, data: bytes) -> None:
        self.data += data

    def truncate(self) -> None:
        self.data = b""


class Fill:
    """One Fetcher.fetch on a Clock, its requests recorded for the test to answer."""

    def __init__(self, **fetcher_options) -> None:
        self.clock = ThreadClock()
        self.agent = RecordingAgent()
        self.fetcher = Fetcher(
            self.clock, HTTPClient(self.agent), OriginPolicy(allow_private=True), **fetcher_options
        )
        self.sink = MemorySink()
        self.result = defer.ensureDeferred(self.fetcher.fetch(URL, self.sink, lambda *_: None))

    @property
    def requests(self) -> int:
        return len(self.agent.requests)

    def next_request_after(self, delay: float) -> None:
        """No request until delay has passed, then exactly one more."""
        before = self.requests
        if delay == 0:
            self.clock.advance(0)
            assert self.requests == before + 1, "no retry at once"
            return
        self.clock.advance(delay - 0.001)
        assert self.requests == before, f"retried before {delay} s"
        self.clock.advance(0.001)
        assert self.requests == before + 1, f"no retry at {delay} s"

    def failure(self) -> BaseException:
        """What the fill failed with (once: the Deferred's result is consumed)."""
        failures = []
        self.result.addErrback(lambda f: failures.append(f.value))
        assert failures, "the fill has not failed"
        return failures[0]


def test_a_failing_origin_is_retried_after_1_2_4_8_seconds_then_given_up():
    fill = Fill()
    for delay in (1, 2, 4, 8):
        fill.agent.answer(response(503))
        fill.next_request_after(delay)
    fill.agent.answer(response(503))
    failed = fill.failure()
    assert isinstance(failed, FetchError) and "gave up after 5 attempts" in str(failed)
    assert fill.clock.getDelayedCalls() == []


def test_the_backoff_doubles_up_to_30_seconds():
    fill = Fill(max_attempts=8)
    for delay in (1, 2, 4, 8, 16, 30, 30):
        fill.agent.answer(response(500))
        fill.next_request_after(delay)


@pytest.mark.parametrize(("retry_after", "delay"), [("5", 5), ("0", 0), ("3600", 60)])
def test_retry_after_sets_the_delay_capped_at_60_seconds(retry_after, delay):
    fill = Fill()
    fill.agent.answer(response(429, retry_after=retry_after))
    fill.next_request_after(delay)


def test_a_retry_after_that_is_not_seconds_falls_back_to_the_backoff():
    fill = Fill()
    fill.agent.answer(response(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
    fill.next_request_after(1)


def test_an_origin_that_goes_quiet_mid_body_is_dropped_after_the_idle_timeout_and_resumed():
    fill = Fill(idle_timeout=20.0)
    first = fill.agent.answer(response(200, 10, etag='"v1"'))
    first.deliver(b"01234")
    fill.clock.advance(19.9)
    first.deliver(b"5")  # a chunk resets the idle timer
    fill.clock.advance(19.9)
    assert not first.transport.disconnecting and fill.requests == 1
    fill.clock.advance(0.1)
    # Dropped (the sink stops the connection), then retried from byte 6 after the backoff.
    assert first.transport.producerState == "stopped"
    first.lose()
    fill.next_request_after(1)
    assert fill.agent.header(b"range") == b"bytes=6-"
    assert fill.agent.header(b"if-range") == b'"v1"'
    second = fill.agent.answer(response(206, 4, etag='"v1"', content_range="bytes 6-9/10"))
    second.deliver(b"6789")
    second.finish()
    assert fill.sink.data == b"0123456789"
    assert fill.result.result.size == 10


def test_an_origin_that_never_answers_times_out_after_the_header_timeout_and_is_retried():
    fill = Fill(header_timeout=7.0)
    fill.clock.advance(6.999)
    assert fill.requests == 1 and not fill.result.called
    fill.clock.advance(0.001)
    # The request was cancelled by the timeout: a retry after the backoff, not a cancelled fill.
    fill.next_request_after(1)
    assert not fill.result.called


def test_a_drop_that_advanced_the_file_starts_the_attempts_and_backoff_over():
    fill = Fill()
    fill.agent.answer(response(503))
    fill.next_request_after(1)
    fill.agent.answer(response(503))
    fill.next_request_after(2)
    partial = fill.agent.answer(response(200, 10))
    partial.deliver(b"012")
    partial.lose()
    fill.next_request_after(1)  # progress: back to the first delay


class ClockedHost:
    """A Cache (its download manager, catalog and writer threads included) on a ThreadClock,
    filling from a recording agent: the threads work for real, time moves only when told."""

    def __init__(self, data_dir, **fetcher_options) -> None:
        self.clock = clock = ThreadClock()
        self.agent = RecordingAgent()
        settings = Settings(policy=OriginPolicy(allow_private=True), stream_wait=0)
        self.catalog = Catalog(str(data_dir / "cache.db"), clock)
        fetcher = Fetcher(clock, HTTPClient(self.agent), settings.policy, **fetcher_options)
        self.cache = Cache(
            Store(str(data_dir)), self.catalog, settings, reactor=clock, now=clock.seconds,
            fetcher=fetcher,
        )  # fmt: skip
        self.catalog.startService()
        self.cache.privilegedStartService()
        self.cache.startService()
        self.settle(self.cache.recovery)

    def settle(self, d: defer.Deferred):
        """d's result, running what the threads hand back until it has one (time stands still)."""
        results: list = []
        d.addBoth(results.append)
        # Until a result arrives: d.called is already true while d waits on another Deferred
        # (a catalog that stops once the calls under way are done).
        self.clock.run_until(lambda: bool(results))
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def stop(self) -> None:
        self.settle(self.cache.stopService())
        self.settle(self.catalog.stopService())
        self.clock.stop()


@pytest.fixture
def clocked_host(tmp_path):
    host = ClockedHost(tmp_path / "data", idle_timeout=30.0)
    yield host
    host.stop()


def test_the_cache_fills_on_its_clock_through_a_503_and_a_silent_origin(clocked_host):
    """A 503 with Retry-After 7, then a body that stops for the idle timeout, then the rest:
    the job's times are the schedule, to the second."""
    host, body = clocked_host, b"x" * 100_000
    job = host.settle(defer.ensureDeferred(host.cache.add(URL)))
    finished = host.cache.downloads.wait(job)
    host.clock.run_until(lambda: len(host.agent.requests) == 1)
    host.agent.answer(response(503, retry_after="7"))
    host.clock.advance(6.999)
    assert len(host.agent.requests) == 1
    host.clock.advance(0.001)
    assert len(host.agent.requests) == 2 and host.clock.seconds() == 7
    first = host.agent.answer(response(200, len(body), etag='"e"'))
    first.deliver(body[:40_000])
    host.clock.run_until(lambda: job.bytes_done == 40_000)  # through the writer thread
    host.clock.advance(30)  # the idle timeout: dropped, retried after 1 s
    first.lose()
    host.clock.advance(1)
    assert len(host.agent.requests) == 3
    assert host.agent.header(b"range") == b"bytes=40000-"
    rest = host.agent.answer(
        response(206, 60_000, etag='"e"', content_range="bytes 40000-99999/100000")
    )
    rest.deliver(body[40_000:])
    rest.finish()
    done = host.settle(finished)
    assert done.state == "completed", done.error
    assert (done.started_at, done.finished_at) == (0, 38)
    hit = host.settle(defer.ensureDeferred(host.cache.lookup(URL, count_hit=False)))
    assert hit is not None and hit.artifact.size == len(body)
    with open(hit.path, "rb") as f:
        assert f.read() == body


def test_a_cancel_before_the_origin_answers_is_a_cancel_not_a_retry(clocked_host):
    host = clocked_host
    job = host.settle(defer.ensureDeferred(host.cache.add(URL)))
    finished = host.cache.downloads.wait(job)
    host.clock.run_until(lambda: len(host.agent.requests) == 1)
    assert host.cache.cancel(job)
    done = host.settle(finished)
    assert (done.state, done.error) == ("cancelled", "cancelled while running")
    host.clock.advance(120)  # past any backoff and the header timeout: no second request
    assert len(host.agent.requests) == 1
