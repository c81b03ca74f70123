"""A serving worker's way to the host: one forwarded request's round trip over loopback.

This module owns what happens to a request a worker does not answer itself. It goes to the host
as the client sent it (method, target, body, end-to-end headers; hop-by-hop ones dropped), with
the worker's secret and the client's address added. The host's answer comes back with its status
line and headers as the host gave them and its body streamed, at the client's pace: the body's
reader is a push producer on the client's request, so a client that reads slowly pauses the
loopback connection and the host's sending (nothing piles up in the worker). A client that hangs
up first ends the upstream exchange with it, whether the host has answered yet (the request is
cancelled) or is still sending (its connection is closed), and nothing is written to the gone
request. The loopback connections are kept in a pool of persistent HTTP/1.1 connections.

It replaces twisted.web.proxy, which finished requests whose client had gone (a traceback in the
host's log each time: 87 in 200 hang-ups in issue 20, 125-130 in 300 in tests/test_processes.py),
read the host's answer as fast as it came and never stopped a transfer nobody was waiting for.
"""

from __future__ import annotations

import io
import re
from typing import Any

from twisted.internet import defer, endpoints, protocol
from twisted.internet.interfaces import IPushProducer, IStreamClientEndpoint
from twisted.web import http, resource, server
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgentEndpointFactory
from zope.interface import implementer

from withcache._log import make_logger

log = make_logger()

SECRET_HEADER = b"x-withcache-worker"
# Meaningful on one connection only (RFC 9110 7.6.1), or re-made by the HTTP client: the body's
# framing, and Expect, which the worker's own server has already answered.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
    | {b"transfer-encoding", b"content-length", b"expect"}
)
# A target twisted.web.client can send, in origin form (twisted.web's server has already checked
# the request line is printable ASCII, but lets an absolute-form target through).
_TARGET = re.compile(rb"/[\x21-\x7e]*")


class Forward(resource.Resource):
    """Everything a worker does not answer itself goes to the host, as it came."""

    isLeaf = True

    def __init__(self, reactor: Any, port: int, secret: bytes, agent: Any = None):
        super().__init__()
        if agent is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = 16  # idle ones kept; a busy worker opens more
            agent = Agent.usingEndpointFactory(reactor, _Loopback(reactor, port), pool=pool)
        self._agent, self._base, self._secret = agent, b"http://127.0.0.1:%d" % port, secret

    def render(self, request: Any) -> Any:
        hosts = request.requestHeaders.getRawHeaders(b"host", [])
        if not _TARGET.fullmatch(request.uri) or hosts[1:]:
            # The client agent could not send it (it wants exactly one Host); nor would the host
            # make sense of it.
            request.setResponseCode(http.BAD_REQUEST)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"a malformed request\n"
        request.forwarded = True
        request.content.seek(0, 0)
        body = request.content.read()
        pending = defer.maybeDeferred(
            self._agent.request,
            request.method,
            self._base + request.uri,
            self._headers(request),
            FileBodyProducer(io.BytesIO(body)) if body else None,
        )
        Exchange(request, pending)
        return server.NOT_DONE_YET

    def _headers(self, request: Any) -> Headers:
        out = Headers()
        named = request.requestHeaders.getRawHeaders(b"connection", [])
        drop = HOP_BY_HOP | {t.lower() for v in named for t in re.split(rb"[\s,]+", v)}
        drop |= {SECRET_HEADER, b"x-forwarded-for"}
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in drop:
                out.setRawHeaders(name, values)
        # The Host header stays the client's: the operator UI builds cache URLs from it. Without
        # one the client agent would name the loopback port; the host reads no Host as localhost.
        if not out.hasHeader(b"host"):
            out.setRawHeaders(b"host", [b"localhost"])
        out.setRawHeaders(b"x-forwarded-for", [request.getClientAddress().host.encode()])
        out.setRawHeaders(SECRET_HEADER, [self._secret])
        return out


@implementer(IAgentEndpointFactory, IStreamClientEndpoint)
class _Loopback:
    """Where every forwarded request goes: the host's loopback port, without a log line for each
    new connection."""

    def __init__(self, reactor: Any, port: int):
        self._endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)

    def endpointForURI(self, uri: Any) -> _Loopback:
        return self

    def connect(self, factory: Any) -> defer.Deferred:
        factory.noisy = False
        return self._endpoint.connect(factory)


class Exchange:
    """One forwarded request, from the client's request to the end of the host's answer.

    withcache.web.peer_relay relays to another cache-host with it, overriding `answer` (which
    answers it passes on) and `failed` (what a client gets when there is no answer)."""

    # Whether a body without framing that ends with its connection counts as whole: the host
    # never sends one; a peer is held to its framing (see withcache.web.peer_relay).
    close_delimited_whole = True

    def __init__(self, request: Any, pending: defer.Deferred):
        self.request = request
        self.gone = False  # the client hung up: never write to the request again
        self.upstream: Any = None  # the answer's body transport while it streams
        self._answered = False
        self._pending = pending
        request.notifyFinish().addErrback(self._client_gone)
        pending.addCallbacks(self.answer, self.failed)

    def _client_gone(self, reason: Any) -> None:
        self.gone = True
        if self.upstream is not None:
            self.upstream.stopProducing()  # closes the loopback connection mid-answer
        elif not self._answered:
            self._pending.cancel()  # no answer yet: the client agent drops the request

    def answer(self, response: Any) -> None:
        self._answered = True
        request = self.request
        if not self.gone:
            request.setResponseCode(response.code, response.phrase)
            for name, values in response.headers.getAllRawHeaders():
                request.responseHeaders.setRawHeaders(name, values)
            # The client agent keeps Content-Length to itself, but for HEAD.
            known = response.length is not UNKNOWN_LENGTH and request.method != b"HEAD"
            if known and response.code not in http.NO_BODY_CODES:
                request.setHeader(b"content-length", b"%d" % response.length)
        response.deliverBody(BodyRelay(self))

    def failed(self, reason: Any) -> None:
        if self.gone:
            return  # cancelled, or the loopback connection closed because of it
        log.warn(
            "could not forward {method} to the host: {error}",
            method=self.request.method.decode("latin-1"),
            error=reason.getErrorMessage(),
        )
        self.request.setResponseCode(http.BAD_GATEWAY)
        self.request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.request.write(b"the cache host did not answer\n")
        self.request.finish()


@implementer(IPushProducer)
class BodyRelay(protocol.Protocol):
    transport: Any  # set by connectionMade's caller, before any of the methods below run
    """The host's answer body, written to the client's request; a push producer on it, so a
    client that cannot take more pauses reading from the host."""

    def __init__(self, exchange: Exchange):
        self._exchange = exchange

    def connectionMade(self) -> None:
        if self._exchange.gone:
            self.transport.stopProducing()
            return
        self._exchange.upstream = self.transport
        self._exchange.request.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        if not self._exchange.gone:
            self._exchange.request.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        exchange, self._exchange.upstream = self._exchange, None
        if exchange.gone:
            return
        exchange.request.unregisterProducer()
        whole = (ResponseDone, http.PotentialDataLoss) if exchange.close_delimited_whole else ()
        if reason.check(ResponseDone, *whole):
            exchange.request.finish()
        else:
            # The host stopped mid-answer: end the client's connection so it sees a short body
            # rather than one that looks complete.
            log.warn("the host's answer broke off: {error}", error=reason.getErrorMessage())
            exchange.request.loseConnection()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()
