"""Load: 200 concurrent clients mix probes, downloads, ranges, misses and operator page loads.

A warm-up run first (so caches, pools and the allocator have their working size), then the
measured run. Every answer must be the one its kind expects (tests.reliability.loadgen's
EXPECTED), every miss must turn into a completed fill, and afterwards the host must be back to
its file descriptor count and within RSS_SLACK_KIB of its memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.reliability.common import percentile, wait_until
from tests.reliability.loadgen import EXPECTED
from tests.support import (
    MIB,
    assert_clean_log,
    fd_count,
    metrics,
    payload_sha256,
    start_host,
    token,
    write_file,
)

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 200
ARTIFACTS = [(64 * 1024, 11), (MIB, 12), (4 * MIB, 13)]  # (size, seed) of the hits
ADMIN_PATHS = [
    "/",
    "/admin/fragments/stats",
    "/admin/fragments/downloads",
    "/admin/fragments/misses",
    "/admin/fragments/artifacts",
    "/static/pico.min.css",
]
# Sockets come and go with clients; allow a few for the origin connection pool and timing.
FD_SLACK = 8
# After warm-up the heap has its working size; more growth than this over one run is a leak
# (200 clients each holding a 64 KiB read buffer and a transport buffer is ~25 MiB at worst).
RSS_SLACK_KIB = 32 * 1024
WEIGHTS = {
    "head": 20,
    "get": 10,
    "range": 20,
    "revalidate": 5,
    "miss": 5,
    "admin": 5,
    "healthz": 10,
}


@pytest.fixture(scope="module")
def loaded_host(tmp_path_factory, origin):
    tmp = tmp_path_factory.mktemp("load")
    # 200 clients that all come from 127.0.0.1, and every miss must be filled: no fill bounds.
    host = start_host(
        tmp / "data",
        "--allow-private",
        "--workers",
        "4",
        "--max-queued",
        "0",
        "--max-fills-per-client",
        "0",
        # A miss answers 404 at once (the load's "miss" expects it), not after a wait.
        "--stream-wait",
        "0",
    )
    artifacts = []
    for size, seed in ARTIFACTS:
        url = f"https://vendor.example/load/{size}-{seed}.bin"
        sha256 = host.seed(url, write_file(tmp / f"{seed}.bin", size, seed))
        assert sha256 == payload_sha256(size, seed)
        path = f"/b/{token(url)}/{seed}.bin"
        artifacts.append({"path": path, "size": size, "seed": seed, "sha256": sha256})
    host.artifacts = artifacts
    yield host
    host.stop()
    assert_clean_log(host)


def run_load(host, origin, seconds: float, seed: int) -> dict:
    config = {
        "host": "127.0.0.1",
        "port": int(host.url.rsplit(":", 1)[1]),
        "clients": CLIENTS,
        "duration": seconds,
        "seed": seed,
        "artifacts": host.artifacts,
        "miss_base": f"{origin.base}/f/4096/21/miss-",
        "admin_paths": ADMIN_PATHS,
        "weights": WEIGHTS,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.reliability.loadgen"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=seconds + 180,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class HealthProbe(threading.Thread):
    """GET /healthz every 20 ms on a new connection, from outside the load generator."""

    def __init__(self, host):
        super().__init__(daemon=True)
        self.host = host
        self.stopping = threading.Event()
        self.latencies: list[float] = []
        self.statuses: list[int | str] = []

    def run(self) -> None:
        while not self.stopping.wait(0.02):
            started = time.monotonic()
            try:
                status, _ = self.host.get("/healthz", timeout=30)
            except OSError as e:  # URLError included: recorded, and failed on below
                status = f"{type(e).__name__}: {e}"
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(status)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)
        assert not self.is_alive()


def fills(host) -> tuple[int, int, int]:
    """(completed, failed, active) fill jobs, from /metrics."""
    m = metrics(host)
    active = m["withcache_fill_jobs{state=queued}"] + m["withcache_fill_jobs{state=running}"]
    completed = m.get("withcache_fills_total{outcome=completed}", 0)
    return int(completed), int(m.get("withcache_fills_total{outcome=failed}", 0)), int(active)


def settled(host) -> tuple[int, int]:
    """(fds, RSS KiB) once every fill is done and the client sockets are gone."""
    wait_until(lambda: fills(host)[2] == 0, 180, "the fills queued by misses finish")
    fds: list[int] = []

    def steady() -> bool:
        fds.append(fd_count(host.pid))
        return len(fds) >= 5 and max(fds[-5:]) == min(fds[-5:])

    wait_until(steady, 30, "the host's fd count settles")
    return fds[-1], host.rss_kib()


def test_200_clients_get_only_expected_answers_and_the_host_leaks_nothing(
    loaded_host, origin, form, figures
):
    host = loaded_host
    warm = run_load(host, origin, 3, seed=1)
    assert warm["unexpected_count"] == 0, warm["unexpected"]
    fds_before, rss_before = settled(host)
    completed_before, failed_before, _ = fills(host)

    probe = HealthProbe(host)
    probe.start()
    started = time.monotonic()
    try:
        result = run_load(host, origin, form.load_seconds, seed=2)
    finally:
        probe.stop()
    elapsed = time.monotonic() - started

    assert result["unexpected_count"] == 0, result["unexpected"]
    assert result["statuses"] == {
        kind: {str(EXPECTED[kind]): result["statuses"][kind][str(EXPECTED[kind])]}
        for kind in WEIGHTS
    }
    assert set(probe.statuses) == {200}
    # Every miss queued a fill of its own, and every one of them completed.
    fds_after, rss_after = settled(host)
    completed, failed, _ = fills(host)
    assert (completed - completed_before, failed - failed_before) == (len(result["misses"]), 0)
    for url in (result["misses"][0], result["misses"][-1]):
        assert host.get(f"/b/{token(url)}/miss.bin")[0] == 200
    assert fds_after <= fds_before + FD_SLACK, (fds_before, fds_after)
    assert rss_after - rss_before <= RSS_SLACK_KIB, (rss_before, rss_after)

    figures["load"] = {
        "clients": CLIENTS,
        "seconds": form.load_seconds,
        "requests": result["requests"],
        "requests_per_s": round(result["requests"] / elapsed),
        "statuses": result["statuses"],
        "mib_read": round(result["bytes"] / MIB),
        "misses_filled": len(result["misses"]),
        "healthz_probe_ms": {
            "n": len(probe.latencies),
            "p50": round(percentile(probe.latencies, 0.5) * 1000, 1),
            "p99": round(percentile(probe.latencies, 0.99) * 1000, 1),
        },
        "healthz_in_load_ms": {k: round(v, 1) for k, v in result["latency_ms"]["healthz"].items()},
        "latency_p99_ms": {k: round(v["p99"], 1) for k, v in result["latency_ms"].items()},
        "fds": {"before": fds_before, "after": fds_after},
        "rss_kib": {"before": rss_before, "after": rss_after},
    }
