"""Misses relayed to the host filling them (withcache.web.peer_relay), in process over loopback:
a Site stands for the filling host, another for the relaying one; and the rules of what may be
relayed to, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web import resource, server
from twisted.web.client import ResponseFailed

from tests.support import token
from withcache.cache import FilledElsewhere
from withcache.tap import advertised_address
from withcache.web.peer_relay import RELAY_HEADER, RELAYED_HEADER, PeerRelays, relay_base

ORIGIN = "https://vendor.example/cuda.run?X-Amz-Signature=s"
TIMEOUT = 20


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.mark.parametrize(
    ("advertised", "base"),
    [
        ("http://10.0.0.5:3000", b"http://10.0.0.5:3000"),
        ("https://cache-b.lab/withcache/", b"https://cache-b.lab/withcache"),
        ("http://[fd00::5]:3000", b"http://[fd00::5]:3000"),
        (None, None),
        ("", None),
        ("ftp://10.0.0.5/", None),
        ("file:///etc/passwd", None),
        ("http://user:pw@10.0.0.5:3000", None),
        ("http://10.0.0.5:3000/?x=1", None),
        ("http://10.0.0.5:3000/#x", None),
        ("http://10.0.0.5:99999", None),
        ("http://cäche.lab", None),
        ("http://10.0.0.5:3000\r\nX-Evil: 1", None),
        ("http://127.0.0.1:3001", None),  # this host's own URL
        ("http://127.0.0.1:3001/", None),
    ],
)
def test_only_an_operators_http_url_of_another_host_is_relayed_to(advertised, base):
    assert relay_base(advertised, "http://127.0.0.1:3001") == base


def test_the_advertise_url_defaults_to_the_one_address_the_read_path_is_bound_to():
    assert advertised_address(IPv4Address("TCP", "10.0.0.5", 3000), "tcp:3000:interface=10.0.0.5")
    assert advertised_address(IPv4Address("TCP", "10.0.0.5", 3000), "tcp:3000") == (
        "http://10.0.0.5:3000"
    )
    assert advertised_address(IPv6Address("TCP", "::1", 443), "ssl:443") == "https://[::1]:443"
    # Any address: which one would reach this host is not for it to guess.
    assert advertised_address(IPv4Address("TCP", "0.0.0.0", 3000), "tcp:3000") is None
    assert advertised_address(IPv6Address("TCP", "::", 3000), "tcp6:3000") is None
    assert advertised_address(None, "tcp:0") is None  # not bound yet


class Filling(resource.Resource):
    """The filling host: answers /b/<token>/relayed as the test says, and records requests."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.answer = self.partial

    def render(self, request: Any) -> Any:
        self.seen.append(request)
        return self.answer(request)

    @staticmethod
    def partial(request: Any) -> bytes:
        request.setResponseCode(206)
        request.setHeader(b"content-range", b"bytes 2-5/10")
        request.setHeader(b"x-withcache-streaming", b"fill")
        return b"2345"


class Relaying(resource.Resource):
    """The relaying host's miss of ORIGIN, which host h0 is filling."""

    isLeaf = True

    def __init__(self, relays: PeerRelays, peer: str):
        super().__init__()
        self.relays, self.peer = relays, peer

    def render(self, request: Any) -> Any:
        relayed = self.relays.resource(request, ORIGIN, FilledElsewhere("h0", self.peer))
        if relayed is None:
            request.setResponseCode(404)
            return b"not relayed\n"
        return relayed.render(request)


@pytest.fixture
def hosts():
    reactor = _reactor()
    filling = Filling()
    upstream = reactor.listenTCP(0, server.Site(filling), interface="127.0.0.1")
    peer = f"http://127.0.0.1:{upstream.getHost().port}"
    relays = PeerRelays(reactor, lambda: "http://127.0.0.1:1", wait=0.0)
    front = reactor.listenTCP(0, server.Site(Relaying(relays, peer)), interface="127.0.0.1")
    yield filling, f"http://127.0.0.1:{front.getHost().port}/b/{token(ORIGIN)}/cuda.run"
    pytest_twisted.blockon(defer.gatherResults([upstream.stopListening(), front.stopListening()]))
    pytest_twisted.blockon(relays._agent._pool.closeCachedConnections())


async def get(url: str, **headers: str) -> tuple[Any, bytes]:
    sent = {k.replace("_", "-"): [v] for k, v in headers.items()}
    response = await treq.get(url, headers=sent, persistent=False).addTimeout(TIMEOUT, _reactor())
    return response, await treq.content(response).addTimeout(TIMEOUT, _reactor())


@pytest_twisted.ensureDeferred
async def test_a_miss_gets_the_filling_hosts_answer_as_it_gave_it(hosts):
    filling, url = hosts
    response, body = await get(url, Range="bytes=2-5")
    assert (response.code, body) == (206, b"2345")
    assert response.headers.getRawHeaders(b"content-range") == [b"bytes 2-5/10"]
    assert response.headers.getRawHeaders(RELAY_HEADER) == [b"h0"]
    (seen,) = filling.seen
    # The path is made from the origin URL, and the request says it was relayed.
    assert seen.uri == f"/b/{token(ORIGIN)}/relayed".encode()
    assert seen.getHeader(RELAYED_HEADER) == b"1" and seen.getHeader(b"range") == b"bytes=2-5"


@pytest_twisted.ensureDeferred
async def test_a_request_that_was_relayed_is_not_relayed_again(hosts):
    filling, url = hosts
    response, body = await get(url, **{"X-Withcache-Relayed": "1"})
    assert (response.code, body, filling.seen) == (404, b"not relayed\n", [])


@pytest_twisted.ensureDeferred
async def test_an_answer_the_filling_host_cannot_give_is_a_miss_here(hosts):
    filling, url = hosts

    def error(request: Any) -> bytes:
        request.setResponseCode(503)
        return b"secret internals\n"

    filling.answer = error
    response, body = await get(url)
    assert response.code == 404 and b"secret" not in body and body.startswith(b"not cached")


@pytest_twisted.ensureDeferred
async def test_a_filling_host_that_does_not_answer_in_time_is_a_miss_here(hosts):
    filling, url = hosts
    filling.answer = lambda request: server.NOT_DONE_YET  # never answers
    response, body = await get(url)  # wait 0 + the 1 s margin
    assert response.code == 404 and body.startswith(b"not cached")


@pytest_twisted.ensureDeferred
async def test_a_body_cut_short_upstream_is_cut_short_here(hosts):
    filling, url = hosts

    def cut(request: Any) -> Any:
        request.setHeader(b"content-length", b"1000000")
        request.write(b"x" * 1000)
        _reactor().callLater(0.05, request.channel.transport.abortConnection)
        return server.NOT_DONE_YET

    filling.answer = cut
    response = await treq.get(url, persistent=False).addTimeout(TIMEOUT, _reactor())
    assert response.code == 200
    with pytest.raises(ResponseFailed):
        await treq.content(response).addTimeout(TIMEOUT, _reactor())
