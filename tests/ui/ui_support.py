"""Helpers for the operator UI tests: a host with a password, an HTTP client that keeps cookies."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import Host, start_host

PASSWORD = "correct horse battery staple"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 30_000
CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def start_ui_host(data_dir: Path, *args: str, password: str | None = PASSWORD) -> Host:
    """A twistd host whose environment sets (or unsets) WITHCACHE_ADMIN_PASSWORD."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WITHCACHE_SESSION_SECRET", raising=False)
        if password is None:
            mp.delenv("WITHCACHE_ADMIN_PASSWORD", raising=False)
        else:
            mp.setenv("WITHCACHE_ADMIN_PASSWORD", password)
        return start_host(data_dir, *args)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str
    set_cookies: list[str] = field(default_factory=list)

    @property
    def csrf(self) -> str:
        m = CSRF_RE.search(self.body)
        assert m, f"no CSRF token in:\n{self.body[:2000]}"
        return m.group(1)


def _reply(status: int, r) -> Reply:
    return Reply(status, dict(r.headers), r.read().decode(), r.headers.get_all("Set-Cookie") or [])


class Client:
    """A browser-like HTTP client for route tests: a cookie jar, redirects not followed."""

    def __init__(self, base: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect
        )
        self.csrf = ""

    def request(self, method: str, path: str, data=None, headers=None) -> Reply:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, body, headers or {}, method=method)
        try:
            with self.opener.open(req, timeout=15) as r:
                reply = _reply(r.status, r)
        except urllib.error.HTTPError as e:
            reply = _reply(e.code, e)
        if CSRF_RE.search(reply.body):
            self.csrf = reply.csrf
        return reply

    def get(self, path: str, **headers) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, fields: dict | None = None, *, csrf: bool = True, **headers) -> Reply:
        fields = dict(fields or {})
        if csrf:
            fields.setdefault("csrf", self.csrf)
        return self.request("POST", path, fields, headers)

    def login(self, password: str = PASSWORD) -> Reply:
        self.get("/login")
        return self.post("/login", {"password": password})
