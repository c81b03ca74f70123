"""Several cache-hosts on one catalog, end to end: `twistd -n withcache` processes sharing a
catalog and a blob store (a SQLite file and a data dir; a real PostgreSQL and that data dir; a
real PostgreSQL and a real SeaweedFS bucket, each host with a local cache of its own), the
Twisted origin as a process, real curl through the shims. One fill per key across the hosts,
misses relayed to the filling host's stream, and failover after kill -9."""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import support
from tests.cluster_support import LEASE, s3_store, start_cluster
from tests.engines.seaweedfs import seaweedfs
from tests.shim.conftest import clean_env, shim_command
from tests.support import OriginProcess, eventually, payload_sha256, wait_for_hit

MB = 1_000_000

origin = support.origin_process  # tests/origin.py in a process of its own
__all__ = ["seaweedfs"]  # the session's SeaweedFS, a fixture of the tests here


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+s3"])
def shared(request) -> dict:
    """What the hosts share, as start_cluster's arguments: the SQLite file in one data dir; a
    PostgreSQL database and that data dir; a PostgreSQL database and a SeaweedFS bucket."""
    if request.param == "sqlite":
        return {}
    found = {"catalog": request.getfixturevalue("postgres_url")}
    if request.param.endswith("+s3"):
        server = request.getfixturevalue("seaweedfs")
        found.update(s3_store(server, server.bucket()))
    return found


@pytest.fixture
def cluster3(tmp_path, shared):
    running = start_cluster(tmp_path, 3, **shared)
    yield running
    running.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def curl_body(url: str) -> bytes:
    done = subprocess.run(["curl", "-sSf", url], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def shim_curl(server: str, url: str, out) -> subprocess.CompletedProcess:
    env = clean_env(WITHCACHE_SERVER=server)
    command = [*shim_command("curl"), "-sS", "-o", str(out), url]
    return subprocess.run(command, env=env, capture_output=True, timeout=180)


def test_a_fill_on_one_host_is_a_hit_on_the_others(origin, cluster3):
    size = 3 * MB
    url = f"{origin.base}/f/{size}/3/driver.run"
    first, *others = cluster3.hosts
    assert sha(curl_body(first.blob_url(url))) == payload_sha256(size, 3)  # streamed as filled
    wait_for_hit(first, url)
    for host in others:
        headers = wait_for_hit(host, url, timeout=30)
        assert headers["x-withcache-sha256"] == payload_sha256(size, 3)
        assert sha(curl_body(host.blob_url(url))) == payload_sha256(size, 3)
    assert origin.gets(f"/f/{size}/3/driver.run") == 1
    # The miss that filled it and the hits on the other hosts count on the one shared row
    # (hits batched, a second late).
    eventually(
        lambda: cluster3.query("SELECT hits, misses FROM artifacts"),
        lambda rows: rows == [(2, 1)],
        what="the other hosts' hits and the first host's miss on the shared row",
    )


def test_fifty_concurrent_misses_over_three_hosts_make_one_origin_get(origin, cluster3, tmp_path):
    size = 8 * MB
    url = f"{origin.base}/f/{size}/5/cuda.run?rate={2 * MB}"  # a fill of about 4 s
    hosts = cluster3.hosts

    def client(i: int) -> subprocess.CompletedProcess:
        # Fifty shims (Python processes) starting on one instant would starve a small CI
        # machine's CPUs past the shims' 3 s probe: they start over the fill's first second.
        time.sleep(i * 0.02)
        return shim_curl(hosts[i % 3].url, url, tmp_path / f"out-{i}")

    with ThreadPoolExecutor(50) as pool:
        runs = list(pool.map(client, range(50)))
    assert [r.returncode for r in runs] == [0] * 50, [r.stderr for r in runs if r.returncode]
    for i in range(50):
        assert sha((tmp_path / f"out-{i}").read_bytes()) == payload_sha256(size, 5)
    # Nobody fell through to the origin, and no second host filled it: one GET, once.
    assert origin.gets(f"/f/{size}/5/cuda.run") == 1
    assert origin.sent() == size
    eventually(
        lambda: cluster3.jobs(),
        lambda rows: [r[1] for r in rows] == ["completed"],
        what="one job, completed",
    )


def test_kill_9_of_the_filling_host_mid_fill_ends_complete_and_correct_via_another(
    tmp_path, shared
):
    """The origin's uplink is slow (2 MB/s), so the fill is mid-way when its host dies."""
    slow = OriginProcess(uplink=2 * MB)
    cluster = start_cluster(tmp_path, 2, **shared)
    try:
        size = 12 * MB
        url = f"{slow.base}/f/{size}/7/big.iso"
        filler, other = cluster.hosts
        # The miss starts the fill on the first host (its client streams it, until the kill).
        client = subprocess.Popen(
            ["curl", "-sS", "-o", str(tmp_path / "cut"), filler.blob_url(url)],
            stderr=subprocess.DEVNULL,
        )
        eventually(slow.sent, lambda sent: sent >= 2 * MB, what="the fill under way")
        killed_at = cluster.kill(0)
        owner = eventually(
            lambda: cluster.jobs(),
            lambda rows: rows and rows[-1][2] == "h1",
            timeout=4 * LEASE,
            what="the second host taking the fill over",
        )
        failover = time.monotonic() - killed_at
        print(f"\nfailover after kill -9: {failover:.1f} s (lease {LEASE:g} s)")
        assert failover < LEASE + LEASE / 3 + 3  # lease + one watch interval (+ slack)
        assert len(owner) == 1  # the same job, taken over: no second job of the key
        headers = wait_for_hit(other, url, timeout=60)
        assert headers["x-withcache-sha256"] == payload_sha256(size, 7)
        assert sha(curl_body(other.blob_url(url))) == payload_sha256(size, 7)
        assert cluster.jobs()[-1][1:] == ("completed", "h1")
        client.wait(timeout=30)
        assert client.returncode != 0  # cut off with its host: never a short file passed as whole
    finally:
        cluster.stop()
        slow.stop()


def test_an_object_deleted_behind_the_catalogs_back_is_refilled_never_served_short(
    origin, tmp_path, postgres_url, seaweedfs
):
    bucket = seaweedfs.bucket()
    cluster = start_cluster(tmp_path, 2, postgres_url, **s3_store(seaweedfs, bucket))
    try:
        size = 2 * MB
        path = f"/f/{size}/9/gone.run"
        filler, other = cluster.hosts
        sha256 = wait_for_hit(filler, origin.base + path)["x-withcache-sha256"]
        seaweedfs.client().delete_object(Bucket=bucket, Key=f"cache/{sha256[:2]}/{sha256[2:]}")
        # The other host has no local copy: its hit would come from the store, which has none.
        done = subprocess.run(
            [
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                other.blob_url(origin.base + path),
            ],
            capture_output=True,
            timeout=60,
        )
        assert done.stdout == b"404"  # never a short body: the shim falls through to the origin
        headers = wait_for_hit(other, origin.base + path, timeout=60)
        assert headers["x-withcache-sha256"] == sha256 == payload_sha256(size, 9)
        assert sha(curl_body(other.blob_url(origin.base + path))) == sha256
        obj = seaweedfs.client().get_object(Bucket=bucket, Key=f"cache/{sha256[:2]}/{sha256[2:]}")
        assert sha(obj["Body"].read()) == sha256  # the object is back, whole
        assert origin.gets(path) == 2
    finally:
        cluster.stop()


def test_postgresql_restarting_under_load_loses_nothing_committed_and_the_hosts_reconnect(
    origin, tmp_path
):
    from tests.engines.postgres import running_server

    with running_server() as server:
        cluster = start_cluster(tmp_path, 2, server.url("withcache_template"))
        try:
            hosts = cluster.hosts
            before = [f"{origin.base}/f/{300_000}/{seed}/before.bin" for seed in range(6)]
            for i, url in enumerate(before):
                wait_for_hit(hosts[i % 2], url)
            stop = threading.Event()
            answers: list[int] = []

            def load() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    url = before[n % 6] if n % 3 else f"{origin.base}/f/{200_000}/{100 + n}/l.bin"
                    done = subprocess.run(
                        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10",
                         hosts[n % 2].blob_url(url)],
                        capture_output=True,
                        timeout=30,
                    )  # fmt: skip
                    answers.append(int(done.stdout or 0))

            with ThreadPoolExecutor(2) as pool:
                runs = [pool.submit(load) for _ in range(2)]
                time.sleep(2)
                server.restart()
                time.sleep(3)
                stop.set()
                for run in runs:
                    run.result()
            codes = Counter(answers)
            print(f"\nanswers during the PostgreSQL restart: {dict(codes)}")
            # 0: no answer within curl's 10 s (a request that waited on the catalog's reconnect,
            # whose connect timeout is 10 s); 503: the catalog could not answer.
            assert codes[200] and set(codes) <= {0, 200, 404, 503}, codes
            # Nothing committed before the restart is lost, and both hosts answer hits again.
            for i, url in enumerate(before):
                headers = wait_for_hit(hosts[(i + 1) % 2], url, timeout=30)
                assert headers["x-withcache-sha256"] == payload_sha256(300_000, i)
            # Both fill again, each claiming through the catalog it reconnected to.
            for i, host in enumerate(hosts):
                wait_for_hit(host, f"{origin.base}/f/{100_000}/{900 + i}/after.bin", timeout=60)
            assert len(cluster.query("SELECT key FROM artifacts")) >= 8
        finally:
            cluster.stop(clean=False)  # the outage is logged, as it should be
