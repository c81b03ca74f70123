"""The web layer in process: build_site over a real Cache on a temp dir, reached through treq's
StubTreq (klein's own route tests are the model), one host per test, tracebacks in the test.

StubTreq pumps bytes only when flushed, and blob bodies (and static.File assets) are read by
the real reactor's threads, so every request here runs with a LoopingCall flushing it (the
known StubTreq + static.File trap), under a timeout. The end-to-end tests keep proving the
twistd, curl and Chromium wiring.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from pathlib import Path

import pytest_twisted
import treq
from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.web import resource, server

from tests.ui.ui_support import CSRF_RE, PASSWORD, Reply
from withcache.cache import Cache, Settings
from withcache.catalog import Catalog
from withcache.datadir import import_file
from withcache.fetcher import Fetcher
from withcache.origin_client import make_http_client
from withcache.policy import OriginPolicy
from withcache.store import Store
from withcache.web.app import build_site

BASE = "http://localhost"
TIMEOUT = 20


class _Through(resource.Resource):
    """The root StubTreq's own Site renders: it hands each request to our Site's resource
    lookup, so the request sees WithcacheSite (its headers, no tracebacks)."""

    isLeaf = True

    def __init__(self, site: server.Site):
        super().__init__()
        self._site = site

    def render(self, request):
        return self._site.getResourceFor(request).render(request)


async def flushed(stub: StubTreq, method: str, path: str, *, headers=None, data=None):
    """(response, body bytes) of one request through stub, which a LoopingCall flushes until
    the body is in; redirects are not followed."""
    from twisted.internet import reactor

    pump = task.LoopingCall(stub.flush)
    pump.clock = reactor
    pump.start(0.002)
    try:
        d = stub.request(method, BASE + path, headers=headers, data=data, allow_redirects=False)
        response = await d.addTimeout(TIMEOUT, reactor)
        body = await treq.content(response).addTimeout(TIMEOUT, reactor)
    finally:
        pump.stop()
    return response, body


class WebHost:
    """A Cache over a temporary data dir, started as makeService starts it, and its Site."""

    def __init__(
        self,
        data_dir: Path,
        *,
        password: str | None = PASSWORD,
        fills: bool = False,
        catalog: str | None = None,
        **settings,
    ):
        from twisted.internet import reactor

        settings.setdefault("curate", True)
        settings.setdefault("policy", OriginPolicy(allow_private=True))
        settings.setdefault("stream_wait", 0)
        self.settings = Settings(**settings)
        self.data_dir = data_dir
        self.store = Store(str(data_dir))
        self.catalog = Catalog(catalog or str(data_dir / "cache.db"), reactor)
        self._client = make_http_client(reactor, self.settings.policy) if fills else None
        fetcher = None
        if self._client is not None:
            fetcher = Fetcher(reactor, self._client, self.settings.policy, idle_timeout=5)
        self.cache = Cache(
            self.store, self.catalog, self.settings, reactor=reactor, now=reactor.seconds,
            fetcher=fetcher,
        )  # fmt: skip
        environ = {} if password is None else {"WITHCACHE_ADMIN_PASSWORD": password}
        self.warnings: list[str] = []
        globalLogPublisher.addObserver(self._observe)
        self.site = build_site(self.cache, environ, access_log=False)
        self.stub = StubTreq(_Through(self.site))

    def _observe(self, event) -> None:
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            self.warnings.append(str(event.get("log_format", "")))

    async def start(self) -> WebHost:
        self.catalog.startService()
        self.cache.privilegedStartService()
        self.cache.startService()
        await self.cache.recovery
        return self

    async def stop(self) -> None:
        globalLogPublisher.removeObserver(self._observe)
        await self.cache.stopService()
        if self._client is not None:
            await self._client.pool.closeCachedConnections()
        await self.catalog.stopService()

    async def request(self, method: str, path: str, *, headers=None, data=None):
        """(response, body bytes) of one request, flushed through StubTreq."""
        return await flushed(self.stub, method, path, headers=headers, data=data)

    async def get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of an anonymous GET."""
        response, body = await self.request("GET", path)
        return response.code, body

    async def miss(self, url: str) -> None:
        """A /blob request that misses (recording the miss)."""
        status, _ = await self.get("/blob?" + urllib.parse.urlencode({"url": url}))
        assert status == 404

    async def seed(self, url: str, path: Path) -> str:
        """Import a local file under an origin URL (as withcache-admin import does)."""
        from twisted.internet import reactor

        def put(conn):
            now = reactor.seconds()
            return import_file(conn, self.store, url, str(path), query=self.settings.query, now=now)

        return (await self.catalog.run(put)).sha256

    def client(self) -> WebClient:
        return WebClient(self)


class WebClient:
    """A browser-like client of a WebHost: keeps its cookies, follows no redirects."""

    def __init__(self, host: WebHost):
        self.host = host
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    async def request(self, method: str, path: str, data=None, headers=None) -> Reply:
        sent = dict(headers or {})
        if self.cookies and "Cookie" not in sent:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        response, raw = await self.host.request(
            method, path, headers={k: [v] for k, v in sent.items()}, data=body
        )
        set_cookies = [
            v.decode("latin-1") for v in response.headers.getRawHeaders(b"set-cookie", [])
        ]
        for cookie in set_cookies:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in cookie or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        headers_out = {
            k.decode("latin-1"): b", ".join(v).decode("latin-1")
            for k, v in response.headers.getAllRawHeaders()
        }
        reply = Reply(response.code, headers_out, raw.decode("utf-8", "replace"), set_cookies)
        if CSRF_RE.search(reply.body):
            self.csrf = reply.csrf
        return reply

    async def get(self, path: str, **headers) -> Reply:
        return await self.request("GET", path, headers=headers)

    async def post(
        self, path: str, fields: dict | None = None, *, csrf: bool = True, **headers
    ) -> Reply:
        fields = dict(fields or {})
        if csrf:
            fields.setdefault("csrf", self.csrf)
        return await self.request("POST", path, fields, headers)

    async def login(self, password: str = PASSWORD) -> Reply:
        await self.get("/login")
        return await self.post("/login", {"password": password})

    async def logged_in(self) -> WebClient:
        assert (await self.login()).status == 303
        await self.get("/")  # the session's CSRF token (a login starts a new session)
        return self


def started(host: WebHost) -> Iterable[WebHost]:
    """Start host for a fixture, and stop it after the test."""
    pytest_twisted.blockon(defer.ensureDeferred(host.start()))
    try:
        yield host
    finally:
        pytest_twisted.blockon(defer.ensureDeferred(host.stop()))
