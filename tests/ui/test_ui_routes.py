"""Route tests of the operator UI against the real host (twistd): what needs its wiring (fills
from a real origin, restarts, the client IP and cookies of real HTTP). The other route tests run
in process: tests/web/test_admin_routes.py."""

from __future__ import annotations

import base64
import contextlib
import os
import urllib.parse

import pytest

from tests.support import (
    assert_clean_log,
    eventually,
    write_file,
)
from tests.ui.ui_support import PASSWORD, Client, start_ui_host

pytestmark = pytest.mark.e2e


def wait_until(check):
    return eventually(check, timeout=30.0, what=getattr(check, "__name__", ""))


def blob_miss(host, url: str) -> None:
    status, _ = host.get("/blob?" + urllib.parse.urlencode({"url": url}))
    assert status == 404


def test_vendored_htmx_is_a_stable_2x_release():
    static = os.path.join(os.path.dirname(__file__), "..", "..", "withcache", "web", "static")
    with open(os.path.join(static, "htmx.min.js")) as f:
        assert 'version:"2.0.11"' in f.read().replace(" ", "")
    assert os.path.exists(os.path.join(static, "htmx.LICENSE"))
    assert os.path.exists(os.path.join(static, "pico.LICENSE.md"))


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


@contextlib.contextmanager
def ui_host_at(data_dir, **kw):
    """A UI host on data_dir for the with block (a restart is two of these in a row)."""
    host = start_ui_host(data_dir, **kw)
    try:
        yield host
    finally:
        host.stop()


def test_logout_a_replayed_session_cookie_is_refused_also_after_a_restart(tmp_path):
    """Issue 13, finding 8: logging out ends the session on the host, not just in the browser
    that dropped its cookie."""
    with ui_host_at(tmp_path / "data") as host:
        c = Client(host.url)
        c.login()
        c.get("/")
        cookie = _session_cookie(c)
        assert c.post("/logout").status == 303
        reply = _replay(host, cookie)
        assert (reply.status, reply.headers["Location"]) == (303, "/login")
    with ui_host_at(tmp_path / "data") as host:
        assert _replay(host, cookie).status == 303
    assert_clean_log(host)


def test_password_change_restart_with_a_new_password_refuses_the_old_cookie(tmp_path):
    """Issue 13, finding 8: a password change ends every session."""
    with ui_host_at(tmp_path / "data") as host:
        cookie = _logged_in_cookie(host)
    with ui_host_at(tmp_path / "data", password="a different password") as host:
        reply = _replay(host, cookie)
        assert (reply.status, reply.headers["Location"]) == (303, "/login")
        _logged_in_cookie(host, "a different password")
    assert_clean_log(host)


def test_password_change_a_restart_with_the_same_password_keeps_the_login(tmp_path):
    with ui_host_at(tmp_path / "data") as host:
        cookie = _logged_in_cookie(host)
    with ui_host_at(tmp_path / "data") as host:
        assert _replay(host, cookie).status == 200
    assert_clean_log(host)


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
