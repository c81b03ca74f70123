"""A small client for a withcache cache-host: standard library only, like the shims.

It imports nothing from the server package, so a lab machine with only Python on it can use
it (copy this directory, or install the package). Three things:

- cache URLs: `cache_url(server, url)` is where the host serves an origin URL;
- downloads: `Client.download(url, dest, sha256=...)` fetches through the cache, falls back to
  the origin when the cache does not have it (or is down), and refuses bytes whose digest is not
  the one the caller expects; `Client.is_cached(url)` asks without counting a hit;
- the automation API (/api/v1/) with a bearer token: artifacts, fills, misses, stats, events,
  tokens. Errors come back as `APIError`, carrying the problem's stable `type`.

    from withcache_client import Client
    c = Client("http://cachehost:3000", token=open("/etc/withcache/ci.token").read().strip())
    c.download("https://vendor.example.com/cuda.run", "cuda.run", sha256="9f…")
    job = c.queue_fill("https://vendor.example.com/next.run")
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APIError",
    "Client",
    "DigestMismatch",
    "Downloaded",
    "cache_url",
    "shown_url",
    "url_token",
]

CHUNK = 1 << 20
PROBLEM_BASE = "urn:withcache:problem:"
Json = dict[str, Any]


def url_token(url: str) -> str:
    """The token of an origin URL on the read path: unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(url.encode("utf-8")).rstrip(b"=").decode("ascii")


def _basename(url: str) -> str:
    name = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return urllib.parse.quote(urllib.parse.unquote(name), safe="") or "file"


def cache_url(server: str, url: str) -> str:
    """Where the cache-host at `server` serves the origin URL `url` (/b/<token>/<name>)."""
    return f"{server.rstrip('/')}/b/{url_token(url)}/{_basename(url)}"


class APIError(Exception):
    """An API error answer (RFC 9457 problem details); `kind` is the type's last part, e.g.
    `not-found`, `insufficient-scope`; status 0 when the host could not be reached."""

    def __init__(self, status: int, problem: Json):
        self.status = status
        self.type = str(problem.get("type", ""))
        self.kind = self.type.removeprefix(PROBLEM_BASE)
        self.title = str(problem.get("title", ""))
        self.detail = str(problem.get("detail", ""))
        super().__init__(f"{status} {self.kind or self.title}: {self.detail or self.title}")


class DigestMismatch(Exception):
    """The bytes downloaded are not the ones the caller expected (nothing was kept)."""


@dataclass(frozen=True)
class Downloaded:
    path: str
    sha256: str
    size: int
    from_cache: bool


class Client:
    """A cache-host at `server` (e.g. http://cachehost:3000); `token` for the API calls."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0):
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout

    # -- the read path ------------------------------------------------------------------------

    def cache_url(self, url: str) -> str:
        return cache_url(self.server, url)

    def is_cached(self, url: str) -> bool:
        """Whether the host holds url now (a HEAD: never counts a hit; a miss is recorded and,
        unless the host curates, queues a fill, as any miss does)."""
        request = urllib.request.Request(self.cache_url(url), method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                return r.status == 200
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return False
            raise

    def download(
        self, url: str, dest: str, sha256: str | None = None, fallback: bool = True
    ) -> Downloaded:
        """Download url to dest through the cache; from the origin itself when the cache does
        not have it, cannot be reached, or (with sha256) holds other bytes, unless fallback is
        False. With sha256, only bytes of that digest are ever written to dest: otherwise
        DigestMismatch, and dest is left as it was."""
        expected = sha256.lower() if sha256 else None
        attempts = [(self.cache_url(url), True)] + ([(url, False)] if fallback else [])
        problems = []
        for source, from_cache in attempts:
            try:
                return self._fetch_to(source, dest, expected, from_cache)
            except DigestMismatch as e:
                problems.append(e)
            except urllib.error.HTTPError as e:
                problems.append(e)
                e.close()
            except OSError as e:  # unreachable, reset, timed out
                problems.append(e)
        mismatches = [p for p in problems if isinstance(p, DigestMismatch)]
        if mismatches:
            raise mismatches[-1]
        raise problems[-1]

    def _fetch_to(
        self, source: str, dest: str, expected: str | None, from_cache: bool
    ) -> Downloaded:
        folder = os.path.dirname(os.path.abspath(dest))
        fd, tmp = tempfile.mkstemp(prefix=".withcache-", dir=folder)
        try:
            digest, size = hashlib.sha256(), 0
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(source, timeout=self.timeout) as r,
            ):
                claimed = r.headers.get("X-Withcache-Sha256") if from_cache else None
                declared = r.headers.get("Content-Length")
                while chunk := r.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            got = digest.hexdigest()
            if declared is not None and int(declared) != size:
                raise OSError(f"{size} of {declared} bytes arrived")
            if claimed and claimed != got:
                raise DigestMismatch(f"the cache said {claimed} but sent {got}")
            if expected and got != expected:
                where = "the cache" if from_cache else shown_url(source)
                raise DigestMismatch(f"expected sha256 {expected}, got {got} from {where}")
            os.replace(tmp, dest)
            return Downloaded(dest, got, size, from_cache)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- the API --------------------------------------------------------------------------------

    def call(self, method: str, path: str, query: Json | None = None, body: Any = None) -> Any:
        """One API call; the decoded JSON answer, or APIError."""
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as r:
                text = r.read()
        except urllib.error.HTTPError as e:
            with e:
                raw = e.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {"title": raw[:200].decode("utf-8", "replace")}
            raise APIError(e.code, problem if isinstance(problem, dict) else {}) from None
        except OSError as e:
            raise APIError(0, {"title": "unreachable", "detail": str(e)}) from None
        return json.loads(text) if text else None

    def artifacts(self, q: str = "", limit: int = 50, offset: int = 0) -> Json:
        """One page: {items, total, limit, offset, next}."""
        return self.call(
            "GET", "/api/v1/artifacts", {"q": q or None, "limit": limit, "offset": offset}
        )

    def iter_artifacts(self, q: str = "", page: int = 500) -> Iterator[Json]:
        """Every artifact (matching q), page by page: each page's `next` names the one after
        (a cursor, so a deep page costs what the first does)."""
        found = self.artifacts(q, page)
        while True:
            yield from found["items"]
            if found["next"] is None:
                return
            found = self.call("GET", found["next"])

    def artifact(
        self, *, url: str | None = None, key: str | None = None, sha256: str | None = None
    ) -> Json:
        return self.call("GET", "/api/v1/artifact", {"url": url, "key": key, "sha256": sha256})

    def delete_artifact(self, *, url: str | None = None, key: str | None = None) -> Json:
        return self.call("DELETE", "/api/v1/artifact", {"url": url, "key": key})

    def pin(self, *, url: str | None = None, key: str | None = None) -> Json:
        return self.call("PUT", "/api/v1/artifact/pin", {"url": url, "key": key})

    def unpin(self, *, url: str | None = None, key: str | None = None) -> Json:
        return self.call("DELETE", "/api/v1/artifact/pin", {"url": url, "key": key})

    def refresh(self, *, url: str | None = None, key: str | None = None) -> Json:
        """Revalidate an artifact with its origin now: {"outcome": ..., "artifact": ...}."""
        return self.call("POST", "/api/v1/artifact/refresh", {"url": url, "key": key})

    def queue_fill(self, url: str) -> Json:
        """Queue a fill (or get the one already filling that URL's key): the job."""
        return self.call("POST", "/api/v1/fills", body={"url": url})

    def fills(self, limit: int = 50) -> list[Json]:
        return self.call("GET", "/api/v1/fills", {"limit": limit})["items"]

    def fill(self, job_id: int) -> Json:
        return self.call("GET", f"/api/v1/fills/{int(job_id)}")

    def cancel_fill(self, job_id: int) -> Json:
        return self.call("DELETE", f"/api/v1/fills/{int(job_id)}")

    def misses(self, limit: int = 50, offset: int = 0) -> Json:
        return self.call("GET", "/api/v1/misses", {"limit": limit, "offset": offset})

    def dismiss_miss(self, *, url: str | None = None, key: str | None = None) -> Json:
        return self.call("DELETE", "/api/v1/miss", {"url": url, "key": key})

    def stats(self) -> Json:
        return self.call("GET", "/api/v1/stats")

    def events(self, action: str = "", actor: str = "", limit: int = 50, offset: int = 0) -> Json:
        query = {"action": action or None, "actor": actor or None, "limit": limit, "offset": offset}
        return self.call("GET", "/api/v1/events", query)

    def tokens(self) -> list[Json]:
        return self.call("GET", "/api/v1/tokens")["items"]

    def create_token(self, name: str, scopes: list[str]) -> Json:
        """A new token; its secret is in the answer's "token", shown this once."""
        return self.call("POST", "/api/v1/tokens", body={"name": name, "scopes": scopes})

    def revoke_token(self, name: str) -> Json:
        return self.call("DELETE", f"/api/v1/tokens/{urllib.parse.quote(name, safe='')}")


def shown_url(url: str) -> str:
    """A URL for messages: without user info, and with its query (signatures) elided."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))
