"""End to end fills: the real host under twistd, the real curl, the Twisted origin as a process."""

from __future__ import annotations

import hashlib
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import support
from tests.support import (
    Host,
    admin_json,
    assert_clean_log,
    db,
    eventually,
    metrics,
    payload_sha256,
    start_host,
    wait_for_hit,
)

origin = support.origin_process  # the `origin` fixture here: tests/origin.py in a process


@pytest.fixture
def open_host(tmp_path):
    """A host that may fetch from 127.0.0.1 (tests have no public origin to use). A miss
    answers at once (--stream-wait 0): these tests are about fills; tests/test_streaming_e2e.py
    is about clients streaming them."""
    running = start_host(tmp_path / "data", "--allow-private", "--stream-wait", "0")
    yield running
    running.stop()
    assert_clean_log(running)


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=120)


def status(url: str, *extra: str) -> int:
    return int(curl("-o", "/dev/null", "-w", "%{http_code}", *extra, url).stdout)


def jobs(host: Host) -> list[dict]:
    return admin_json(host.data_dir, "jobs")


def test_concurrent_probes_and_gets_of_a_miss_make_one_origin_get_then_all_hit(origin, open_host):
    # A slow origin (about 10 s for the fill), so every probe below lands while it runs: a 404
    # until the fill's headers are in, then 200s streamed from the fill.
    url = f"{origin.base}/f/2000000/1/cuda.run?rate=200000"
    blob = open_host.blob_url(url, "cuda.run")
    with ThreadPoolExecutor(max_workers=32) as pool:
        codes = list(pool.map(lambda i: status(blob, *(["-I"] if i % 2 else [])), range(100)))
    assert set(codes) <= {200, 404} and 404 in codes
    streamed = sum(1 for i, code in enumerate(codes) if code == 200 and i % 2 == 0)
    wait_for_hit(open_host, url)
    with ThreadPoolExecutor(max_workers=8) as pool:
        bodies = list(pool.map(lambda _: curl("-f", blob).stdout, range(8)))
    assert {hashlib.sha256(b).hexdigest() for b in bodies} == {payload_sha256(2000000, 1)}
    assert origin.gets("/f/2000000/1/cuda.run") == 1
    ((misses, hits),) = eventually(
        lambda: db(open_host.data_dir, "SELECT misses, hits FROM artifacts"),
        lambda rows: rows[0][1] >= 8 + streamed,
    )
    # wait_for_hit's own probes may add a 404 or two while the fill is not yet committed.
    assert hits == 8 + streamed and misses >= codes.count(404)


def test_finding6_a_credential_in_the_query_is_a_400_and_nothing_is_recorded_or_fetched(
    origin, open_host
):
    private = f"{origin.base}/f/3000/4/private.run?version=2&access_token=SECRET"
    for path in (
        open_host.blob_url(private)[len(open_host.url) :],
        "/blob?url=" + private.replace("?", "%3F").replace("&", "%26"),
    ):
        out = curl("-D", "/dev/stderr", "-I", open_host.url + path)
        assert out.stderr.startswith(b"HTTP/1.1 400"), out.stderr
        out = curl(open_host.url + path)
        assert out.stdout.count(b"\n") == 1 and b"credentials" in out.stdout
        assert b"SECRET" not in out.stdout
    # A fill of another URL as the barrier: a miss or job the refused requests had recorded
    # would be in the catalog before this one's.
    plain = f"{origin.base}/f/1000/5/public.run?version=2"
    assert status(open_host.blob_url(plain), "-I") == 404
    wait_for_hit(open_host, plain)
    assert [j["url"] for j in jobs(open_host)] == [plain]
    assert db(open_host.data_dir, "SELECT url FROM misses UNION ALL SELECT url FROM artifacts") == [
        (plain,)
    ]
    assert [s["path"] for s in origin.seen()] == ["/f/1000/5/public.run"]


def test_default_policy_refuses_a_loopback_origin_and_the_read_path_stays_404(origin, tmp_path):
    host = start_host(tmp_path / "data")
    try:
        url = f"{origin.base}/f/1000/2/x"
        assert status(host.blob_url(url), "-I") == 404
        (job,) = eventually(
            lambda: jobs(host), lambda js: [j for j in js if j["state"] == "failed"], 60
        )
        assert "127.0.0.1 is not a public address" in job["error"]
        assert status(host.blob_url(url)) == 404
        assert origin.seen() == []
    finally:
        host.stop()
    assert_clean_log(host)


def test_kill_9_mid_fill_then_restart_completes_the_job_with_nothing_bad_kept(origin, tmp_path):
    size = 256 * 1024 * 1024
    url = f"{origin.base}/f/{size}/3/rocm.tar?rate=60000000"
    host = start_host(tmp_path / "data", "--allow-private", "--stream-wait", "0")
    assert status(host.blob_url(url), "-I") == 404
    tmp = host.data_dir / "tmp"
    eventually(
        lambda: any(f.stat().st_size > size * 0.3 for f in tmp.iterdir()),
        timeout=60,
        what="the fill gets going",
        every=0.05,
    )
    partial = {f.name for f in tmp.iterdir()}
    assert host.stop(signal.SIGKILL) == -signal.SIGKILL
    assert db(host.data_dir, "SELECT COUNT(*) FROM artifacts") == [(0,)]
    assert [(j["state"], j["url"]) for j in jobs(host)] == [("running", url)]

    again = start_host(host.data_dir, "--allow-private")
    try:
        again.wait_for_log("1 fills resumed")
        assert not partial & {f.name for f in tmp.iterdir()}
        wait_for_hit(again, url)
        out = subprocess.run(
            ["curl", "-sSf", again.blob_url(url)], capture_output=True, timeout=120
        )
        assert hashlib.sha256(out.stdout).hexdigest() == payload_sha256(size, 3)
        assert [j["state"] for j in jobs(again)] == ["completed"]
        assert db(again.data_dir, "PRAGMA integrity_check") == [("ok",)]
        assert list(tmp.iterdir()) == []
    finally:
        again.stop()
    assert_clean_log(again)


def test_metrics_move_with_misses_fills_and_hits(origin, open_host):
    before = metrics(open_host)
    assert before["withcache_hits_total"] == 0 and before["withcache_artifacts"] == 0
    url = f"{origin.base}/f/100000/4/fw.bin"
    assert status(open_host.blob_url(url), "-I") == 404
    wait_for_hit(open_host, url)
    assert curl("-f", "-o", "/dev/null", open_host.blob_url(url)).returncode == 0
    assert curl("-f", "-r", "0-999", "-o", "/dev/null", open_host.blob_url(url)).returncode == 0
    after = metrics(open_host)
    assert after["withcache_misses_total"] >= 1
    assert after["withcache_fills_total{outcome=completed}"] == 1
    assert after["withcache_fill_duration_seconds_count{outcome=completed}"] == 1
    assert after["withcache_origin_fetched_bytes_total"] == 100000
    assert after["withcache_hits_total"] == 2
    assert after["withcache_served_bytes_total"] == 100000 + 1000
    assert (after["withcache_artifacts"], after["withcache_cache_bytes"]) == (1, 100000)
    assert after["withcache_fill_jobs{state=running}"] == 0


def test_unbounded_fill_queue_misses_past_the_bounds_are_refused_jobs(origin, tmp_path):
    """Issue 13, finding 9: one client naming many URLs gets its share of fills, the rest are
    refused jobs with a reason, every miss is still a 404, and the host says at start that it
    has no capacity set."""
    host = start_host(
        tmp_path / "data",
        "--allow-private",
        "--workers",
        "1",
        "--max-fills-per-client",
        "3",
        "--stream-wait",
        "0",
    )
    try:
        urls = [f"{origin.base}/f/500000/{i}/slow-{i}.bin?rate=100000" for i in range(8)]
        assert {status(host.blob_url(url), "-I") for url in urls} == {404}
        states = eventually(
            lambda: sorted(j["state"] for j in jobs(host)),
            lambda found: len(found) == 8,
            what="eight jobs",
        )
        assert states.count("refused") == 5
        refused = [j for j in jobs(host) if j["state"] == "refused"]
        assert {j["error"] for j in refused} == {
            "refused: 127.0.0.1 already has 3 fills queued or running (--max-fills-per-client)"
        }
        assert "no --max-bytes" in host.log()
    finally:
        host.stop()
    assert_clean_log(host)
