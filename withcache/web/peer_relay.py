"""A miss of a key another cache-host is filling, answered with that host's stream of the fill.

Hosts on one catalog fill each key once (withcache.leases). When host B misses a key host A
holds the lease of, B asks A for the same `/b/<token>` as its client asked (GET or HEAD, with
Range and the conditional headers), marked with RELAYED_HEADER, and passes A's answer on: A
streams its fill (withcache.web.streaming) or, once it has committed, serves the hit. The body
comes back at the client's pace through withcache.web.forward's exchange (a push producer on the
client's request: a slow client pauses A's connection, nothing is held here), and an answer cut
short cuts the client's connection, so a short body never looks whole. An answer other than
200/206/304/416, or none within the wait (A's --stream-wait for the fill's headers, plus a
second), is a miss here: 404, and the shims fall through to the origin as on any miss.

Not an open proxy: the only target is the lease row's URL, which a host writes from its
operator's --advertise-url; it must be http(s) with a host and no user info, query or fragment,
and is never this host's own; the path is built here from the parsed origin URL, never copied
from the request; a request that was itself relayed is not relayed again (a lease that moved
while the request was under way cannot make two hosts relay to each other).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol
from twisted.web import http, resource, server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from withcache._log import make_logger
from withcache.cache import FilledElsewhere
from withcache.keys import encode_token
from withcache.leases import valid_advertise_url
from withcache.logs import redact_url
from withcache.web.forward import Exchange

log = make_logger()

# On a relayed request: never relay it further.
RELAYED_HEADER = b"x-withcache-relayed"
# On a relayed answer: the host that answered it (its --host-id).
RELAY_HEADER = b"x-withcache-relay"
# What of the client's request goes to the filling host.
PASSED = (b"range", b"if-range", b"if-none-match", b"user-agent")
RELAYED_STATUSES = frozenset({200, 206, 304, 416})
# Beyond the filling host's own wait for its fill's headers: a round trip on the LAN.
MARGIN = 1.0


def relay_base(advertised: str | None, own: str | None) -> bytes | None:
    """The base URL to relay to from a lease row's advertise URL; None when it is not one this
    host relays to (see the module docstring)."""
    if advertised is None or not valid_advertise_url(advertised):
        return None
    base = advertised.rstrip("/")
    if own is not None and base == own.rstrip("/"):
        return None
    return base.encode("ascii")


class PeerRelays:
    """Relays misses to the hosts filling them, over one pool of persistent connections."""

    def __init__(
        self,
        reactor: Any,
        advertise: Callable[[], str | None],
        wait: float,
        agent: Any = None,
    ):
        if agent is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = 8
            agent = Agent(reactor, connectTimeout=max(1.0, wait), pool=pool)
        self._reactor, self._agent = reactor, agent
        self._advertise, self._timeout = advertise, wait + MARGIN

    def resource(
        self, request: Any, url: str, elsewhere: FilledElsewhere
    ) -> resource.Resource | None:
        """The answer to request (a miss of url, which elsewhere is filling) relayed from the
        filling host; None if it is not to be relayed."""
        if request.getHeader(RELAYED_HEADER) is not None:
            return None
        base = relay_base(elsewhere.url, self._advertise())
        if base is None:
            return None
        target = base + b"/b/" + encode_token(url).encode("ascii") + b"/relayed"
        return _Relayed(self, target, elsewhere.owner, redact_url(url))

    def request(self, method: bytes, target: bytes, headers: Headers) -> defer.Deferred:
        pending = defer.maybeDeferred(self._agent.request, method, target, headers, None)
        return pending.addTimeout(self._timeout, self._reactor)


class _Relayed(resource.Resource):
    isLeaf = True

    def __init__(self, relays: PeerRelays, target: bytes, owner: str, shown: str):
        super().__init__()
        self._relays, self._target, self._owner, self._shown = relays, target, owner, shown

    def render(self, request: Any) -> Any:
        headers = Headers({RELAYED_HEADER: [b"1"]})
        for name in PASSED:
            values = request.requestHeaders.getRawHeaders(name)
            if values:
                headers.setRawHeaders(name, values)
        method = b"HEAD" if request.method == b"HEAD" else b"GET"
        pending = self._relays.request(method, self._target, headers)
        _PeerExchange(request, pending, self._owner, self._shown)
        return server.NOT_DONE_YET


class _PeerExchange(Exchange):
    """Exchange with the filling host: only its usable answers pass, and never a body that
    ended without its framing."""

    close_delimited_whole = False

    def __init__(self, request: Any, pending: defer.Deferred, owner: str, shown: str):
        self._owner, self._shown = owner, shown
        super().__init__(request, pending)

    def answer(self, response: Any) -> None:
        if response.code not in RELAYED_STATUSES:
            self._answered = True
            response.deliverBody(protocol.Protocol())  # read to its end, and dropped
            self._miss(f"it answered {response.code}")
            return
        # (The client agent keeps the framing headers to itself: none to drop here.)
        super().answer(response)
        if not self.gone:
            self.request.setHeader(RELAY_HEADER, self._owner.encode("ascii", "replace"))

    def failed(self, reason: Any) -> None:
        if self.gone:
            return
        self._miss(reason.getErrorMessage() or type(reason.value).__name__)

    def _miss(self, why: str) -> None:
        if self.gone:
            return
        log.info(
            "could not relay {url} to {owner}, which is filling it: {why}",
            url=self._shown,
            owner=self._owner,
            why=why,
        )
        body = b"not cached: another host is filling it and did not answer in time\n"
        request = self.request
        request.setResponseCode(http.NOT_FOUND)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-length", b"%d" % len(body))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()
