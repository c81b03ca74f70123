"""The hit path end to end: the in-memory index, batched hit counts and sendfile bodies, on the
real host under twistd, driven by raw sockets and http.client where curl would hide details."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import subprocess
import time

import pytest

from tests.support import Host, artifacts_by_key, eventually, fd_count, token, tool, write_file

ORIGIN = "https://vendor.example.com/rocm/amdgpu-install.deb"
BIG = 24 * 1024 * 1024 + 5  # well past the single-write threshold: sendfile, many sends


@pytest.fixture
def connect():
    """Opens keep-alive connections to a host and closes them after the test."""
    opened = []

    def open_to(host: Host) -> http.client.HTTPConnection:
        port = int(host.url.rsplit(":", 1)[1])
        opened.append(http.client.HTTPConnection("127.0.0.1", port, timeout=30))
        return opened[-1]

    yield open_to
    for conn in opened:
        conn.close()


def fetch(conn: http.client.HTTPConnection, method: str, path: str, **headers: str):
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def path_of(url: str) -> str:
    return f"/b/{token(url)}/file"


@pytest.mark.parametrize("size", [0, 1, 4096, 256 * 1024, 256 * 1024 + 1, 3 * 1024 * 1024 + 3])
def test_every_size_is_served_whole_the_first_time_and_from_the_index_after(
    host, tmp_path, connect, size
):
    path = write_file(tmp_path / "a.bin", size, seed=size)
    digest = host.seed(ORIGIN, path)
    conn = connect(host)
    for _ in range(3):  # the first answer comes via the catalog, the others from the index
        status, headers, body = fetch(conn, "GET", path_of(ORIGIN))
        assert status == 200 and len(body) == size and int(headers["Content-Length"]) == size
        assert hashlib.sha256(body).hexdigest() == digest == headers["X-Withcache-Sha256"]
    status, headers, body = fetch(conn, "HEAD", path_of(ORIGIN))
    assert (status, body, int(headers["Content-Length"])) == (200, b"", size)
    hits = eventually(lambda: artifacts_by_key(host.data_dir)[ORIGIN]["hits"], lambda n: n >= 3)
    assert hits == 3


def test_one_keep_alive_connection_carries_gets_ranges_heads_and_304s(host, tmp_path, connect):
    data = write_file(tmp_path / "big.bin", BIG).read_bytes()
    digest = host.seed(ORIGIN, tmp_path / "big.bin")
    small_url = ORIGIN + ".sig"
    host.seed(small_url, write_file(tmp_path / "small.bin", 700, seed=3))
    conn = connect(host)
    status, _, body = fetch(conn, "GET", path_of(ORIGIN))
    assert status == 200 and body == data
    sock = conn.sock
    status, _, body = fetch(conn, "GET", path_of(ORIGIN), Range="bytes=1000-2000999")
    assert status == 206 and body == data[1000:2001000]
    status, _, body = fetch(conn, "GET", path_of(ORIGIN), Range="bytes=-7")
    assert status == 206 and body == data[-7:]
    status, _, body = fetch(conn, "HEAD", path_of(ORIGIN))
    assert status == 200 and body == b""
    status, _, body = fetch(conn, "GET", path_of(ORIGIN), **{"If-None-Match": f'"{digest}"'})
    assert status == 304 and body == b""
    status, _, body = fetch(conn, "GET", path_of(small_url))
    assert status == 200 and body == (tmp_path / "small.bin").read_bytes()
    status, _, body = fetch(conn, "GET", path_of(ORIGIN))
    assert status == 200 and body == data
    assert conn.sock is sock, "the host closed a keep-alive connection between responses"


def test_withcache_admin_rm_on_a_running_host_takes_effect_within_a_sync(host, tmp_path):
    host.seed(ORIGIN, write_file(tmp_path / "a.bin", 5000))
    assert host.get(path_of(ORIGIN))[0] == 200  # now in the index
    host.seed(ORIGIN + "2", tmp_path / "a.bin")  # a second key on the same blob keeps it on disk
    rm = [tool("withcache-admin"), "rm", "--data-dir", str(host.data_dir), ORIGIN]
    assert subprocess.run(rm, capture_output=True, timeout=60).returncode == 0
    assert eventually(lambda: host.get(path_of(ORIGIN))[0], lambda s: s == 404, 5) == 404
    assert host.get(path_of(ORIGIN + "2"))[0] == 200


def test_new_bytes_imported_under_a_served_url_are_served_after_a_sync(host, tmp_path):
    host.seed(ORIGIN, write_file(tmp_path / "old.bin", 5000, seed=1))
    assert host.get(path_of(ORIGIN)) == (200, (tmp_path / "old.bin").read_bytes())
    new = write_file(tmp_path / "new.bin", 6000, seed=2).read_bytes()
    host.seed(ORIGIN, tmp_path / "new.bin")
    assert eventually(lambda: host.get(path_of(ORIGIN)), lambda r: r[1] == new, 5)[0] == 200


def test_hit_counts_in_memory_are_written_when_the_host_stops(host, tmp_path, connect):
    host.seed(ORIGIN, write_file(tmp_path / "a.bin", 5000))
    conn = connect(host)
    for _ in range(7):
        assert fetch(conn, "GET", path_of(ORIGIN))[0] == 200
    conn.close()
    host.stop()  # SIGTERM: a clean shutdown
    assert artifacts_by_key(host.data_dir)[ORIGIN]["hits"] == 7


def read_some_then_drop(host: Host, path: str, nbytes: int) -> None:
    with socket.create_connection(("127.0.0.1", int(host.url.rsplit(":", 1)[1])), 10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        got = 0
        while got < nbytes:
            chunk = sock.recv(65536)
            assert chunk, "the host closed the connection early"
            got += len(chunk)


def test_clients_that_hang_up_mid_body_leave_no_descriptors_behind(host, tmp_path):
    host.seed(ORIGIN, write_file(tmp_path / "big.bin", BIG))
    read_some_then_drop(host, path_of(ORIGIN), 1)  # warm up: the index, the catalog thread
    before = fd_count(host.pid)
    for i in range(20):
        read_some_then_drop(host, path_of(ORIGIN), 1 + i * 300_000)
    assert eventually(lambda: fd_count(host.pid), lambda n: n <= before, 10) <= before
    assert host.get("/healthz")[0] == 200
    status, body = host.get(path_of(ORIGIN))
    assert status == 200 and len(body) == BIG


def test_a_blob_cut_short_under_a_reader_ends_the_response_early_and_is_quarantined(host, tmp_path):
    digest = host.seed(ORIGIN, write_file(tmp_path / "big.bin", BIG))
    blob = host.data_dir / "blobs" / digest[:2] / digest[2:]
    with socket.create_connection(("127.0.0.1", int(host.url.rsplit(":", 1)[1])), 10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
        sock.sendall(f"GET {path_of(ORIGIN)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = sock.recv(65536)
        os.truncate(blob, BIG // 2)  # a disk fault, or someone's stray `truncate`
        with contextlib.suppress(ConnectionResetError):  # the host aborts the connection
            while chunk := sock.recv(1 << 20):
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert f"Content-Length: {BIG}".encode() in head
    assert len(body) < BIG  # the client can tell: the connection ended before Content-Length
    # The next request notices the size and takes the blob out of service (curating: no refill).
    assert host.get(path_of(ORIGIN))[0] == 404
    host.wait_for_log("quarantined blob")
    assert ORIGIN not in artifacts_by_key(host.data_dir)


def test_a_blob_not_in_the_page_cache_is_read_in_and_served_whole(host, tmp_path):
    data = write_file(tmp_path / "big.bin", BIG).read_bytes()
    digest = host.seed(ORIGIN, tmp_path / "big.bin")
    blob = host.data_dir / "blobs" / digest[:2] / digest[2:]
    fd = os.open(blob, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        with pytest.raises(BlockingIOError):
            os.preadv(fd, [bytearray(1)], BIG // 2, os.RWF_NOWAIT)
    finally:
        os.close(fd)
    started = time.monotonic()
    status, body = host.get(path_of(ORIGIN), timeout=60)
    assert status == 200 and body == data, f"after {time.monotonic() - started:.1f}s"
