"""Slow clients: 50 readers at 10 KiB/s must not slow a fast 256 MiB download by more than 20 %.

The host streams blobs with pull producers, so a reader that takes its time holds one buffer
and not the reactor. The fast download is timed with curl (a process of its own), as the median
of RUNS, once without and once with the slow readers connected; on a noisy machine a ratio over
the bound is measured a second time before the test fails.
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import threading
import time

import pytest

from tests.reliability.common import wait_until
from tests.support import MIB, assert_clean_log, start_host, token, write_file

BIG = 256 * MIB
SLOW_CLIENTS = 50
SLOW_RATE = 10 * 1024  # bytes/s per slow reader
RUNS = 5
BOUND = 1.20  # the "no more than 20 % slower"
RSS_SLACK_KIB = 32 * 1024  # 50 connections may each hold a file read and a transport buffer


@pytest.fixture(scope="module")
def big_host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    host = start_host(tmp / "data")
    url = "https://vendor.example/slow/big.iso"
    host.seed(url, write_file(tmp / "big.iso", BIG, 31))
    (tmp / "big.iso").unlink()
    host.big_path = f"/b/{token(url)}/big.iso"
    yield host
    host.stop()
    assert_clean_log(host)


class SlowReader(threading.Thread):
    """GETs the big blob over a socket with a tiny receive buffer, reading SLOW_RATE bytes/s."""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.stopping = threading.Event()
        self.head = b""
        self.received = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(30)
                sock.connect(("127.0.0.1", self.port))
                sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                started = time.monotonic()
                while not self.stopping.is_set():
                    chunk = sock.recv(1024)
                    if not chunk:
                        raise ConnectionError("the host closed a slow reader's connection")
                    if len(self.head) < 64:
                        self.head += chunk[:64]
                    self.received += len(chunk)
                    # Pace: wait until this many bytes are due at SLOW_RATE.
                    self.stopping.wait(self.received / SLOW_RATE - (time.monotonic() - started))
        except BaseException as e:
            self.error = e


def fast_download(url: str) -> float:
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}"]
        + [url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    code, size, seconds = out.stdout.split()
    assert (code, int(size)) == ("200", BIG), out
    return float(seconds)


def one_round(host) -> dict:
    """Median fast download time without, then with, the slow readers; and the host's RSS."""
    url = host.url + host.big_path
    port = int(host.url.rsplit(":", 1)[1])
    rss_before = host.rss_kib()
    baseline = statistics.median(fast_download(url) for _ in range(RUNS))
    readers = [SlowReader(port, host.big_path) for _ in range(SLOW_CLIENTS)]
    for reader in readers:
        reader.start()
    try:
        wait_until(
            lambda: all(r.head.startswith(b"HTTP/1.1 200") for r in readers),
            30,
            "every slow reader has its 200",
        )
        started = time.monotonic()
        times, rss = [], []
        for _ in range(RUNS):
            times.append(fast_download(url))
            rss.append(host.rss_kib())
        slow_seconds = time.monotonic() - started
    finally:
        for reader in readers:
            reader.stopping.set()
        for reader in readers:
            reader.join(timeout=60)
    assert [r.error for r in readers] == [None] * SLOW_CLIENTS
    # They really were reading all along, and no faster than asked.
    slowest = min(r.received for r in readers)
    fastest = max(r.received for r in readers)
    assert slowest > 0 and fastest <= SLOW_RATE * (slow_seconds + 35), (slowest, fastest)
    with_slow = statistics.median(times)
    return {
        "baseline_s": round(baseline, 3),
        "with_slow_s": round(with_slow, 3),
        "ratio": round(with_slow / baseline, 3),
        "rss_kib": {"before": rss_before, "peak_with_slow": max(rss)},
        "slow_bytes_read": {"min": slowest, "max": fastest},
    }


def test_fifty_slow_readers_do_not_slow_a_fast_download_by_more_than_20_percent(big_host, figures):
    rounds = [one_round(big_host)]
    if rounds[0]["ratio"] > BOUND:
        rounds.append(one_round(big_host))  # once more, in case the machine was busy
    figures["slow_clients"] = {"clients": SLOW_CLIENTS, "rate_bps": SLOW_RATE, "rounds": rounds}
    last = rounds[-1]
    assert last["ratio"] <= BOUND, rounds
    assert last["rss_kib"]["peak_with_slow"] - last["rss_kib"]["before"] <= RSS_SLACK_KIB, rounds
