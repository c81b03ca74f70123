"""The /api/v1/ automation API against the real host: scopes, pagination, problem+json, the
OpenAPI document, tokens' life cycle, and that tokens never reach the logs or the catalog."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.api_support import admin, call, make_token
from tests.support import Host, OriginProcess, assert_clean_log, db, eventually, write_file
from tests.ui.ui_support import Client, start_ui_host

PROBLEM = "urn:withcache:problem:"


@pytest.fixture(scope="module")
def api_host(tmp_path_factory):
    """A curating host with an operator password; tokens of each scope; seven artifacts."""
    root = tmp_path_factory.mktemp("api")
    data = root / "data"
    data.mkdir()
    for n in range(7):
        path = write_file(root / f"f{n}", 1000 + n, seed=n)
        admin("import", f"https://vendor.example.com/pkg/tool-{n}.tar.gz", str(path), data_dir=data)
    tokens = {scope: make_token(data, f"t-{scope}", scope) for scope in ("read", "fill", "admin")}
    running = start_ui_host(data, "--curate", "--allow-private")
    running.tokens = tokens
    yield running
    running.stop()
    assert_clean_log(running)


def api(host: Host, method: str, path: str, scope: str | None = "admin", **kw):
    return call(host.url, method, path, host.tokens[scope] if scope else None, **kw)


# (method, path, body, the scope it needs)
ROUTES = [
    ("GET", "/api/v1/artifacts", None, "read"),
    ("GET", "/api/v1/artifact?url=https://vendor.example.com/pkg/tool-0.tar.gz", None, "read"),
    ("GET", "/api/v1/fills", None, "read"),
    ("GET", "/api/v1/fills/999999", None, "read"),
    ("GET", "/api/v1/misses", None, "read"),
    ("GET", "/api/v1/stats", None, "read"),
    ("POST", "/api/v1/fills", {"url": "http://127.0.0.1:9/scope-check"}, "fill"),
    ("DELETE", "/api/v1/fills/999999", None, "fill"),
    ("DELETE", "/api/v1/miss?key=https://nothing.example.com/x", None, "fill"),
    ("PUT", "/api/v1/artifact/pin?key=https://vendor.example.com/pkg/tool-1.tar.gz", None, "admin"),
    (
        "DELETE",
        "/api/v1/artifact/pin?key=https://vendor.example.com/pkg/tool-1.tar.gz",
        None,
        "admin",
    ),
    ("DELETE", "/api/v1/artifact?key=https://nothing.example.com/x", None, "admin"),
    ("POST", "/api/v1/artifact/refresh?key=https://nothing.example.com/x", None, "fill"),
    ("GET", "/api/v1/events", None, "admin"),
    ("GET", "/api/v1/tokens", None, "admin"),
    ("POST", "/api/v1/tokens", {"name": "scope-check", "scopes": []}, "admin"),
    ("DELETE", "/api/v1/tokens/nobody", None, "admin"),
]
LEVEL = {"read": 0, "fill": 1, "admin": 2}


@pytest.mark.parametrize(("method", "path", "body", "needs"), ROUTES)
def test_each_endpoint_answers_401_without_a_good_token_403_without_the_scope_else_serves(
    api_host, method, path, body, needs
):
    for bad in (None, "wct_0123456789abcdef_" + "A" * 43, "not-a-token"):
        got = call(api_host.url, method, path, bad, body=body)
        assert got.status == 401, (bad, got)
        assert got.header("WWW-Authenticate").startswith("Bearer realm=")
        assert got.doc["type"] == PROBLEM + "unauthorized"
    for scope in ("read", "fill", "admin"):
        got = api(api_host, method, path, scope, body=body)
        if LEVEL[scope] < LEVEL[needs]:
            assert got.status == 403, (scope, got)
            assert got.doc["type"] == PROBLEM + "insufficient-scope"
        else:
            # Allowed: whatever the route answers, it is not an authorization refusal.
            assert got.status in (200, 201, 202, 400, 404, 409, 422), (scope, got)
            assert got.status not in (401, 403)


def test_artifacts_page_through_all_with_next_links_and_search_narrows(api_host):
    seen, path = [], "/api/v1/artifacts?limit=3"
    while path:
        page = api(api_host, "GET", path, "read")
        assert page.status == 200 and page.doc["total"] == 7
        assert len(page.doc["items"]) <= 3
        seen += [a["key"] for a in page.doc["items"]]
        path = page.doc["next"]
    assert len(seen) == 7 == len(set(seen))
    found = api(api_host, "GET", "/api/v1/artifacts?q=TOOL-3", "read").doc
    assert [a["key"] for a in found["items"]] == ["https://vendor.example.com/pkg/tool-3.tar.gz"]
    assert found["total"] == 1 and found["next"] is None
    one = found["items"][0]
    assert one["size"] == 1003 and len(one["sha256"]) == 64
    by_sha = api(api_host, "GET", f"/api/v1/artifact?sha256={one['sha256']}", "read")
    assert by_sha.status == 200 and by_sha.doc["key"] == one["key"]
    status, body = api_host.get(one["cache_path"])
    assert status == 200 and len(body) == 1003
    # Imported by hand: no origin headers, so never stale unless a --fresh rule says so.
    assert one["origin_headers"] is None
    assert one["freshness"] == {
        "fresh": True,
        "fresh_until": None,
        "by_rule": False,
        "text": "no expiry (no origin headers)",
    }


def test_cursor_pages_and_offset_pages_list_the_same_artifacts(api_host):
    by_offset = api(api_host, "GET", "/api/v1/artifacts?limit=100", "read").doc["items"]
    first = api(api_host, "GET", "/api/v1/artifacts?limit=2", "read").doc
    assert "after=" in first["next"] and "offset=" not in first["next"]
    second = api(api_host, "GET", first["next"], "read").doc
    assert [a["key"] for a in first["items"] + second["items"]] == [a["key"] for a in by_offset[:4]]
    bad = api(api_host, "GET", "/api/v1/artifacts?after=bm90IGEgY3Vyc29y", "read")
    assert bad.status == 400 and bad.doc["type"] == PROBLEM + "invalid-parameter"
    mixed = api(api_host, "GET", first["next"] + "&offset=2", "read")
    assert mixed.status == 400 and mixed.doc["type"] == PROBLEM + "invalid-parameter"


def test_a_search_pages_by_cursor_like_the_list(api_host):
    """A search's next link is a cursor too (withcache.listing): its pages cover the matches
    once each, in the list's order; a short needle says it searched the newest artifacts."""
    everything = api(api_host, "GET", "/api/v1/artifacts?q=tool-&limit=100", "read").doc
    seen, path = [], "/api/v1/artifacts?q=tool-&limit=2"
    while path:
        page = api(api_host, "GET", path, "read").doc
        assert page["total"] == everything["total"] and "window" not in page
        seen += [a["key"] for a in page["items"]]
        path = page["next"]
    assert seen == [a["key"] for a in everything["items"]] and len(seen) > 2
    short = api(api_host, "GET", "/api/v1/artifacts?q=ol", "read").doc
    assert short["window"] == 10_000 and short["total"] == everything["total"]


@pytest.mark.parametrize(
    ("method", "path", "raw", "status", "kind"),
    [
        ("GET", "/api/v1/no-such-thing", None, 404, "not-found"),
        ("PATCH", "/api/v1/stats", None, 405, "method-not-allowed"),
        ("GET", "/api/v1/artifacts?limit=0", None, 400, "invalid-parameter"),
        ("GET", "/api/v1/artifacts?offset=x", None, 400, "invalid-parameter"),
        ("GET", "/api/v1/artifact", None, 400, "invalid-parameter"),
        ("GET", "/api/v1/artifact?key=a&url=b", None, 400, "invalid-parameter"),
        ("GET", "/api/v1/artifact?sha256=XYZ", None, 400, "invalid-parameter"),
        ("GET", "/api/v1/artifact?key=https://nothing.example.com/", None, 404, "not-found"),
        ("POST", "/api/v1/fills", b"{not json", 400, "invalid-json"),
        ("POST", "/api/v1/fills", b"[1]", 400, "invalid-json"),
        ("POST", "/api/v1/fills", b"{}", 400, "invalid-parameter"),
        ("POST", "/api/v1/fills", b'{"url": "ftp://x.example.com/f"}', 400, "invalid-url"),
        ("POST", "/api/v1/fills", b'{"url": "https://u:p@x.example.com/f"}', 400, "invalid-url"),
        ("POST", "/api/v1/tokens", b'{"name": "x", "scopes": ["root"]}', 400, "invalid-parameter"),
        (
            "POST",
            "/api/v1/tokens",
            b'{"name": "t-read", "scopes": ["read"]}',
            409,
            "token-conflict",
        ),
    ],
)
def test_errors_are_problem_json_with_a_stable_type(api_host, method, path, raw, status, kind):
    got = api(api_host, method, path, raw=raw)
    assert got.status == status, got
    assert got.header("Content-Type") == "application/problem+json"
    assert got.doc["type"] == PROBLEM + kind
    assert got.doc["status"] == status
    assert isinstance(got.doc["title"], str) and got.doc["instance"] == path.split("?")[0]
    if status == 405:
        assert "GET" in got.header("Allow")


def test_the_origin_policy_refuses_what_the_ui_add_refuses(tmp_path):
    """Without --allow-private, a loopback origin is refused at once, as the UI's Add does."""
    data = tmp_path / "data"
    data.mkdir()
    secret = make_token(data, "ci", "fill")
    host = start_ui_host(data, "--curate")
    try:
        got = call(host.url, "POST", "/api/v1/fills", secret, body={"url": "http://127.0.0.1/x"})
        assert got.status == 422 and got.doc["type"] == PROBLEM + "refused-origin"
        assert "127.0.0.1" in got.doc["detail"]
    finally:
        host.stop()


def test_openapi_document_is_valid_3_1_and_lists_exactly_the_routes_served(api_host):
    from openapi_spec_validator import validate

    from withcache.web.api import API

    got = call(api_host.url, "GET", "/api/v1/openapi.json")
    assert got.status == 200  # open: it describes, it reveals nothing
    doc = got.doc
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch")
    }
    served = set()
    for rule in API.app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        served |= {(m, path) for m in rule.methods if m not in ("HEAD", "OPTIONS")}
    assert served == documented
    # Every documented problem type is one the API can answer, and the other way round.
    from withcache.web.problems import KINDS, PROBLEM_BASE

    types = doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]
    assert set(types) == {PROBLEM_BASE + k for k in KINDS}


def test_a_token_is_created_used_and_revoked_then_refused(api_host):
    made = api(api_host, "POST", "/api/v1/tokens", body={"name": "ci-job", "scopes": ["fill"]})
    assert made.status == 201 and made.doc["scopes"] == ["fill"]
    secret = made.doc["token"]
    assert call(api_host.url, "GET", "/api/v1/stats", secret).status == 200
    listed = {t["name"]: t for t in api(api_host, "GET", "/api/v1/tokens").doc["items"]}
    assert "token" not in listed["ci-job"] and listed["ci-job"]["last_used_at"] is not None
    assert api(api_host, "DELETE", "/api/v1/tokens/ci-job").status == 200
    refused = call(api_host.url, "GET", "/api/v1/stats", secret)
    assert refused.status == 401 and 'error="invalid_token"' in refused.header("WWW-Authenticate")
    # And with withcache-admin, on the running host's data dir.
    cli = make_token(api_host.data_dir, "from-cli", "read")
    assert call(api_host.url, "GET", "/api/v1/stats", cli).status == 200
    admin("token", "revoke", "from-cli", data_dir=api_host.data_dir)
    assert call(api_host.url, "GET", "/api/v1/stats", cli).status == 401


def test_tokens_never_reach_the_log_or_the_catalog(api_host):
    secret = make_token(api_host.data_dir, "secret-keeper", "admin")
    for path in ("/api/v1/stats", "/api/v1/events", "/api/v1/no-route"):
        call(api_host.url, "GET", path, secret)
    call(api_host.url, "GET", "/api/v1/stats", secret + "x")  # a wrong one too
    tail = secret.rsplit("_", 1)[1]
    eventually(api_host.log, lambda text: "/api/v1/no-route" in text, what="the access log")
    assert tail not in api_host.log()
    stored = b"".join(p.read_bytes() for p in Path(api_host.data_dir).glob("cache.db*"))
    assert tail.encode() not in stored
    (row,) = db(api_host.data_dir, "SELECT hash FROM api_tokens WHERE name = 'secret-keeper'")
    assert re.fullmatch(r"[0-9a-f]{64}", row[0])


def test_an_operator_session_may_use_the_api_with_its_csrf_token(api_host):
    browser = Client(api_host.url)
    assert call(api_host.url, "GET", "/api/v1/stats").status == 401
    assert browser.login().status == 303
    browser.get("/")
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.jar)
    got = call(api_host.url, "GET", "/api/v1/stats", headers={"Cookie": cookie})
    assert got.status == 200 and got.doc["artifacts"] >= 1
    path = "/api/v1/artifact/pin?key=https://vendor.example.com/pkg/tool-5.tar.gz"
    without = call(api_host.url, "PUT", path, headers={"Cookie": cookie})
    assert without.status == 403 and without.doc["type"] == PROBLEM + "csrf-rejected"
    headers = {"Cookie": cookie, "X-CSRF-Token": browser.csrf}
    pinned = call(api_host.url, "PUT", path, headers=headers)
    assert pinned.status == 200 and pinned.doc["pinned"] is True
    # A session from a Host that is not this host's name is not honoured (DNS rebinding).
    rebound = call(api_host.url, "GET", "/api/v1/stats", headers={**headers, "Host": "evil.test"})
    assert rebound.status == 401
    events = api(api_host, "GET", "/api/v1/events?action=artifact.pinned").doc["items"]
    assert events[0]["actor"] == "operator" and events[0]["client"] == "127.0.0.1"
    assert events[0]["subject"].endswith("tool-5.tar.gz")


def test_the_event_log_cannot_be_changed_through_the_catalog(api_host):
    import sqlite3

    conn = sqlite3.connect(api_host.data_dir / "cache.db")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE events SET actor = 'someone else'")
    finally:
        conn.close()


def test_withcache_admin_events_lists_and_filters_as_json(api_host):
    admin("pin", "https://vendor.example.com/pkg/tool-6.tar.gz", data_dir=api_host.data_dir)
    out = admin("events", "--json", "--action", "artifact.pinned", data_dir=api_host.data_dir)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows and all(r["action"] == "artifact.pinned" for r in rows)
    assert rows[0]["actor"] == "withcache-admin" and rows[0]["client"].startswith("local:")
    text = admin("events", "--actor", "withcache-admin", data_dir=api_host.data_dir).stdout
    assert "token.created" in text and "artifact.imported" in text


def test_a_fill_keeps_its_origins_validators_and_refresh_revalidates_it(api_host):
    origin = OriginProcess()
    try:
        url = f"{origin.base}/f/2000/30/api-fresh.run?cc=max-age%3D1"
        job = api(api_host, "POST", "/api/v1/fills", "fill", body={"url": url}).doc
        eventually(
            lambda: api(api_host, "GET", f"/api/v1/fills/{job['id']}", "read").doc["state"],
            lambda state: state == "completed",
            30,
        )
        got = api(api_host, "POST", "/api/v1/artifact/refresh?url=" + quote(url), "fill")
        assert got.status == 200 and got.doc["outcome"] == "not_modified"
        artifact = got.doc["artifact"]
        assert artifact["origin_headers"]["etag"] == '"2000-30"'
        assert artifact["origin_headers"]["cache-control"] == "max-age=1"
        assert artifact["freshness"]["fresh_until"] is not None
        gone = api(api_host, "POST", "/api/v1/artifact/refresh?url=" + quote(url + "x"), "fill")
        assert gone.status == 404
    finally:
        origin.stop()
