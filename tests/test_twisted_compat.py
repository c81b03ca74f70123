"""withcache.twisted_compat: the Twisted internals withcache relies on still behave as it
assumes. A failure here after a Twisted upgrade means that module needs changing, not the
test."""

from __future__ import annotations

import pytest
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import abstract, defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor
from twisted.web import server
from zope.interface import implementer

from withcache.twisted_compat import (
    check_server_endpoint,
    listening_port,
    raise_bind_errors,
    resume_when_writable,
    unsent_bytes,
)


class _Descriptor(abstract.FileDescriptor):
    """A FileDescriptor whose socket takes up to `room` bytes per write."""

    def __init__(self, reactor):
        super().__init__(reactor=reactor)
        self.connected = 1
        self.room = 0
        self.written = b""

    def writeSomeData(self, data):
        taken = bytes(data[: self.room])
        self.written += taken
        return len(taken)


@implementer(IPushProducer)
class _Producer:
    def __init__(self):
        self.resumed = 0

    def resumeProducing(self):
        self.resumed += 1

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


def test_a_tcp_connection_is_the_file_descriptor_these_helpers_read():
    assert issubclass(Connection, abstract.FileDescriptor)


def test_unsent_bytes_counts_what_the_transport_still_holds():
    transport = _Descriptor(MemoryReactor())
    assert unsent_bytes(transport) == 0
    transport.write(b"headers")
    transport.write(b"more")
    assert unsent_bytes(transport) == 11
    transport.room = 5
    transport.doWrite()
    assert transport.written == b"heade"
    assert unsent_bytes(transport) == 6


def test_a_paused_producer_is_resumed_when_the_socket_drains():
    reactor = MemoryReactor()
    transport = _Descriptor(reactor)
    producer = _Producer()
    transport.registerProducer(producer, True)
    transport.write(b"queued")
    resume_when_writable(transport)
    assert transport.producerPaused
    assert transport in reactor.writers
    assert producer.resumed == 0
    transport.room = 100
    transport.doWrite()
    assert transport.written == b"queued"
    assert producer.resumed == 1


def test_a_disconnecting_transport_is_not_asked_to_write():
    transport = _Descriptor(MemoryReactor())
    transport.disconnecting = True
    resume_when_writable(transport)
    assert not transport.producerPaused


class _Endpoint:
    def __init__(self, result):
        self.result = result

    def listen(self, factory):
        return self.result


def test_listening_port_fires_with_the_bound_port():
    port = object()
    service = StreamServerEndpointService(_Endpoint(defer.succeed(port)), server.Site(None))
    service.privilegedStartService()
    seen = []
    listening_port(service).addCallback(seen.append)
    assert seen == [port]


def test_a_bind_failure_raises_at_start():
    failing = defer.fail(OSError("address in use"))
    service = StreamServerEndpointService(_Endpoint(failing), server.Site(None))
    raise_bind_errors(service)
    with pytest.raises(OSError, match="address in use"):
        service.privilegedStartService()


@pytest.mark.parametrize(
    "description",
    ["tcp:0", "tcp:8080:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1", "unix:/tmp/wc.sock"],
)
def test_valid_endpoint_strings_pass_without_a_reactor(description):
    check_server_endpoint(description)


@pytest.mark.parametrize("description", ["carrier-pigeon:7", "tcp:notaport", "tcp:0:nope=1"])
def test_invalid_endpoint_strings_raise(description):
    with pytest.raises((ValueError, TypeError, KeyError)):
        check_server_endpoint(description)
