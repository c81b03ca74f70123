"""Zero-copy blob bodies: os.sendfile from the blob file straight into the client's TCP socket.

static.File reads 64 KiB at a time into Python and pushes it through the transport's buffer:
tens of thousands of syscalls and copies per GiB. This producer lets the kernel move pages from
the page cache into the socket, as much as the socket's send buffer takes each time it is
writable. It never holds body bytes in memory, so a slow reader costs its socket buffer and
nothing more.

Disk reads stay off the reactor thread: before each sendfile the producer asks (preadv with
RWF_NOWAIT, which fails rather than wait for the disk) whether the first and last page of the
next span are in the page cache; when not, a pool thread reads the span in first.

It only works on a plain TCP transport (twisted.internet.tcp); TLS connections (which need the
bytes in user space) and multi-range answers get withcache.web.filebody's PartsProducer, which
also keeps disk reads off the reactor thread.
"""

from __future__ import annotations

import errno
import functools
import math
import os
from typing import Any

from twisted.internet import threads
from twisted.internet.interfaces import IPushProducer
from twisted.internet.tcp import Connection
from twisted.web import http, resource, server, static
from zope.interface import implementer

from withcache._log import make_logger
from withcache.twisted_compat import resume_when_writable, unsent_bytes
from withcache.web.filebody import BodyEnd, PartsProducer
from withcache.web.ranges import RangeAnswer, answer_ranges

log = make_logger()

# Most bytes one sendfile call is asked to move: the span whose residency was just checked.
SPAN = 8 << 20
# A blob this small that is in the page cache goes out with its headers in one write.
SMALL = 256 << 10
# Reused by _read_cached: the reactor thread is the only one that reads into it.
_SCRATCH = bytearray(SMALL)
# Once a span had to be read from disk, ask the kernel to read this far ahead too.
READ_AHEAD = 16 << 20
_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF})


def usable(request: Any) -> bool:
    """Whether request's connection is a plain TCP socket sendfile can write to."""
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    return isinstance(transport, Connection)


def _resident(fd: int, offset: int, length: int, probe: bytearray) -> bool:
    """Whether reading [offset, offset + length) needs no disk I/O, going by its first and
    last page (readahead fills what lies between). False also where the filesystem cannot
    tell (no RWF_NOWAIT): then the span is read in on a thread, to be safe."""
    for at in (offset, offset + length - 1):
        try:
            os.preadv(fd, [probe], at, os.RWF_NOWAIT)
        except OSError:
            return False
    return True


def _read_cached(fd: int, size: int) -> bytes | None:
    """The whole of a small file if it is all in the page cache, else None."""
    view = memoryview(_SCRATCH)[:size]
    try:
        got = os.preadv(fd, [view], 0, os.RWF_NOWAIT)
    except OSError:
        return None
    return bytes(view) if got == size else None


def _read_in(fd: int, offset: int, length: int) -> None:
    """Blocking, in a pool thread: bring a span into the page cache."""
    os.posix_fadvise(fd, offset, length + READ_AHEAD, os.POSIX_FADV_WILLNEED)
    # One byte every 64 KiB waits for the reads the advice started, without copying the span.
    for at in range(offset, offset + length, 64 << 10):
        os.pread(fd, 1, at)
    os.pread(fd, 1, offset + length - 1)


@implementer(IPushProducer)
class SendfileProducer(BodyEnd):
    """Sends length bytes of a file from offset to the request's TCP socket, then finishes
    the request. Driven by the transport: it sends when the socket is writable."""

    def __init__(self, request: Any, file: Any, offset: int, length: int, reactor: Any):
        self.request = request
        self.file = file
        self.offset = offset
        self.remaining = length
        self._reactor = reactor
        self._transport = request.channel.transport
        self._fd = file.fileno()
        self._probe = bytearray(1)
        self._reading = False
        self.sent = 0
        # Called with the body bytes sent, once, when the response ends either way.
        self.on_done: Any = None

    def start(self) -> None:
        self.request.registerProducer(self, True)
        # Status line and headers go into the transport's buffer; the body follows once the
        # transport has written them and reports the socket writable again.
        self.request.write(b"")
        if self.remaining == 0:
            self._finish()
        else:
            self._when_writable()

    # IPushProducer: the transport (through the HTTP channel) calls these.

    def pauseProducing(self) -> None:
        # Nothing to do: bytes are only sent from resumeProducing.
        pass

    def resumeProducing(self) -> None:
        if self.request is not None and not self._reading:
            self._send(probe=True)

    def stopProducing(self) -> None:
        """The client went away (or we are done)."""
        self.request = None
        if not self._reading:
            self._close()

    def _send(self, probe: bool) -> None:
        """Send the next span; probe=False right after a thread read it in."""
        transport = self._transport
        if unsent_bytes(transport):
            self._when_writable()  # headers still on their way
            return
        span = min(self.remaining, SPAN)
        if probe and not _resident(self._fd, self.offset, span, self._probe):
            self._read_in(span)
            return
        try:
            sent = os.sendfile(transport.fileno(), self._fd, self.offset, span)
        except BlockingIOError:
            self._when_writable()
            return
        except OSError as e:
            if e.errno not in _GONE:
                log.failure("sendfile failed", None)
            self._abort()
            return
        if sent == 0:
            # The file is shorter than the Content-Length we promised (cut under us): end the
            # connection so the client sees a short body rather than a silent truncation.
            log.warn("blob {path} ended early", path=self.file.name)
            self._abort()
            return
        self.offset += sent
        self.remaining -= sent
        self.sent += sent
        self.request.sentLength += sent
        if self.remaining:
            self._when_writable()
        else:
            self._finish()

    def _when_writable(self) -> None:
        resume_when_writable(self._transport)

    def _read_in(self, span: int) -> None:
        self._reading = True
        pool = self._reactor.getThreadPool()
        d = threads.deferToThreadPool(self._reactor, pool, _read_in, self._fd, self.offset, span)
        d.addCallbacks(self._read, self._read_failed)

    def _read(self, _: None) -> None:
        self._reading = False
        if self.request is None:
            self._close()
        else:
            self._send(probe=False)

    def _read_failed(self, failure: Any) -> None:
        self._reading = False
        log.failure("could not read {path}", failure, path=self.file.name)
        if self.request is None:
            self._close()
        else:
            self._abort()

    def _close(self) -> None:
        if not self.file.closed:
            self.file.close()
            if self.on_done is not None:
                self.on_done(self.sent)


class OpenBlob:
    """A blob's file descriptor, opened for reading, with the fstat that checked its size; as
    much of a file object as SendfileProducer needs."""

    def __init__(self, fd: int, info: os.stat_result, name: str):
        self.fd, self.info, self.name = fd, info, name
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


def open_blob(path: str, size: int | None = None) -> OpenBlob | None:
    """The blob opened for reading, or None if it is missing or not `size` bytes long (a
    blob is never served as good when it is truncated or was replaced)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    info = os.fstat(fd)
    if size is not None and info.st_size != size:
        os.close(fd)
        return None
    return OpenBlob(fd, info, path)


def last_modified(mtime: float) -> int:
    """A blob's Last-Modified in whole seconds, the one date every answer about it uses.

    Rounded up, as twisted.web's setLastModified rounds: a client echoing the served date in
    If-Modified-Since (curl -z, wget -N) is then "not older" and gets its 304."""
    return math.ceil(mtime)


@functools.lru_cache(maxsize=1024)
def _http_date(mtime: int) -> bytes:
    return http.datetimeToString(mtime)


class WholeBlob(resource.Resource):
    """GET or HEAD of a whole blob on a plain TCP connection: the common case, kept short.
    A small blob in the page cache goes out with its headers in one write, anything else with
    SendfileProducer. It owns `opened` and closes it on every path."""

    isLeaf = True

    def __init__(
        self,
        opened: OpenBlob,
        content_type: bytes,
        reactor: Any,
        served: Any,
        modified: float | None = None,
    ):
        super().__init__()
        self._opened, self._type = opened, content_type
        self._reactor, self._served = reactor, served
        self._modified = modified

    def render_GET(self, request: Any) -> Any:
        opened, info = self._opened, self._opened.info
        try:
            request.setHeader(b"accept-ranges", b"bytes")
            when = last_modified(info.st_mtime if self._modified is None else self._modified)
            if request.getHeader(b"if-modified-since") is None:
                request.setHeader(b"last-modified", _http_date(when))
            elif request.setLastModified(when) is http.CACHED:
                opened.close()
                return b""
            request.setHeader(b"content-type", self._type)
            request.setHeader(b"content-length", b"%d" % info.st_size)
            if request.method == b"HEAD":
                opened.close()
                return b""
            if info.st_size <= SMALL:
                body = _read_cached(opened.fd, info.st_size)
                if body is not None:
                    opened.close()
                    self._served.inc(len(body))
                    return body
        except BaseException:
            opened.close()
            raise
        producer = SendfileProducer(request, opened, 0, info.st_size, self._reactor)
        producer.on_done = self._served.inc
        producer.start()
        return server.NOT_DONE_YET

    render_HEAD = render_GET


class BlobFile(static.File):
    """A blob as static.File (HEAD, 404 if it is gone, Last-Modified and 304), answering a GET
    as `answer` says (withcache.web.ranges: whole, one range, several, or 416): sendfile bodies
    for one part on plain TCP connections, PartsProducer bodies for the rest. static.File's own
    Range handling is never used (it has no limits), nor its producers (they read the disk on
    the reactor thread)."""

    def __init__(
        self,
        path: str,
        content_type: bytes,
        answer: RangeAnswer,
        reactor: Any,
        served: Any,
        modified: float | None = None,
    ):
        super().__init__(path, defaultType=content_type.decode("ascii"))
        self.type, self.encoding = content_type.decode("ascii"), None  # type: ignore[assignment]
        self._answer = answer
        self._reactor = reactor
        self._served = served
        self._modified = modified

    def render_GET(self, request: Any) -> Any:
        request.notifyFinish().addBoth(lambda _: self._served.inc(request.sentLength))
        return super().render_GET(request)

    def getModificationTime(self) -> int:
        if self._modified is not None:
            return last_modified(self._modified)
        return last_modified(super().getModificationTime())

    render_HEAD = render_GET

    def makeProducer(self, request: Any, fileForReading: Any) -> Any:
        answer = self._answer
        request.setResponseCode(answer.code)
        request.setHeader(b"content-type", answer.content_type)
        request.setHeader(b"content-length", b"%d" % answer.length)
        if answer.content_range is not None:
            request.setHeader(b"content-range", answer.content_range)
        if len(answer.parts) == 1 and usable(request):
            ((prefix, offset, length),) = answer.parts
            if not prefix:
                return SendfileProducer(request, fileForReading, offset, length, self._reactor)
        return PartsProducer(request, fileForReading, answer.parts, self._reactor)


def blob_resource(
    path: str,
    size: int,
    content_type: bytes,
    reactor: Any,
    served: Any,
    request: Any,
    opened: OpenBlob | None = None,
    modified: float | None = None,
) -> resource.Resource:
    """The resource that answers request for a blob of size bytes: WholeBlob when it can,
    else BlobFile. content_type is what a whole blob is served as (printable ASCII: see
    withcache.sanitise). `opened` is the blob already opened (and its size checked) by the
    caller, or None; the resource returned owns it. `modified` is the Last-Modified to serve
    (the origin's), None for the blob file's own."""
    answer = answer_ranges(request.getHeader(b"range"), size, content_type)
    if answer.code == 200 and usable(request):
        opened = opened or open_blob(path)
        if opened is not None:
            return WholeBlob(opened, content_type, reactor, served, modified)
    if opened is not None:
        opened.close()  # static.File opens the file itself
    return BlobFile(path, content_type, answer, reactor, served, modified)
