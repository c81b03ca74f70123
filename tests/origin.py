"""A misbehaving origin for the fill tests, on Twisted: in-process or `python -m tests.origin`.

`GET|HEAD /f/<size>/<seed>/<name>` serves `tests.support.payload(size, seed)` with an ETag and
Range support. Query parameters make it misbehave:

  rate=N        send at most N bytes/s
  drop=F        on the first request for the path, close the connection after fraction F
  dropevery=N   on every request, close the connection after sending N bytes of the body
  stall=F       on the first request for the path, stop sending after fraction F (stays open)
  norange=1     ignore Range (always 200 with the whole body)
  fail=C&times=N  answer status C to the first N requests for this path
  phrase=P      with fail=, the reason phrase P (percent-decoded, as raw bytes)
  redirect=URL  302 to URL
  gzip=1        serve gzip(payload) with Content-Encoding: gzip
  lie=N         declare N bytes more than are sent, then close
  nolength=1    no Content-Length (chunked)
  chunk=N       write the body N bytes at a time (default 64 KiB; with nolength=1, the chunk size)
  delay=S       wait S seconds before answering at all
  changing=1    a new ETag on every request (so a resume must restart)
  ignoreifrange=1  answer Range even when If-Range names an old ETag (a broken cache in between)
  ctype=V       send V (percent-decoded, as raw bytes: non-ASCII too) as the Content-Type
  cc=V, vary=V, cd=V, expires=V, lm=V
                send V as Cache-Control, Vary, Content-Disposition, Expires, Last-Modified
  nolm=1, noetag=1  send no Last-Modified, no ETag

Conditional GETs (If-None-Match, If-Modified-Since) get 304 when they match. `GET /_bump?path=P`
makes P a new version (other bytes, ETag and Last-Modified); `GET /_stats` returns the body
bytes sent and the 304s answered so far, as JSON.
  failafter=C   answer status C to every request for the path after the first (with drop=,
                a fill that fails for good mid-stream)

Every body byte sent counts towards `GET /_sent` (JSON {"bytes": N}). `--uplink N` (or
OriginResource(uplink=Uplink(N))) sends every body through one shared N bytes/s token bucket:
the lab's internet link, shared by all connections.

Every request is recorded (method, path, Range, Authorization, User-Agent); `GET /_requests`
returns them as JSON, which is how tests count origin traffic when this runs as a subprocess.

`python -m tests.origin [PORT] [--tls CERT_PEM KEY_PEM] [--uplink BYTES_PER_S]`; --tls serves
HTTPS instead of HTTP.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass

from twisted.internet import reactor as default_reactor
from twisted.web import http, resource, server

from tests.support import payload

CHUNK = 64 * 1024


class Uplink:
    """A token bucket shared by every body sent: `rate` bytes/s, bursts of up to `burst`."""

    def __init__(self, rate: float, clock, burst: int = 256 * 1024):
        self.rate, self.clock, self.burst = rate, clock, burst
        self._free_at = 0.0  # when the bucket will have the tokens already promised

    def reserve(self, n: int) -> float:
        """Take n bytes' worth of tokens; how long to wait before sending them."""
        now = self.clock.seconds()
        start = max(self._free_at, now - self.burst / self.rate)
        self._free_at = start + n / self.rate
        return max(0.0, self._free_at - now)


@dataclass
class Seen:
    method: str
    path: str
    query: str
    range: str | None
    authorization: str | None
    user_agent: str | None


class OriginResource(resource.Resource):
    isLeaf = True

    def __init__(self, clock=default_reactor, uplink: Uplink | None = None):
        super().__init__()
        self.clock = clock
        self.uplink = uplink
        self.sent_bytes = 0
        self.seen: list[Seen] = []
        self._served = Counter()
        self.connections_lost = 0
        self.versions: Counter[str] = Counter()
        self.not_modified = 0
        # Seconds added to the Date this origin sends (in-process tests move the host's clock).
        self.date_offset = 0.0

    def gets(self, path: str) -> int:
        return sum(1 for s in self.seen if s.method == "GET" and s.path == path)

    def render(self, request):
        path = request.path.decode()
        # Latin-1, so that ctype= can carry any byte.
        args = {k.decode(): v[0].decode("latin-1") for k, v in request.args.items()}
        if "delay" in args and not getattr(request, "_delayed", False):
            request._delayed = True
            self.clock.callLater(float(args["delay"]), self._answer_later, request)
            return server.NOT_DONE_YET
        if self.date_offset:
            request.setHeader(b"date", http.datetimeToString(time.time() + self.date_offset))
        header = request.getHeader
        self.seen.append(
            Seen(
                request.method.decode(),
                path,
                request.uri.decode().partition("?")[2],
                header("range"),
                header("authorization"),
                header("user-agent"),
            )
        )
        request.notifyFinish().addErrback(self._lost)
        if path == "/_requests":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps([asdict(s) for s in self.seen[:-1]]).encode()
        if path == "/_stats":
            request.setHeader(b"content-type", b"application/json")
            stats = {"body_bytes": self.sent_bytes, "not_modified": self.not_modified}
            return json.dumps(stats).encode()
        if path == "/_bump":
            self.versions[args["path"]] += 1
            return b"%d\n" % self.versions[args["path"]]
        if path == "/_sent":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"bytes": self.sent_bytes}).encode()
        parts = path.split("/")
        if len(parts) < 4 or parts[1] != "f":
            request.setResponseCode(404)
            return b"no such file\n"
        size, seed = int(parts[2]), int(parts[3])
        self._served[path] += 1
        failing = "fail" in args and self._served[path] <= int(args.get("times", "1"))
        if "failafter" in args and self._served[path] > 1:
            failing, args["fail"] = True, args["failafter"]
        if failing:
            phrase = args["phrase"].encode("latin-1") if "phrase" in args else None
            request.setResponseCode(int(args["fail"]), phrase)
            return b"origin trouble\n"
        if "redirect" in args:
            request.redirect(args["redirect"].encode())
            return b""
        return self._serve(request, args, size, seed)

    def _answer_later(self, request):
        if request.finished or request._disconnected:
            return
        body = self.render(request)
        if body is not server.NOT_DONE_YET:
            request.write(body)
            request.finish()

    def _lost(self, failure):
        self.connections_lost += 1

    def _serve(self, request, args, size, seed):
        version = self.versions[request.path.decode()]
        seed += version
        etag = f'"{size}-{seed}"' if not version else f'"{size}-{seed}-v{version}"'
        if args.get("changing"):
            etag = f'"{size}-{seed}-{self._served[request.path.decode()]}"'
        modified = args.get("lm", http.datetimeToString(_JAN_2024 + version * 86400).decode())
        if not args.get("noetag"):
            request.setHeader(b"etag", etag.encode())
        if not args.get("nolm"):
            request.setHeader(b"last-modified", modified.encode("latin-1"))
        for arg, name in _HEADER_ARGS.items():
            if arg in args:
                request.setHeader(name, args[arg].encode("latin-1"))
        if self._not_modified(request, args, etag, modified):
            self.not_modified += 1
            request.setResponseCode(304)
            return b""
        ctype = args.get("ctype", "application/octet-stream").encode("latin-1")
        request.setHeader(b"content-type", ctype)
        data = None
        if args.get("gzip"):
            data = gzip.compress(payload(size, seed), mtime=0)
            size = len(data)
            request.setHeader(b"content-encoding", b"gzip")
        start, end = 0, size
        range_header = request.getHeader("range")
        if_range = request.getHeader("if-range")
        if args.get("ignoreifrange"):
            if_range = None
        if range_header and not args.get("norange") and if_range in (None, etag):
            first = int(range_header.removeprefix("bytes=").split("-")[0])
            if first >= size:
                request.setResponseCode(416)
                request.setHeader(b"content-range", f"bytes */{size}".encode())
                return b""
            start = first
            request.setResponseCode(206)
            request.setHeader(b"content-range", f"bytes {start}-{size - 1}/{size}".encode())
        declared = end - start + int(args.get("lie", "0"))
        if not args.get("nolength"):
            request.setHeader(b"content-length", str(declared).encode())
        if request.method == b"HEAD":
            return b""
        cut = stall = None
        if self._served[request.path.decode()] == 1:
            if "drop" in args:
                cut = int(size * float(args["drop"]))
            if "stall" in args:
                stall = int(size * float(args["stall"]))
        if args.get("lie"):
            cut = end
        if "dropevery" in args:
            cut = min(end, start + int(args["dropevery"]))
            if cut == end:
                cut = None

        def body(lo, hi):
            return data[lo:hi] if data is not None else payload(size, seed, lo, hi)

        sender = _Sender(
            self.clock, request, body, start, end, float(args.get("rate", 0)), cut, stall
        )
        sender.chunk = int(args.get("chunk", CHUNK))
        sender.origin = self
        return server.NOT_DONE_YET

    def _not_modified(self, request, args, etag, modified) -> bool:
        match = request.getHeader("if-none-match")
        if match is not None:
            return not args.get("noetag") and etag in [t.strip() for t in match.split(",")]
        since = _date(request.getHeader("if-modified-since"))
        last = _date(modified) if not args.get("nolm") else None
        return since is not None and last is not None and last <= since


def _date(value):
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


_JAN_2024 = 1704067200
_HEADER_ARGS = {
    "cc": b"cache-control",
    "vary": b"vary",
    "cd": b"content-disposition",
    "expires": b"expires",
}


class _Sender:
    """A pull producer that can be throttled, cut off or stalled part-way."""

    def __init__(self, clock, request, body, start, end, rate, cut, stall):
        self.clock, self.request, self.body = clock, request, body
        self.pos, self.end, self.rate, self.cut, self.stall = start, end, rate, cut, stall
        self.started, self.sent, self.stopped, self.pending = clock.seconds(), 0, False, None
        self.chunk = CHUNK
        self.origin: OriginResource | None = None
        request.registerProducer(self, False)

    def resumeProducing(self):
        if self.stopped or self.pending is not None:
            return
        if self.cut is not None and self.pos >= self.cut:
            self.stopped = True
            self.request.channel.transport.loseConnection()
            return
        if self.stall is not None and self.pos >= self.stall:
            return
        limit = min(p for p in (self.end, self.cut, self.stall) if p is not None)
        n = min(self.chunk, limit - self.pos)
        delay = (
            (self.sent + n) / self.rate - (self.clock.seconds() - self.started) if self.rate else 0
        )
        uplink = self.origin.uplink if self.origin is not None else None
        if uplink is not None:
            delay = max(delay, uplink.reserve(n))
        if delay > 0:
            self.pending = self.clock.callLater(delay, self._write, n)
        else:
            self._write(n)

    def _write(self, n):
        self.pending = None
        if self.stopped:
            return
        self.request.write(self.body(self.pos, self.pos + n))
        if self.origin is not None:
            self.origin.sent_bytes += n
        self.pos += n
        self.sent += n
        if self.pos >= self.end and (self.cut is None or self.cut > self.end):
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()
        elif self.pos >= self.end:
            self.resumeProducing()

    def pauseProducing(self):
        pass

    def stopProducing(self):
        self.stopped = True
        if self.pending is not None and self.pending.active():
            self.pending.cancel()


def listen_in_process(reactor, tls=None):
    """(resource, listening port) of an origin on 127.0.0.1 in this process; resource.base is
    its URL. tls: (cert PEM path, key PEM path) to serve HTTPS."""
    res = OriginResource(reactor)
    site = server.Site(res)
    if tls is None:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
    else:
        port = reactor.listenSSL(0, site, tls_options(*tls), interface="127.0.0.1")
    scheme = "https" if tls else "http"
    res.base = f"{scheme}://127.0.0.1:{port.getHost().port}"
    return res, port


def tls_options(cert_path, key_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from twisted.internet import ssl

    with open(cert_path, "rb") as c, open(key_path, "rb") as k:
        certificate = x509.load_pem_x509_certificate(c.read())
        key = serialization.load_pem_private_key(k.read(), None)
    return ssl.CertificateOptions(privateKey=key, certificate=certificate)


def main() -> None:
    """Serve on 127.0.0.1 (port from argv, default ephemeral) and print the port."""
    from twisted.internet import reactor

    argv = sys.argv[1:]
    tls = uplink = None
    if "--tls" in argv:
        i = argv.index("--tls")
        tls, argv = (argv[i + 1], argv[i + 2]), argv[:i] + argv[i + 3 :]
    if "--uplink" in argv:
        i = argv.index("--uplink")
        uplink, argv = Uplink(float(argv[i + 1]), reactor), argv[:i] + argv[i + 2 :]
    site = server.Site(OriginResource(uplink=uplink))
    number = int(argv[0]) if argv else 0
    if tls is None:
        port = reactor.listenTCP(number, site, interface="127.0.0.1")
    else:
        port = reactor.listenSSL(number, site, tls_options(*tls), interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
