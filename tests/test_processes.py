"""--processes: serving workers beside the host on its listening socket, end to end."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import (
    artifacts_by_key,
    assert_clean_log,
    db,
    db_write,
    eventually,
    rss_kib,
    start_host,
    write_file,
)

ORIGIN = "https://vendor.example.com/doca/doca-host.deb"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=60)


@pytest.fixture
def pair(tmp_path):
    """A curating host with one serving worker, JSON logs, and one 300 KiB artifact."""
    host = start_host(tmp_path / "data", "--curate", "--processes", "2", "--log-format", "json")
    try:
        data = write_file(tmp_path / "a.bin", 300 * 1024 + 7).read_bytes()
        host.seed(ORIGIN, tmp_path / "a.bin")
        host.wait_for_log("started 1 serving workers")
        yield host, data
    finally:
        host.stop()


def events(host) -> list[dict]:
    return [json.loads(line) for line in host.log().splitlines() if line.startswith("{")]


def test_a_worker_answers_hits_and_the_host_counts_them(pair):
    host, data = pair
    url = host.blob_url(ORIGIN, "a.bin")

    def answered_by_worker() -> list[dict]:
        return [e for e in events(host) if e.get("worker") and e.get("method") == "GET"]

    # Which process accepts a connection is the kernel's choice (an idle host often wins):
    # concurrent rounds of new connections until the worker has taken some, 10 rounds at most.
    sent = 0
    for _ in range(10):
        with ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(lambda _: curl("-f", url).stdout, range(60)))
        sent += len(bodies)
        assert {hashlib.sha256(b).hexdigest() for b in bodies} == {hashlib.sha256(data).hexdigest()}
        time.sleep(0.3)  # the worker's log events reach the host's log through a pipe
        if answered_by_worker():
            break
    assert answered_by_worker(), f"no GET of {sent} was answered by the worker"
    hits = eventually(lambda: artifacts_by_key(host.data_dir)[ORIGIN]["hits"], lambda n: n >= sent)
    assert hits == sent
    status, metrics = host.get("/metrics")
    assert status == 200 and f"withcache_hits_total {sent}.0".encode() in metrics


def test_whatever_lands_on_a_worker_gets_the_hosts_answer(pair):
    host, _data = pair
    miss = host.blob_url(ORIGIN + ".missing", "x")

    def answers(_):
        return (
            curl("-o", "/dev/null", "-w", "%{http_code}", miss).stdout,
            curl("-f", f"{host.url}/healthz").stdout,
            curl("-f", "-o", "/dev/null", "-w", "%{http_code}", f"{host.url}/").stdout,
            curl("-o", "/dev/null", "-w", "%{http_code}", f"{host.url}/b/!!/x").stdout,
        )

    with ThreadPoolExecutor(6) as pool:
        seen = set(pool.map(answers, range(40)))
    assert len(seen) == 1
    ((miss_status, health, page, bad),) = seen
    assert (miss_status, page, bad) == (b"404", b"200", b"400")
    assert json.loads(health)["status"] == "ok"
    (count,) = db(host.data_dir, "SELECT count FROM misses WHERE key = ?", ORIGIN + ".missing")
    assert count == (40,)  # each forwarded miss recorded once, by the host


def header_lines(out: bytes, name: str) -> list[str]:
    """The values of one header in `curl -D -` output (one response)."""
    prefix = name.lower() + ":"
    lines = out.decode("latin-1").split("\r\n")
    return [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith(prefix)]


def test_answers_a_worker_gives_or_passes_on_are_sandboxed_once(pair, tmp_path):
    """Issue 13, finding 1, on the worker path: a hit the worker serves itself (from its index
    or after asking the catalog) and an answer it passes on from the host both carry one
    sandbox policy and one nosniff; an HTML artifact goes out as application/octet-stream."""
    host, _data = pair
    page = b"<script>document.title = 'ran'</script>"
    html = "https://evil.example/page.html"
    (tmp_path / "page.html").write_bytes(page)
    host.seed(html, tmp_path / "page.html", "--content-type", "text/html")
    hit = host.blob_url(html, "page.html")
    asks = [
        ("-D", "-", hit),
        ("-D", "-", "-r", "0-9", hit),
        ("-I", hit),
        ("-D", "-", "-H", "If-None-Match: *", hit),
        ("-D", "-", host.blob_url(html + ".missing", "x")),
        ("-D", "-", f"{host.url}/b/!!/x"),
    ]

    def answers(_):
        return [curl(*ask).stdout for ask in asks]

    for _ in range(10):
        with ThreadPoolExecutor(8) as pool:
            rounds = list(pool.map(answers, range(24)))
        for outs in rounds:
            for out in outs:
                assert header_lines(out, "Content-Security-Policy") == [
                    "sandbox; default-src 'none'"
                ], out
                assert header_lines(out, "X-Content-Type-Options") == ["nosniff"], out
            assert header_lines(outs[0], "Content-Type") == ["application/octet-stream"]
            assert outs[0].endswith(page)
        time.sleep(0.3)  # the worker's log events reach the host's log through a pipe
        if any(e.get("worker") and e.get("status") == 200 for e in events(host)):
            break
    assert any(e.get("worker") and e.get("status") == 200 for e in events(host))


def test_a_worker_that_dies_is_replaced_and_a_dead_host_takes_its_workers_along(tmp_path):
    host = start_host(tmp_path / "data", "--curate", "--processes", "2")
    try:
        host.wait_for_log("started 1 serving workers")
        (worker,) = eventually(lambda: children(host.pid), lambda pids: len(pids) == 1)
        os.kill(worker, signal.SIGKILL)
        host.wait_for_log("starting another")
        (replacement,) = eventually(
            lambda: [p for p in children(host.pid) if alive(p)],
            lambda pids: len(pids) == 1 and pids[0] != worker,
        )
        assert host.get("/healthz")[0] == 200
        host.stop(signal.SIGKILL)
        eventually(
            lambda: alive(replacement), lambda up: not up, what="the worker ends with its host"
        )
    finally:
        host.stop()


def test_hits_a_worker_counted_are_written_when_the_host_stops(pair):
    host, _data = pair
    url = host.blob_url(ORIGIN, "a.bin")
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(lambda _: curl("-o", "/dev/null", "-w", "%{http_code}", url), range(60))
        )
    assert {c.stdout for c in codes} == {b"200"}
    host.stop()
    assert artifacts_by_key(host.data_dir)[ORIGIN]["hits"] == 60
    assert any(e.get("worker") for e in events(host))


def rss_mib(pid: int) -> float:
    return rss_kib(pid) / 1024


def test_big_hits_by_either_route_stream_from_the_worker_without_buffering(tmp_path):
    host = start_host(tmp_path / "data", "--curate", "--processes", "2")
    try:
        size = 48 * 1024 * 1024 + 1
        digest = host.seed(ORIGIN, write_file(tmp_path / "big.bin", size))
        host.wait_for_log("started 1 serving workers")
        (worker,) = eventually(lambda: children(host.pid), lambda pids: len(pids) == 1)
        before = {pid: rss_mib(pid) for pid in (host.pid, worker)}
        urls = [host.blob_url(ORIGIN, "big.bin"), f"{host.url}/blob?url={ORIGIN}"] * 6
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda u: curl("-f", u), urls))
        assert {hashlib.sha256(o.stdout).hexdigest() for o in outs} == {digest}
        growth = {pid: rss_mib(pid) - mib for pid, mib in before.items()}
        assert max(growth.values()) < 24, growth
    finally:
        host.stop()


def hang_up_at_once(port: int, request: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)


def test_clients_that_hang_up_at_once_leave_no_traceback_in_the_hosts_log(tmp_path):
    """Issue 20, item 5: a forwarded request whose client has gone is dropped quietly (and its
    upstream transfer with it), however often it happens."""
    host = start_host(tmp_path / "data", "--curate", "--processes", "3")
    try:
        host.wait_for_log("started 2 serving workers")
        port = int(host.url.rsplit(":", 1)[1])
        miss = host.blob_url(ORIGIN + ".missing", "x").split(str(port), 1)[1]
        requests = [
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            f"HEAD {miss} HTTP/1.1\r\nHost: h\r\n\r\n".encode(),
        ]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: hang_up_at_once(port, requests[n % 2]), range(300)))
        # Every process still answers (new connections land on any of the three).
        with ThreadPoolExecutor(6) as pool:
            codes = set(pool.map(lambda _: host.get("/healthz")[0], range(30)))
        assert codes == {200}
        # The host has recorded the misses it was handed; their answers had nowhere to go.
        eventually(
            lambda: db(host.data_dir, "SELECT count FROM misses"),
            lambda rows: rows and rows[0][0] > 0,
            what="a forwarded miss recorded",
        )
        host.stop()
        assert_clean_log(host)
    finally:
        host.stop()


def chunked_post(port: int) -> bytes:
    """A chunked POST (the login form) and the status line of its answer."""
    body = b"password=wrong"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /login HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n"
            % (len(body), body)
        )
        answer = b""
        while b"\r\n" not in answer:
            data = s.recv(4096)
            if not data:
                break
            answer += data
    return answer.split(b"\r\n", 1)[0]


def test_chunked_requests_through_workers_are_answered(pair):
    """Issue 13, finding 10: a worker forwarded a de-chunked body still labelled chunked, and the
    host waited for chunks that never came."""
    host, _data = pair
    port = int(host.url.rsplit(":", 1)[1])
    with ThreadPoolExecutor(6) as pool:
        lines = list(pool.map(lambda _: chunked_post(port), range(30)))
    assert all(line.startswith(b"HTTP/1.1 ") and b" 5" not in line for line in lines), lines


def test_a_worker_answers_hostile_ranges_and_a_bad_stored_content_type_as_the_host_does(pair):
    """The workers serve hits with the host's own read path: the same range limits and the same
    check of a stored Content-Type (a bad one was a 500 that left the blob open)."""
    host, data = pair
    db_write(host.data_dir, "UPDATE artifacts SET content_type = ?", "text/plain; charset=\xe9")
    url = host.blob_url(ORIGIN, "a.bin")
    shapes = [
        "bytes=" + ",".join(["0-"] * 500),  # over the limit: the whole blob
        "bytes=" + ",".join(["0-"] * 150),  # coalesced into one range
        "bytes=0-9,5-19",  # coalesced too
        "bytes=0-0,100-100",  # two parts
    ]

    def answer(n: int) -> tuple[str, int, bytes]:
        out = curl("-D", "/dev/stderr", "-H", f"Range: {shapes[n % len(shapes)]}", url)
        head = out.stderr.decode("latin-1").lower()
        return head.split("content-type: ")[1].split("\r\n")[0], len(out.stdout), out.stdout

    def answered_by_worker() -> list[dict]:
        return [e for e in events(host) if e.get("worker") and e.get("method") == "GET"]

    for _ in range(10):
        with ThreadPoolExecutor(16) as pool:
            seen = list(pool.map(answer, range(60)))
        assert all(length <= len(data) for _ctype, length, _body in seen)
        assert {(ctype, body) for ctype, _length, body in seen if "multipart" not in ctype} == {
            ("application/octet-stream", data),
            ("application/octet-stream", data[:20]),
        }
        parts = [body for ctype, _length, body in seen if "multipart" in ctype]
        assert len(parts) == 15
        assert all(b.count(b"Content-Type: application/octet-stream\r\n") == 2 for b in parts)
        time.sleep(0.3)  # the worker's log events reach the host's log through a pipe
        if answered_by_worker():
            break
    assert answered_by_worker()
    assert all(e["status"] in (200, 206) for e in events(host) if e.get("method") == "GET")
