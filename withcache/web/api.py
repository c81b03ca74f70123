"""The automation API, /api/v1/: JSON in and out over the same Cache the operator UI uses.

Routes call the same Cache methods as the UI's buttons (with the caller as the audit log's
actor); what each may do is a scope (withcache.web.api_auth); every error is RFC 9457
problem+json (withcache.web.problems). The OpenAPI document (withcache/web/openapi.json)
describes exactly these routes; a test holds the two together.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import time
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

from klein import Klein
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import withcache
from withcache import catalog as cat
from withcache import events as ev
from withcache import tokens
from withcache.cache import Cache
from withcache.keys import InvalidURL, encode_token
from withcache.logs import redact_text, redact_url
from withcache.origin_client import precheck_origin
from withcache.policy import RefusedOrigin
from withcache.web.api_auth import APIAuth
from withcache.web.problems import PROBLEM_TYPE, Problem

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
MAX_BODY = 64 * 1024
HEADERS = {
    b"Cache-Control": b"no-store",
    b"Content-Security-Policy": b"default-src 'none'; frame-ancestors 'none'",
}


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC time, or None."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _basename(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or "file"


def artifact_json(a: cat.Artifact) -> dict[str, Any]:
    return {
        "key": a.key,
        "url": redact_url(a.url),
        "sha256": a.sha256,
        "size": a.size,
        "content_type": a.content_type,
        "fetched_at": iso(a.fetched_at),
        "hits": a.hits,
        "misses": a.misses,
        "last_hit_at": iso(a.last_hit_at),
        "pinned": a.pinned,
        "cache_path": f"/b/{encode_token(a.key)}/{_basename(a.key)}",
    }


def job_json(j: cat.JobRow) -> dict[str, Any]:
    return {
        "id": j.id,
        "key": j.key,
        "url": redact_url(j.url),
        "source": j.source,
        "state": j.state,
        "bytes_done": j.bytes_done,
        "bytes_total": j.bytes_total,
        "error": None if j.error is None else redact_text(j.error),
        "created_at": iso(j.created_at),
        "started_at": iso(j.started_at),
        "finished_at": iso(j.finished_at),
    }


def miss_json(m: cat.Miss) -> dict[str, Any]:
    return {
        "key": m.key,
        "url": redact_url(m.url),
        "count": m.count,
        "first_seen": iso(m.first_seen),
        "last_seen": iso(m.last_seen),
    }


def event_json(e: ev.Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso(e.at),
        "actor": e.actor,
        "client": e.client,
        "action": e.action,
        "subject": e.subject,
        "outcome": e.outcome,
        "detail": e.detail,
    }


def token_json(t: tokens.Token) -> dict[str, Any]:
    return {
        "name": t.name,
        "scopes": list(t.scopes),
        "created_at": iso(t.created_at),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
    }


def _arg(request, name: str) -> str:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else ""


def _int_arg(request, name: str, default: int, least: int, most: int) -> int:
    raw = _arg(request, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem("invalid-parameter", f"{name} must be an integer") from None
    if not least <= value <= most:
        raise Problem("invalid-parameter", f"{name} must be between {least} and {most}")
    return value


def _page(request) -> tuple[int, int]:
    limit = _int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    return limit, _int_arg(request, "offset", 0, 0, 2**62)


def _listing(
    request,
    items: list,
    limit: int,
    offset: int,
    total: int | None,
    after: str | None = None,
) -> dict:
    """The envelope of a list: its items, the page asked for, the total if known, and the
    path of the next page (None on the last): by cursor (`after`) when given, else by offset."""
    more = (offset + len(items) < total) if total is not None else len(items) == limit
    if b"after" in request.args:
        more = len(items) == limit  # where a cursor stands in the whole is not known
    query = {
        k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
        for k, v in request.args.items()
    }
    query.pop("after", None)
    query.pop("offset", None)
    query["limit"] = str(limit)
    if after is not None:
        query["after"] = after
    else:
        query["offset"] = str(offset + limit)
    page: dict[str, Any] = {"items": items, "limit": limit, "offset": offset}
    if total is not None:
        page["total"] = total
    page["next"] = f"{request.path.decode('latin-1')}?{urlencode(query)}" if more else None
    return page


def _cursor(artifact: cat.Artifact) -> str:
    """An opaque cursor naming an artifact's place in the list (its fetched_at and key)."""
    raw = json.dumps([artifact.fetched_at, artifact.key]).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _after(request) -> tuple[float, str] | None:
    raw = _arg(request, "after")
    if not raw:
        return None
    try:
        fetched_at, key = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(key, str) or isinstance(fetched_at, bool):
            raise ValueError(raw)
        return float(fetched_at), key
    except (ValueError, TypeError, binascii.Error):
        raise Problem("invalid-parameter", "after is not a cursor this API gave") from None


def _body(request) -> dict[str, Any]:
    raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY:
        raise Problem("invalid-json", f"the body is larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(raw or b"null")
    except ValueError:
        raise Problem("invalid-json", "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise Problem("invalid-json", "the body must be a JSON object")
    return doc


def _string(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value.strip():
        raise Problem("invalid-parameter", f"{name} (a non-empty string) is required")
    return value.strip()


class API:
    """The /api/v1/ routes over one Cache; callers are checked by an APIAuth."""

    app = Klein()

    def __init__(self, cache: Cache, auth: APIAuth):
        self.cache = cache
        self.auth = auth

    # -- errors -----------------------------------------------------------------------------

    @app.handle_errors(Problem)
    def problem(self, request, failure):
        return self._problem(request, failure.value)

    @app.handle_errors(InvalidURL)
    def invalid_url(self, request, failure):
        return self._problem(request, Problem("invalid-url", str(failure.value)))

    @app.handle_errors(RefusedOrigin)
    def refused(self, request, failure):
        return self._problem(request, Problem("refused-origin", redact_text(str(failure.value))))

    @app.handle_errors(HTTPException)
    def routing(self, request, failure):
        if isinstance(failure.value, MethodNotAllowed):
            allowed = ", ".join(failure.value.valid_methods or ())
            return self._problem(
                request, Problem("method-not-allowed", "", ((b"Allow", allowed.encode()),))
            )
        return self._problem(request, Problem("not-found", "no such API route"))

    def _problem(self, request, problem: Problem) -> bytes:
        request.setResponseCode(problem.status)
        for name, value in (*HEADERS.items(), *problem.headers):
            request.setHeader(name, value)
        request.setHeader(b"Content-Type", PROBLEM_TYPE)
        return problem.body(request.path.decode("latin-1"))

    def _json(self, request, doc: Any, status: int = 200) -> bytes:
        request.setResponseCode(status)
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(doc).encode("utf-8")

    # -- the document -----------------------------------------------------------------------

    @app.route("/api/v1/openapi.json", methods=["GET"])
    def openapi(self, request):
        return self._json(request, openapi_document())

    # -- artifacts --------------------------------------------------------------------------

    @app.route("/api/v1/artifacts", methods=["GET"])
    async def artifacts(self, request):
        await self.auth.caller(request, tokens.READ)
        limit, offset = _page(request)
        needle, after = _arg(request, "q").strip(), _after(request)
        if after is not None and (needle or offset):
            raise Problem("invalid-parameter", "after goes without q and offset")
        if needle:
            found, total = await self.cache.search_artifacts(needle, limit, offset)
            items = [artifact_json(a) for a in found]
            return self._json(request, _listing(request, items, limit, offset, total))
        # Unsearched: the next page is named by a cursor, so the last of 100k pages costs
        # what the first does (an OFFSET walks every row before it).
        if after is None:
            found = await self.cache.artifacts(limit, offset)
        else:
            found = await self.cache.catalog.run(cat.list_artifacts_after, limit, after)
        total = await self.cache.catalog.run(cat.count_artifacts)
        cursor = _cursor(found[-1]) if found else ""
        items = [artifact_json(a) for a in found]
        return self._json(request, _listing(request, items, limit, offset, total, cursor))

    @app.route("/api/v1/artifact", methods=["GET"])
    async def artifact(self, request):
        await self.auth.caller(request, tokens.READ)
        return self._json(request, artifact_json(await self._artifact(request, by_sha=True)))

    @app.route("/api/v1/artifact", methods=["DELETE"])
    async def delete(self, request):
        caller = await self.auth.caller(request, tokens.ADMIN)
        found = await self._artifact(request)
        await self.cache.delete(found.key, caller.actor)
        return self._json(request, {"deleted": artifact_json(found)})

    @app.route("/api/v1/artifact/pin", methods=["PUT"])
    async def pin(self, request):
        return await self._pin(request, True)

    @app.route("/api/v1/artifact/pin", methods=["DELETE"])
    async def unpin(self, request):
        return await self._pin(request, False)

    async def _pin(self, request, pinned: bool):
        caller = await self.auth.caller(request, tokens.ADMIN)
        found = await self._artifact(request)
        await self.cache.pin(found.key, pinned, caller.actor)
        changed = await self.cache.catalog.run(cat.get_artifact, found.key)
        if changed is None:
            raise Problem("not-found", "the artifact went meanwhile")
        return self._json(request, artifact_json(changed))

    async def _artifact(self, request, by_sha: bool = False) -> cat.Artifact:
        """The artifact named by exactly one of key=, url= (or sha256=, where by_sha)."""
        names = ("key", "url", "sha256") if by_sha else ("key", "url")
        given = {n: _arg(request, n) for n in names if _arg(request, n)}
        if len(given) != 1:
            raise Problem("invalid-parameter", f"give exactly one of {', '.join(names)}")
        ((name, value),) = given.items()
        if name == "sha256":
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise Problem("invalid-parameter", "sha256 must be 64 lower-case hex digits")
            candidates, _ = await self.cache.search_artifacts(value, MAX_LIMIT)
            found = next((a for a in candidates if a.sha256 == value), None)
        else:
            key = self.cache.key_for(value) if name == "url" else value
            found = await self.cache.catalog.run(cat.get_artifact, key)
        if found is None:
            raise Problem("not-found", f"no artifact with that {name}")
        return found

    # -- fills ------------------------------------------------------------------------------

    @app.route("/api/v1/fills", methods=["POST"])
    async def queue_fill(self, request):
        caller = await self.auth.caller(request, tokens.FILL)
        url = _string(_body(request), "url")
        # The UI's Add checks, in the same order: a cacheable URL, then the origin policy.
        self.cache.key_for(url)
        await precheck_origin(self.cache.settings.policy, url, self.cache.reactor)
        job = await self.cache.add(url, caller.actor)
        request.setHeader(b"Location", f"/api/v1/fills/{job.id}".encode())
        return self._json(request, job_json(job), 202)

    @app.route("/api/v1/fills", methods=["GET"])
    async def fills(self, request):
        await self.auth.caller(request, tokens.READ)
        limit = _int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        items = [job_json(j) for j in await self.cache.jobs(limit)]
        return self._json(request, {"items": items, "limit": limit})

    @app.route("/api/v1/fills/<int:job_id>", methods=["GET"])
    async def fill(self, request, job_id):
        await self.auth.caller(request, tokens.READ)
        return self._json(request, job_json(await self._job(job_id)))

    @app.route("/api/v1/fills/<int:job_id>", methods=["DELETE"])
    async def cancel(self, request, job_id):
        caller = await self.auth.caller(request, tokens.FILL)
        job = await self._job(job_id)
        live = self.cache.downloads.active(job.key)
        if live is None or live.id != job_id or not self.cache.cancel(live, caller.actor):
            raise Problem("fill-finished", f"fill {job_id} is {job.state}")
        return self._json(request, job_json(live), 202)

    async def _job(self, job_id: int) -> cat.JobRow:
        for live in self.cache.downloads.active_jobs():
            if live.id == job_id:
                return live
        row = await self.cache.catalog.run(cat.get_job, job_id)
        if row is None:
            raise Problem("not-found", f"no fill {job_id}")
        return row

    # -- misses -----------------------------------------------------------------------------

    @app.route("/api/v1/misses", methods=["GET"])
    async def misses(self, request):
        await self.auth.caller(request, tokens.READ)
        limit, offset = _page(request)
        items = [miss_json(m) for m in await self.cache.misses(limit, offset)]
        return self._json(request, _listing(request, items, limit, offset, None))

    @app.route("/api/v1/miss", methods=["DELETE"])
    async def dismiss(self, request):
        caller = await self.auth.caller(request, tokens.FILL)
        url = _arg(request, "url")
        key = _arg(request, "key") or (self.cache.key_for(url) if url else "")
        if not key:
            raise Problem("invalid-parameter", "give key or url")
        if not await self.cache.dismiss(key, caller.actor):
            raise Problem("not-found", "no miss with that key")
        return self._json(request, {"dismissed": key})

    # -- stats and events -------------------------------------------------------------------

    @app.route("/api/v1/stats", methods=["GET"])
    async def stats(self, request):
        await self.auth.caller(request, tokens.READ)
        stats = await self.cache.stats()
        get = self.cache.metrics.registry.get_sample_value
        doc = dict(vars(stats))
        doc["served_bytes"] = int(get("withcache_served_bytes_total") or 0)
        doc["fetched_bytes"] = int(get("withcache_origin_fetched_bytes_total") or 0)
        return self._json(request, doc)

    @app.route("/api/v1/events", methods=["GET"])
    async def events(self, request):
        await self.auth.caller(request, tokens.ADMIN)
        limit, offset = _page(request)
        action, actor = _arg(request, "action"), _arg(request, "actor")
        found, total = await self.cache.catalog.run(
            lambda conn: ev.query(conn, action=action, actor=actor, limit=limit, offset=offset)
        )
        items = [event_json(e) for e in found]
        return self._json(request, _listing(request, items, limit, offset, total))

    # -- tokens -----------------------------------------------------------------------------

    @app.route("/api/v1/tokens", methods=["GET"])
    async def list_tokens(self, request):
        await self.auth.caller(request, tokens.ADMIN)
        found = await self.cache.catalog.run(tokens.list_tokens)
        return self._json(request, {"items": [token_json(t) for t in found]})

    @app.route("/api/v1/tokens", methods=["POST"])
    async def create_token(self, request):
        caller = await self.auth.caller(request, tokens.ADMIN)
        doc = _body(request)
        scopes = doc.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise Problem("invalid-parameter", "scopes (a list of read, fill, admin) is required")
        made, secret = await create_token(self.cache, _string(doc, "name"), scopes, caller.actor)
        return self._json(request, {**token_json(made), "token": secret}, 201)

    @app.route("/api/v1/tokens/<name>", methods=["DELETE"])
    async def revoke_token(self, request, name):
        caller = await self.auth.caller(request, tokens.ADMIN)
        if not await revoke_token(self.cache, name, caller.actor):
            raise Problem("not-found", "no live token of that name")
        return self._json(request, {"revoked": name})


async def create_token(
    cache: Cache, name: str, scopes: list[str], actor: ev.Actor
) -> tuple[tokens.Token, str]:
    """Create a token (recording the event); a Problem for a bad name, scope or a taken name."""
    try:
        made = await cache.catalog.run(tokens.create_token, name, scopes, cache.now())
    except tokens.TokenError as e:
        kind = "token-conflict" if "exists" in str(e) else "invalid-parameter"
        raise Problem(kind, str(e)) from None
    cache.events.record(actor, "token.created", name, "ok", " ".join(made[0].scopes))
    return made


async def revoke_token(cache: Cache, name: str, actor: ev.Actor) -> bool:
    done = await cache.catalog.run(tokens.revoke_token, name, cache.now())
    if done:
        cache.events.record(actor, "token.revoked", name)
    return done


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (withcache/web/openapi.json), with this version filled in."""
    text = resources.files("withcache.web").joinpath("openapi.json").read_text("utf-8")
    doc = json.loads(text)
    doc["info"]["version"] = withcache.__version__
    return doc
