"""Builds the web Site: mounts the read path and the operator UI, adds headers every response
carries, logs requests.

Two Klein apps share the URL space: the open read path (/b/, /blob, /healthz, /metrics) and the
operator UI (/, /login, /logout, /admin/..., /static/...). The root is a leaf resource that looks
at the first path segment and renders the request with the app that owns it, so each app keeps
its own routes and error handlers and neither needs to know about the other.

The operator UI answers only requests whose Host is one of this cache-host's names
(withcache.web.hosts; 421 otherwise), against DNS rebinding; the read path answers any. With
--admin-listen the two get Sites (and ports) of their own: build_split_sites.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.web import http, resource, server

from withcache._log import make_logger
from withcache.cache import Cache
from withcache.sessions import CatalogSessions
from withcache.web.admin import AdminUI
from withcache.web.api import API
from withcache.web.api_auth import APIAuth
from withcache.web.auth import Auth, load_secret
from withcache.web.blobs import ReadPath, plain, secure_read_path
from withcache.web.hosts import AdminHosts, default_names, host_name

log = make_logger()

MISDIRECTED = 421


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
            "{method} {path} {status} {bytes} {client}",
            method=request.method.decode("latin-1"),
            path=_logged_path(request),
            status=request.code,
            bytes=request.sentLength,
            client=getattr(request.getClientAddress(), "host", "-"),
        )


ADMIN_SEGMENTS = frozenset({b"", b"login", b"logout", b"admin", b"static"})


def _not_here(request, line: str) -> bytes:
    secure_read_path(request)
    return plain(request, http.NOT_FOUND, line)


class Dispatch(resource.Resource):
    """The root: the operator UI's paths go to its app (when its Host is one of this
    cache-host's names), a hit the index knows is served on the spot, everything else goes to
    the read path's app. With --admin-listen the main port's Dispatch has no admin and the
    admin port's no read path: each answers the other's paths with a 404."""

    isLeaf = True  # so the whole path is left in postpath for the app that renders it

    def __init__(
        self,
        read_path: ReadPath | None,
        admin: resource.IResource | None,
        admin_hosts: AdminHosts | None = None,
        api: resource.IResource | None = None,
    ):
        super().__init__()
        self._read_path = read_path
        self._admin = admin
        self._admin_hosts = admin_hosts or AdminHosts(default_names())
        self._api = api

    def render(self, request):
        first = request.postpath[0] if request.postpath else b""
        if first == b"api" and self._api is not None:
            # Bearer tokens work under any Host name; the API checks the Host itself when a
            # session cookie is what authenticates (withcache.web.api_auth).
            return self._api.render(request)
        if first in ADMIN_SEGMENTS:
            if self._admin is None:
                return _not_here(request, "not found: the operator UI is on its own port")
            if not self._admin_hosts.allows(request.getHeader(b"host")):
                return self._misdirected(request)
            return self._admin.render(request)
        if self._read_path is None:
            return _not_here(request, "not found: the read path is on the main port")
        return self._read_path.render(request)

    @staticmethod
    def _misdirected(request) -> bytes:
        """421 for a Host name that is not this cache-host's (DNS rebinding)."""
        secure_read_path(request)
        name = host_name(request.getHeader(b"host") or b"") or "?"
        line = (
            f"misdirected request: the operator UI answers only to this host's own names, not"
            f" {name!r} (add it with --admin-host)"
        )
        body = plain(request, MISDIRECTED, line)
        request.setResponseCode(MISDIRECTED, b"Misdirected Request")
        return body


def read_base_on(port: Callable[[], int | None], scheme: str) -> Callable[[Any], str]:
    """The base URL of cache URLs the operator UI shows when the read path has a port of its
    own: the name the operator reached the UI by, with the read path's scheme and port."""

    def base(request) -> str:
        name = host_name(request.getHeader(b"host") or b"") or "localhost"
        shown = f"[{name}]" if ":" in name else name
        return f"{scheme}://{shown}:{port()}"

    return base


def _parts(
    cache: Cache, environ: dict[str, str] | None, admin_hosts: AdminHosts, read_base: Any = None
):
    environ = dict(os.environ if environ is None else environ)
    data_dir = os.path.dirname(cache.store.blobs_dir)
    auth = Auth(
        environ.get("WITHCACHE_ADMIN_PASSWORD"),
        load_secret(data_dir, environ),
        cache.now,
        CatalogSessions(cache.catalog),
    )
    if not auth.enabled:
        log.warn(
            "WITHCACHE_ADMIN_PASSWORD is not set: the operator UI is open to anyone who can"
            " reach this host"
        )
    api = API(cache, APIAuth(cache, auth, admin_hosts)).app.resource()
    return ReadPath(cache), AdminUI(cache, auth, read_base=read_base).app.resource(), api


def _admin_hosts(names: Iterable[str] | None) -> AdminHosts:
    return AdminHosts(default_names() if names is None else names)


def _site(root: resource.Resource, access_log: bool) -> WithcacheSite:
    site = WithcacheSite(root)
    site.access_log = access_log
    return site


def build_site(
    cache: Cache,
    environ: dict[str, str] | None = None,
    *,
    access_log: bool = True,
    admin_hosts: Iterable[str] | None = None,
) -> WithcacheSite:
    """One Site for the read path and the operator UI on one port; the UI answers the
    admin_hosts names (default: withcache.web.hosts.default_names)."""
    hosts = _admin_hosts(admin_hosts)
    read_path, admin, api = _parts(cache, environ, hosts)
    return _site(Dispatch(read_path, admin, hosts, api), access_log)


def build_split_sites(
    cache: Cache,
    read_base: Callable[[Any], str],
    environ: dict[str, str] | None = None,
    *,
    access_log: bool = True,
    admin_hosts: Iterable[str] | None = None,
) -> tuple[WithcacheSite, WithcacheSite]:
    """The read path's Site and the operator UI's, for ports of their own (--admin-listen)."""
    hosts = _admin_hosts(admin_hosts)
    read_path, admin, api = _parts(cache, environ, hosts, read_base)
    read_site = _site(Dispatch(read_path, None), access_log)
    admin_site = _site(Dispatch(None, admin, hosts, api), access_log)
    return read_site, admin_site
