"""The operator UI: the dashboard, its htmx fragments, and the actions behind its buttons.

Every action is a plain form POST answered with a 303 back to the dashboard, so the UI works
without JavaScript; htmx posts the same forms and swaps in the section the redirect renders.
Pages are Jinja2 templates with autoescaping; the sections polled by htmx are fragments of their
own (templates/_*.html) so a poll re-renders one table, not the page.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from klein import Klein
from twisted.web import http, static

import withcache
from withcache import freshness, listing
from withcache._log import make_logger
from withcache.cache import Cache
from withcache.catalog_db import CatalogUnavailable
from withcache.events import FAILED, OPERATOR, Actor
from withcache.jobs import ACTIVE, JobState
from withcache.keys import InvalidURL, encode_token
from withcache.logs import redact_text, redact_url
from withcache.policy import RefusedOrigin
from withcache.sizes import format_size
from withcache.web.auth import CSRF_FIELD, USER, Auth, CSRFRejected, NotLoggedIn, Throttled
from withcache.web.automation_ui import AutomationPages
from withcache.web.paging import PAGE_SIZE, ArtifactPage, page_cursors

log = make_logger()

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC = os.path.join(HERE, "static")
# Only these files are served from static/: a single-file static.File never lists a directory.
ASSETS = {
    "pico.min.css": "text/css",
    "htmx.min.js": "text/javascript",
    "admin.css": "text/css",
    "admin.js": "text/javascript",
}
SECURITY_HEADERS = {
    b"Content-Security-Policy": b"default-src 'none'; script-src 'self'; style-src 'self';"
    b" img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none';"
    b" frame-ancestors 'none'",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"same-origin",
    b"Cache-Control": b"no-store",
}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "never"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass(frozen=True)
class JobView:
    """What the downloads table shows of a job: progress, rate and ETA from its own clock."""

    id: int
    url: str
    state: str
    error: str | None
    done: int
    total: int | None
    percent: int | None
    rate: float | None
    eta: float | None
    streaming: int = 0  # clients streaming the fill now (withcache.fillstream)

    @classmethod
    def of(cls, job: Any, now: float) -> JobView:
        total = job.bytes_total
        if job.state == "completed" and total is None:
            total = job.bytes_done
        percent = min(100, job.bytes_done * 100 // total) if total else None
        rate = eta = None
        if job.state == JobState.RUNNING and job.started_at is not None and now > job.started_at:
            rate = job.bytes_done / (now - job.started_at)
            if total and rate > 0:
                eta = (total - job.bytes_done) / rate
        stream = getattr(job, "stream", None)  # live jobs only; a catalog row has none
        streaming = stream.readers if stream is not None else 0
        return cls(
            job.id, job.url, job.state, job.error, job.bytes_done, total, percent, rate, eta,
            streaming,
        )  # fmt: skip


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.join(HERE, "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    # URLs and error texts are shown with signature and credential values replaced by '…'.
    env.filters.update(human=format_size, when=_when, duration=_duration)
    env.filters.update(redact=redact_url, redact_text=redact_text)
    return env


class AdminUI:
    """Operator pages and actions over one Cache, behind one Auth."""

    app = Klein()

    def __init__(self, cache: Cache, auth: Auth, read_base: Any = None):
        self.cache = cache
        self.auth = auth
        self.templates = _templates()
        # The base of the cache URLs shown: this request's own scheme and Host, unless the read
        # path has a port of its own (--admin-listen).
        self.read_base = read_base or _base_url
        self.automation = AutomationPages(cache)

    # -- error mapping -----------------------------------------------------------------------

    @app.handle_errors(NotLoggedIn)
    def not_logged_in(self, request, failure):
        return self._redirect(request, b"/login")

    @app.handle_errors(CSRFRejected)
    def csrf_rejected(self, request, failure):
        self._secure(request)
        request.setResponseCode(http.FORBIDDEN)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"forbidden: missing or invalid CSRF token; reload the page and try again\n"

    @app.handle_errors(CatalogUnavailable)
    def catalog_unavailable(self, request, failure):
        # Expected to pass (a database restarting): say so, not "500 Internal Server Error".
        log.warn("the catalog could not answer: {error}", error=str(failure.value.orig))
        self._secure(request)
        request.setResponseCode(http.SERVICE_UNAVAILABLE)
        request.setHeader(b"Retry-After", b"1")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"catalog unavailable: the database could not answer; reload in a moment\n"

    @app.handle_errors(InvalidURL, RefusedOrigin)
    async def bad_add(self, request, failure):
        request.setResponseCode(http.BAD_REQUEST)
        session = await self.auth.require(request)
        return await self._dashboard(request, session, add_error=failure.value)

    # -- pages ------------------------------------------------------------------------------

    @app.route("/static/<name>", methods=["GET"])
    def asset(self, request, name):
        if name not in ASSETS:
            request.setResponseCode(http.NOT_FOUND)
            return b"not found\n"
        # Versioned URLs (?v=) make a year's caching safe across upgrades.
        request.setHeader(b"Cache-Control", b"public, max-age=31536000, immutable")
        asset = static.File(os.path.join(STATIC, name), defaultType=ASSETS[name])
        asset.type, asset.encoding = ASSETS[name], None
        request.postpath = []
        return asset

    @app.route("/", methods=["GET"])
    async def index(self, request):
        return await self._dashboard(request, await self.auth.require(request))

    @app.route("/admin/fragments/<name>", methods=["GET"])
    async def fragment(self, request, name):
        session = await self.auth.require(request)
        if name not in ("stats", "downloads", "misses", "artifacts"):
            request.setResponseCode(http.NOT_FOUND)
            return b"no such fragment\n"
        context = await self._context(request, session)
        return self._render(request, f"_{name}.html", context)

    @app.route("/admin/artifacts/delete", methods=["GET"])
    async def confirm_delete(self, request):
        session = await self.auth.require(request)
        context = await self._base_context(request, session)
        context["key"] = _field(request, "key")
        return self._render(request, "confirm_delete.html", context)

    @app.route("/admin/events", methods=["GET"])
    async def events(self, request):
        context = await self._base_context(request, await self.auth.require(request))
        context.update(await self.automation.events_context(request))
        return self._render(request, "events.html", context)

    @app.route("/admin/tokens", methods=["GET"])
    async def tokens(self, request):
        context = await self._base_context(request, await self.auth.require(request))
        context.update(await self.automation.tokens_context(request, self._actor(request)))
        return self._render(request, "tokens.html", context)

    # -- actions ----------------------------------------------------------------------------

    @app.route("/admin/tokens/create", methods=["POST"])
    @app.route("/admin/tokens/revoke", methods=["POST"])
    async def token_action(self, request):
        await self._action(request)
        session = await self.auth.require(request)
        context = await self._base_context(request, session)
        context.update(await self.automation.tokens_context(request, self._actor(request)))
        return self._render(request, "tokens.html", context)

    @app.route("/admin/add", methods=["POST"])
    async def add(self, request):
        await self._action(request)
        url = _field(request, "url").strip()
        await self._precheck(url)
        await self.cache.add(url, self._actor(request))
        return self._redirect(request, b"/")

    @app.route("/admin/misses/download", methods=["POST"])
    async def download_miss(self, request):
        await self._action(request)
        await self.cache.add_miss(_field(request, "key"), self._actor(request))
        return self._redirect(request, b"/")

    @app.route("/admin/misses/dismiss", methods=["POST"])
    async def dismiss(self, request):
        await self._action(request)
        await self.cache.dismiss(_field(request, "key"), self._actor(request))
        return self._redirect(request, b"/")

    @app.route("/admin/jobs/cancel", methods=["POST"])
    async def cancel(self, request):
        await self._action(request)
        wanted = _field(request, "id")
        for job in self.cache.active_jobs():
            if str(job.id) == wanted:
                self.cache.cancel(job, self._actor(request))
        return self._redirect(request, b"/")

    @app.route("/admin/jobs/clear", methods=["POST"])
    async def clear(self, request):
        await self._action(request)
        await self.cache.clear_finished()
        return self._redirect(request, b"/")

    @app.route("/admin/artifacts/pin", methods=["POST"])
    async def pin(self, request):
        await self._action(request)
        pinned = _field(request, "pinned") == "1"
        await self.cache.pin(_field(request, "key"), pinned, self._actor(request))
        return self._redirect(request, self._back(request))

    @app.route("/admin/artifacts/refresh", methods=["POST"])
    async def refresh(self, request):
        """Revalidate an artifact with its origin now; the table shows the outcome."""
        await self._action(request)
        await self.cache.refresh(_field(request, "key"))
        return self._redirect(request, self._back(request))

    @app.route("/admin/artifacts/delete", methods=["POST"])
    async def delete(self, request):
        await self._action(request)
        await self.cache.delete(_field(request, "key"), self._actor(request))
        return self._redirect(request, self._back(request))

    # -- login ------------------------------------------------------------------------------

    @app.route("/login", methods=["GET"])
    async def login_page(self, request):
        session = await self.auth.ensure(request)
        if not self.auth.enabled or session.kind == USER:
            return self._redirect(request, b"/")
        return self._render(request, "login.html", self._login_context(session))

    @app.route("/login", methods=["POST"])
    async def login(self, request):
        session = self.auth.check_csrf(request, await self.auth.current(request))
        client = getattr(request.getClientAddress(), "host", "-")
        try:
            self.auth.throttle.check(client)
        except Throttled as e:
            request.setResponseCode(429)
            request.setHeader(b"Retry-After", str(e.args[0]).encode())
            error = f"Too many failed logins; try again in {e.args[0]} s."
            return self._render(request, "login.html", self._login_context(session, error))
        if not self.auth.password_ok(_field(request, "password")):
            self.auth.throttle.failed(client)
            self.cache.events.record(self._actor(request), "login.failed", None, FAILED)
            request.setResponseCode(http.UNAUTHORIZED)
            return self._render(
                request, "login.html", self._login_context(session, "Wrong password.")
            )
        self.auth.throttle.succeeded(client)
        await self.auth.log_in(request)
        self.cache.events.record(self._actor(request), "login.succeeded", None)
        return self._redirect(request, b"/")

    @app.route("/logout", methods=["POST"])
    async def logout(self, request):
        # The signed session, live or not: a second tab logging out a session already ended
        # lands on the login page, not on a CSRF error.
        session = self.auth.check_csrf(request, self.auth.session(request))
        # Only the end of a live session is an event (not a second tab's logout of it).
        live = session.kind == USER and await self.auth.current(request) is not None
        await self.auth.log_out(request, session)
        if live:
            self.cache.events.record(self._actor(request), "logout", None)
        return self._redirect(request, b"/login" if self.auth.enabled else b"/")

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _actor(request) -> Actor:
        """The operator's session as the audit log's actor, with its client address."""
        return Actor(OPERATOR, getattr(request.getClientAddress(), "host", None))

    async def _action(self, request) -> None:
        """Gate for a state-changing request: logged in, and the CSRF token matches."""
        self.auth.check_csrf(request, await self.auth.require(request))

    async def _precheck(self, url: str) -> None:
        """Refuse at once what a fill would refuse: a bad URL, or an origin whose address the
        fill's policy refuses (an address literal, IPv6 ones included, or a name that resolves
        now; the fill checks the address it connects to again)."""
        self.cache.key_for(url)
        await self.cache.precheck(url)

    def _back(self, request) -> bytes:
        query = {
            k: _field(request, k) for k in ("q", "page", "after", "before") if _field(request, k)
        }
        return b"/?" + urlencode(query).encode() if query else b"/"

    def _redirect(self, request, where: bytes):
        self._secure(request)
        if request.getHeader(b"HX-Request") and where == b"/login":
            request.setHeader(b"HX-Redirect", where)
        request.setResponseCode(http.SEE_OTHER)
        request.setHeader(b"Location", where)
        return b""

    def _secure(self, request) -> None:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)

    def _render(self, request, template: str, context: dict[str, Any]) -> bytes:
        self._secure(request)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return self.templates.get_template(template).render(context).encode("utf-8")

    def _login_context(self, session, error: str | None = None) -> dict[str, Any]:
        return {
            "csrf": self.auth.csrf_token(session),
            "csrf_field": CSRF_FIELD,
            "error": error,
            "version": withcache.__version__,
            "auth_enabled": self.auth.enabled,
            "logged_in": False,
        }

    async def _base_context(self, request, session) -> dict[str, Any]:
        return {
            **self._login_context(session),
            "logged_in": self.auth.enabled,
            "curate": self.cache.settings.curate,
        }

    async def _dashboard(self, request, session, add_error: Any = None) -> bytes:
        context = await self._context(request, session)
        context.update(add_error=add_error and str(add_error), add_value=_field(request, "url"))
        context["traffic"] = await self.automation.traffic_chart()
        return self._render(request, "dashboard.html", context)

    async def _context(self, request, session) -> dict[str, Any]:
        now = self.cache.now()
        stats = await self.cache.stats()
        query = _field(request, "q").strip()
        try:
            page = max(1, int(_field(request, "page") or 1))
        except ValueError:
            page = 1
        shown = await self._artifacts(request, query, page, stats.artifacts)
        misses = await self.cache.misses(100)
        jobs = [JobView.of(j, now) for j in await self.cache.jobs(50)]
        served, _fetched = self.cache.byte_totals()
        lookups = stats.hits + stats.misses
        base = self.read_base(request)
        return {
            **await self._base_context(request, session),
            "stats": stats,
            "served": served,
            "hit_ratio": (stats.hits / lookups) if lookups else None,
            "jobs": jobs,
            "has_finished": any(j.state not in ACTIVE for j in jobs),
            "misses": [(m, self._miss_state(m.key)) for m in misses],
            # The cache URL names the key, not the stored URL: the same artifact, without the
            # signature the stored URL may carry.
            "artifacts": [
                (
                    a,
                    f"{base}/b/{encode_token(a.key)}/{_basename(a.key)}",
                    freshness.describe(self.cache.verdict(a), now),
                    freshness.validators(freshness.decode(a.origin_headers)),
                )
                for a in shown.artifacts
            ],
            "query": query,
            **shown.links(query),
            "add_error": None,
            "add_value": "",
        }

    def _miss_state(self, key: str) -> str | None:
        job = self.cache.active_job(key)
        return job.state if job is not None else None

    async def _artifacts(self, request, query: str, page: int, count: int) -> ArtifactPage:
        """One page of artifacts (newest first), searched or not: by the cursor of the page's
        neighbour when the request names one (the Older/Newer links do), else by page number
        (withcache.listing: a search by page number reaches its first COUNT_CAP matches, the
        list its first and last MAX_OFFSET rows; a page too deep for that shows the first)."""
        cursors = page_cursors(_field(request, "after"), _field(request, "before"))
        offset = 0 if cursors else (page - 1) * PAGE_SIZE
        if not query:
            try:
                found = await self.cache.artifacts(PAGE_SIZE, offset, **cursors)
            except listing.TooDeep:
                page, found = 1, await self.cache.artifacts(PAGE_SIZE)
            return ArtifactPage(found, page, count, cursors)
        try:
            searched = await self.cache.search_artifacts(query, PAGE_SIZE, offset, **cursors)
        except listing.TooDeep:
            page, searched = 1, await self.cache.search_artifacts(query, PAGE_SIZE)
        return ArtifactPage(searched.artifacts, page, searched.total, cursors, searched.windowed)


def _field(request, name: str) -> str:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else ""


def _basename(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or "file"


def _base_url(request) -> str:
    scheme = "https" if request.isSecure() else "http"
    host = (request.getHeader(b"Host") or b"").decode("latin-1") or "localhost"
    return f"{scheme}://{host}"
