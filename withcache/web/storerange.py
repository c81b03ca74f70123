"""One byte range of a blob that is not local: a ranged GET of its object, passed through.

A hit whose local copy is missing streams the whole object in (withcache.storefill), and
withcache.web.streaming answers a range once the copy has reached it. A range far ahead of the
copy (past what the copy will have within READ_AHEAD bytes) would wait for everything before
it: it is answered with a ranged GET of the object instead, while the whole copy goes on (so
the next request is local). The bytes are read on the store fills' bounded pool one chunk at a
time, and a push producer writes them: a slow client pauses the reads, not a thread. A short
body from the store aborts the connection: never a range that looks whole and is not.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.web import http, resource, server
from zope.interface import implementer

from withcache import catalog as cat
from withcache._log import make_logger
from withcache.fillstream import FillStream
from withcache.storefill import StoreFills
from withcache.web.filebody import CHUNK, PumpedBody
from withcache.web.ranges import parse_ranges

log = make_logger()

# A range starting within this many bytes of what the local copy holds waits for the copy.
READ_AHEAD = 8 << 20


def ranged_answer(
    request: Any,
    stream: FillStream,
    artifact: cat.Artifact,
    fills: StoreFills,
    content_type: bytes,
    served: Any,
) -> resource.Resource | None:
    """An ObjectRange for a GET of one satisfiable range the copy is far from; else None
    (the stream answers: the whole body, several ranges, a 416, or a range it nearly has)."""
    if request.method != b"GET":
        return None
    spans = parse_ranges(request.getHeader(b"range"), artifact.size)
    if not spans or len(spans) != 1:
        return None
    ((first, length),) = spans
    if first < stream.readable + READ_AHEAD:
        return None
    return ObjectRange(artifact, first, length, fills, content_type, served)


class ObjectRange(resource.Resource):
    isLeaf = True

    def __init__(
        self,
        artifact: cat.Artifact,
        first: int,
        length: int,
        fills: StoreFills,
        content_type: bytes,
        served: Any,
    ):
        super().__init__()
        self._artifact, self._first, self._length = artifact, first, length
        self._fills, self._type, self._served = fills, content_type, served

    def render_GET(self, request: Any) -> Any:
        last = self._first + self._length - 1
        opened = self._fills.open_range(self._artifact.sha256, self._first, last)
        opened.addCallbacks(self._opened, self._unavailable, (request,), errbackArgs=(request,))
        return server.NOT_DONE_YET

    def _opened(self, answer: tuple[Any, int], request: Any) -> None:
        body, length = answer
        if request.channel is None or length != self._length:
            self._fills.close(body)
            if request.channel is not None:
                self._unavailable(None, request)
            return
        sha256 = self._artifact.sha256.encode("ascii")
        request.setResponseCode(http.PARTIAL_CONTENT)
        request.setHeader(b"content-type", self._type)
        request.setHeader(b"accept-ranges", b"bytes")
        request.setHeader(b"etag", b'"%s"' % sha256)
        request.setHeader(b"x-withcache-sha256", sha256)
        request.setHeader(
            b"content-range",
            b"bytes %d-%d/%d" % (self._first, self._first + self._length - 1, self._artifact.size),
        )
        request.setHeader(b"content-length", b"%d" % self._length)
        RangeProducer(request, body, self._length, self._fills, self._served.inc).start()

    def _unavailable(self, failure: Any, request: Any) -> None:
        """The store could not answer: a miss, so the client falls through to the origin."""
        if request.channel is None:
            return
        request.setResponseCode(http.NOT_FOUND)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        body = b"not cached: the object store did not answer\n"
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()


@implementer(IPushProducer)
class RangeProducer(PumpedBody):
    """Writes a ranged GET's body to a request, one chunk read on the pool at a time."""

    def __init__(self, request: Any, body: Any, length: int, fills: StoreFills, on_sent: Any):
        self.request = request
        self._transport = request.channel.transport
        self._body: Any = body
        self._left = length
        self._fills = fills
        self._on_sent = on_sent

    def _pump(self) -> None:
        if self.request is None or self._paused or self._reading:
            return
        if self._left <= 0:
            self._finish()
            return
        self._reading = True
        d = self._fills.read(self._body, min(CHUNK, self._left))
        d.addCallbacks(self._got, self._failed)

    def _got(self, data: bytes) -> None:
        self._reading = False
        if self.request is None:
            self._close()
            return
        if not data or len(data) > self._left:
            log.info("cut off a ranged read of the object store: its body was short")
            self._abort()
            return
        self._left -= len(data)
        self._on_sent(len(data))
        self.request.write(data)
        self._pump()

    def _failed(self, failure: Any) -> None:
        self._reading = False
        log.info("cut off a ranged read of the object store: {why}", why=str(failure.value))
        if self.request is None:
            self._close()
        else:
            self._abort()

    def _close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            self._fills.close(body)
