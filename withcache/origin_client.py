"""The HTTP client fills use: every connection checked against the origin policy, raw bytes.

The origin policy sits where connections are made: every connection, including each redirect
hop, goes to an address the policy checked after resolving the name, never to whatever a second
lookup might return.

Stored bytes are exactly the bytes the URL names. treq always asks for gzip and decodes it; a
`.tar.gz` that an origin labels `Content-Encoding: gzip` would then be stored gunzipped. So the
agent under treq asks for `identity` and hides any Content-Encoding from treq's decoder: what is
stored is what `curl -o` (without --compressed) would have written.

Each connection also notes why it ended (see _NotesHowItEnded), which the fetcher needs to tell
a complete close-delimited body from one cut by a reset.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet import defer, error, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from zope.interface import implementer

from withcache.policy import OriginPolicy

RECV_SIZE = 1 << 20

Resolver = Callable[[str, int], Awaitable[list[str]]]


class FetchError(Exception):
    """A fill that failed for good; the message is for the operator."""


def is_address(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def system_resolver(host: str, port: int) -> Awaitable[list[str]]:
    """Addresses for host from the system resolver (getaddrinfo, in a thread)."""
    if is_address(host):
        return defer.succeed([host])
    d = threads.deferToThread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    return d.addCallback(_addresses)


def _addresses(infos: list) -> list[str]:
    return [str(info[4][0]) for info in infos]


async def precheck_origin(
    policy: OriginPolicy,
    url: str,
    reactor: Any,
    resolve: Resolver = system_resolver,
    timeout: float = 3.0,
) -> None:
    """Raise RefusedOrigin now when a fill of url would be refused by the address check, as
    _CheckedEndpoint would refuse it: an address literal (IPv4 or IPv6) that is not public, or
    a name every address of which is refused. A name that does not resolve (within timeout)
    passes: the fill itself reports it, with the resolver's reason."""
    parts = urlsplit(url)
    policy.check_scheme(parts.scheme)
    if policy.allow_private:
        return
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return

    async def addresses_of() -> list[str]:
        return await resolve(host, port)

    resolving = defer.ensureDeferred(addresses_of())
    resolving.addTimeout(timeout, reactor)
    try:
        addresses = await resolving
    except Exception:
        return
    policy.allowed(host, addresses)


@implementer(IStreamClientEndpoint)
class _CheckedEndpoint:
    """Resolves, checks each address against the policy, connects to the first allowed one."""

    def __init__(self, factory: PolicyEndpointFactory, scheme: str, host: str, port: int):
        self._factory, self._scheme, self._host, self._port = factory, scheme, host, port

    def connect(self, protocol_factory):
        return defer.ensureDeferred(self._connect(protocol_factory))

    async def _connect(self, protocol_factory):
        f = self._factory
        f.policy.check_scheme(self._scheme)
        try:
            addresses = await f.resolve(self._host, self._port)
        except socket.gaierror as e:
            raise FetchError(f"cannot resolve {self._host}: {e.strerror}") from None
        allowed = f.policy.allowed(self._host, addresses)
        for n, address in enumerate(allowed, 1):
            endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
            endpoint = endpoint_type(f.reactor, address, self._port, timeout=f.connect_timeout)
            if self._scheme == "https":
                options = optionsForClientTLS(self._host, trustRoot=f.trust_root)
                endpoint = wrapClientTLS(options, endpoint)
            noted = policies.WrappingFactory(protocol_factory)
            noted.protocol = _NotesHowItEnded
            try:
                wrapper = await endpoint.connect(noted)
            except (error.ConnectError, error.TimeoutError):
                # A name with an address that does not answer (an IPv6 route a lab lacks, one
                # mirror of several down): the next address, as curl does; the last one's
                # failure is the attempt's.
                if n == len(allowed):
                    raise
                continue
            protocol = wrapper.wrappedProtocol
            transport = getattr(wrapper, "transport", None)
            # Bodies are big: read up to 1 MiB per recv() instead of Twisted's 64 KiB, which
            # cuts the per-chunk work (callbacks, hashing calls, writes) by up to 16x.
            if transport is not None and hasattr(transport, "bufferSize"):
                transport.bufferSize = RECV_SIZE
            return protocol
        raise FetchError(f"{self._host} has no addresses")


# Why the connection whose end is being reported right now ended (see _NotesHowItEnded).
_ending: list[Failure] = []


class _NotesHowItEnded(policies.ProtocolWrapper):
    """Keeps, while the HTTP client hears of it, why an origin connection ended.

    A body with neither Content-Length nor chunking ends when the connection does, and the HTTP
    client reports a clean close and a reset alike (PotentialDataLoss). _BodySink looks here to
    tell them apart: only a clean close completes such a body.
    """

    def connectionLost(self, reason):
        _ending.append(reason)
        try:
            super().connectionLost(reason)
        finally:
            _ending.pop()


def how_it_ended() -> tuple[bool, str]:
    """(cleanly?, why) of the connection whose end is being reported right now; for a body
    sink's connectionLost, which runs inside _NotesHowItEnded.connectionLost."""
    if not _ending:
        return False, "unknown"
    reason = _ending[-1]
    return reason.check(error.ConnectionDone) is not None, reason.getErrorMessage()


@implementer(IAgentEndpointFactory)
class PolicyEndpointFactory:
    def __init__(
        self,
        reactor,
        policy: OriginPolicy,
        resolve: Resolver,
        connect_timeout: float,
        trust_root: Any = None,
    ):
        self.reactor, self.policy, self.resolve = reactor, policy, resolve
        self.connect_timeout, self.trust_root = connect_timeout, trust_root

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        return _CheckedEndpoint(self, uri.scheme.decode("ascii"), host, uri.port)


@implementer(IAgent)
class RawBodyAgent:
    """Asks for the identity encoding and hides Content-Encoding from treq's gzip decoder."""

    def __init__(self, agent: IAgent):
        self._agent = agent

    def request(self, method, uri, headers=None, bodyProducer=None):
        headers = headers.copy() if headers is not None else Headers()
        headers.setRawHeaders(b"accept-encoding", [b"identity"])
        d = self._agent.request(method, uri, headers, bodyProducer)
        return d.addCallback(self._hide_encoding)

    @staticmethod
    def _hide_encoding(response):
        encoding = response.headers.getRawHeaders(b"content-encoding")
        if encoding:
            response.headers.removeHeader(b"content-encoding")
            response.headers.setRawHeaders(b"x-origin-content-encoding", encoding)
        return response


class OriginClient(HTTPClient):
    """A treq HTTPClient that keeps its connection pool at hand (to close idle connections)."""

    def __init__(self, agent: IAgent, pool: HTTPConnectionPool):
        super().__init__(agent)
        self.pool = pool


def make_http_client(
    reactor,
    policy: OriginPolicy,
    resolve: Resolver = system_resolver,
    connect_timeout=30.0,
    trust_root: Any = None,
) -> OriginClient:
    """A treq client whose every connection obeys the policy and whose bodies are raw bytes.

    trust_root: what https origins must chain to (an IOpenSSLTrustRoot); None is the system's
    trust store (which honours SSL_CERT_FILE and SSL_CERT_DIR)."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 4
    endpoints = PolicyEndpointFactory(reactor, policy, resolve, connect_timeout, trust_root)
    agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
    return OriginClient(cast(IAgent, RawBodyAgent(agent)), pool)
