"""Values an origin (or a damaged data dir) hands the host never break the read path: a
Content-Type that is not a plain printable media type is stored and served as
application/octet-stream, and no request leaves a blob open."""

from __future__ import annotations

import http.client
from urllib.parse import quote_from_bytes

import pytest

from tests import support
from tests.support import (
    Host,
    admin_json,
    assert_clean_log,
    db,
    db_write,
    eventually,
    fd_count,
    start_host,
    token,
    write_file,
)

BAD_TYPES = [
    "text/plain; charset=\xe9",  # not ASCII: every answer was a 500 that kept the blob open
    "text/html\r\nSet-Cookie: stolen=1",
    "text/html\x00",
    "text/html\x1b[31m",
    "application/" + "x" * 5000,
    "no-slash",
    "text/plain; charset",
    "",
    " ",
]

origin = support.origin_process  # the `origin` fixture here: tests/origin.py in a process


@pytest.fixture
def open_host(tmp_path):
    """A host that may fetch from 127.0.0.1 (tests have no public origin to use)."""
    running = start_host(tmp_path / "data", "--allow-private")
    yield running
    running.stop()
    assert_clean_log(running)


def answers(host: Host, path: str, rounds: int) -> list[tuple[int, str | None, int]]:
    """(status, Content-Type, body length) of GETs, HEADs, one range and two ranges of path,
    `rounds` of each, on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", int(host.url.rsplit(":", 1)[1]), timeout=30)
    seen = []
    try:
        for _ in range(rounds):
            for method, extra in (
                ("GET", {}),
                ("HEAD", {}),
                ("GET", {"Range": "bytes=0-9"}),
                ("GET", {"Range": "bytes=0-9,100-109"}),
            ):
                conn.request(method, path, headers=extra)
                response = conn.getresponse()
                body = response.read()
                seen.append((response.status, response.getheader("Content-Type"), len(body)))
    finally:
        conn.close()
    return seen


def assert_octet_stream(seen: list[tuple[int, str | None, int]], size: int) -> None:
    """Each answer of `answers` is what a blob served as application/octet-stream gets."""
    for status, ctype, length in seen:
        if status == 206 and length > 10:
            assert ctype.startswith("multipart/byteranges; boundary="), (status, ctype)
        else:
            assert ctype == "application/octet-stream", (status, ctype)
            assert (status, length) in ((200, size), (200, 0), (206, 10)), (status, length)


def test_origin_content_type_not_ascii_is_octet_stream_and_leaks_no_file(origin, open_host):
    """Every answer about an artifact whose origin sent a non-ASCII Content-Type used to be a
    500 that left the blob open: a few thousand requests ran the host out of descriptors."""
    url = f"{origin.base}/f/4096/1/tool.bin?ctype=" + quote_from_bytes(b"text/plain; charset=\xe9")
    path = f"/b/{token(url)}/tool.bin"
    open_host.get(path)  # a miss: the fill is queued
    eventually(
        lambda: [j["state"] for j in admin_json(open_host.data_dir, "jobs")],
        lambda states: states == ["completed"],
        what="the fill",
    )
    answers(open_host, path, 1)  # the first answer comes via the catalog, the rest from memory
    before = fd_count(open_host.pid)
    seen = answers(open_host, path, 100)
    assert fd_count(open_host.pid) <= before + 2
    assert_octet_stream(seen, 4096)
    assert db(open_host.data_dir, "SELECT content_type FROM artifacts") == [(None,)]


def test_a_bad_content_type_in_the_catalog_is_served_as_octet_stream(host, tmp_path):
    """A catalog row written behind the host's back (a damaged or hostile data dir) cannot make
    an answer fail, leak a descriptor or add a header."""
    blob = write_file(tmp_path / "blob", 4096)
    paths = []
    for n, bad in enumerate(BAD_TYPES):
        url = f"https://vendor.example.com/bad/{n}.bin"
        host.seed(url, blob)
        db_write(host.data_dir, "UPDATE artifacts SET content_type = ? WHERE key = ?", bad, url)
        paths.append(f"/b/{token(url)}/x")
    answers(host, paths[0], 1)
    before = fd_count(host.pid)
    for path in paths:
        assert_octet_stream(answers(host, path, 3), 4096)
    assert fd_count(host.pid) <= before + 2
    conn = http.client.HTTPConnection("127.0.0.1", int(host.url.rsplit(":", 1)[1]), timeout=30)
    conn.request("GET", paths[1])
    assert conn.getresponse().getheader("Set-Cookie") is None
    conn.close()


def test_a_good_content_type_is_stored_and_served_as_it_came(origin, open_host):
    ctype = b'application/x-sh; charset="binary"'
    url = f"{origin.base}/f/100/2/run.sh?ctype=" + quote_from_bytes(ctype)
    open_host.get(f"/b/{token(url)}/run.sh")
    eventually(
        lambda: db(open_host.data_dir, "SELECT content_type FROM artifacts"),
        lambda rows: rows != [],
        what="the fill",
    )
    assert db(open_host.data_dir, "SELECT content_type FROM artifacts") == [(ctype.decode(),)]
    assert answers(open_host, f"/b/{token(url)}/run.sh", 1)[0] == (200, ctype.decode(), 100)


def test_an_error_while_answering_a_hit_closes_the_blob(tmp_path, monkeypatch):
    """The hit path opens the blob before it answers (to check its size): whatever fails after
    that must not leave it open, or each failing request costs the host a descriptor."""
    from types import SimpleNamespace

    from twisted.web.test.requesthelper import DummyRequest

    from withcache.cache import Hit
    from withcache.catalog import Artifact
    from withcache.web import blobs

    path = write_file(tmp_path / "blob", 100)
    artifact = Artifact("k", "https://vendor.example.com/k", "ab" * 32, 100, None, 0.0)
    source = SimpleNamespace(count_hit=lambda hit: None, reactor=None, served_bytes=None)
    opened = []
    real_open = blobs.open_blob
    monkeypatch.setattr(blobs, "open_blob", lambda *a: opened.append(real_open(*a)) or opened[-1])

    def broken(*args):
        raise RuntimeError("something went wrong after the blob was opened")

    monkeypatch.setattr(blobs, "blob_resource", broken)
    with pytest.raises(RuntimeError):
        blobs.HitServer(source).serve_hit(DummyRequest([b""]), Hit(artifact, str(path)))
    assert len(opened) == 1 and opened[0].closed
