"""Builds the web Site: mounts the read path and the operator UI, adds headers every response
carries, logs requests.

Two Klein apps share the URL space: the open read path (/b/, /blob, /healthz, /metrics) and the
operator UI (/, /login, /logout, /admin/..., /static/...). The root is a leaf resource that looks
at the first path segment and renders the request with the app that owns it, so each app keeps
its own routes and error handlers and neither needs to know about the other.
"""

from __future__ import annotations

import os

from twisted.web import resource, server

from withcache._log import make_logger
from withcache.cache import Cache
from withcache.web.admin import AdminUI
from withcache.web.auth import Auth, load_secret
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
    access_log = True

    def getResourceFor(self, request):
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return super().getResourceFor(request)

    def log(self, request):
        """One structured event per request, instead of a combined-format line."""
        if not self.access_log:
            return
        log.info(
            "{method} {path} {status} {bytes}",
            method=request.method.decode("latin-1"),
            path=_logged_path(request),
            status=request.code,
            bytes=request.sentLength,
            client=getattr(request.getClientAddress(), "host", "-"),
        )


ADMIN_SEGMENTS = frozenset({b"", b"login", b"logout", b"admin", b"static"})


class Dispatch(resource.Resource):
    """The root: the operator UI's paths go to its app, a hit the index knows is served on the
    spot, everything else goes to the read path's app."""

    isLeaf = True  # so the whole path is left in postpath for the app that renders it

    def __init__(self, read_path: ReadPath, admin: resource.IResource):
        super().__init__()
        self._read_path = read_path
        self._admin = admin

    def render(self, request):
        first = request.postpath[0] if request.postpath else b""
        if first in ADMIN_SEGMENTS:
            return self._admin.render(request)
        return self._read_path.render(request)


def build_site(
    cache: Cache, environ: dict[str, str] | None = None, *, access_log: bool = True
) -> server.Site:
    environ = dict(os.environ if environ is None else environ)
    data_dir = os.path.dirname(cache.store.blobs_dir)
    auth = Auth(environ.get("WITHCACHE_ADMIN_PASSWORD"), load_secret(data_dir, environ), cache.now)
    if not auth.enabled:
        log.warn(
            "WITHCACHE_ADMIN_PASSWORD is not set: the operator UI is open to anyone who can"
            " reach this host"
        )
    root = Dispatch(ReadPath(cache), AdminUI(cache, auth).app.resource())
    site = WithcacheSite(root)
    site.access_log = access_log
    return site
