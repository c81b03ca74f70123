"""A serving worker's forwarder (withcache.web.forward), in process over loopback: an upstream
Site stands for the host, and raw clients play the worker's clients, slow or gone."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints, protocol
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.protocols import policies
from twisted.web import resource, server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from withcache.web.forward import SECRET_HEADER, Forward

TIMEOUT = 20
SECRET = b"s3cret"
CHUNK = 64 * 1024
BIG = 64 * 1024 * 1024


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@implementer(IPushProducer)
class Stream:
    """An answer body pushed a chunk at a time, for as long as the transport takes it: `total`
    bytes, or without end."""

    def __init__(self, request: Any, total: int | None):
        self.request, self.total = request, total
        self.sent = 0
        self.paused = False
        self.on_pause: list[defer.Deferred] = []
        if total is not None:
            request.setHeader(b"content-length", b"%d" % total)
        request.registerProducer(self, True)
        _reactor().callLater(0, self._pump)

    def _pump(self) -> None:
        while not self.paused and self.request is not None:
            if self.total is not None and self.sent >= self.total:
                self.request.unregisterProducer()
                self.request.finish()
                self.request = None
                return
            self.request.write(b"x" * CHUNK)
            self.sent += CHUNK

    def pauseProducing(self) -> None:
        self.paused = True
        waiting, self.on_pause = self.on_pause, []
        for d in waiting:
            d.callback(self.sent)

    def resumeProducing(self) -> None:
        self.paused = False
        _reactor().callLater(0, self._pump)

    def stopProducing(self) -> None:
        self.request = None

    def paused_now_or_next(self) -> defer.Deferred:
        if self.paused:
            return defer.succeed(self.sent)
        d: defer.Deferred = defer.Deferred()
        self.on_pause.append(d)
        return d


class Upstream(resource.Resource):
    """The host: /big and /endless stream, /hold never answers, anything else echoes the request
    it got as JSON with a status line and headers of its own."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: defer.Deferred = defer.Deferred()  # fires with (request, finished)
        self.stream: Stream | None = None
        self.seen: list[dict] = []

    def render(self, request: Any) -> Any:
        finished = request.notifyFinish()
        if not self.received.called:
            self.received.callback((request, finished))
        if request.path in (b"/big", b"/endless"):
            self.stream = Stream(request, BIG if request.path == b"/big" else None)
            return server.NOT_DONE_YET
        if request.path == b"/hold":
            return server.NOT_DONE_YET
        if request.path == b"/chunked":
            for piece in (b"one ", b"two ", b"three"):
                request.write(piece)
            request.finish()
            return server.NOT_DONE_YET
        self.seen.append(
            {
                "method": request.method.decode(),
                "uri": request.uri.decode(),
                "headers": {
                    k.decode().lower(): [v.decode("latin-1") for v in vs]
                    for k, vs in request.requestHeaders.getAllRawHeaders()
                },
                "body": request.content.read().decode("latin-1"),
            }
        )
        request.setResponseCode(418, b"Short And Stout")
        request.responseHeaders.setRawHeaders(b"set-cookie", [b"a=1; Path=/", b"b=2; Path=/"])
        request.responseHeaders.setRawHeaders(b"x-answer", [b"one", b"two"])
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.seen[-1]).encode()


class PauseTap(policies.ProtocolWrapper):
    """The forwarder's end of a loopback connection, recording whether reading is paused and
    how many bytes came in."""

    def __init__(self, factory: Any, wrapped: Any):
        super().__init__(factory, wrapped)
        self.paused = False
        self.received = 0
        self.on_pause: list[defer.Deferred] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        super().dataReceived(data)

    def pauseProducing(self) -> None:
        self.paused = True
        waiting, self.on_pause = self.on_pause, []
        for d in waiting:
            d.callback(self.received)
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self.transport.resumeProducing()

    def next_pause(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.on_pause.append(d)
        return d


@implementer(IAgentEndpointFactory, IStreamClientEndpoint)
class TappedLoopback:
    """Every connection the forwarder's agent makes goes to `port` through a PauseTap."""

    def __init__(self, port: int):
        self.port = port
        self.taps: list[PauseTap] = []
        self.connected: defer.Deferred = defer.Deferred()

    def endpointForURI(self, uri: Any) -> Any:
        return self

    def connect(self, factory: Any) -> defer.Deferred:
        wrapping = policies.WrappingFactory(factory)
        wrapping.protocol = PauseTap
        tcp = endpoints.TCP4ClientEndpoint(_reactor(), "127.0.0.1", self.port)

        def tapped(tap: PauseTap) -> Any:
            self.taps.append(tap)
            if not self.connected.called:
                self.connected.callback(tap)
            return tap.wrappedProtocol

        return tcp.connect(wrapping).addCallback(tapped)


class Raw(protocol.Protocol):
    """A client that sends bytes as given and keeps what it gets."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed: defer.Deferred = defer.Deferred()
        self._waiting: list[tuple[Any, defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for item in list(self._waiting):
            if item[0](self.data):
                self._waiting.remove(item)
                item[1].callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(bytes(self.data))

    def until(self, predicate: Any) -> defer.Deferred:
        if predicate(self.data):
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((predicate, d))
        return d.addTimeout(TIMEOUT, _reactor())


def parse(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, [tuple(line.split(b": ", 1)) for line in lines], body  # type: ignore[misc]


class Rig:
    def __init__(self) -> None:
        reactor = _reactor()
        self.upstream = Upstream()
        self.upstream_port = reactor.listenTCP(0, server.Site(self.upstream), interface="127.0.0.1")
        self.loopback = TappedLoopback(self.upstream_port.getHost().port)
        self.pool = HTTPConnectionPool(reactor)
        agent = Agent.usingEndpointFactory(reactor, self.loopback, pool=self.pool)
        forward = Forward(reactor, self.upstream_port.getHost().port, SECRET, agent=agent)
        self.port = reactor.listenTCP(0, server.Site(forward), interface="127.0.0.1")

    async def connect(self, request: bytes) -> Raw:
        endpoint = endpoints.TCP4ClientEndpoint(_reactor(), "127.0.0.1", self.port.getHost().port)
        client = await endpoints.connectProtocol(endpoint, Raw()).addTimeout(TIMEOUT, _reactor())
        client.transport.write(request)
        return client

    async def exchange(self, request: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
        client = await self.connect(request)
        return parse(await client.closed.addTimeout(TIMEOUT, _reactor()))

    async def close(self) -> None:
        await self.pool.closeCachedConnections()
        for tap in self.loopback.taps:
            tap.transport.abortConnection()
        await self.port.stopListening()
        await self.upstream_port.stopListening()


@pytest.fixture
def rig():
    made = Rig()
    yield made
    pytest_twisted.blockon(defer.ensureDeferred(made.close()))


@pytest_twisted.ensureDeferred
async def test_status_line_and_headers_pass_through_both_ways(rig):
    status, headers, body = await rig.exchange(
        b"GET /admin/x?y=1 HTTP/1.1\r\nHost: cache.example:8080\r\nX-Multi: a\r\nX-Multi: b\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nX-Withcache-Worker: forged\r\nKeep-Alive: 5\r\n"
        b"X-Private: p\r\nConnection: close\r\nConnection: keep-alive, X-Private\r\n\r\n"
    )
    assert status == b"HTTP/1.1 418 Short And Stout"
    assert headers.count((b"Set-Cookie", b"a=1; Path=/")) == 1
    assert headers.count((b"Set-Cookie", b"b=2; Path=/")) == 1
    assert [v for k, v in headers if k == b"X-Answer"] == [b"one", b"two"]
    assert [v for k, v in headers if k == b"Content-Type"] == [b"application/json"]
    assert [v for k, v in headers if k == b"Content-Length"] == [b"%d" % len(body)]
    seen = json.loads(body)
    assert seen["uri"] == "/admin/x?y=1"
    got = seen["headers"]
    assert got["host"] == ["cache.example:8080"]
    assert got["x-multi"] == ["a", "b"]
    assert got["x-forwarded-for"] == ["127.0.0.1"]
    assert got[SECRET_HEADER.decode()] == [SECRET.decode()]
    assert "x-private" not in got and "keep-alive" not in got
    assert got.get("connection", ["close"]) == ["close"]  # the agent's own, if any


@pytest_twisted.ensureDeferred
async def test_a_posted_form_reaches_the_host_whole(rig):
    form = b"csrf=abc&url=https%3A%2F%2Fvendor.example.com%2Fa.deb&pin=1"
    status, _headers, body = await rig.exchange(
        b"POST /admin/pins HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(form), form)
    )
    assert status.startswith(b"HTTP/1.1 418")
    seen = json.loads(body)
    assert (seen["method"], seen["body"]) == ("POST", form.decode())
    assert seen["headers"]["content-type"] == ["application/x-www-form-urlencoded"]
    assert seen["headers"]["content-length"] == [str(len(form))]


@pytest_twisted.ensureDeferred
async def test_head_gets_the_hosts_length_and_no_body(rig):
    _s, _h, get_body = await rig.exchange(
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    status, headers, body = await rig.exchange(
        b"HEAD /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert status.startswith(b"HTTP/1.1 418") and body == b""
    # The echo of a HEAD names HEAD, so its length differs from the GET's by one byte.
    assert [v for k, v in headers if k == b"Content-Length"] == [b"%d" % (len(get_body) + 1)]


@pytest_twisted.ensureDeferred
async def test_an_answer_of_unknown_length_is_relayed_whole(rig):
    status, headers, body = await rig.exchange(
        b"GET /chunked HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert status == b"HTTP/1.1 200 OK"
    assert (b"Transfer-Encoding", b"chunked") in headers
    assert b"".join(body.split(b"\r\n")[1::2]) == b"one two three"


@pytest_twisted.ensureDeferred
async def test_a_client_that_hangs_up_before_the_answer_cancels_the_upstream_request(rig):
    client = await rig.connect(b"GET /hold HTTP/1.1\r\nHost: h\r\n\r\n")
    _request, finished = await rig.upstream.received.addTimeout(TIMEOUT, _reactor())
    client.transport.loseConnection()
    # The host's end of the loopback connection is closed: its request ends with an error.
    with pytest.raises(Exception, match="Connection"):
        await finished.addTimeout(TIMEOUT, _reactor())


@pytest_twisted.ensureDeferred
async def test_a_client_that_hangs_up_mid_body_stops_the_upstream_transfer(rig):
    client = await rig.connect(b"GET /endless HTTP/1.1\r\nHost: h\r\n\r\n")
    _request, finished = await rig.upstream.received.addTimeout(TIMEOUT, _reactor())
    await client.until(lambda data: len(data) > 1024 * 1024)
    client.transport.loseConnection()
    with pytest.raises(Exception, match="Connection"):
        await finished.addTimeout(TIMEOUT, _reactor())
    assert rig.upstream.stream is not None and rig.upstream.stream.request is None


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_read_pauses_the_upstream_transfer(rig):
    client = await rig.connect(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
    client.transport.pauseProducing()  # reads nothing from here on
    tap = await rig.loopback.connected.addTimeout(TIMEOUT, _reactor())
    # Both ends pause and resume while the socket buffers between them fill; once they are full
    # the forwarder has stopped reading from the host and the host has stopped sending.
    for _ in range(10_000):
        if not tap.paused:
            await tap.next_pause().addTimeout(TIMEOUT, _reactor())
        await rig.upstream.stream.paused_now_or_next().addTimeout(TIMEOUT, _reactor())
        if tap.paused:
            break
    assert tap.paused and rig.upstream.stream.paused and client.data == b""
    # What is in flight is what the kernel's buffers hold, not the 64 MiB answer.
    assert tap.received < 24 * 1024 * 1024 and rig.upstream.stream.sent < BIG // 2
    client.transport.resumeProducing()
    await client.until(lambda data: len(data) >= BIG + data.find(b"\r\n\r\n") + 4)
    status, headers, body = parse(bytes(client.data))
    assert status == b"HTTP/1.1 200 OK" and (b"Content-Length", b"%d" % BIG) in headers
    assert len(body) == BIG and body.count(b"x") == BIG


@pytest_twisted.ensureDeferred
async def test_a_host_that_is_not_there_is_a_bad_gateway(rig):
    reactor = _reactor()
    closed = reactor.listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")
    port = closed.getHost().port
    await closed.stopListening()
    site = server.Site(Forward(reactor, port, SECRET))
    listening = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", listening.getHost().port)
        client = await endpoints.connectProtocol(endpoint, Raw()).addTimeout(TIMEOUT, reactor)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        status, _headers, _body = parse(await client.closed.addTimeout(TIMEOUT, reactor))
        assert status == b"HTTP/1.1 502 Bad Gateway"
    finally:
        await listening.stopListening()


@pytest.mark.parametrize(
    "line",
    [
        b"GET http://elsewhere.example/ HTTP/1.1\r\nHost: h",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b",
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_request_the_client_agent_cannot_send_is_refused_here(rig, line):
    status, _headers, _body = await rig.exchange(line + b"\r\nConnection: close\r\n\r\n")
    assert status == b"HTTP/1.1 400 Bad Request"
    assert not rig.upstream.received.called
