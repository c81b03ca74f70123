"""The open read path: GET|HEAD /b/<token>/<name>, /blob?url=<origin>, /healthz, /metrics.

Hits are served by withcache.web.sendfile (HEAD, Last-Modified, sendfile bodies; byte ranges as
withcache.web.ranges decides, within its limits); this module adds the entity tag, the digest
header and the hit/miss bookkeeping. A key whose fill is under way is answered by
withcache.web.streaming, following the fill. A hit (/b/ or /blob) the cache's in-memory
index knows is answered by HitServer.serve_known_hit before Klein's routing: the common case
pays for neither routing nor a database round-trip. HitServer takes a withcache.hits.HitSource,
so a serving worker (withcache.web.worker) answers hits with the same code. Everything else
(keys the index does not know yet, misses, malformed requests) goes through the Klein app; both
parse requests with withcache.web.blob_request.

The bytes served are whatever an origin chose, from the operator UI's own origin, so every answer
here carries READ_PATH_HEADERS (a sandbox CSP: nothing served runs as this origin, and nosniff),
and a hit goes out with withcache.mediatypes.served_type of its stored type.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.web import http
from twisted.web.resource import Resource

import withcache
from withcache import freshness
from withcache._log import make_logger
from withcache.cache import Cache, FilledElsewhere, Streaming
from withcache.catalog_db import CatalogUnavailable
from withcache.hits import Hit, HitSource
from withcache.keys import InvalidURL
from withcache.mediatypes import served_type
from withcache.web.blob_request import known_url, query_url, token_url
from withcache.web.peer_relay import PeerRelays
from withcache.web.sendfile import OpenBlob, blob_resource, open_blob
from withcache.web.storerange import ranged_answer
from withcache.web.streaming import StreamedFill

log = make_logger()

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


def plain(request: Any, code: int, line: str) -> bytes:
    """A one-line text/plain response body."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    return (line.replace("\n", " ") + "\n").encode("utf-8")


class HitServer:
    """Answers hits from a HitSource's index, without routing or the catalog: the host's
    Cache (through ReadPath) and a serving worker's WorkerCache."""

    def __init__(self, source: HitSource):
        self.source = source

    def serve_known_hit(self, request) -> bytes | int | None:
        """Render a GET|HEAD of /b/<token>/... or /blob?url=... if the index knows the artifact;
        None leaves the request (a miss, a bad token, another route) to the Klein app."""
        url = known_url(request)
        if url is None:
            return None
        try:
            hit = self.source.cached(url)
        except InvalidURL:
            return None
        return None if hit is None else self.serve_hit(request, hit)

    def serve_hit(self, request, hit: Hit) -> bytes | int | None:
        """Render a hit found without the Klein app; None if its blob is not what the catalog
        says (then the Klein app, which asks the catalog again, should answer)."""
        opened = open_blob(hit.path, hit.artifact.size)
        if opened is None:
            self.source.blob_changed()
            return None
        if request.method == b"GET":
            self.source.count_hit(hit)
        return self.respond(request, hit, opened).render(request)

    def respond(self, request, hit: Hit, opened: OpenBlob | None = None) -> Any:
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
                self.source.reactor,
                self.source.served_bytes,
                request,
                opened,
                freshness.http_date(origin.get("last-modified")),
            )
        except BaseException:
            if opened is not None:
                opened.close()
            raise


class ReadPath:
    """Routes the shims use; they never log in."""

    app = Klein()

    def __init__(self, cache: Cache):
        self.cache = cache
        self.hits = HitServer(cache)
        # Misses of keys other hosts are filling go to them (withcache.web.peer_relay).
        self.peers = PeerRelays(
            cache.reactor, cache.downloads.identity.advertise, cache.settings.stream_wait
        )
        self._metrics = None
        self._app_resource: Any = None  # the Klein app's resource, made on first use

    def render(self, request) -> Any:
        """Answer any request that is not the operator UI's: a hit the index knows at once,
        everything else with the Klein app; READ_PATH_HEADERS on each answer."""
        secure_read_path(request)
        served = self.hits.serve_known_hit(request)
        if served is not None:
            return served
        if self._app_resource is None:
            self._app_resource = self.app.resource()
        return self._app_resource.render(request)

    @app.handle_errors(InvalidURL)
    def invalid(self, request, failure):
        return plain(request, http.BAD_REQUEST, f"bad request: {failure.value}")

    @app.handle_errors(CatalogUnavailable)
    def catalog_unavailable(self, request, failure):
        # Expected to pass (a database restarting): a shim falls back to the origin meanwhile.
        log.warn("the catalog could not answer: {error}", error=str(failure.value.orig))
        request.setHeader(b"Retry-After", b"1")
        return plain(request, http.SERVICE_UNAVAILABLE, "catalog unavailable; try again")

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

            self._metrics = MetricsResource(self.cache.metrics_registry)
        request.postpath = []
        return self._metrics

    @app.route("/b/<token>", methods=["GET"])
    @app.route("/b/<token>/<path:name>", methods=["GET"])
    async def by_token(self, request, token, name=""):
        return await self._serve(request, token_url(token))

    @app.route("/blob", methods=["GET"])
    async def by_query(self, request):
        return await self._serve(request, query_url(request.args))

    async def _serve(self, request, url: str):
        client = getattr(request.getClientAddress(), "host", None)
        hit = await self.cache.lookup(url, count_hit=request.method == b"GET", client=client)
        if isinstance(hit, FilledElsewhere):
            relayed = self.peers.resource(request, url, hit)
            if relayed is not None:
                request.postpath = []
                return relayed
            return plain(
                request,
                http.NOT_FOUND,
                f"not cached: {self.cache.key_for(url)} (being filled by {hit.owner})",
            )
        if hit is None:
            return plain(request, http.NOT_FOUND, f"not cached: {self.cache.key_for(url)}")
        if isinstance(hit, Streaming):
            request.postpath = []
            stream = hit.stream
            content_type = served_type(stream.content_type).encode("ascii")
            fills = self.cache.store_fills
            if hit.artifact is not None and fills is not None:
                # A range far ahead of the object store's copy: a ranged GET of the object.
                ranged = ranged_answer(
                    request, stream, hit.artifact, fills, content_type, self.cache.served_bytes
                )
                if ranged is not None:
                    return ranged
            return StreamedFill(stream, content_type, self.cache.reactor, self.cache.served_bytes)
        return self.hits.respond(request, hit)


class NotModified(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(http.NOT_MODIFIED)
        return b""
