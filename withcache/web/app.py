"""Builds the web Site: mounts the read path and adds headers every response carries."""

from __future__ import annotations

from twisted.web import server

from withcache.cache import Cache
from withcache.web.blobs import ReadPath


class WithcacheSite(server.Site):
    """A Site that never shows tracebacks and sets the headers every response needs."""

    displayTracebacks = False

    def getResourceFor(self, request):
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return super().getResourceFor(request)


def build_site(cache: Cache) -> server.Site:
    return WithcacheSite(ReadPath(cache).app.resource())
