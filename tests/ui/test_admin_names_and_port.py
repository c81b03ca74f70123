"""The operator UI answers only to this host's own names (issue 13, 12c: DNS rebinding), and
with --admin-listen it has a port of its own. End to end against the real host (twistd)."""

from __future__ import annotations

import http.client
import re

import pytest

from tests.support import Host, assert_clean_log, token, write_file
from tests.ui.ui_support import Client, start_ui_host

pytestmark = pytest.mark.e2e

ARTIFACT = "https://vendor.example/tools/tool.run"


def ask(url: str, method: str, path: str, host_header: str | None = None, body: bytes = b""):
    """(status, headers, body) of one request to url's port, with the Host header given."""
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest(method, path, skip_host=host_header is not None)
        if host_header is not None:
            conn.putheader("Host", host_header)
        if method == "POST":
            conn.putheader("Content-Type", "application/x-www-form-urlencoded")
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body if method == "POST" else None)
        response = conn.getresponse()
        return response.status, response.msg, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def open_host(tmp_path_factory):
    """A password-less (open) UI, the one DNS rebinding would hand to any web page."""
    base = tmp_path_factory.mktemp("names")
    running = start_ui_host(
        base / "data", "--curate", "--admin-host", "cache.lab.example", password=None
    )
    running.seed(ARTIFACT, write_file(base / "tool.run", 2048, 3))
    yield running
    running.stop()
    assert_clean_log(running)


@pytest.mark.parametrize("name", ["evil.example", "evil.example:3000", "cache.lab.example.evil"])
def test_the_operator_ui_refuses_host_names_that_are_not_its_own(open_host, name):
    for method, path in [
        ("GET", "/"),
        ("GET", "/admin/fragments/stats"),
        ("GET", "/login"),
        ("GET", "/static/htmx.min.js"),
        ("POST", "/admin/add"),
    ]:
        status, headers, body = ask(open_host.url, method, path, name, b"url=https://x.example/a")
        assert status == 421, (method, path)
        assert body.count(b"\n") == 1 and b"--admin-host" in body
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert b"csrf" not in body
    assert open_host.get_json("/healthz")["status"] == "ok"


@pytest.mark.parametrize(
    "name",
    [
        "localhost",
        "127.0.0.1:{port}",
        "[::1]:{port}",
        "cache.lab.example",
        "CACHE.lab.example.:{port}",
    ],
)
def test_the_operator_ui_answers_its_own_names_and_addresses(open_host, name):
    port = open_host.url.rsplit(":", 1)[1]
    status, _headers, body = ask(open_host.url, "GET", "/", name.format(port=port))
    assert status == 200 and b"Downloads" in body


def test_the_read_path_answers_any_host_name(open_host):
    blob = f"/b/{token(ARTIFACT)}/tool.run"
    assert ask(open_host.url, "GET", blob, "evil.example")[0] == 200
    assert ask(open_host.url, "GET", "/b/aHR0cDovL3guZXhhbXBsZS9h/a", "evil.example")[0] == 404
    assert ask(open_host.url, "GET", "/healthz", "evil.example")[0] == 200
    assert ask(open_host.url, "GET", "/metrics", "evil.example")[0] == 200


def admin_url(host: Host) -> str:
    found = re.search(
        r"operator UI listening on 127\.0\.0\.1:(\d+)", host.wait_for_log("operator UI listening")
    )
    assert found
    return f"http://127.0.0.1:{found.group(1)}"


@pytest.fixture(scope="module")
def split_host(tmp_path_factory):
    base = tmp_path_factory.mktemp("split")
    running = start_ui_host(
        base / "data", "--curate", "--admin-listen", "tcp:0:interface=127.0.0.1"
    )
    running.seed(ARTIFACT, write_file(base / "tool.run", 2048, 3))
    yield running, admin_url(running)
    running.stop()
    assert_clean_log(running)


def test_with_admin_listen_the_main_port_serves_only_the_read_path(split_host):
    host, _admin = split_host
    assert ask(host.url, "GET", f"/b/{token(ARTIFACT)}/tool.run")[0] == 200
    assert ask(host.url, "GET", "/healthz")[0] == 200
    assert ask(host.url, "GET", "/metrics")[0] == 200
    for method, path in [
        ("GET", "/"),
        ("GET", "/login"),
        ("POST", "/login"),
        ("GET", "/static/htmx.min.js"),
        ("GET", "/admin/fragments/stats"),
    ]:
        status, headers, body = ask(host.url, method, path)
        assert (status, body) == (404, b"not found: the operator UI is on its own port\n")
        assert headers["Content-Security-Policy"] == "sandbox; default-src 'none'"


def test_with_admin_listen_the_admin_port_serves_only_the_operator_ui(split_host):
    host, admin = split_host
    for path in (f"/b/{token(ARTIFACT)}/tool.run", "/blob?url=" + ARTIFACT, "/healthz", "/metrics"):
        status, _headers, body = ask(admin, "GET", path)
        assert (status, body) == (404, b"not found: the read path is on the main port\n")
    assert ask(admin, "GET", "/static/htmx.min.js")[0] == 200
    operator = Client(admin)
    assert operator.login().status == 303
    page = operator.get("/")
    assert page.status == 200
    # The cache URLs the dashboard shows point at the read path's port, not the UI's.
    assert f'href="{host.url}/b/{token(ARTIFACT)}/tool.run"' in page.body
