"""The open read path: GET|HEAD /b/<token>/<name>, /blob?url=<origin>, /healthz, /metrics.

Hits are served by withcache.web.sendfile (HEAD, Last-Modified, sendfile bodies; byte ranges as
withcache.web.ranges decides, within its limits); this module adds the entity tag, the digest
header and the hit/miss bookkeeping. A key whose fill is under way is answered by
withcache.web.streaming, following the fill. A hit (/b/ or /blob) the cache's in-memory
index knows is answered by `serve_known_hit` before Klein's routing: the common case pays for
neither routing nor a database round-trip. Everything else (keys the index does not know yet,
misses, malformed requests) goes through the Klein app.

The bytes served are whatever an origin chose, from the operator UI's own origin, so every answer
here carries READ_PATH_HEADERS (a sandbox CSP: nothing served runs as this origin, and nosniff),
and a hit goes out with withcache.mediatypes.served_type of its stored type.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from klein import Klein
from twisted.web import http
from twisted.web.resource import Resource

import withcache
from withcache import freshness
from withcache.cache import Cache, Hit, Streaming
from withcache.keys import InvalidURL, decode_token
from withcache.mediatypes import served_type
from withcache.web.sendfile import OpenBlob, blob_resource, open_blob
from withcache.web.streaming import StreamedFill

# On every read-path answer (hits, 206, 304, 404, 400, 416, HEAD; host and serving workers): a
# document served here gets an opaque origin and may load nothing, so a script an origin put in
# an "HTML" artifact cannot read the operator UI's pages or post its forms.
READ_PATH_HEADERS = {
    b"Content-Security-Policy": b"sandbox; default-src 'none'",
    b"X-Content-Type-Options": b"nosniff",
}
# On every hit: this host serves the origin's Content-Disposition and Last-Modified (when the
# origin sent them), so a shim may rewrite `curl -J` / `wget --content-disposition` (issue 19).
ORIGIN_HEADERS = (b"X-Withcache-Origin-Headers", b"content-disposition, last-modified")


def secure_read_path(request: Any) -> None:
    """Set READ_PATH_HEADERS on request's response."""
    for name, value in READ_PATH_HEADERS.items():
        request.setHeader(name, value)


def _etag_matches(header: bytes | None, etag: bytes) -> bool:
    if not header:
        return False
    for candidate in header.split(b","):
        tag = candidate.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _url_of(token: bytes) -> str:
    """decode_token, remembered: the same few tokens are asked for all day."""
    return decode_token(token.decode("ascii"))


def requested_url(request: Any) -> str | None:
    """The origin URL a GET|HEAD of /b/<token>/... or /blob?url=... names; None for other
    requests and malformed ones (the Klein app gives those their answers)."""
    if request.method not in (b"GET", b"HEAD"):
        return None
    path = request.postpath
    try:
        if len(path) >= 2 and path[0] == b"b":
            return _url_of(path[1])
        urls = request.args.get(b"url")
        if path == [b"blob"] and urls and len(urls) == 1 and urls[0]:
            return urls[0].decode("utf-8")
    except (InvalidURL, UnicodeDecodeError):
        pass
    return None


def plain(request: Any, code: int, line: str) -> bytes:
    """A one-line text/plain response body."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return (line.replace("\n", " ") + "\n").encode("utf-8")


class ReadPath:
    """Routes the shims use; they never log in."""

    app = Klein()

    def __init__(self, cache: Cache):
        self.cache = cache
        self._metrics = None
        self._app_resource: Any = None  # the Klein app's resource, made on first use

    def render(self, request) -> Any:
        """Answer any request that is not the operator UI's: a hit the index knows at once,
        everything else with the Klein app; READ_PATH_HEADERS on each answer."""
        secure_read_path(request)
        served = self.serve_known_hit(request)
        if served is not None:
            return served
        if self._app_resource is None:
            self._app_resource = self.app.resource()
        return self._app_resource.render(request)

    @app.handle_errors(InvalidURL)
    def invalid(self, request, failure):
        return plain(request, http.BAD_REQUEST, f"bad request: {failure.value}")

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        return json.dumps({"status": "ok", "version": withcache.__version__}).encode()

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        if self._metrics is None:
            # prometheus_client's own Twisted resource; it renders in the reactor's threadpool.
            from prometheus_client.twisted import MetricsResource

            self._metrics = MetricsResource(self.cache.metrics.registry)
        request.postpath = []
        return self._metrics

    @app.route("/b/<token>", methods=["GET"])
    @app.route("/b/<token>/<path:name>", methods=["GET"])
    async def by_token(self, request, token, name=""):
        return await self._serve(request, decode_token(token))

    @app.route("/blob", methods=["GET"])
    async def by_query(self, request):
        urls = request.args.get(b"url")
        if not urls or not urls[0]:
            raise InvalidURL("missing url= query parameter")
        if len(urls) > 1:
            raise InvalidURL("more than one url= query parameter")
        try:
            url = urls[0].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidURL("url= is not UTF-8") from None
        return await self._serve(request, url)

    def serve_known_hit(self, request) -> bytes | int | None:
        """Render a GET|HEAD of /b/<token>/... or /blob?url=... if the index knows the artifact;
        None leaves the request (a miss, a bad token, another route) to the Klein app."""
        url = requested_url(request)
        if url is None:
            return None
        try:
            hit = self.cache.cached(url)
        except InvalidURL:
            return None
        return None if hit is None else self.serve_hit(request, hit)

    def serve_hit(self, request, hit: Hit) -> bytes | int | None:
        """Render a hit found without the Klein app; None if its blob is not what the catalog
        says (then the Klein app, which asks the catalog again, should answer)."""
        opened = open_blob(hit.path, hit.artifact.size)
        if opened is None:
            self.cache.forget(hit)
            return None
        if request.method == b"GET":
            self.cache.count_hit(hit)
        return self._respond(request, hit, opened).render(request)

    async def _serve(self, request, url: str):
        client = getattr(request.getClientAddress(), "host", None)
        hit = await self.cache.lookup(url, count_hit=request.method == b"GET", client=client)
        if hit is None:
            return plain(request, http.NOT_FOUND, f"not cached: {self.cache.key_for(url)}")
        if isinstance(hit, Streaming):
            request.postpath = []
            stream = hit.stream
            return StreamedFill(
                stream,
                served_type(stream.content_type).encode("ascii"),
                self.cache.reactor,
                self.cache.metrics.served_bytes,
            )
        return self._respond(request, hit)

    def _respond(self, request, hit: Hit, opened: OpenBlob | None = None) -> Any:
        """The resource that answers request with hit's blob; it owns `opened` (the blob, if
        the caller opened it), which is closed here if anything goes wrong before."""
        try:
            artifact = hit.artifact
            etag = f'"{artifact.sha256}"'.encode("ascii")
            request.setHeader(b"ETag", etag)
            request.setHeader(b"X-Withcache-Sha256", artifact.sha256.encode("ascii"))
            request.setHeader(*ORIGIN_HEADERS)
            origin = freshness.decode(artifact.origin_headers) or {}
            disposition = origin.get("content-disposition")
            if disposition:
                # Printable by decode(); latin-1 is what a header may carry.
                request.setHeader(b"Content-Disposition", disposition.encode("latin-1", "replace"))
            # Klein hands a returned resource whatever path is left; a file has no children.
            request.postpath = []
            if _etag_matches(request.getHeader(b"If-None-Match"), etag):
                if opened is not None:
                    opened.close()
                return NotModified()
            return blob_resource(
                hit.path,
                artifact.size,
                # Checked again here: the catalog row may come from a damaged data dir.
                served_type(artifact.content_type).encode("ascii"),
                self.cache.reactor,
                self.cache.metrics.served_bytes,
                request,
                opened,
                freshness.http_date(origin.get("last-modified")),
            )
        except BaseException:
            if opened is not None:
                opened.close()
            raise


class NotModified(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(http.NOT_MODIFIED)
        return b""
