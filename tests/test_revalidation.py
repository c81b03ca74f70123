"""Revalidation and what may be stored: withcache.revalidation on a task.Clock, then the cache
with the origin of tests/origin.py on 127.0.0.1 and a clock the test moves (no sleeps)."""

from __future__ import annotations

import hashlib

import pytest
import pytest_twisted
from twisted.internet import defer, task

from tests.origin import listen_in_process
from tests.support import payload, payload_sha256
from tests.test_cache import TIMEOUT, Host
from withcache import catalog as cat
from withcache import freshness
from withcache.fetcher import Fetcher, FetchError, Revalidation
from withcache.metrics import Metrics
from withcache.revalidation import (
    CHANGED,
    FAILED,
    FAILED_BACKOFF,
    NOT_MODIFIED,
    PENDING,
    Revalidations,
)

HEADERS = {"etag": '"v1"', "cache-control": "max-age=2"}
ART = cat.Artifact(
    "k", "https://v.example/k", "ab" * 32, 3, None, 0.0, origin_headers=freshness.encode(HEADERS)
)


class FakeFetcher:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.answers: list[defer.Deferred] = []

    def revalidate(self, url, headers):
        self.calls.append((url, headers))
        d: defer.Deferred = defer.Deferred()
        self.answers.append(d)
        return d


class FakeCatalog:
    def __init__(self):
        self.revalidated: list[tuple] = []

    def run(self, fn, *args):
        assert fn is cat.revalidated
        self.revalidated.append(args)
        return defer.succeed(True)


class Bench:
    """Revalidations over a Clock, a fetcher answered by hand and a recording catalog."""

    def __init__(self):
        self.clock = task.Clock()
        self.fetcher = FakeFetcher()
        self.catalog = FakeCatalog()
        self.refills: list[str] = []
        self.changes = 0
        self.metrics = Metrics()

        async def refill(url, artifact, client, by_operator):
            self.refills.append(url)

        self.revalidations = Revalidations(
            self.fetcher,
            self.catalog,  # type: ignore[arg-type]
            refill,
            reactor=self.clock,
            now=self.clock.seconds,
            metrics=self.metrics,
            on_change=self.count_change,
        )

    def count_change(self):
        self.changes += 1

    def wait(self, artifact=ART, timeout=2.0, url="https://v.example/k?sig=new"):
        outcomes: list[str] = []
        self.revalidations.wait(url, artifact, None, timeout).addCallback(outcomes.append)
        return outcomes

    def counted(self, outcome: str) -> float:
        return self.metrics.revalidations.labels(outcome)._value.get()


def test_one_conditional_request_however_many_wait_and_a_304_makes_it_fresh():
    bench = Bench()
    waits = [bench.wait() for _ in range(5)]
    (call,) = bench.fetcher.calls
    # The URL asked for now (its query may carry a fresher signature), the stored validators.
    assert call == ("https://v.example/k?sig=new", HEADERS)
    bench.fetcher.answers[0].callback(Revalidation(True, {"date": "Tue, 01 Jan 2030 00:00:00 GMT"}))
    assert waits == [[NOT_MODIFIED]] * 5
    ((key, sha, stored, now),) = bench.catalog.revalidated
    assert (key, sha, now) == ("k", ART.sha256, 0.0)
    assert freshness.decode(stored) == {**HEADERS, "date": "Tue, 01 Jan 2030 00:00:00 GMT"}
    assert bench.changes == 1 and bench.counted(NOT_MODIFIED) == 1
    assert not bench.revalidations.running("k")


def test_a_waiter_gives_up_after_its_budget_and_the_revalidation_goes_on():
    bench = Bench()
    early = bench.wait(timeout=2.0)
    bench.clock.advance(1.9)
    late = bench.wait(timeout=2.0)
    assert early == [] and late == []
    bench.clock.advance(0.1)
    assert early == [PENDING] and late == []
    bench.fetcher.answers[0].callback(Revalidation(True, {}))
    assert early == [PENDING] and late == [NOT_MODIFIED]
    assert not bench.clock.getDelayedCalls()


def test_a_changed_origin_queues_a_refill_and_says_changed():
    bench = Bench()
    outcome = bench.wait()
    bench.fetcher.answers[0].callback(Revalidation(False, {"etag": '"v2"'}))
    assert outcome == [CHANGED]
    assert bench.refills == ["https://v.example/k?sig=new"]
    assert bench.catalog.revalidated == [] and bench.counted(CHANGED) == 1


def test_nothing_to_validate_with_is_a_refetch_without_asking():
    bench = Bench()
    bare = cat.Artifact("k", "u", "ab" * 32, 3, None, 0.0, origin_headers='{"date": "x"}')
    assert bench.wait(bare) == [CHANGED]
    assert bench.fetcher.calls == [] and len(bench.refills) == 1


def test_a_failure_is_failed_and_the_origin_is_not_asked_again_for_a_while():
    bench = Bench()
    outcome = bench.wait()
    bench.fetcher.answers[0].errback(FetchError("origin answered 503 Service Unavailable"))
    assert outcome == [FAILED] and bench.counted(FAILED) == 1
    bench.clock.advance(FAILED_BACKOFF - 1)
    assert bench.wait() == [FAILED]
    assert len(bench.fetcher.calls) == 1
    bench.clock.advance(1)
    again = bench.wait()
    assert len(bench.fetcher.calls) == 2 and again == []
    bench.fetcher.answers[1].callback(Revalidation(True, {}))
    assert again == [NOT_MODIFIED]


# The cache, with a real origin and a clock the test moves


@pytest.fixture
def origin():
    from twisted.internet import reactor

    res, port = listen_in_process(reactor)
    res.port = port
    yield res
    port.stopListening()


class Later:
    """The reactor's time plus whatever the test adds: lifetimes pass without waiting."""

    def __init__(self):
        from twisted.internet import reactor

        self.reactor, self.offset = reactor, 0.0

    def __call__(self) -> float:
        return self.reactor.seconds() + self.offset


class FreshHost(Host):
    def __init__(self, data_dir, origin, policy=None, **settings):
        policy = policy or freshness.Policy()
        # A miss answers at once (streaming a fill is tests/test_streaming*.py's business).
        settings.setdefault("stream_wait", 0)
        super().__init__(data_dir, freshness=policy, **settings)
        self.origin = origin
        from twisted.internet import reactor

        self.later = Later()
        self.cache._now = self.later
        self.cache.revalidations._now = self.later
        self.cache.downloads._now = self.later
        self.cache.fetcher = self.cache.revalidations._fetcher = Fetcher(
            reactor,
            self.cache.fetcher.http,
            self.settings.policy,
            backoff=0.01,
            idle_timeout=5,
            freshness_policy=policy,
        )

    def advance(self, seconds: float) -> None:
        """Time passes for this host and its origin alike (whose Date says how old it is)."""
        self.later.offset += seconds
        self.origin.date_offset = self.later.offset

    async def fill(self, url):
        assert await self.cache.lookup(url, count_hit=True) is None
        job = self.cache.downloads.active(self.cache.key_for(url))
        assert job is not None
        return await self.finished(job)

    async def get(self, url):
        from twisted.internet import reactor

        d = defer.ensureDeferred(self.cache.lookup(url, count_hit=True))
        return await d.addTimeout(TIMEOUT, reactor)


async def hosted(tmp_path, origin, body, **kw):
    host = FreshHost(tmp_path / "data", origin, **kw)
    await host.start()
    try:
        return await body(host)
    finally:
        await host.stop()


def read(hit) -> bytes:
    with open(hit.path, "rb") as f:
        return f.read()


@pytest_twisted.ensureDeferred
async def test_no_store_is_refused_at_its_headers_and_not_fetched_again_for_a_while(
    origin, tmp_path
):
    url = f"{origin.base}/f/3000000/1/latest.json?cc=no-store"

    async def body(host):
        job = await host.fill(url)
        assert (job.state, job.error) == ("uncacheable", "not cacheable: Cache-Control: no-store")
        assert await host.get(url) is None
        assert host.cache.downloads.active(host.cache.key_for(url)) is None  # negative entry
        assert origin.sent_bytes < 3000000  # the body was not read
        assert host.cache.metrics.uncacheable.labels("no-store")._value.get() == 1
        host.advance(3601)
        assert await host.get(url) is None
        assert host.cache.downloads.active(host.cache.key_for(url)) is not None
        assert await host.catalog.run(cat.list_artifacts) == []

    await hosted(tmp_path, origin, body)


@pytest_twisted.ensureDeferred
async def test_vary_is_refused_and_a_rule_stores_it_anyway(origin, tmp_path):
    url = f"{origin.base}/f/1000/1/page?vary=User-Agent"

    async def refused(host):
        job = await host.fill(url)
        assert job.state == "uncacheable" and "Vary: user-agent" in job.error

    await hosted(tmp_path, origin, refused)
    rule = freshness.Policy(rules=(freshness.Rule.parse("*/page=1h"),))

    async def stored(host):
        assert (await host.fill(url)).state == "completed"
        assert read(await host.get(url)) == payload(1000, 1)

    await hosted(tmp_path, origin, stored, policy=rule)


@pytest_twisted.ensureDeferred
async def test_a_stale_artifact_is_revalidated_with_a_304_and_no_body(origin, tmp_path):
    url = f"{origin.base}/f/200000/2/latest/tool.tar.gz?cc=max-age%3D2&cd=attachment"

    async def body(host):
        assert (await host.fill(url)).state == "completed"
        stored = (await host.get(url)).artifact
        assert freshness.decode(stored.origin_headers)["cache-control"] == "max-age=2"
        sent = origin.sent_bytes
        host.advance(3)
        hit = await host.get(url)
        assert hit is not None and hit.artifact.sha256 == stored.sha256
        assert origin.sent_bytes == sent and origin.not_modified == 1
        row = await host.catalog.run(cat.get_artifact, stored.key)
        assert row.validated_at > stored.validated_at
        assert host.cache.fresh(row)
        assert host.cache.metrics.revalidations.labels("not_modified")._value.get() == 1

    await hosted(tmp_path, origin, body)


@pytest_twisted.ensureDeferred
async def test_a_changed_artifact_is_a_miss_until_its_new_version_replaces_the_old(
    origin, tmp_path
):
    path = "/f/200000/3/latest/tool.tar.gz"
    url = f"{origin.base}{path}?cc=max-age%3D2"

    async def body(host):
        await host.fill(url)
        old = await host.get(url)
        with open(old.path, "rb") as reader:  # a client mid-download of the old version
            origin.versions[path] += 1
            host.advance(3)
            assert await host.get(url) is None  # the shim falls through to the origin
            job = host.cache.downloads.active(old.artifact.key)
            assert job is not None and (await host.finished(job)).state == "completed"
            new = await host.get(url)
            assert hashlib.sha256(read(new)).hexdigest() == payload_sha256(200000, 4)
            assert reader.read() == payload(200000, 3)  # the old reader's bytes stay whole
        assert host.cache.metrics.revalidations.labels("changed")._value.get() == 1

    await hosted(tmp_path, origin, body)


@pytest.mark.parametrize(
    ("cc", "served"), [("max-age%3D2", True), ("max-age%3D2,must-revalidate", False)]
)
@pytest_twisted.ensureDeferred
async def test_an_origin_down_while_stale_serves_stale_unless_it_must_revalidate(
    origin, tmp_path, cc, served
):
    url = f"{origin.base}/f/1000/5/x.run?cc={cc}"

    async def body(host):
        await host.fill(url)
        key = host.cache.key_for(url)
        await origin.port.stopListening()
        await host.pool.closeCachedConnections()
        host.advance(3)
        assert (await host.get(url) is not None) is served
        assert host.cache.metrics.revalidations.labels("failed")._value.get() == 1
        # Past --stale-if-error (1 day): a miss, and the shim goes to the origin itself.
        host.advance(freshness.DAY + FAILED_BACKOFF)
        assert await host.get(url) is None
        assert await host.catalog.run(cat.get_artifact, key) is not None  # kept, not deleted

    await hosted(tmp_path, origin, body)


def test_an_operators_refresh_is_not_turned_away_by_the_backoff():
    bench = Bench()
    bench.wait()
    bench.fetcher.answers[0].errback(FetchError("origin answered 502 Bad Gateway"))
    outcome: list[str] = []
    bench.revalidations.wait("u", ART, None, None, by_operator=True).addCallback(outcome.append)
    assert len(bench.fetcher.calls) == 2
    bench.fetcher.answers[1].callback(Revalidation(True, {}))
    assert outcome == [NOT_MODIFIED]
