"""The serve bench's pressure checks on one host: many big readers, slow readers, cold reads.

Each returns figures for the report: the host's RSS growth while 32 clients each read the big
blob, the growth while slow clients trickle it, and /healthz latency while readers pull a blob
that is not in the page cache (caches dropped, which needs root).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from _common import MIB, BenchError, median, proc_status


@dataclass
class Sampler:
    """Calls fn every interval seconds on a thread until stopped; keeps the values."""

    fn: Callable[[], float]
    interval: float
    values: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.values.append(self.fn())
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def total_rss(pids: Callable[[], list[int]]) -> int:
    """VmRSS summed over the host's processes (it and its serving workers), in bytes."""
    return sum(proc_status(pid, "VmRSS") for pid in pids())


def download_all(url: str, size: int, readers: int) -> float:
    """Wall seconds for `readers` curl clients to download url at once, each checked whole."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url]
    start = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(readers)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    wall = time.perf_counter() - start
    if any(out.split() != ["200", str(size)] for out in outs):
        raise BenchError(f"{readers} readers: not every download was a whole 200: {outs}")
    return wall


def many_readers(
    pids: Callable[[], list[int]], url: str, size: int, readers: int = 32
) -> dict[str, float]:
    """RSS growth of the host while `readers` curl clients download the blob at once."""
    before = total_rss(pids)
    with Sampler(lambda: total_rss(pids), 0.1) as rss:
        wall = download_all(url, size, readers)
    return {
        "readers": readers,
        "rss_before_mib": before / MIB,
        "rss_growth_mib": (max(rss.values) - before) / MIB,
        "aggregate_mb_s": readers * size / wall / 1e6,
    }


def _trickle(url: str, rate: int, seconds: float, got: list[int]) -> None:
    """One client reading a response at `rate` bytes/s with a small receive buffer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.sendall(f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        step, total, deadline = max(rate // 10, 1), 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            chunk = sock.recv(step)
            if not chunk:
                break
            total += len(chunk)
            time.sleep(len(chunk) / rate)
    got.append(total)


def slow_readers(
    pids: Callable[[], list[int]],
    url: str,
    clients: int = 50,
    rate: int = 10 << 10,
    seconds: float = 8,
) -> dict[str, float]:
    """RSS growth of the host while `clients` read the blob at `rate` bytes/s each."""
    before = total_rss(pids)
    got: list[int] = []
    with Sampler(lambda: total_rss(pids), 0.1) as rss:
        threads = [
            threading.Thread(target=_trickle, args=(url, rate, seconds, got))
            for _ in range(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if len(got) != clients or min(got) == 0:
        raise BenchError(f"slow readers: some read nothing ({sorted(got)[:5]}...)")
    return {
        "clients": clients,
        "rate_kib_s": rate / 1024,
        "rss_growth_mib": (max(rss.values) - before) / MIB,
        "read_mib_each": median(got) / MIB,
    }


def _healthz_ms(url: str) -> Callable[[], float]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    def probe() -> float:
        start = time.perf_counter()
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise BenchError(f"/healthz answered {response.status}")
        return (time.perf_counter() - start) * 1000

    return probe


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cold_reads(host_url: str, url: str, size: int, readers: int = 4) -> dict[str, float]:
    """/healthz latency (ms) on a quiet host, then while `readers` download a blob that has
    just been dropped from the page cache. Needs root (drop_caches)."""
    with Sampler(_healthz_ms(host_url), 0.02) as idle:
        time.sleep(2)
    drop_caches()
    with Sampler(_healthz_ms(host_url), 0.02) as busy:
        wall = download_all(url, size, readers)
    return {
        "readers": readers,
        "cold_mb_s": readers * size / wall / 1e6,
        "idle_p50_ms": median(idle.values),
        "idle_p99_ms": quantile(idle.values, 0.99),
        "p50_ms": median(busy.values),
        "p99_ms": quantile(busy.values, 0.99),
        "max_ms": max(busy.values),
        "probes": len(busy.values),
    }
