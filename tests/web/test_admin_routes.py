"""Route tests of the operator UI in process (build_site over a real Cache, one per test): auth,
CSRF, escaping, static assets, actions. tests/ui/test_ui_routes.py keeps what needs the real
host (twistd, fills from a real origin, restarts)."""

from __future__ import annotations

import json
import stat

import pytest
import pytest_twisted

from tests.origin import listen_in_process
from tests.support import write_file
from tests.web_support import PASSWORD, WebHost, started
from withcache import catalog as cat
from withcache.policy import OriginPolicy

ensure = pytest_twisted.ensureDeferred


@pytest.fixture
def refusing(tmp_path):
    """A host whose origin policy refuses private addresses (the default)."""
    yield from started(WebHost(tmp_path / "data", policy=OriginPolicy()))


@pytest.fixture
def open_ui(tmp_path):
    """A host without WITHCACHE_ADMIN_PASSWORD."""
    yield from started(WebHost(tmp_path / "data", password=None))


@pytest.fixture
def origin():
    from twisted.internet import reactor

    res, port = listen_in_process(reactor)
    yield res
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def auto(tmp_path):
    """A host that fills misses by itself (no --curate)."""
    yield from started(WebHost(tmp_path / "data", curate=False, fills=True))


@ensure
async def test_dashboard_needs_a_login(web):
    reply = await web.client().get("/")
    assert (reply.status, reply.headers["Location"]) == (303, "/login")


@ensure
async def test_read_path_healthz_and_static_assets_stay_open(web):
    anonymous = web.client()
    assert (await anonymous.get("/healthz")).status == 200
    assert (await anonymous.get("/b/aHR0cDovL3guZXhhbXBsZS9h/a")).status == 404
    for name, kind in (("htmx.min.js", "text/javascript"), ("pico.min.css", "text/css")):
        reply = await anonymous.get(f"/static/{name}")
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith(kind)
        assert "max-age=31536000" in reply.headers["Cache-Control"]


@ensure
async def test_static_serves_only_the_vendored_files(web):
    anonymous = web.client()
    assert (await anonymous.get("/static/")).status == 404
    assert (await anonymous.get("/static/VERSIONS")).status == 404
    assert (await anonymous.get("/static/..%2Fadmin.py")).status == 404


@ensure
async def test_wrong_password_is_refused(web):
    c = web.client()
    await c.get("/login")
    reply = await c.post("/login", {"password": "nope"})
    assert reply.status == 401
    assert "Wrong password" in reply.body
    assert (await c.get("/")).status == 303


@ensure
async def test_login_sets_a_hardened_session_cookie(web):
    c = web.client()
    await c.get("/login")
    reply = await c.post("/login", {"password": PASSWORD})
    assert (reply.status, reply.headers["Location"]) == (303, "/")
    cookie = reply.set_cookies[-1]
    for attribute in ("HttpOnly", "SameSite=strict", "Max-Age=604800", "Path=/"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert (await c.get("/")).status == 200


@ensure
async def test_admin_pages_send_security_headers(web):
    reply = await (await web.client().logged_in()).get("/")
    csp = reply.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert reply.headers["Referrer-Policy"] == "same-origin"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "http://" not in reply.body.split("<main")[0]  # nothing loaded from another host


@ensure
async def test_a_forged_cookie_is_not_a_session(web):
    reply = await web.client().get("/", Cookie="withcache_session=user.9999999999.abc.0000")
    assert reply.status == 303


@ensure
async def test_login_post_needs_a_csrf_token(web):
    c = web.client()
    await c.get("/login")
    assert (await c.post("/login", {"password": PASSWORD}, csrf=False)).status == 403


@ensure
async def test_actions_without_csrf_token_are_forbidden(web):
    client = await web.client().logged_in()
    key = "http://vendor.example/csrf.run"
    await web.miss(key)
    reply = await client.post("/admin/misses/dismiss", {"key": key}, csrf=False)
    assert reply.status == 403
    wrong = await client.post("/admin/misses/dismiss", {"key": "x", "csrf": "0" * 64})
    assert wrong.status == 403
    assert "vendor.example/csrf.run" in (await client.get("/")).body


@ensure
async def test_csrf_header_works_like_the_form_field(web):
    client = await web.client().logged_in()
    await web.miss("http://vendor.example/header.run")
    reply = await client.request(
        "POST",
        "/admin/misses/dismiss",
        {"key": "http://vendor.example/header.run"},
        {"X-CSRF-Token": client.csrf, "HX-Request": "true"},
    )
    assert reply.status == 303
    assert "vendor.example/header.run" not in (await client.get("/")).body


@ensure
async def test_urls_are_escaped(web):
    client = await web.client().logged_in()
    evil = 'http://vendor.example/<script>alert("x")</script>.run'
    await web.miss(evil)
    body = (await client.get("/")).body
    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in body


async def refused_add(client, url: str) -> str:
    """The dashboard an Add of url answers with: a 400 with the reason inline."""
    reply = await client.post("/admin/add", {"url": url})
    assert reply.status == 400, url
    return reply.body


@ensure
async def test_add_rejects_a_bad_scheme_inline(web):
    body = await refused_add(await web.client().logged_in(), "ftp://vendor.example/a.iso")
    assert "only http and https" in body
    assert 'value="ftp://vendor.example/a.iso"' in body


@ensure
async def test_pin_unpin_and_delete_with_confirmation(web, tmp_path):
    client = await web.client().logged_in()
    url = "https://vendor.example/pinned.run"
    await web.seed(url, write_file(tmp_path / "p", 2048, seed=5))
    reply = await client.post("/admin/artifacts/pin", {"key": url, "pinned": "1"})
    assert reply.status == 303
    assert (await web.cache.artifact(url)).pinned
    await client.post("/admin/artifacts/pin", {"key": url, "pinned": "0"})
    assert not (await web.cache.artifact(url)).pinned
    confirm = await client.get(
        "/admin/artifacts/delete?key=https%3A%2F%2Fvendor.example%2Fpinned.run"
    )
    assert confirm.status == 200 and "Delete this artifact?" in confirm.body
    assert (await client.post("/admin/artifacts/delete", {"key": url})).status == 303
    assert await web.cache.artifact(url) is None


@ensure
async def test_artifacts_show_digest_and_cache_url(web, tmp_path):
    client = await web.client().logged_in()
    digest = await web.seed("https://vendor.example/shown.run", write_file(tmp_path / "s", 4096, 6))
    body = (await client.get("/?q=shown.run")).body
    assert f'data-copy="{digest}"' in body
    assert "http://localhost/b/" in body and "/shown.run" in body


@ensure
async def test_search_and_pagination(web_both, tmp_path):
    web = web_both
    client = await web.client().logged_in()
    digest = await web.seed("https://bulk.example/seed.bin", write_file(tmp_path / "b", 512, 7))
    rows = [
        cat.Artifact(url, url, digest, 512, None, 1000.0 + n)
        for n in range(120)
        for url in [f"https://bulk.example/item-{n:03d}.bin"]
    ]
    await web.catalog.run(lambda conn: [cat.put_artifact(conn, row) for row in rows])
    first = (await client.get("/?q=bulk.example/item")).body
    assert "120 matches · page 1 of 3" in first
    assert first.count('class="artifact"') == 50
    third = (await client.get("/?q=bulk.example/item&page=3")).body
    assert third.count('class="artifact"') == 20
    assert "item-000.bin" in third  # oldest last
    one = (await client.get("/?q=item-042")).body
    assert one.count('class="artifact"') == 1


@ensure
async def test_logout_ends_the_session(web_both):
    web = web_both
    client = await web.client().logged_in()
    reply = await client.post("/logout")
    assert (reply.status, reply.headers["Location"]) == (303, "/login")
    assert (await client.get("/")).status == 303


@ensure
async def test_logout_a_replayed_session_cookie_is_refused(web):
    """Issue 13, finding 8: logging out ends the session on the host, not just in the browser
    that dropped its cookie (tests/ui/test_ui_routes.py shows it holds after a restart)."""
    client = await web.client().logged_in()
    cookie = client.cookies["withcache_session"]
    assert (await client.post("/logout")).status == 303
    reply = await web.client().get("/", Cookie=f"withcache_session={cookie}")
    assert (reply.status, reply.headers["Location"]) == (303, "/login")


@ensure
async def test_refused_origin_is_shown_inline(refusing):
    c = await refusing.client().logged_in()
    # The Add form refuses IPv6 literals of non-public addresses as the fill policy would.
    for url in (
        "http://127.0.0.1:9/x.bin",
        "http://[::1]:9/x.bin",
        "http://[fec0::1]/x.bin",
        "http://[::ffff:7f00:1]/",
    ):
        assert "not a public address" in await refused_add(c, url), url
    assert await refusing.cache.jobs() == []


@ensure
async def test_failed_logins_are_throttled_per_client(web):
    c = web.client()
    await c.get("/login")
    for _ in range(5):
        assert (await c.post("/login", {"password": "guess"})).status == 401
    reply = await c.post("/login", {"password": PASSWORD})
    assert reply.status == 429
    assert int(reply.headers["Retry-After"]) > 0
    assert (await c.get("/")).status == 303


@ensure
async def test_without_a_password_the_ui_is_open_with_a_warning(open_ui):
    c = open_ui.client()
    reply = await c.get("/")
    assert reply.status == 200
    assert "WITHCACHE_ADMIN_PASSWORD" in reply.body
    assert any("WITHCACHE_ADMIN_PASSWORD is not set" in w for w in open_ui.warnings)
    assert (await c.post("/admin/jobs/clear", csrf=False)).status == 403
    assert (await c.post("/admin/jobs/clear")).status == 303
    secret = open_ui.data_dir / "session-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


@ensure
async def test_auto_mode_shows_misses_as_queued(auto, origin):
    """Without --curate a miss queues a fill by itself: no buttons, its state instead."""
    c = await auto.client().logged_in()
    await auto.miss(f"{origin.base}/f/50000000/13/auto.bin?rate=200000")
    misses = (await c.get("/admin/fragments/misses")).body
    assert "auto.bin" in misses
    assert "state-running" in misses or "state-queued" in misses
    assert "/admin/misses/dismiss" not in misses
    for job in auto.cache.active_jobs():
        auto.cache.cancel(job)


@ensure
async def test_a_catalog_that_cannot_answer_is_a_503_on_the_pages_and_the_api(
    web, monkeypatch, no_logged_errors
):
    """A PostgreSQL restart under an operator: each page and API call says "try again" (503,
    Retry-After) rather than 500, and nothing is logged as an error."""
    from sqlalchemy.exc import OperationalError
    from twisted.internet import defer

    client = await web.client().logged_in()

    def unavailable(fn, *args, **kwargs):
        return defer.fail(OperationalError("SELECT", {}, Exception("server closed the connection")))

    monkeypatch.setattr(web.catalog, "run", unavailable)
    for path in ("/", "/admin/events", "/admin/fragments/artifacts?q=cuda"):
        reply = await client.get(path)
        assert (reply.status, reply.headers.get("Retry-After")) == (503, "1"), (path, reply)
        assert reply.headers["Content-Type"].startswith("text/plain")
        assert reply.body.startswith("catalog unavailable")
    for path in ("/api/v1/stats", "/api/v1/events", "/api/v1/artifacts"):
        reply = await client.get(path)
        assert (reply.status, reply.headers.get("Retry-After")) == (503, "1"), (path, reply)
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert json.loads(reply.body)["type"] == "urn:withcache:problem:catalog-unavailable"
    assert no_logged_errors == []
    assert any("could not answer" in w for w in web.warnings)


async def _log_events(web, count: int) -> None:
    from withcache import events as ev
    from withcache.catalog_db import transaction
    from withcache.tables import events

    rows = [
        {"at": 1000.0 + n, "actor": "token:ci", "client": None, "action": "fill.queued",
         "subject": f"https://vendor.example.com/{n}.run", "outcome": ev.OK, "detail": None}
        for n in range(count)
    ]  # fmt: skip

    def insert(conn):
        with transaction(conn):
            conn.execute(events.insert(), rows)

    await web.catalog.run(insert)


@ensure
async def test_the_api_pages_the_audit_log_by_cursor_and_bounds_counts_and_offsets(
    web, monkeypatch
):
    from withcache import events as ev

    monkeypatch.setattr(ev, "COUNT_CAP", 20)
    monkeypatch.setattr(ev, "MAX_OFFSET", 30)
    await _log_events(web, 45)
    client = await web.client().logged_in()
    subjects, path, pages = [], "/api/v1/events?actor=token:ci&limit=10", 0
    while path:
        doc = json.loads((await client.get(path)).body)
        assert "total" not in doc  # more than COUNT_CAP match
        subjects += [item["subject"] for item in doc["items"]]
        path, pages = doc["next"], pages + 1
        assert path is None or ("after=" in path and "offset=" not in path)
    assert subjects == [f"https://vendor.example.com/{n}.run" for n in range(44, -1, -1)]
    assert pages == 5
    few = json.loads((await client.get("/api/v1/events?action=fill.queued&actor=nobody")).body)
    assert (few["items"], few["total"], few["next"]) == ([], 0, None)
    deep = await client.get("/api/v1/events?offset=31")
    assert deep.status == 400 and "after=" in json.loads(deep.body)["detail"]
    both = await client.get("/api/v1/events?offset=10&after=5")
    assert both.status == 400


@ensure
async def test_the_events_page_says_more_than_past_the_count_cap(web, monkeypatch):
    from withcache import events as ev

    monkeypatch.setattr(ev, "COUNT_CAP", 60)
    await _log_events(web, 120)
    client = await web.client().logged_in()
    first = await client.get("/admin/events?actor=token:ci")
    assert "Page 1 of more than 2 (more than 60 events)" in first.body
    assert "page=2" in first.body
    exact = await client.get("/admin/events?actor=token:ci&action=fill.&page=3")
    assert "more than" in exact.body
    few = await client.get("/admin/events?actor=operator")
    assert "Page 1 of 1 (" in few.body and "Older" not in few.body
