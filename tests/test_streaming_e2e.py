"""Clients streaming a fill in progress, end to end: the real host under twistd, the Twisted origin
as a process (throttled, dropping, restarting, failing), real curl and wget, through the shims."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import support
from tests.shim.conftest import clean_env, shim_command
from tests.support import (
    Host,
    admin_json,
    assert_clean_log,
    db,
    eventually,
    metrics,
    payload,
    payload_sha256,
    rss_kib,
    start_host,
)
from tests.tls import make_test_ca

MB = 1_000_000

origin = support.origin_process  # the `origin` fixture here: tests/origin.py in a process


@pytest.fixture
def host(tmp_path):
    running = start_host(tmp_path / "data", "--allow-private")
    yield running
    running.stop()
    assert_clean_log(running)


def curl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)


def head(url: str) -> dict[str, str]:
    """The status line (as "status") and headers of a HEAD, names lower-cased."""
    lines = curl("-I", url).stdout.decode().splitlines()
    fields = {"status": lines[0].split()[1]}
    fields.update(
        (k.strip().lower(), v.strip())
        for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
    )
    return fields


def job(host: Host) -> dict:
    (row,) = admin_json(host.data_dir, "jobs")
    return row


def filled(host: Host) -> int:
    """Bytes in the fill's temp file (the catalog's job row has its progress only at the end)."""
    return sum(f.stat().st_size for f in (host.data_dir / "tmp").iterdir())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shim(tool: str, host: Host, url: str, out: Path) -> subprocess.CompletedProcess:
    """curlwithcache/wgetwithcache downloading url to out, as a user would."""
    env = clean_env(WITHCACHE_SERVER=host.url)
    args = ["-sS", "-o", str(out), url] if tool == "curl" else ["-q", "-O", str(out), url]
    return subprocess.run([*shim_command(tool), *args], env=env, capture_output=True, timeout=120)


def test_a_cold_herd_through_the_shims_streams_one_origin_download(origin, host, tmp_path):
    size = 12 * MB
    url = f"{origin.base}/f/{size}/1/cuda.run?rate={4 * MB}"
    tools = ["curl"] * 8 + ["wget"] * 4
    with ThreadPoolExecutor(len(tools)) as pool:
        runs = list(
            pool.map(lambda i: shim(tools[i], host, url, tmp_path / f"out-{i}"), range(len(tools)))
        )
    assert [r.returncode for r in runs] == [0] * len(tools), [r.stderr for r in runs]
    for i in range(len(tools)):
        assert sha((tmp_path / f"out-{i}").read_bytes()) == payload_sha256(size, 1)
    # Nobody fell through to the origin: one GET, the artifact's bytes once.
    assert origin.gets("/f/12000000/1/cuda.run") == 1
    assert origin.sent() == size
    eventually(lambda: job(host)["state"], lambda s: s == "completed")
    # Each shim's probe (HEAD) counted no hit; each streamed GET counted one.
    eventually(
        lambda: db(host.data_dir, "SELECT hits FROM artifacts"),
        lambda rows: rows == [(len(tools),)],
        what="a hit per streamed GET",
    )


def test_a_streamed_answer_says_so_and_has_no_digest_yet(origin, host):
    size = 8 * MB
    url = f"{origin.base}/f/{size}/2/a.tar?rate={2 * MB}"
    fields = head(host.blob_url(url))
    assert fields["status"] == "200"
    assert fields["x-withcache-streaming"] == "fill"
    assert fields["content-length"] == str(size)
    assert fields["accept-ranges"] == "bytes"
    assert "etag" not in fields and "x-withcache-sha256" not in fields
    eventually(lambda: job(host)["state"], lambda s: s == "completed", timeout=30)
    cached = head(host.blob_url(url))
    assert (
        "x-withcache-streaming" not in cached and cached["etag"] == f'"{payload_sha256(size, 2)}"'
    )


def test_a_late_reader_and_a_range_ahead_of_the_writer(origin, host):
    size = 10 * MB
    url = f"{origin.base}/f/{size}/3/late.bin?rate={3 * MB}"
    blob = host.blob_url(url)
    assert head(blob)["status"] == "200"
    with ThreadPoolExecutor(2) as pool:
        # Asked for near the end while the fill is near the start: it waits for the bytes.
        ahead = pool.submit(
            curl, "-f", "-r", "9000000-9000999", "-w", "%{http_code}", "-o", "-", blob
        )
        eventually(lambda: filled(host), lambda done: done > 4 * MB, timeout=30)
        assert not ahead.done()
        late = curl("-f", blob)
        ranged = ahead.result(timeout=60)
    assert late.returncode == 0 and sha(late.stdout) == payload_sha256(size, 3)
    assert ranged.returncode == 0
    assert ranged.stdout == payload(size, 3, 9_000_000, 9_001_000) + b"206"
    assert origin.gets("/f/10000000/3/late.bin") == 1


def test_a_resumed_fill_is_invisible_to_its_readers(origin, host):
    size = 8 * MB
    url = f"{origin.base}/f/{size}/4/flaky.bin?rate={4 * MB}&drop=0.4"
    blob = host.blob_url(url)
    assert head(blob)["status"] == "200"
    with ThreadPoolExecutor(3) as pool:
        bodies = list(pool.map(lambda _: curl("-f", blob), range(3)))
    assert [b.returncode for b in bodies] == [0, 0, 0]
    assert {sha(b.stdout) for b in bodies} == {payload_sha256(size, 4)}
    ranges = [s["range"] for s in origin.seen() if s["path"] == "/f/8000000/4/flaky.bin"]
    assert ranges == [None, f"bytes={int(size * 0.4)}-"]


def test_a_restart_from_zero_cuts_off_readers_that_had_bytes(origin, host):
    size = 8 * MB
    # Dropped at 40 %; the origin then ignores Range, so the fill starts again from byte 0.
    url = f"{origin.base}/f/{size}/5/restart.bin?rate={2 * MB}&drop=0.4&norange=1"
    blob = host.blob_url(url)
    assert head(blob)["status"] == "200"
    with ThreadPoolExecutor(2) as pool:
        cut = [pool.submit(curl, "-f", blob) for _ in range(2)]
        results = [c.result(timeout=60) for c in cut]
    for r in results:
        assert r.returncode != 0  # curl: "transfer closed with N bytes remaining"
        assert 0 < len(r.stdout) < size
        assert r.stdout == payload(size, 5, 0, len(r.stdout))
    eventually(lambda: job(host)["state"], lambda s: s == "completed", timeout=60)
    after = curl("-f", blob)
    assert sha(after.stdout) == payload_sha256(size, 5)


def test_a_fill_that_fails_for_good_gives_every_reader_a_short_transfer(origin, host, tmp_path):
    size = 8 * MB
    # Dropped at 40 %, then 404 for good: the fill fails mid-stream.
    url = f"{origin.base}/f/{size}/6/gone.bin?rate={2 * MB}&drop=0.4&failafter=404"
    blob = host.blob_url(url)
    assert head(blob)["status"] == "200"
    tools = ["curl", "curl", "wget", "wget"]
    with ThreadPoolExecutor(len(tools)) as pool:
        runs = [pool.submit(shim, t, host, url, tmp_path / f"out-{i}") for i, t in enumerate(tools)]
        results = [r.result(timeout=60) for r in runs]
    assert all(r.returncode != 0 for r in results), [r.returncode for r in results]
    for i in range(len(tools)):
        out = tmp_path / f"out-{i}"
        got = out.read_bytes() if out.exists() else b""
        assert len(got) < size and got == payload(size, 6, 0, len(got))
    eventually(lambda: job(host)["state"], lambda s: s == "failed", timeout=30)
    assert db(host.data_dir, "SELECT COUNT(*) FROM artifacts") == [(0,)]


def test_a_fill_of_unknown_length_streams_chunked_and_ends_when_committed(origin, host):
    size = 3 * MB
    url = f"{origin.base}/f/{size}/7/chunked.bin?rate={2 * MB}&nolength=1"
    blob = host.blob_url(url)
    fields = head(blob)
    assert fields["status"] == "200" and "content-length" not in fields
    r = curl("-f", "-D", "/dev/stderr", blob)
    assert r.returncode == 0 and sha(r.stdout) == payload_sha256(size, 7)
    assert b"transfer-encoding: chunked" in r.stderr.lower()


def test_a_stalled_reader_slows_neither_a_fast_one_nor_the_fill(origin, host):
    size = 16 * MB
    url = f"{origin.base}/f/{size}/8/stall.bin?rate={8 * MB}"
    blob = host.blob_url(url)
    assert head(blob)["status"] == "200"
    path = blob[len(host.url) :]
    port = int(host.url.rsplit(":", 1)[1])
    stalled = socket.create_connection(("127.0.0.1", port))
    try:
        # A small receive buffer and no reads: its connection fills up at once.
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        fast = curl("-f", blob)
        assert fast.returncode == 0 and sha(fast.stdout) == payload_sha256(size, 8)
        eventually(lambda: job(host)["state"], lambda s: s == "completed", timeout=30)
        # Still connected, still far behind.
        stalled.setblocking(False)
        assert 0 < len(stalled.recv(1 << 20)) < size
    finally:
        stalled.close()


def test_rss_stays_flat_with_a_hundred_streaming_readers(origin, host):
    size = 32 * MB
    url = f"{origin.base}/f/{size}/9/many.bin?rate={16 * MB}"
    blob = host.blob_url(url)
    assert head(blob)["status"] == "200"
    before = host.rss_kib()
    path = blob[len(host.url) :]
    port = int(host.url.rsplit(":", 1)[1])
    readers = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            readers.append(s)
        eventually(lambda: job(host)["state"], lambda s: s == "completed", timeout=60)
        grown = host.rss_kib("VmHWM") - before
        # A copy of the body per reader would be 3200 MB; each holds a chunk at most.
        assert grown < 120 * 1024, f"RSS grew {grown} KiB"
    finally:
        for s in readers:
            s.close()
    assert origin.gets("/f/32000000/9/many.bin") == 1


def test_a_miss_waits_for_the_fills_headers_only_so_long(origin, host):
    url = f"{origin.base}/f/1000/10/slow.bin?delay=6"
    started = time.monotonic()
    assert head(host.blob_url(url))["status"] == "404"
    # Within the shims' 3-second probe, so they fall through to the origin in time.
    assert time.monotonic() - started < 3.0
    assert job(host)["state"] == "running"


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(c) for c in text.split()]


def sockets(pid: int) -> int:
    """The process's open sockets now (a descriptor closed while they are counted is none)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(fd).startswith("socket:")
    return count


def test_processes_2_streams_to_stalled_readers_without_piling_up_in_a_worker(origin, tmp_path):
    host = start_host(tmp_path / "data", "--allow-private", "--processes", "2")
    port = int(host.url.rsplit(":", 1)[1])
    readers: list[socket.socket] = []

    def connect(request: bytes) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(request)
        return s

    def rounds(request: bytes, until) -> None:
        """Rounds of concurrent connections until one lands on the worker (the host takes
        most, and all of them while the worker is still starting)."""
        for _ in range(100):
            with ThreadPoolExecutor(16) as pool:
                readers.extend(pool.map(lambda _: connect(request), range(16)))
            if until():
                return
            time.sleep(0.1)
        raise AssertionError("no connection landed on the worker")

    try:
        host.wait_for_log("started 1 serving workers")
        (worker,) = children(host.pid)
        listening = sockets(worker)
        # Warm up: a forwarded request leaves the worker a pooled connection to the host.
        rounds(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", lambda: sockets(worker) > listening)
        for s in readers:
            s.close()
        readers.clear()
        before = rss_kib(worker)
        size = 32 * MB
        url = f"{origin.base}/f/{size}/13/piled.bin?rate={8 * MB}"
        blob = host.blob_url(url)
        assert head(blob)["status"] == "200"
        request = f"GET {blob[len(host.url) :]} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        # Each stalled reader on the worker holds a client socket and a forwarded connection.
        rounds(request, lambda: sockets(worker) > listening + 16)
        eventually(lambda: job(host)["state"], lambda s: s == "completed", timeout=60)
        # Forwarding with no flow control would hold each forwarded body whole: 8+ x 32 MB.
        grown = rss_kib(worker, "VmHWM") - before
        assert grown < 60 * 1024, f"the worker's RSS grew {grown} KiB"
    finally:
        for s in readers:
            s.close()
        host.stop()
    assert_clean_log(host)


def test_processes_2_streams_too(origin, tmp_path):
    host = start_host(tmp_path / "data", "--allow-private", "--processes", "2")
    try:
        size = 8 * MB
        url = f"{origin.base}/f/{size}/11/workers.bin?rate={4 * MB}"
        with ThreadPoolExecutor(6) as pool:
            runs = list(pool.map(lambda i: shim("curl", host, url, tmp_path / f"o{i}"), range(6)))
        assert [r.returncode for r in runs] == [0] * 6
        assert {sha((tmp_path / f"o{i}").read_bytes()) for i in range(6)} == {
            payload_sha256(size, 11)
        }
        assert origin.gets("/f/8000000/11/workers.bin") == 1
    finally:
        host.stop()
    assert_clean_log(host)


def test_the_operator_sees_who_streams_a_fill_and_a_stopping_host_cuts_them_off(origin, host):
    size = 8 * MB
    # The origin stops sending half-way and keeps the connection open: the fill sits there.
    url = f"{origin.base}/f/{size}/12/stuck.bin?rate={8 * MB}&stall=0.5"
    blob = host.blob_url(url)
    assert head(blob)["status"] == "200"
    readers = [
        subprocess.Popen(["curl", "-sS", "-f", "-o", "/dev/null", blob], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    try:
        eventually(
            lambda: host.get("/admin/fragments/downloads")[1].decode(),
            lambda page: '<span class="streaming">3 clients streaming</span>' in page,
            what="three clients streaming",
        )
        assert metrics(host)["withcache_streaming_clients"] == 3
        host.stop()
        codes = [r.wait(timeout=30) for r in readers]
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
            r.wait()
            r.stderr.close()
    assert all(code != 0 for code in codes), codes


def test_a_tls_listener_streams_a_fill_with_chunks_read_off_the_reactor(origin, tmp_path):
    """No sendfile through TLS: the streaming reader reads the fill's file chunk by chunk."""
    ca = make_test_ca(tmp_path / "ca")
    listen = f"ssl:0:interface=127.0.0.1:privateKey={ca.key_pem}:certKey={ca.cert_pem}"
    host = start_host(tmp_path / "data", "--allow-private", "--listen", listen)
    try:
        size = 6 * MB
        url = f"{origin.base}/f/{size}/14/tls.bin?rate={3 * MB}"
        blob = host.blob_url(url).replace("http://", "https://")
        tls = ("--cacert", str(ca.ca_pem))
        assert curl(*tls, "-I", blob).stdout.startswith(b"HTTP/1.1 200")
        with ThreadPoolExecutor(4) as pool:
            whole = [pool.submit(curl, *tls, "-f", blob) for _ in range(3)]
            ranged = pool.submit(curl, *tls, "-f", "-r", "5000000-5000099", blob)
            bodies = [w.result(timeout=60).stdout for w in whole]
            part = ranged.result(timeout=60).stdout
        assert {sha(b) for b in bodies} == {payload_sha256(size, 14)}
        assert part == payload(size, 14, 5_000_000, 5_000_100)
        assert origin.gets("/f/6000000/14/tls.bin") == 1
    finally:
        host.stop()
    assert_clean_log(host)


def test_clients_that_hang_up_mid_stream_cost_the_fill_nothing(origin, host):
    size = 8 * MB
    url = f"{origin.base}/f/{size}/15/hangup.bin?rate={4 * MB}"
    blob = host.blob_url(url)
    assert head(blob)["status"] == "200"
    path = blob[len(host.url) :]
    port = int(host.url.rsplit(":", 1)[1])
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(65536)  # the answer has begun; then the client is gone
    eventually(lambda: metrics(host)["withcache_streaming_clients"], lambda n: n == 0)
    eventually(lambda: job(host)["state"], lambda s: s == "completed", timeout=30)
    assert sha(curl("-f", blob).stdout) == payload_sha256(size, 15)
    assert origin.gets("/f/8000000/15/hangup.bin") == 1
