"""Route tests of the operator UI against the real host (twistd): auth, CSRF, escaping, actions."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import urllib.parse

import pytest

from tests.support import (
    OriginProcess,
    artifacts_by_key,
    assert_clean_log,
    db,
    eventually,
    tool,
    write_file,
)
from tests.ui.ui_support import PASSWORD, Client, start_ui_host

pytestmark = pytest.mark.e2e


def wait_until(check):
    return eventually(check, timeout=30.0, what=getattr(check, "__name__", ""))


def blob_miss(host, url: str) -> None:
    status, _ = host.get("/blob?" + urllib.parse.urlencode({"url": url}))
    assert status == 404


def test_dashboard_needs_a_login(ui_host):
    reply = Client(ui_host.url).get("/")
    assert (reply.status, reply.headers["Location"]) == (303, "/login")


def test_read_path_healthz_and_static_assets_stay_open(ui_host):
    anonymous = Client(ui_host.url)
    assert anonymous.get("/healthz").status == 200
    assert anonymous.get("/b/aHR0cDovL3guZXhhbXBsZS9h/a").status == 404
    for name, kind in (("htmx.min.js", "text/javascript"), ("pico.min.css", "text/css")):
        reply = anonymous.get(f"/static/{name}")
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith(kind)
        assert "max-age=31536000" in reply.headers["Cache-Control"]


def test_static_serves_only_the_vendored_files(ui_host):
    anonymous = Client(ui_host.url)
    assert anonymous.get("/static/").status == 404
    assert anonymous.get("/static/VERSIONS").status == 404
    assert anonymous.get("/static/..%2Fadmin.py").status == 404


def test_vendored_htmx_is_a_stable_2x_release():
    static = os.path.join(os.path.dirname(__file__), "..", "..", "withcache", "web", "static")
    with open(os.path.join(static, "htmx.min.js")) as f:
        assert 'version:"2.0.11"' in f.read().replace(" ", "")
    assert os.path.exists(os.path.join(static, "htmx.LICENSE"))
    assert os.path.exists(os.path.join(static, "pico.LICENSE.md"))


def test_wrong_password_is_refused(ui_host):
    c = Client(ui_host.url)
    c.get("/login")
    reply = c.post("/login", {"password": "nope"})
    assert reply.status == 401
    assert "Wrong password" in reply.body
    assert c.get("/").status == 303


def test_login_sets_a_hardened_session_cookie(ui_host):
    c = Client(ui_host.url)
    c.get("/login")
    reply = c.post("/login", {"password": PASSWORD})
    assert (reply.status, reply.headers["Location"]) == (303, "/")
    cookie = reply.set_cookies[-1]
    for attribute in ("HttpOnly", "SameSite=strict", "Max-Age=604800", "Path=/"):
        assert attribute in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert c.get("/").status == 200


def test_admin_pages_send_security_headers(client):
    reply = client.get("/")
    csp = reply.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert reply.headers["Referrer-Policy"] == "same-origin"
    assert "http://" not in reply.body.split("<main")[0]  # nothing loaded from another host


def test_a_forged_cookie_is_not_a_session(ui_host):
    c = Client(ui_host.url)
    reply = c.get("/", Cookie="withcache_session=user.9999999999.abc.0000")
    assert reply.status == 303


def test_login_post_needs_a_csrf_token(ui_host):
    c = Client(ui_host.url)
    c.get("/login")
    assert c.post("/login", {"password": PASSWORD}, csrf=False).status == 403


def test_actions_without_csrf_token_are_forbidden(client, ui_host):
    blob_miss(ui_host, "http://vendor.example/csrf.run")
    key = "http://vendor.example/csrf.run"
    reply = client.post("/admin/misses/dismiss", {"key": key}, csrf=False)
    assert reply.status == 403
    wrong = client.post("/admin/misses/dismiss", {"key": "x", "csrf": "0" * 64})
    assert wrong.status == 403
    assert "vendor.example/csrf.run" in client.get("/").body


def test_csrf_header_works_like_the_form_field(client, ui_host):
    blob_miss(ui_host, "http://vendor.example/header.run")
    reply = client.request(
        "POST",
        "/admin/misses/dismiss",
        {"key": "http://vendor.example/header.run"},
        {"X-CSRF-Token": client.csrf, "HX-Request": "true"},
    )
    assert reply.status == 303
    assert "vendor.example/header.run" not in client.get("/").body


def test_urls_are_escaped(client, ui_host):
    evil = 'http://vendor.example/<script>alert("x")</script>.run'
    blob_miss(ui_host, evil)
    body = client.get("/").body
    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in body


def test_add_rejects_a_bad_scheme_inline(client):
    reply = client.post("/admin/add", {"url": "ftp://vendor.example/a.iso"})
    assert reply.status == 400
    assert "only http and https" in reply.body
    assert 'value="ftp://vendor.example/a.iso"' in reply.body


def test_add_then_fill_shows_the_artifact(client, ui_host, ui_origin):
    url = f"{ui_origin.base}/f/300000/1/added.bin"
    assert client.post("/admin/add", {"url": url}).status == 303
    wait_until(lambda: "completed" in client.get("/admin/fragments/downloads").body)
    downloads = client.get("/admin/fragments/downloads").body
    assert "100 %" in downloads
    page = client.get("/").body
    assert "added.bin" in page and "293.0 KiB" in page


def test_curate_mode_miss_download_and_dismiss(client, ui_host, ui_origin):
    wanted, unwanted = f"{ui_origin.base}/f/1000/2/wanted.bin", "http://vendor.example/no.run"
    blob_miss(ui_host, wanted)
    blob_miss(ui_host, unwanted)
    page = client.get("/").body
    assert page.count('action="/admin/misses/dismiss"') >= 2
    assert client.post("/admin/misses/download", {"key": wanted}).status == 303
    assert client.post("/admin/misses/dismiss", {"key": unwanted}).status == 303
    wait_until(lambda: ui_host.get("/blob?" + urllib.parse.urlencode({"url": wanted}))[0] == 200)
    assert unwanted not in client.get("/admin/fragments/misses").body


def test_finding6_the_ui_never_shows_signature_or_credential_values(
    client, ui_host, ui_origin, tmp_path
):
    """Artifacts, misses (and their Download buttons), jobs and the delete page show the URL
    with its signature values replaced by '…', and the cache URL names the key."""
    aws = "X-Amz-Credential=CREDVAL&X-Amz-Security-Token=TOKVAL&X-Amz-Signature=SIGVAL"
    seeded = f"https://vendor.example/signed.run?version=2&{aws}"
    ui_host.seed(seeded, write_file(tmp_path / "signed", 100, seed=8))
    blob_miss(ui_host, "https://vendor.example/missed.run?arch=arm64&sv=1&sp=r&sig=SIGMISS")
    fill = f"{ui_origin.base}/f/100/9/filled.bin?Expires=1&Key-Pair-Id=K&Signature=SIGJOB"
    assert client.post("/admin/add", {"url": fill}).status == 303
    wait_until(lambda: "completed" in client.get("/admin/fragments/downloads").body)
    key = "https://vendor.example/signed.run?version=2"
    pages = [
        client.get("/").body,
        client.get("/admin/fragments/artifacts").body,
        client.get("/admin/fragments/misses").body,
        client.get("/admin/fragments/downloads").body,
        client.get("/admin/artifacts/delete?" + urllib.parse.urlencode({"key": key})).body,
    ]
    for page in pages:
        for secret in ("CREDVAL", "TOKVAL", "SIGVAL", "SIGMISS", "SIGJOB"):
            assert secret not in page
    dashboard = pages[0]
    assert "signed.run?version=2&amp;X-Amz-Credential=…" in dashboard
    assert "missed.run?arch=arm64&amp;sv=…&amp;sp=…&amp;sig=…" in dashboard
    assert "filled.bin?Expires=…&amp;Key-Pair-Id=…&amp;Signature=…" in dashboard
    token = base64.urlsafe_b64encode(key.encode()).rstrip(b"=").decode()
    assert f"{ui_host.url}/b/{token}/signed.run" in dashboard


def test_cancel_a_running_download(client, ui_origin):
    url = f"{ui_origin.base}/f/50000000/3/slow.bin?rate=400000"
    client.post("/admin/add", {"url": url})
    job = wait_until(lambda: _job_id(client.get("/admin/fragments/downloads").body, "slow.bin"))
    assert client.post("/admin/jobs/cancel", {"id": job}).status == 303
    wait_until(lambda: "cancelled" in client.get("/admin/fragments/downloads").body)


def test_clear_finished_empties_the_finished_jobs(client, ui_origin):
    client.post("/admin/add", {"url": f"{ui_origin.base}/f/100/4/tiny.bin"})
    wait_until(lambda: _row(client.get("/admin/fragments/downloads").body, "tiny.bin", "completed"))
    assert client.post("/admin/jobs/clear").status == 303
    assert "tiny.bin" not in client.get("/admin/fragments/downloads").body


def test_pin_unpin_and_delete_with_confirmation(client, ui_host, tmp_path):
    url = "https://vendor.example/pinned.run"
    ui_host.seed(url, write_file(tmp_path / "p", 2048, seed=5))
    assert client.post("/admin/artifacts/pin", {"key": url, "pinned": "1"}).status == 303
    assert artifacts_by_key(ui_host.data_dir)[url]["pinned"]
    client.post("/admin/artifacts/pin", {"key": url, "pinned": "0"})
    assert not artifacts_by_key(ui_host.data_dir)[url]["pinned"]
    confirm = client.get("/admin/artifacts/delete?" + urllib.parse.urlencode({"key": url}))
    assert confirm.status == 200 and "Delete this artifact?" in confirm.body
    assert client.post("/admin/artifacts/delete", {"key": url}).status == 303
    assert url not in artifacts_by_key(ui_host.data_dir)


def test_artifacts_show_digest_and_cache_url(client, ui_host, tmp_path):
    url = "https://vendor.example/shown.run"
    digest = ui_host.seed(url, write_file(tmp_path / "s", 4096, seed=6))
    body = client.get("/?q=shown.run").body
    assert f'data-copy="{digest}"' in body
    assert f"{ui_host.url}/b/" in body and "/shown.run" in body


def test_search_and_pagination(client, ui_host, tmp_path):
    digest = ui_host.seed("https://bulk.example/seed.bin", write_file(tmp_path / "b", 512, 7))
    rows = tmp_path / "rows.jsonl"
    with open(rows, "w") as f:
        for n in range(120):
            url = f"https://bulk.example/item-{n:03d}.bin"
            row = {"key": url, "url": url, "sha256": digest, "size": 512, "content_type": None}
            f.write(json.dumps({**row, "fetched_at": 1000.0 + n}) + "\n")

    subprocess.run(
        [tool("withcache-admin"), "import-catalog", "--data-dir", str(ui_host.data_dir), str(rows)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    first = client.get("/?q=bulk.example/item").body
    assert "120 matches · page 1 of 3" in first
    assert first.count('class="artifact"') == 50
    third = client.get("/?q=bulk.example/item&page=3").body
    assert third.count('class="artifact"') == 20
    assert "item-000.bin" in third  # oldest last
    one = client.get("/?q=item-042").body
    assert one.count('class="artifact"') == 1


def test_logout_ends_the_session(client):
    reply = client.post("/logout")
    assert (reply.status, reply.headers["Location"]) == (303, "/login")
    assert client.get("/").status == 303


def _session_cookie(client: Client) -> str:
    (value,) = [c.value for c in client.jar if c.name == "withcache_session"]
    return value


def _replay(host, cookie: str):
    """GET / from another client that sends only this session cookie."""
    return Client(host.url).get("/", Cookie=f"withcache_session={cookie}")


def _logged_in_cookie(host, password: str = PASSWORD) -> str:
    c = Client(host.url)
    assert c.login(password).status == 303
    cookie = _session_cookie(c)
    assert _replay(host, cookie).status == 200
    return cookie


def test_logout_a_replayed_session_cookie_is_refused_also_after_a_restart(tmp_path):
    """Issue 13, finding 8: logging out ends the session on the host, not just in the browser
    that dropped its cookie."""
    host = start_ui_host(tmp_path / "data")
    try:
        c = Client(host.url)
        c.login()
        c.get("/")
        cookie = _session_cookie(c)
        assert c.post("/logout").status == 303
        reply = _replay(host, cookie)
        assert (reply.status, reply.headers["Location"]) == (303, "/login")
    finally:
        host.stop()
    host = start_ui_host(tmp_path / "data")
    try:
        assert _replay(host, cookie).status == 303
    finally:
        host.stop()
    assert_clean_log(host)


def test_password_change_restart_with_a_new_password_refuses_the_old_cookie(tmp_path):
    """Issue 13, finding 8: a password change ends every session."""
    host = start_ui_host(tmp_path / "data")
    try:
        cookie = _logged_in_cookie(host)
    finally:
        host.stop()
    host = start_ui_host(tmp_path / "data", password="a different password")
    try:
        reply = _replay(host, cookie)
        assert (reply.status, reply.headers["Location"]) == (303, "/login")
        _logged_in_cookie(host, "a different password")
    finally:
        host.stop()
    assert_clean_log(host)


def test_password_change_a_restart_with_the_same_password_keeps_the_login(tmp_path):
    host = start_ui_host(tmp_path / "data")
    try:
        cookie = _logged_in_cookie(host)
    finally:
        host.stop()
    host = start_ui_host(tmp_path / "data")
    try:
        assert _replay(host, cookie).status == 200
    finally:
        host.stop()
    assert_clean_log(host)


def test_refused_origin_is_shown_inline(tmp_path):
    host = start_ui_host(tmp_path / "data")
    try:
        c = Client(host.url)
        c.login()
        c.get("/")
        reply = c.post("/admin/add", {"url": "http://127.0.0.1:9/x.bin"})
        assert reply.status == 400
        assert "not a public address" in reply.body
        # The Add form refuses IPv6 literals of non-public addresses as the fill policy would.
        for url in ("http://[::1]:9/x.bin", "http://[fec0::1]/x.bin", "http://[::ffff:7f00:1]/"):
            reply = c.post("/admin/add", {"url": url})
            assert (reply.status, "not a public address" in reply.body) == (400, True), url
        assert db(host.data_dir, "SELECT url FROM jobs") == []
    finally:
        host.stop()
    assert_clean_log(host)


def test_failed_logins_are_throttled_per_client(tmp_path):
    host = start_ui_host(tmp_path / "data")
    try:
        c = Client(host.url)
        c.get("/login")
        for _ in range(5):
            assert c.post("/login", {"password": "guess"}).status == 401
        reply = c.post("/login", {"password": PASSWORD})
        assert reply.status == 429
        assert int(reply.headers["Retry-After"]) > 0
        assert c.get("/").status == 303
    finally:
        host.stop()


def test_without_a_password_the_ui_is_open_with_a_warning(tmp_path):
    host = start_ui_host(tmp_path / "data", password=None)
    try:
        c = Client(host.url)
        reply = c.get("/")
        assert reply.status == 200
        assert "WITHCACHE_ADMIN_PASSWORD" in reply.body
        assert "WITHCACHE_ADMIN_PASSWORD is not set" in host.log()
        assert c.post("/admin/jobs/clear", csrf=False).status == 403
        assert c.post("/admin/jobs/clear").status == 303
        secret = tmp_path / "data" / "session-secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    finally:
        host.stop()


def test_auto_mode_shows_misses_as_queued(tmp_path):
    """Without --curate a miss queues a fill by itself: no buttons, its state instead."""
    origin = OriginProcess()
    # --stream-wait 0: the miss is a 404 at once, not a stream of the fill it starts.
    host = start_ui_host(tmp_path / "data", "--allow-private", "--stream-wait", "0")
    try:
        c = Client(host.url)
        c.login()
        blob_miss(host, f"{origin.base}/f/50000000/13/auto.bin?rate=200000")
        misses = wait_until(lambda: _row(c.get("/admin/fragments/misses").body, "auto.bin", ""))
        assert "state-running" in misses or "state-queued" in misses
        assert "/admin/misses/dismiss" not in misses
    finally:
        host.stop()
        origin.stop()


def _row(fragment: str, name: str, state: str) -> str | None:
    for row in fragment.split("<tr")[1:]:
        if name in row and f"state-{state}" in row:
            return row
    return None


def _job_id(fragment: str, name: str) -> str | None:
    """The id of the named job once it runs and bytes flow (so the cancel hits the body)."""
    row = _row(fragment, name, "running")
    if row is None or "· 0 B" in row:
        return None
    return row.split('data-job="', 1)[1].split('"', 1)[0]
