"""The automation API, /api/v1/: JSON in and out over the same Cache the operator UI uses.

Routes call the same Cache methods as the UI's buttons (with the caller as the audit log's
actor); what each may do is a scope (withcache.web.api_auth); every error is RFC 9457
problem+json (withcache.web.problems). The OpenAPI document (withcache/web/openapi.json)
describes exactly these routes; a test holds the two together.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from klein import Klein
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import withcache
from withcache import catalog as cat
from withcache import events as ev
from withcache import listing, tokens
from withcache._log import make_logger
from withcache.cache import Cache
from withcache.catalog_db import CatalogUnavailable
from withcache.keys import InvalidURL
from withcache.logs import redact_text
from withcache.policy import RefusedOrigin
from withcache.web import api_json as aj
from withcache.web.api_auth import APIAuth
from withcache.web.problems import PROBLEM_TYPE, Problem

log = make_logger()

HEADERS = {
    b"Cache-Control": b"no-store",
    b"Content-Security-Policy": b"default-src 'none'; frame-ancestors 'none'",
}


RETRY = ((b"Retry-After", b"1"),)


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

    @app.handle_errors(CatalogUnavailable)
    def catalog_unavailable(self, request, failure):
        # Expected to pass (a database restarting); the caller retries, nothing was done.
        log.warn("the catalog could not answer: {error}", error=str(failure.value.orig))
        return self._problem(request, Problem("catalog-unavailable", "", RETRY))

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

    def _artifact_json(self, artifact) -> dict[str, Any]:
        return aj.artifact_json(artifact, self.cache.verdict(artifact), self.cache.now())

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
        limit, offset = aj.page(request)
        needle, after = aj.arg(request, "q").strip(), aj.after(request)
        if after is not None and offset:
            raise Problem("invalid-parameter", "after goes without offset")
        # The next page is named by a cursor, so the last of 100k pages costs what the first
        # does (withcache.listing).
        extra: dict[str, Any] = {}
        try:
            if needle:
                found = await self.cache.search_artifacts(needle, limit, offset, after)
                page, total = found.artifacts, found.total
                if found.windowed:
                    extra["window"] = listing.SHORT_WINDOW
            else:
                page = await self.cache.artifacts(limit, offset, after)
                total = await self.cache.count_artifacts()
        except listing.TooDeep as e:
            raise Problem("invalid-parameter", f"{e}: follow `next` links (after=)") from None
        cursor = aj.cursor(page[-1]) if page else ""
        items = [self._artifact_json(a) for a in page]
        return self._json(
            request, {**aj.listing(request, items, limit, offset, total, cursor), **extra}
        )

    @app.route("/api/v1/artifact", methods=["GET"])
    async def artifact(self, request):
        await self.auth.caller(request, tokens.READ)
        return self._json(request, self._artifact_json(await self._artifact(request, by_sha=True)))

    @app.route("/api/v1/artifact", methods=["DELETE"])
    async def delete(self, request):
        caller = await self.auth.caller(request, tokens.ADMIN)
        found = await self._artifact(request)
        await self.cache.delete(found.key, caller.actor)
        return self._json(request, {"deleted": self._artifact_json(found)})

    @app.route("/api/v1/artifact/pin", methods=["PUT"])
    async def pin(self, request):
        return await self._pin(request, True)

    @app.route("/api/v1/artifact/pin", methods=["DELETE"])
    async def unpin(self, request):
        return await self._pin(request, False)

    @app.route("/api/v1/artifact/refresh", methods=["POST"])
    async def refresh(self, request):
        """Revalidate an artifact with its origin now (the UI's Refresh now)."""
        await self.auth.caller(request, tokens.FILL)
        found = await self._artifact(request)
        outcome = await self.cache.refresh(found.key)
        if outcome is None:
            raise Problem("not-found", "the artifact went meanwhile")
        changed = await self.cache.artifact(found.key) or found
        return self._json(request, {"outcome": outcome, "artifact": self._artifact_json(changed)})

    async def _pin(self, request, pinned: bool):
        caller = await self.auth.caller(request, tokens.ADMIN)
        found = await self._artifact(request)
        await self.cache.pin(found.key, pinned, caller.actor)
        changed = await self.cache.artifact(found.key)
        if changed is None:
            raise Problem("not-found", "the artifact went meanwhile")
        return self._json(request, self._artifact_json(changed))

    async def _artifact(self, request, by_sha: bool = False) -> cat.Artifact:
        """The artifact named by exactly one of key=, url= (or sha256=, where by_sha)."""
        names = ("key", "url", "sha256") if by_sha else ("key", "url")
        given = {n: aj.arg(request, n) for n in names if aj.arg(request, n)}
        if len(given) != 1:
            raise Problem("invalid-parameter", f"give exactly one of {', '.join(names)}")
        ((name, value),) = given.items()
        if name == "sha256":
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise Problem("invalid-parameter", "sha256 must be 64 lower-case hex digits")
            found = await self.cache.artifact_by_sha256(value)
        else:
            key = self.cache.key_for(value) if name == "url" else value
            found = await self.cache.artifact(key)
        if found is None:
            raise Problem("not-found", f"no artifact with that {name}")
        return found

    # -- fills ------------------------------------------------------------------------------

    @app.route("/api/v1/fills", methods=["POST"])
    async def queue_fill(self, request):
        caller = await self.auth.caller(request, tokens.FILL)
        url = aj.string(aj.body(request), "url")
        # The UI's Add checks, in the same order: a cacheable URL, then the origin policy.
        self.cache.key_for(url)
        await self.cache.precheck(url)
        job = await self.cache.add(url, caller.actor)
        request.setHeader(b"Location", f"/api/v1/fills/{job.id}".encode())
        return self._json(request, aj.job_json(job), 202)

    @app.route("/api/v1/fills", methods=["GET"])
    async def fills(self, request):
        await self.auth.caller(request, tokens.READ)
        limit = aj.int_arg(request, "limit", aj.DEFAULT_LIMIT, 1, aj.MAX_LIMIT)
        items = [aj.job_json(j) for j in await self.cache.jobs(limit)]
        return self._json(request, {"items": items, "limit": limit})

    @app.route("/api/v1/fills/<int:job_id>", methods=["GET"])
    async def fill(self, request, job_id):
        await self.auth.caller(request, tokens.READ)
        return self._json(request, aj.job_json(await self._job(job_id)))

    @app.route("/api/v1/fills/<int:job_id>", methods=["DELETE"])
    async def cancel(self, request, job_id):
        caller = await self.auth.caller(request, tokens.FILL)
        job = await self._job(job_id)
        live = self.cache.active_job(job.key)
        if live is None or live.id != job_id or not self.cache.cancel(live, caller.actor):
            raise Problem("fill-finished", f"fill {job_id} is {job.state}")
        return self._json(request, aj.job_json(live), 202)

    async def _job(self, job_id: int) -> cat.JobRow:
        row = await self.cache.job(job_id)
        if row is None:
            raise Problem("not-found", f"no fill {job_id}")
        return row

    # -- misses -----------------------------------------------------------------------------

    @app.route("/api/v1/misses", methods=["GET"])
    async def misses(self, request):
        await self.auth.caller(request, tokens.READ)
        limit, offset = aj.page(request)
        items = [aj.miss_json(m) for m in await self.cache.misses(limit, offset)]
        return self._json(request, aj.listing(request, items, limit, offset, None))

    @app.route("/api/v1/miss", methods=["DELETE"])
    async def dismiss(self, request):
        caller = await self.auth.caller(request, tokens.FILL)
        url = aj.arg(request, "url")
        key = aj.arg(request, "key") or (self.cache.key_for(url) if url else "")
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
        doc = dict(vars(stats))
        doc["served_bytes"], doc["fetched_bytes"] = self.cache.byte_totals()
        return self._json(request, doc)

    @app.route("/api/v1/events", methods=["GET"])
    async def events(self, request):
        await self.auth.caller(request, tokens.ADMIN)
        limit, offset = aj.page(request)
        action, actor = aj.arg(request, "action"), aj.arg(request, "actor")
        # The next page is below the last event's id: the millionth event costs what the first
        # does, where an offset walks every event it skips.
        before = aj.int_arg(request, "after", 0, 1, 2**62) or None
        if before is not None and offset:
            raise Problem("invalid-parameter", "after goes without offset")
        try:
            found, total = await self.cache.query_events(action, actor, limit, offset, before)
        except ev.TooDeep as e:
            raise Problem("invalid-parameter", f"{e}: follow `next` links (after=)") from None
        items = [aj.event_json(e) for e in found]
        cursor = str(found[-1].id) if found else ""
        return self._json(request, aj.listing(request, items, limit, offset, total, cursor))

    # -- tokens -----------------------------------------------------------------------------

    @app.route("/api/v1/tokens", methods=["GET"])
    async def list_tokens(self, request):
        await self.auth.caller(request, tokens.ADMIN)
        found = await self.cache.list_tokens()
        return self._json(request, {"items": [aj.token_json(t) for t in found]})

    @app.route("/api/v1/tokens", methods=["POST"])
    async def create_token(self, request):
        caller = await self.auth.caller(request, tokens.ADMIN)
        doc = aj.body(request)
        scopes = doc.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise Problem("invalid-parameter", "scopes (a list of read, fill, admin) is required")
        made, secret = await create_token(self.cache, aj.string(doc, "name"), scopes, caller.actor)
        return self._json(request, {**aj.token_json(made), "token": secret}, 201)

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
        return await cache.create_token(name, scopes, actor)
    except tokens.TokenError as e:
        kind = "token-conflict" if "exists" in str(e) else "invalid-parameter"
        raise Problem(kind, str(e)) from None


async def revoke_token(cache: Cache, name: str, actor: ev.Actor) -> bool:
    return await cache.revoke_token(name, actor)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (withcache/web/openapi.json), with this version filled in."""
    text = resources.files("withcache.web").joinpath("openapi.json").read_text("utf-8")
    doc = json.loads(text)
    doc["info"]["version"] = withcache.__version__
    return doc
