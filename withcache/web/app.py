"""Builds the web Site: mounts the read path, adds headers every response carries, logs requests."""

from __future__ import annotations

from twisted.web import server

from withcache._log import make_logger
from withcache.cache import Cache
from withcache.web.blobs import ReadPath

log = make_logger()


def _logged_path(request) -> str:
    """The request path for a log: no query string, and no /b/ token (it embeds the origin URL,
    signatures and all)."""
    path = request.path.decode("latin-1")
    if path.startswith("/b/"):
        _b, _token, *name = path[1:].split("/")
        return "/b/…/" + "/".join(name)
    return path


class WithcacheSite(server.Site):
    """A Site that never shows tracebacks and sets the headers every response needs."""

    displayTracebacks = False

    def getResourceFor(self, request):
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return super().getResourceFor(request)

    def log(self, request):
        """One structured event per request, instead of a combined-format line."""
        log.info(
            "{method} {path} {status} {bytes}",
            method=request.method.decode("latin-1"),
            path=_logged_path(request),
            status=request.code,
            bytes=request.sentLength,
            client=getattr(request.getClientAddress(), "host", "-"),
        )


def build_site(cache: Cache) -> server.Site:
    return WithcacheSite(ReadPath(cache).app.resource())
