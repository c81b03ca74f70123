"""One fill over real sockets against the misbehaving origin in tests/origin.py."""

from __future__ import annotations

import gzip
import hashlib

import pytest
import pytest_twisted
from twisted.internet import defer

import withcache
from tests.origin import listen_in_process
from tests.support import payload
from withcache.fetcher import Fetcher, FetchError, make_http_client
from withcache.policy import OriginPolicy, RefusedOrigin
from withcache.store import Store

OPEN = OriginPolicy(allow_private=True)
TIMEOUT = 60


@pytest.fixture
def origin():
    from twisted.internet import reactor

    res, port = listen_in_process(reactor)
    yield res
    port.stopListening()


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "data"))


class Run:
    """A fetcher wired to the real reactor, with fast retries for tests."""

    def __init__(self, store, policy=OPEN, resolve=None, **kw):
        from twisted.internet import reactor

        extra = {"resolve": resolve} if resolve else {}
        client = make_http_client(reactor, policy, **extra)
        self.pool = client._agent._agent._pool
        kw.setdefault("backoff", 0.01)
        kw.setdefault("idle_timeout", 2.0)
        self.fetcher = Fetcher(reactor, client, policy, **kw)
        self.store = store
        self.progress: list[tuple[int, int | None]] = []

    async def __call__(self, url):
        from twisted.internet import reactor

        ingest = self.store.ingest()
        try:
            d = defer.ensureDeferred(
                self.fetcher.fetch(url, ingest, lambda *p: self.progress.append(p))
            )
            result = await d.addTimeout(TIMEOUT, reactor)
            blob = ingest.commit(result.size)
            return result, blob
        finally:
            ingest.close()
            await self.pool.closeCachedConnections()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest_twisted.ensureDeferred
async def test_a_plain_fill_stores_the_exact_bytes_and_reports_progress(origin, store):
    run = Run(store)
    result, blob = await run(f"{origin.base}/f/300000/1/a.bin")
    assert blob.sha256 == sha(payload(300000, 1))
    assert result.content_type == "application/octet-stream"
    assert run.progress[0] == (0, 300000) and run.progress[-1] == (300000, 300000)
    (seen,) = origin.seen
    assert seen.user_agent == f"withcache/{withcache.__version__}"


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
@pytest_twisted.ensureDeferred
async def test_a_dropped_connection_resumes_with_range(origin, store, fraction):
    size = 2_000_000
    _result, blob = await Run(store)(f"{origin.base}/f/{size}/2/x?drop={fraction}")
    assert blob.sha256 == sha(payload(size, 2))
    first, second = origin.seen
    assert first.range is None
    offset = int(second.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < offset <= int(size * fraction)


@pytest_twisted.ensureDeferred
async def test_an_origin_that_ignores_range_is_refetched_from_zero(origin, store):
    _result, blob = await Run(store)(f"{origin.base}/f/1000000/3/x?drop=0.5&norange=1&times=0")
    assert blob.sha256 == sha(payload(1000000, 3))
    assert len(origin.seen) == 2


@pytest_twisted.ensureDeferred
async def test_a_changed_file_is_sent_whole_when_if_range_does_not_match(origin, store):
    _result, blob = await Run(store)(f"{origin.base}/f/1000000/4/x?drop=0.5&changing=1")
    assert blob.sha256 == sha(payload(1000000, 4))
    assert len(origin.seen) == 2 and origin.seen[1].range is not None


@pytest_twisted.ensureDeferred
async def test_a_206_with_a_new_etag_restarts_the_fill_from_zero(origin, store):
    url = f"{origin.base}/f/1000000/4/x?drop=0.5&changing=1&ignoreifrange=1"
    _result, blob = await Run(store)(url)
    assert blob.sha256 == sha(payload(1000000, 4))
    assert [s.range is None for s in origin.seen] == [True, False, True]


@pytest_twisted.ensureDeferred
async def test_5xx_and_429_are_retried_with_backoff(origin, store):
    await Run(store)(f"{origin.base}/f/1000/5/x?fail=503&times=2")
    assert len(origin.seen) == 3
    await Run(store)(f"{origin.base}/f/1000/6/y?fail=429&times=1")
    assert origin.gets("/f/1000/6/y") == 2


@pytest_twisted.ensureDeferred
async def test_a_5xx_storm_gives_up_after_five_attempts(origin, store):
    with pytest.raises(FetchError, match="gave up after 5 attempts: origin answered 500"):
        await Run(store)(f"{origin.base}/f/1000/5/x?fail=500&times=99")
    assert len(origin.seen) == 5


@pytest_twisted.ensureDeferred
async def test_a_4xx_fails_at_once(origin, store):
    with pytest.raises(FetchError, match="origin answered 404"):
        await Run(store)(f"{origin.base}/nothing-here")
    assert len(origin.seen) == 1


@pytest_twisted.ensureDeferred
async def test_a_body_shorter_than_its_content_length_is_never_accepted(origin, store):
    with pytest.raises(FetchError, match="gave up after 5 attempts"):
        await Run(store)(f"{origin.base}/f/100000/7/x?lie=5000")
    assert list(store.digests()) == []


@pytest_twisted.ensureDeferred
async def test_a_silent_origin_hits_the_idle_timeout_and_resumes(origin, store):
    run = Run(store, idle_timeout=0.5)
    _result, blob = await run(f"{origin.base}/f/1000000/8/x?stall=0.4")
    assert blob.sha256 == sha(payload(1000000, 8))
    assert origin.seen[1].range is not None


@pytest_twisted.ensureDeferred
async def test_an_origin_that_never_sends_headers_times_out_and_is_retried_not_cancelled(
    origin, store
):
    run = Run(store, header_timeout=0.3, max_attempts=2)
    with pytest.raises(FetchError, match="gave up after 2 attempts: timed out waiting for the"):
        await run(f"{origin.base}/f/1000/12/x?delay=30")
    assert list(store.digests()) == []


@pytest_twisted.ensureDeferred
async def test_gzip_content_encoding_is_stored_as_sent_not_decoded(origin, store):
    _result, blob = await Run(store)(f"{origin.base}/f/200000/9/driver.tar.gz?gzip=1")
    assert blob.sha256 == sha(gzip.compress(payload(200000, 9), mtime=0))
    assert blob.sha256 != sha(payload(200000, 9))


@pytest_twisted.ensureDeferred
async def test_redirects_are_followed_up_to_a_bound(origin, store):
    target = f"{origin.base}/f/5000/10/real.bin"
    result, blob = await Run(store)(f"{origin.base}/f/1/1/start?redirect={target}")
    assert blob.sha256 == sha(payload(5000, 10)) and result.url == target
    loop = f"{origin.base}/f/1/1/loop?redirect={origin.base}/f/1/1/loop?redirect=x"
    with pytest.raises(FetchError, match="more than 2 redirects"):
        await Run(store, max_redirects=2)(f"{origin.base}/f/1/1/a?redirect={loop}")


@pytest_twisted.ensureDeferred
async def test_max_size_refuses_by_content_length_and_by_counting(origin, store):
    small = OriginPolicy(allow_private=True, max_size=10_000)
    with pytest.raises(RefusedOrigin, match="over --max-size 10000"):
        await Run(store, small)(f"{origin.base}/f/20000/11/x")
    with pytest.raises(RefusedOrigin, match="more than --max-size 10000"):
        await Run(store, small)(f"{origin.base}/f/200000/11/x?nolength=1")
    assert list(store.digests()) == []


@pytest_twisted.ensureDeferred
async def test_credentials_go_only_to_their_own_host(origin, store):
    creds = {"127.0.0.1": ("lab", "s3cret")}
    port = origin.base.rsplit(":", 1)[1]
    other = f"http://localhost:{port}/f/10/1/y"

    async def resolve(host, _port):
        return ["127.0.0.1"]

    run = Run(store, credentials=creds.get, resolve=resolve)
    await run(f"{origin.base}/f/10/1/x?redirect={other}")
    first, second = origin.seen
    assert first.authorization == "Basic bGFiOnMzY3JldA=="
    assert second.path == "/f/10/1/y" and second.authorization is None


class TrustingPolicy(OriginPolicy):
    """Treats one test name as public, so a redirect from it can be checked for real."""

    def address_allowed(self, host, address):
        return host == "public.example" or super().address_allowed(host, address)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/f/10/1/x",
        "http://[::1]:{port}/f/10/1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://internal.example/f/10/1/x",
        "http://public.example:{port}/f/10/1/x?redirect=http://127.0.0.1:{port}/f/10/1/y",
    ],
)
@pytest_twisted.ensureDeferred
async def test_default_policy_refuses_non_public_origins(origin, store, url):
    port = origin.base.rsplit(":", 1)[1]
    names = {"internal.example": ["10.0.0.1"], "public.example": ["127.0.0.1"]}

    async def resolve(host, _port):
        return names.get(host, [host])

    policy = TrustingPolicy()
    with pytest.raises(RefusedOrigin, match="is not a public address"):
        await Run(store, policy, resolve=resolve)(url.format(port=port))
    # Only the public-looking origin was ever contacted, and only for its redirect.
    assert [s.path for s in origin.seen] in ([], ["/f/10/1/x"])
    assert list(store.digests()) == []
