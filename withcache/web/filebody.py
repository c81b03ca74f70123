"""Blob bodies sendfile cannot send (TLS connections, multi-range answers), read off the reactor.

static.File's own producers read the file on the reactor thread: a blob that is not in the page
cache then stalls every connection for the length of a disk read (a cold multi-GB installer over
TLS, or a multi-range answer that seeks all over a blob). PartsProducer reads each chunk with
`preadv(RWF_NOWAIT)` when the page cache already holds it, and on a pool thread when it does
not (or when the filesystem cannot tell); it is a push producer, so a slow client pauses it and
at most one chunk per connection is in memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from twisted.internet import threads
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from withcache._log import make_logger

log = make_logger()

CHUNK = 256 << 10

# (bytes written before the part, offset of the part in the file, its length)
Part = tuple[bytes, int, int]


def _read_nowait(fd: int, offset: int, length: int) -> bytes | None:
    """The bytes if the page cache holds all of them, else None (read them on a thread)."""
    buffer = bytearray(length)
    try:
        got = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
    except OSError:
        return None
    return bytes(buffer) if got == length else None


def _read(fd: int, offset: int, length: int) -> bytes:
    """Blocking, on a pool thread."""
    return os.pread(fd, length, offset)


class BodyEnd:
    """How every blob body ends: the request finished, or its connection aborted so that a body
    cut short never looks whole to the client; the file closed either way (by _close)."""

    request: Any
    _transport: Any  # the request's connection, kept for after the request is let go

    def _finish(self) -> None:
        request, self.request = self.request, None
        request.unregisterProducer()
        request.finish()
        self._close()

    def _abort(self) -> None:
        request, self.request = self.request, None
        if request is not None:
            request.unregisterProducer()
        self._transport.abortConnection()
        self._close()

    def _close(self) -> None:
        raise NotImplementedError


class PumpedBody(BodyEnd):
    """A push producer whose _pump writes the body while the transport wants more and no read
    is in flight; stopped (the client gone), its file is closed at once, or by the read in
    flight when that ends."""

    _paused = False
    _reading = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self._pump()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        """The client went away (or the answer is complete)."""
        self.request = None
        if not self._reading:
            self._close()

    def _pump(self) -> None:
        raise NotImplementedError


@implementer(IPushProducer)
class PartsProducer(PumpedBody):
    """Writes parts of a file to a request, each after its prefix, then finishes the request.

    A whole blob or one range is one part with an empty prefix; a multipart/byteranges answer
    is static.File's range info (boundary, offset, size) as it is, the closing boundary last.
    """

    def __init__(self, request: Any, file: Any, parts: Sequence[Part], reactor: Any):
        self.request = request
        self.file = file
        self._transport = request.channel.transport
        self._fd = file.fileno()
        self._parts = list(reversed(parts))
        self._reactor = reactor

    def _pump(self) -> None:
        while self.request is not None and not self._paused and not self._reading:
            if not self._parts:
                self._finish()
                return
            _prefix, offset, size = self._parts[-1]
            length = min(size, CHUNK)
            data = _read_nowait(self._fd, offset, length) if length else b""
            if data is None:
                self._reading = True
                d = threads.deferToThreadPool(
                    self._reactor, self._reactor.getThreadPool(), _read, self._fd, offset, length
                )
                d.addCallbacks(self._read_done, self._read_failed)
                return
            self._write(data)

    def _write(self, data: bytes) -> None:
        prefix, offset, size = self._parts.pop()
        if len(data) < min(size, CHUNK):
            # Shorter than the Content-Length promised (the blob was cut under us): end the
            # connection so the client sees a short body, never a silently wrong one.
            log.warn("blob {path} ended early", path=getattr(self.file, "name", "?"))
            self._abort()
            return
        if len(data) < size:
            self._parts.append((b"", offset + len(data), size - len(data)))
        self.request.write(prefix + data if prefix else data)

    def _read_done(self, data: bytes) -> None:
        self._reading = False
        if self.request is None:
            self._close()
            return
        self._write(data)
        self._pump()

    def _read_failed(self, failure: Any) -> None:
        self._reading = False
        log.failure("could not read {path}", failure, path=getattr(self.file, "name", "?"))
        self._abort()

    def _close(self) -> None:
        if not self.file.closed:
            self.file.close()
