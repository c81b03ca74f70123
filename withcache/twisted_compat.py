"""The Twisted internals withcache relies on, behind one door.

Twisted has no public form for these; everything else uses public names. Each one is checked by
tests/test_twisted_compat.py, which fails loudly (rather than a fill or a sendfile hanging) when
a Twisted upgrade renames or changes it.

- A TCP transport's unsent bytes (`dataBuffer`, `offset`, `_tempDataLen`): sendfile must not
  overtake headers still queued in the transport's own buffer.
- A paused producer is resumed when the socket drains (`producerPaused` + `startWriting`):
  how a push producer that writes around the transport (sendfile) waits for writability.
- StreamServerEndpointService's port Deferred (`_waitingForPort`) and its
  `_raiseSynchronously` switch: the bound address (for `tcp:0`), serving workers that share
  the port, and a bind failure that stops twistd at start rather than being logged.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import defer, endpoints


def unsent_bytes(transport: Any) -> int:
    """How many bytes a twisted.internet.tcp transport still holds for its socket."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def resume_when_writable(transport: Any) -> None:
    """Have the transport call its (push) producer's resumeProducing once the socket takes more
    bytes: the transport does so for a paused producer when its own buffer drains."""
    if transport.connected and not transport.disconnecting:
        transport.producerPaused = True
        transport.startWriting()


def listening_port(service: StreamServerEndpointService) -> defer.Deferred:
    """A Deferred that fires with the service's listening port once it is bound (after
    privilegedStartService); callbacks must return the port."""
    return service._waitingForPort


def raise_bind_errors(service: StreamServerEndpointService) -> None:
    """Make the service's privilegedStartService raise when it cannot listen (twistd then
    exits with the reason) instead of logging the failure and serving nothing."""
    service._raiseSynchronously = True


class _NoReactor:
    """What endpoint parsers are handed to check a description: they only store it."""


def check_server_endpoint(description: str) -> None:
    """Raise ValueError/TypeError/KeyError if description is not a server endpoint string.

    Parsing needs a reactor, yet twistd has not installed the real one when options are
    checked; the parsers only keep the reactor for later, so a placeholder does."""
    endpoints.serverFromString(_NoReactor(), description)
