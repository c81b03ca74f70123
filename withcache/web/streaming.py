"""GET|HEAD of a key whose fill is under way: the bytes as they land in the fill's temp file.

A StreamProducer follows the fill's withcache.fillstream.FillStream: it sends what the fill has
written and a reader of the file can see, then waits to be told more is there (no polling). It
is a push producer, so a slow client pauses it and the fill never waits for it. On a plain TCP
connection the bytes go from the file to the socket with sendfile, as a hit's do (nothing in
memory; withcache.web.sendfile's page-cache probe and read-in on a thread); elsewhere (TLS)
they are read with filebody's page-cache-first reads, one chunk at a time. Either way a slow
disk never blocks the reactor.

What a client sees: 200 with the origin's Content-Length (chunked when the origin gave none),
the served type, no sha256 ETag (there is no digest yet) and `X-Withcache-Streaming: fill`. One
satisfiable range of a known length is answered 206 at once when written, and waits when not;
several ranges (or a range of an unknown length) get the whole body. A restart of the fill
from byte 0 cuts off a client that has had bytes of the old attempt (or was promised another
length); a fill that fails cuts off every client, so nobody gets a complete-looking wrong file.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet import threads
from twisted.internet.interfaces import IPushProducer
from twisted.web import http, resource, server
from zope.interface import implementer

from withcache._log import make_logger
from withcache.fillstream import FillStream
from withcache.twisted_compat import resume_when_writable, unsent_bytes
from withcache.web.filebody import CHUNK, PumpedBody, _read, _read_nowait
from withcache.web.ranges import parse_ranges
from withcache.web.sendfile import SPAN, _read_in, _resident, usable

log = make_logger()

STREAMING_HEADER = b"X-Withcache-Streaming"


@implementer(IPushProducer)
class StreamProducer(PumpedBody):
    """Writes bytes [offset, end) of a fill in progress to a request, following the fill;
    end None means "to wherever the fill ends" (a body of unknown length)."""

    def __init__(
        self,
        request: Any,
        stream: FillStream,
        offset: int,
        end: int | None,
        reactor: Any,
        on_done: Any = None,
    ):
        self.request = request
        self.stream = stream
        self.offset = offset
        self.end = end
        self.sent = 0
        self._transport = request.channel.transport
        self._reactor = reactor
        self._on_done = on_done
        self._attempt = stream.attempt
        self._promised = stream.total  # the length the response headers were built on
        self._fd: int | None = None
        self._paused = False
        self._reading = False
        # Not for a chunked body: twisted.web frames each write, sendfile would not.
        self._sendfile = usable(request) and end is not None
        self._probe = bytearray(1)
        self._resident_up_to = 0  # bytes known to be in the page cache (read in, or probed)

    def start(self) -> None:
        self._fd = self.stream.follow(self)
        self.request.registerProducer(self, True)
        self.request.write(b"")  # status line and headers now, whatever the fill is doing
        self._pump()

    # The fill's side (withcache.fillstream.Follower)

    def changed(self) -> None:
        self._pump()

    # IPushProducer: the transport (through the HTTP channel) calls these.

    def stopProducing(self) -> None:
        """The client went away (or the answer is complete): the fill goes on without it."""
        self.request = None
        self.stream.unfollow(self)
        if not self._reading:
            self._close()

    def _pump(self) -> None:
        while self.request is not None and not self._paused and not self._reading:
            stream = self.stream
            if self.end is not None and self.offset >= self.end:
                # Every byte promised is sent, all of this attempt: whole, whatever comes next.
                self._finish()
                return
            if stream.error is not None:
                self._cut_off("the fill failed")
                return
            if stream.attempt != self._attempt:
                if self.sent:
                    self._cut_off("the fill restarted from byte 0")
                    return
                self._attempt = stream.attempt  # nothing sent yet: follow the new attempt
                self._resident_up_to = 0
            if stream.total != self._promised:
                self._cut_off("the origin's length changed")
                return
            end = self.end if self.end is not None else stream.size
            if end is not None and self.offset >= end:
                self._finish()
                return
            limit = stream.readable if end is None else min(end, stream.readable)
            if self.offset >= limit:
                return  # told by changed() when there is more
            if self._sendfile:
                self._send(limit)
                return
            length = min(CHUNK, limit - self.offset)
            assert self._fd is not None
            data = _read_nowait(self._fd, self.offset, length)
            if data is None:
                self._reading = True
                d = threads.deferToThreadPool(
                    self._reactor,
                    self._reactor.getThreadPool(),
                    _read,
                    self._fd,
                    self.offset,
                    length,
                )
                d.addCallbacks(self._read_done, self._read_failed, (self._attempt, length))
                return
            self._write(data, length)

    def _send(self, limit: int) -> None:
        """sendfile what is written, up to limit; come back when the socket takes more."""
        transport = self._transport
        if unsent_bytes(transport):
            self._when_writable()  # headers still on their way
            return
        assert self._fd is not None
        span = min(limit - self.offset, SPAN)
        if self.offset + span > self._resident_up_to:
            if not _resident(self._fd, self.offset, span, self._probe):
                self._read_in(span)
                return
            self._resident_up_to = self.offset + span
        try:
            sent = os.sendfile(transport.fileno(), self._fd, self.offset, span)
        except BlockingIOError:
            self._when_writable()
            return
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
                log.failure("sendfile failed", None)
            self.stream.unfollow(self)
            self._abort()
            return
        if sent == 0:
            self._cut_off("the fill's file is shorter than its progress")
            return
        self.offset += sent
        self.sent += sent
        self.request.sentLength += sent
        if self.end is not None and self.offset >= self.end:
            self._finish()
        else:
            self._when_writable()

    def _when_writable(self) -> None:
        resume_when_writable(self._transport)

    def _read_in(self, span: int) -> None:
        self._reading = True
        pool = self._reactor.getThreadPool()
        offset, fd = self.offset, self._fd
        assert fd is not None  # following the fill since start
        d = threads.deferToThreadPool(self._reactor, pool, _read_in, fd, offset, span)
        d.addCallbacks(
            self._read_in_done, self._read_failed, callbackArgs=(offset + span,), errbackArgs=(0, 0)
        )

    def _read_in_done(self, _: None, up_to: int) -> None:
        self._reading = False
        if self.request is None:
            self._close()
            return
        self._resident_up_to = max(self._resident_up_to, up_to)
        self._pump()

    def _write(self, data: bytes, length: int) -> None:
        if len(data) < length:
            # The file is shorter than the fill said it was: never pass that off as the body.
            self._cut_off("the fill's file is shorter than its progress")
            return
        self.offset += len(data)
        self.sent += len(data)
        self.request.write(data)

    def _read_done(self, data: bytes, attempt: int, length: int) -> None:
        self._reading = False
        if self.request is None:
            self._close()
            return
        if attempt == self.stream.attempt:
            self._write(data, length)
        # else: read across a restart; _pump decides what the new attempt means for us
        self._pump()

    def _read_failed(self, failure: Any, attempt: int, length: int) -> None:
        self._reading = False
        log.failure("could not read a fill in progress", failure)
        if self.request is None:
            self._close()
        else:
            self._cut_off("could not read the fill's file")

    def _cut_off(self, why: str) -> None:
        log.info(
            "cut off a client streaming a fill after {sent} bytes: {why}", sent=self.sent, why=why
        )
        self.stream.unfollow(self)
        self._abort()

    def _finish(self) -> None:
        self.stream.unfollow(self)
        super()._finish()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            if self._on_done is not None:
                self._on_done(self.sent)


class StreamedFill(resource.Resource):
    """The answer to GET|HEAD of a key whose fill is servable (see the module docstring)."""

    isLeaf = True

    def __init__(self, stream: FillStream, content_type: bytes, reactor: Any, served: Any):
        super().__init__()
        self._stream, self._type = stream, content_type
        self._reactor, self._served = reactor, served

    def render_GET(self, request: Any) -> Any:
        stream = self._stream
        total = stream.total
        request.setHeader(STREAMING_HEADER, b"fill")
        request.setHeader(b"content-type", self._type)
        offset, end = 0, total
        if total is not None:
            request.setHeader(b"accept-ranges", b"bytes")
            spans = None
            if request.method == b"GET":
                spans = parse_ranges(request.getHeader(b"range"), total)
            if spans == []:
                request.setResponseCode(http.REQUESTED_RANGE_NOT_SATISFIABLE)
                request.setHeader(b"content-range", b"bytes */%d" % total)
                request.setHeader(b"content-length", b"0")
                return b""
            if spans is not None and len(spans) == 1:
                ((offset, length),) = spans
                end = offset + length
                request.setResponseCode(http.PARTIAL_CONTENT)
                request.setHeader(b"content-range", b"bytes %d-%d/%d" % (offset, end - 1, total))
            request.setHeader(b"content-length", b"%d" % (end - offset))  # type: ignore[operator]
        if request.method == b"HEAD":
            return b""
        try:
            producer = StreamProducer(request, stream, offset, end, self._reactor, self._served.inc)
            producer.start()
        except ValueError:
            # The fill failed between the lookup and now: the client falls through.
            request.setResponseCode(http.NOT_FOUND)
            request.responseHeaders.removeHeader(STREAMING_HEADER)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.responseHeaders.removeHeader(b"content-range")
            body = b"not cached: the fill ended\n"
            request.setHeader(b"content-length", b"%d" % len(body))
            return body
        return server.NOT_DONE_YET

    render_HEAD = render_GET
