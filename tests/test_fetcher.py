"""One fill over real sockets against the misbehaving origin in tests/origin.py."""

from __future__ import annotations

import gzip
import hashlib
import socket
import ssl
import struct
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

import withcache
from tests import support
from tests.origin import listen_in_process
from tests.support import MIB, payload, payload_sha256
from tests.tls import make_test_ca
from withcache import writer
from withcache.fetcher import Fetcher, FetchError, _BodySink
from withcache.origin_client import make_http_client
from withcache.policy import OriginPolicy, RefusedOrigin
from withcache.store import Store
from withcache.writer import ThreadedWriter

OPEN = OriginPolicy(allow_private=True)
TIMEOUT = 60

origin = support.origin_in_process  # the `origin` fixture here: tests/origin.py in process


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "data"))


class Run:
    """A fetcher wired to the real reactor, with fast retries for tests."""

    def __init__(self, store, policy=OPEN, resolve=None, **kw):
        from twisted.internet import reactor

        extra = {"resolve": resolve} if resolve else {}
        client = make_http_client(reactor, policy, **extra)
        self.pool = client.pool
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
    with pytest.raises(
        FetchError, match="gave up after 5 attempts without progress: origin answered 500"
    ):
        await Run(store)(f"{origin.base}/f/1000/5/x?fail=500&times=99")
    assert len(origin.seen) == 5


@pytest_twisted.ensureDeferred
async def test_a_4xx_fails_at_once(origin, store):
    with pytest.raises(FetchError, match="origin answered 404"):
        await Run(store)(f"{origin.base}/nothing-here")
    assert len(origin.seen) == 1


@pytest_twisted.ensureDeferred
async def test_what_the_origin_says_reaches_errors_and_logs_as_printable_text(origin, store):
    """A reason phrase or a redirect's Location can hold any byte but CR and LF: terminal
    escapes and NULs must not reach the log, the jobs table or `withcache-admin jobs`."""
    phrase = "%1B%5B2J%00Nicht%20gefunden%20%FC"  # ESC [2J, NUL, a Latin-1 u-umlaut
    with pytest.raises(FetchError) as failed:
        await Run(store)(f"{origin.base}/f/1/1/x?fail=404&phrase={phrase}")
    assert str(failed.value) == "origin answered 404 ?[2J?Nicht gefunden \xfc"
    target = "http://a%1Bb.example/x%3Fsig%3Dsecret"
    with pytest.raises(FetchError) as failed:
        await Run(store)(f"{origin.base}/f/1/1/x?redirect={target}")
    assert str(failed.value).startswith("cannot request http://a?b.example/x?sig=…: ")
    assert str(failed.value).isprintable() and "secret" not in str(failed.value)


@pytest_twisted.ensureDeferred
async def test_a_body_shorter_than_its_content_length_is_never_accepted(origin, store):
    with pytest.raises(FetchError, match="gave up after 5 attempts without progress"):
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
    with pytest.raises(
        FetchError, match="gave up after 2 attempts without progress: timed out waiting for the"
    ):
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

    run = Run(store, credentials=creds.get, resolve=resolve, credentials_over_http=True)
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


@pytest_twisted.ensureDeferred
async def test_drops_that_advance_the_file_do_not_use_up_the_attempts(origin, store):
    """Each attempt gets 150 kB further before the origin drops it: seven drops, two allowed in
    a row without progress, and the fill still completes."""
    run = Run(store, max_attempts=2)
    _result, blob = await run(f"{origin.base}/f/1000000/13/x?dropevery=150000")
    assert blob.sha256 == sha(payload(1000000, 13))
    assert origin.gets("/f/1000000/13/x") == 7


class FakeConnection(StringTransport):
    """What _BodySink sees of the response's connection: pause/resume/stop are recorded."""

    def __init__(self):
        super().__init__()
        self.pauses = self.resumes = 0

    def pauseProducing(self):
        self.pauses += 1
        super().pauseProducing()

    def resumeProducing(self):
        self.resumes += 1
        super().resumeProducing()


def sink_with_a_slow_disk(idle=10.0):
    """A _BodySink on a Clock whose disk is behind until the test fires `drained`."""
    clock = task.Clock()
    written: list[bytes] = []
    drained: defer.Deferred = defer.Deferred()
    behind = [True]
    sink = _BodySink(written.append, clock, idle, lambda: drained if behind[0] else None)
    connection = FakeConnection()
    sink.makeConnection(connection)

    def catch_up():
        behind[0] = False
        drained.callback(None)

    return sink, clock, connection, written, catch_up


def test_chunks_arriving_after_the_pause_are_kept_and_do_not_drop_the_connection():
    """One socket read holds many TLS records or chunks: they keep arriving after the pause."""
    sink, clock, connection, written, catch_up = sink_with_a_slow_disk()
    for i in range(5):
        sink.dataReceived(b"%d" % i)
    assert written == [b"0", b"1", b"2", b"3", b"4"]
    assert connection.pauses == 1 and connection.producerState == "paused"
    assert not sink.done.called and not connection.disconnecting
    catch_up()
    assert connection.resumes == 1 and connection.producerState == "producing"
    assert len(clock.getDelayedCalls()) == 1  # one idle timer, not one per chunk


def test_the_idle_timer_is_off_while_paused_and_back_on_after():
    sink, clock, connection, _written, catch_up = sink_with_a_slow_disk(idle=10.0)
    sink.dataReceived(b"x")
    sink.dataReceived(b"y")
    clock.advance(3600)  # the disk is behind for an hour: not the origin's fault
    assert not sink.done.called
    catch_up()
    clock.advance(9.9)
    assert not sink.done.called
    clock.advance(0.2)
    failure = sink.done.result
    sink.done.addErrback(lambda _: None)
    assert "no data from the origin for 10 s" in str(failure.value)
    assert connection.producerState == "stopped"


def test_a_pause_that_ends_after_the_body_ended_does_not_resume_or_start_a_timer():
    sink, clock, connection, _written, catch_up = sink_with_a_slow_disk()
    sink.dataReceived(b"last")
    sink.connectionLost(Failure(ResponseDone()))
    catch_up()
    assert sink.done.called and connection.resumes == 0
    assert clock.getDelayedCalls() == []


class SlowDisk:
    """An Ingest whose writes take time (a busy disk), so the writer thread falls behind."""

    def __init__(self, ingest, bytes_per_second: float):
        self._ingest, self._rate = ingest, bytes_per_second

    def write(self, data: bytes) -> None:
        time.sleep(len(data) / self._rate)  # in the writer's thread, standing in for the disk
        self._ingest.write(data)

    def __getattr__(self, name):
        return getattr(self._ingest, name)


@pytest.mark.parametrize(
    ("tls", "query"),
    [(True, ""), (True, "nolength=1&chunk=16384"), (False, "nolength=1&chunk=16384")],
    ids=["https", "https-chunked", "http-chunked"],
)
@pytest_twisted.ensureDeferred
async def test_a_fill_faster_than_its_disk_completes_in_one_attempt(
    tmp_path, store, monkeypatch, tls, query
):
    """Hundreds of MiB from an origin faster than the sink: the connection is paused and
    resumed many times and the fill never drops it."""
    from twisted.internet import reactor

    ca = make_test_ca(tmp_path / "ca") if tls else None
    served, port = listen_in_process(reactor, (ca.cert_pem, ca.key_pem) if ca else None)
    monkeypatch.setattr(writer, "HIGH_WATER", 4 * MIB)
    size = 256 * MIB
    client = make_http_client(reactor, OPEN, trust_root=ca.trust_root() if ca else None)
    fetcher = Fetcher(reactor, client, OPEN, backoff=0.01, idle_timeout=10)
    ingest = store.ingest()
    sink = ThreadedWriter(SlowDisk(ingest, 400 * MIB), reactor)
    pauses = []
    throttle = sink.throttle
    monkeypatch.setattr(sink, "throttle", lambda: pauses.append(1) or throttle())
    try:
        url = f"{served.base}/f/{size}/14/big.bin?{query}"
        d = defer.ensureDeferred(fetcher.fetch(url, sink, lambda *_: None))
        result = await d.addTimeout(TIMEOUT, reactor)
        await defer.ensureDeferred(sink.finish())
        blob = ingest.commit(result.size)
    finally:
        ingest.close()
        await client.pool.closeCachedConnections()
        await port.stopListening()
    assert blob.size == size and blob.sha256 == payload_sha256(size, 14)
    assert served.gets("/f/268435456/14/big.bin") == 1  # no drop, no retry
    assert len(pauses) > 0


class RawOrigin:
    """An origin on 127.0.0.1 that answers HTTP/1.1 with a close-delimited body (no
    Content-Length, no chunking), ending each answer as the test says: "clean" closes the
    connection (after TLS's close_notify), "reset" cuts it with a TCP reset part-way."""

    def __init__(self, body: bytes, endings: list[str], ca=None):
        self.body, self.endings, self.requests = body, list(endings), 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.tls = None
        if ca is not None:
            self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls.load_cert_chain(ca.cert_pem, ca.key_pem)
        scheme = "https" if ca else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}/tool.run"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.endings:
            conn, _ = self.listener.accept()
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            self.requests += 1
            ending = self.endings.pop(0)
            head = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n"
            if ending == "clean":
                conn.sendall(head + self.body)
                if self.tls is not None:
                    conn = conn.unwrap()
                conn.close()
            else:
                conn.sendall(head + self.body[: len(self.body) // 3])
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
        self.listener.close()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest_twisted.ensureDeferred
async def test_a_close_delimited_body_cut_by_a_reset_is_retried_not_committed(store, tmp_path, tls):
    from twisted.internet import reactor

    ca = make_test_ca(tmp_path / "ca") if tls else None
    body = payload(3 * MIB, 33)
    origin = RawOrigin(body, ["reset", "clean"], ca)
    client = make_http_client(reactor, OPEN, trust_root=ca.trust_root() if ca else None)
    fetcher = Fetcher(reactor, client, OPEN, backoff=0.01, idle_timeout=10)
    ingest = store.ingest()
    try:
        d = defer.ensureDeferred(fetcher.fetch(origin.url, ingest, lambda *_: None))
        result = await d.addTimeout(TIMEOUT, reactor)
        blob = ingest.commit(result.size)
    finally:
        ingest.close()
        await client.pool.closeCachedConnections()
    assert origin.requests == 2
    assert blob.size == len(body) and blob.sha256 == sha(body)


@pytest_twisted.ensureDeferred
async def test_a_close_delimited_body_that_ends_cleanly_is_complete(store, tmp_path):
    from twisted.internet import reactor

    body = payload(MIB + 5, 34)
    origin = RawOrigin(body, ["clean"])
    client = make_http_client(reactor, OPEN)
    fetcher = Fetcher(reactor, client, OPEN, backoff=0.01, idle_timeout=10, max_attempts=1)
    ingest = store.ingest()
    try:
        d = defer.ensureDeferred(fetcher.fetch(origin.url, ingest, lambda *_: None))
        result = await d.addTimeout(TIMEOUT, reactor)
        assert ingest.commit(result.size).sha256 == sha(body)
    finally:
        ingest.close()
        await client.pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_netrc_credentials_are_never_sent_over_plain_http(origin, store):
    """One miss URL naming the vendor's host over http:// would otherwise give its password to
    anyone on the path (finding 4)."""
    run = Run(store, credentials={"127.0.0.1": ("lab", "s3cret")}.get)
    await run(f"{origin.base}/f/10/1/x")
    (seen,) = origin.seen
    assert seen.authorization is None


@pytest_twisted.ensureDeferred
async def test_netrc_credentials_go_to_an_https_origin(store, tmp_path):
    from twisted.internet import reactor

    ca = make_test_ca(tmp_path / "ca")
    served, port = listen_in_process(reactor, (ca.cert_pem, ca.key_pem))
    client = make_http_client(reactor, OPEN, trust_root=ca.trust_root())
    creds = {"127.0.0.1": ("lab", "s3cret")}
    fetcher = Fetcher(reactor, client, OPEN, credentials=creds.get)
    ingest = store.ingest()
    try:
        url = f"{served.base}/f/10/1/x"
        await defer.ensureDeferred(fetcher.fetch(url, ingest, lambda *_: None))
    finally:
        ingest.close()
        await client.pool.closeCachedConnections()
        await port.stopListening()
    (seen,) = served.seen
    assert seen.authorization == "Basic bGFiOnMzY3JldA=="


@pytest_twisted.ensureDeferred
async def test_error_texts_never_carry_the_query_of_the_url(store):
    """A job's error is logged and shown in the UI: a signature in the query stays out."""
    with pytest.raises(FetchError) as failed:
        await Run(store)("http://-bad-.example/x.run?X-Amz-Signature=SIGSECRET")
    assert "SIGSECRET" not in str(failed.value)
    assert "-bad-.example/x.run?X-Amz-Signature=…" in str(failed.value)


@pytest_twisted.ensureDeferred
async def test_an_address_that_refuses_connections_falls_through_to_the_next(origin, store):
    """A name resolving to a dead address first (a broken IPv6 route, one mirror down) is
    fetched from the next address in the same attempt, as curl would."""
    port = origin.base.rsplit(":", 1)[1]

    async def resolve(host, _port):
        return ["127.0.0.2", "127.0.0.1"]  # nothing listens on 127.0.0.2

    run = Run(store, resolve=resolve, max_attempts=1)
    _result, blob = await run(f"http://mirror.example:{port}/f/1000/15/x")
    assert blob.sha256 == sha(payload(1000, 15))
