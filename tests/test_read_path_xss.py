"""Issue 13, finding 1: what the read path serves never runs in the cache-host's own origin.

Every read-path answer carries `Content-Security-Policy: sandbox; default-src 'none'` and
`nosniff`, on the Klein path and the index's fast path alike (the serving workers are in
test_processes.py), and an artifact stored as HTML, SVG, XML, JavaScript or CSS goes out as
application/octet-stream with its bytes unchanged. End to end against the real host.
"""

from __future__ import annotations

import http.client
import subprocess
import urllib.parse

import pytest

from tests.support import Host, token

CSP = "sandbox; default-src 'none'"
ORIGIN = "https://evil.example/page"
PAGE = b"<!doctype html><title>x</title><script>document.title = 'ran'</script>\n" * 40


def request(host: Host, method: str, path: str, **headers: str):
    """(status, headers as a list of (name, value), body) of one request on a new connection."""
    port = int(host.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.msg, response.read()
    finally:
        conn.close()


def assert_sandboxed(status: int, headers, expected_status: int) -> None:
    assert status == expected_status
    assert headers.get_all("Content-Security-Policy") == [CSP]
    assert headers.get_all("X-Content-Type-Options") == ["nosniff"]


def seeded(host: Host, tmp_path, n: int, content_type: str = "text/html") -> str:
    """A fresh HTML artifact (so its first request takes the Klein path); its origin URL."""
    url = f"{ORIGIN}/{n}.html"
    path = tmp_path / f"page{n}.html"
    path.write_bytes(PAGE)
    host.seed(url, path, "--content-type", content_type)
    return url


HIT_KINDS = {
    "get": ({}, 200),
    "head": ({}, 200),
    "range": ({"Range": "bytes=10-99"}, 206),
    "ranges": ({"Range": "bytes=0-9,20-29"}, 206),
    "unsatisfiable": ({"Range": f"bytes={len(PAGE) + 5}-"}, 416),
    "etag": ({"If-None-Match": "*"}, 304),
    "date": ({"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, 304),
}


@pytest.mark.parametrize("route", ["b", "blob"])
def test_every_hit_answer_is_sandboxed_on_the_klein_and_fast_paths(host, tmp_path, route):
    for n, (kind, (headers, expected)) in enumerate(HIT_KINDS.items()):
        url = seeded(host, tmp_path, n)
        if route == "b":
            path = f"/b/{token(url)}/{n}.html"
        else:
            path = "/blob?" + urllib.parse.urlencode({"url": url})
        method = "HEAD" if kind == "head" else "GET"
        # The first answer comes through the catalog (Klein), the second from the index.
        for _ in range(2):
            status, got, body = request(host, method, path, **headers)
            assert_sandboxed(status, got, expected)
            if expected in (200, 206) and kind != "ranges":
                assert got["Content-Type"] == "application/octet-stream", kind
            if kind == "get":
                assert body == PAGE


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/b/{token('https://vendor.example/missing.run')}/missing.run", 404),
        ("/blob?url=" + urllib.parse.quote("https://vendor.example/missing.run"), 404),
        ("/b/!!!/x", 400),
        ("/blob", 400),
        ("/blob?url=ftp://x.example/a", 400),
        ("/healthz", 200),
        ("/nothing-here", 404),
    ],
)
def test_misses_bad_requests_and_other_read_path_answers_are_sandboxed(host, path, expected):
    for method in ("GET", "HEAD"):
        status, got, _body = request(host, method, path)
        assert_sandboxed(status, got, expected)


@pytest.mark.parametrize(
    "stored",
    ["image/svg+xml", "application/xhtml+xml", "text/xml", "text/javascript", "text/css"],
)
def test_active_stored_types_are_served_as_octet_stream(host, tmp_path, stored):
    url = seeded(host, tmp_path, 0, stored)
    status, got, body = request(host, "GET", f"/b/{token(url)}/x")
    assert (status, got["Content-Type"], body) == (200, "application/octet-stream", PAGE)


def test_a_passive_stored_type_is_served_as_stored(host, tmp_path):
    url = seeded(host, tmp_path, 0, "application/x-sh")
    status, got, _body = request(host, "GET", f"/b/{token(url)}/x.run")
    assert_sandboxed(status, got, 200)
    assert got["Content-Type"] == "application/x-sh"


def test_curl_and_wget_write_the_html_artifact_byte_for_byte(host, tmp_path):
    blob = host.blob_url(seeded(host, tmp_path, 0), "page.html")
    subprocess.run(["curl", "-sSf", "-o", str(tmp_path / "c.html"), blob], check=True, timeout=60)
    subprocess.run(["wget", "-q", "-O", str(tmp_path / "w.html"), blob], check=True, timeout=60)
    assert (tmp_path / "c.html").read_bytes() == (tmp_path / "w.html").read_bytes() == PAGE
