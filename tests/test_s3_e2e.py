"""End to end with --store s3://: the real host under twistd, real SeaweedFS, real curl.

Each test has a bucket of its own on the session's SeaweedFS (tests/engines/seaweedfs.py); the
origin is tests/origin.py in a process (GET /f/<size>/<seed>/<name> serves a known payload).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import support
from tests.engines.seaweedfs import SeaweedFS, free_ports, seaweedfs, start_seaweedfs
from tests.support import (
    Host,
    admin_json,
    assert_clean_log,
    db,
    eventually,
    payload,
    payload_sha256,
    start_host,
    tool,
    wait_for_hit,
)

origin = support.origin_process
__all__ = ["seaweedfs"]  # the session's server, a fixture of the tests here

MIB = 1 << 20


def s3_args(server: SeaweedFS, bucket: str, *extra: str) -> list[str]:
    return [
        "--allow-private",
        "--stream-wait",
        "0",
        "--store",
        f"s3://{bucket}/cache",
        "--s3-endpoint",
        server.endpoint,
        *extra,
    ]


def start_s3_host(tmp_path: Path, server: SeaweedFS, bucket: str, *extra: str) -> Host:
    return start_host(tmp_path / "data", *s3_args(server, bucket, *extra), env=server.env())


@pytest.fixture
def bucket(seaweedfs) -> str:
    return seaweedfs.bucket()


@pytest.fixture
def s3_host(tmp_path, seaweedfs, bucket):
    """A host on its own bucket with room for 3 MiB of local copies."""
    running = start_s3_host(tmp_path, seaweedfs, bucket, "--local-cache-bytes", "3M")
    yield running
    running.stop()
    assert_clean_log(running)


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=120)


def get(url: str, *extra: str) -> tuple[bytes, dict[str, str]]:
    """The body and (lower-cased) headers of a curl GET that must succeed."""
    done = curl("-f", "-D", "-", *extra, url)
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    pairs = (line.partition(b":") for line in head.split(b"\r\n")[1:])
    return body, {k.strip().lower().decode(): v.strip().decode() for k, _, v in pairs}


def local_copy(host: Host, sha256: str) -> Path:
    return host.data_dir / "blobs" / sha256[:2] / sha256[2:]


def object_bytes(server: SeaweedFS, bucket: str, sha256: str) -> bytes:
    key = f"cache/{sha256[:2]}/{sha256[2:]}"
    return server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def fill(host: Host, origin_url: str) -> str:
    """Miss, fill, and the artifact's sha256 once it is stored."""
    curl("-o", "/dev/null", host.blob_url(origin_url))
    return wait_for_hit(host, origin_url)["x-withcache-sha256"]


def test_a_fill_is_uploaded_before_its_row_and_hits_are_served_from_the_local_copy(
    origin, s3_host, seaweedfs, bucket
):
    url = f"{origin.base}/f/{2 * MIB + 5}/1/driver.run"
    sha = fill(s3_host, url)
    assert sha == payload_sha256(2 * MIB + 5, 1)
    assert hashlib.sha256(object_bytes(seaweedfs, bucket, sha)).hexdigest() == sha
    assert local_copy(s3_host, sha).stat().st_size == 2 * MIB + 5
    body, headers = get(s3_host.blob_url(url))
    assert hashlib.sha256(body).hexdigest() == sha
    assert "x-withcache-streaming" not in headers  # the local copy, with sendfile
    assert origin.gets(f"/f/{2 * MIB + 5}/1/driver.run") == 1


def test_a_multipart_upload_is_confirmed_and_whole(origin, s3_host, seaweedfs, bucket):
    """Above 16 MiB a fill goes up in parts; the object is the whole file (composite SHA256
    checked against the local copy before the row is written)."""
    size = 40 * MIB + 3
    sha = fill(s3_host, f"{origin.base}/f/{size}/2/big.iso")
    stored = seaweedfs.client().head_object(
        Bucket=bucket, Key=f"cache/{sha[:2]}/{sha[2:]}", ChecksumMode="ENABLED"
    )
    assert stored["ContentLength"] == size
    assert stored["ChecksumSHA256"].endswith("-3")  # three parts of 16 MiB
    assert hashlib.sha256(object_bytes(seaweedfs, bucket, sha)).hexdigest() == sha


def test_an_evicted_local_copy_streams_from_the_store_then_is_local_again(origin, s3_host):
    first = f"{origin.base}/f/{2 * MIB}/3/a.run"
    second = f"{origin.base}/f/{2 * MIB}/4/b.run"
    sha_a = fill(s3_host, first)
    sha_b = fill(s3_host, second)
    # 4 MiB of copies in 3 MiB of room: the least recently used (a) went.
    assert not local_copy(s3_host, sha_a).exists()
    assert local_copy(s3_host, sha_b).exists()
    body, headers = get(s3_host.blob_url(first))
    assert hashlib.sha256(body).hexdigest() == sha_a
    assert headers.get("x-withcache-streaming") == "fill"  # from the store, as it landed
    eventually(lambda: local_copy(s3_host, sha_a).exists(), what="a's local copy")
    body, headers = get(s3_host.blob_url(first))
    assert hashlib.sha256(body).hexdigest() == sha_a
    assert "x-withcache-streaming" not in headers
    assert not local_copy(s3_host, sha_b).exists()  # now b was the least recently used
    assert origin.gets(f"/f/{2 * MIB}/3/a.run") == 1
    counted = support.metrics(s3_host)
    assert counted["withcache_store_copies_total{outcome=ok}"] == 1
    assert counted["withcache_store_copy_bytes_total"] == 2 * MIB
    assert counted["withcache_local_copy_bytes"] == 2 * MIB


def test_a_range_of_a_blob_that_is_not_local_comes_from_the_store(origin, s3_host):
    first = f"{origin.base}/f/{2 * MIB}/5/a.run"
    sha_a = fill(s3_host, first)
    fill(s3_host, f"{origin.base}/f/{2 * MIB}/6/b.run")
    assert not local_copy(s3_host, sha_a).exists()
    body, _ = get(s3_host.blob_url(first), "-r", "1000000-1000999")
    assert body == payload(2 * MIB, 5, 1000000, 1001000)


def test_a_range_far_ahead_of_the_copy_is_a_ranged_get_of_the_object(origin, s3_host):
    """A range the local copy will not reach soon is passed through to the store at once;
    the whole copy is made meanwhile, so the next request is local."""
    size = 40 * MIB
    big = f"{origin.base}/f/{size}/15/big.iso"
    sha = fill(s3_host, big)
    fill(s3_host, f"{origin.base}/f/{MIB}/16/small.run")
    assert not local_copy(s3_host, sha).exists()
    body, headers = get(s3_host.blob_url(big), "-r", f"{30 * MIB}-{30 * MIB + 99999}")
    assert body == payload(size, 15, 30 * MIB, 30 * MIB + 100000)
    assert headers["content-range"] == f"bytes {30 * MIB}-{30 * MIB + 99999}/{size}"
    assert headers["x-withcache-sha256"] == sha  # the object's own answer, not the stream's
    eventually(lambda: local_copy(s3_host, sha).exists(), timeout=60, what="the local copy")
    assert hashlib.sha256(local_copy(s3_host, sha).read_bytes()).hexdigest() == sha


def test_an_object_deleted_behind_the_catalogs_back_is_a_miss_and_is_refilled(
    origin, s3_host, seaweedfs, bucket
):
    path = f"/f/{2 * MIB}/7/gone.run"
    sha = fill(s3_host, origin.base + path)
    seaweedfs.client().delete_object(Bucket=bucket, Key=f"cache/{sha[:2]}/{sha[2:]}")
    fill(s3_host, f"{origin.base}/f/{2 * MIB}/8/other.run")  # pushes the local copy out
    assert not local_copy(s3_host, sha).exists()
    done = curl("-o", "/dev/null", "-w", "%{http_code}", s3_host.blob_url(origin.base + path))
    assert done.stdout == b"404"  # never a short body: the shim falls through to the origin
    assert wait_for_hit(s3_host, origin.base + path)["x-withcache-sha256"] == sha
    assert hashlib.sha256(object_bytes(seaweedfs, bucket, sha)).hexdigest() == sha
    assert origin.gets(path) == 2
    assert "its object is missing from the store" in s3_host.log()
    assert support.metrics(s3_host)["withcache_store_copies_total{outcome=missing}"] == 1


def test_serving_workers_send_local_copies_and_pass_the_rest_to_the_host(
    origin, tmp_path, seaweedfs, bucket
):
    host = start_s3_host(
        tmp_path, seaweedfs, bucket, "--local-cache-bytes", "3M", "--processes", "3"
    )
    try:
        first = f"{origin.base}/f/{2 * MIB}/17/a.run"
        sha_a = fill(host, first)
        sha_b = fill(host, f"{origin.base}/f/{2 * MIB}/18/b.run")
        assert not local_copy(host, sha_a).exists()
        for _ in range(6):  # spread over the workers and the host
            body, _ = get(host.blob_url(first))
            assert hashlib.sha256(body).hexdigest() == sha_a
        eventually(lambda: local_copy(host, sha_a).exists(), what="a's local copy")
        assert origin.gets(f"/f/{2 * MIB}/17/a.run") == 1
        assert sha_b
    finally:
        host.stop()
    assert_clean_log(host)


def test_an_object_with_wrong_bytes_is_never_served_whole_and_is_refilled(
    origin, s3_host, seaweedfs, bucket
):
    path = f"/f/{2 * MIB}/20/bad.run"
    sha = fill(s3_host, origin.base + path)
    wrong = bytearray(payload(2 * MIB, 20))
    wrong[-1] ^= 0xFF  # the same length, one byte off: only the digest can tell
    key = f"cache/{sha[:2]}/{sha[2:]}"
    seaweedfs.client().put_object(Bucket=bucket, Key=key, Body=bytes(wrong))
    fill(s3_host, f"{origin.base}/f/{2 * MIB}/21/other.run")  # pushes the local copy out
    assert not local_copy(s3_host, sha).exists()
    done = curl(
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        s3_host.blob_url(origin.base + path),
    )
    assert done.returncode != 0  # cut off: curl knows the body is not whole
    assert int(done.stdout.split()[1]) < 2 * MIB
    assert wait_for_hit(s3_host, origin.base + path)["x-withcache-sha256"] == sha
    assert hashlib.sha256(object_bytes(seaweedfs, bucket, sha)).hexdigest() == sha
    assert origin.gets(path) == 2
    assert not local_copy(s3_host, sha).exists() or (
        hashlib.sha256(local_copy(s3_host, sha).read_bytes()).hexdigest() == sha
    )


def test_concurrent_hits_of_a_blob_that_is_not_local_share_one_copy_from_the_store(origin, s3_host):
    size = 24 * MIB
    big = f"{origin.base}/f/{size}/22/big.iso"
    sha = fill(s3_host, big)
    fill(s3_host, f"{origin.base}/f/{MIB}/23/small.run")
    assert not local_copy(s3_host, sha).exists()
    with ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(lambda _: get(s3_host.blob_url(big))[0], range(6)))
    assert {hashlib.sha256(b).hexdigest() for b in bodies} == {sha}
    assert support.metrics(s3_host)["withcache_store_copies_total{outcome=ok}"] == 1


def test_the_shim_falls_through_to_the_origin_when_the_object_is_gone(
    origin, s3_host, seaweedfs, bucket, tmp_path
):
    from tests.shim.conftest import clean_env, shim_command

    path = f"/f/{2 * MIB}/24/tool.run"
    sha = fill(s3_host, origin.base + path)
    seaweedfs.client().delete_object(Bucket=bucket, Key=f"cache/{sha[:2]}/{sha[2:]}")
    fill(s3_host, f"{origin.base}/f/{2 * MIB}/25/other.run")
    out = tmp_path / "tool.run"
    done = subprocess.run(
        [*shim_command("curl"), "-sS", "-o", str(out), origin.base + path],
        env=clean_env(WITHCACHE_SERVER=s3_host.url),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha
    assert origin.gets(path) >= 2  # the shim's own download, and the refill


def test_admin_import_and_rm_use_the_hosts_store(tmp_path, s3_host, seaweedfs, bucket):
    src = support.write_file(tmp_path / "tool.tar", 300_000, seed=9)
    out = admin(seaweedfs, "import", s3_host, "https://vendor.example/tool.tar", str(src))
    sha = out.stdout.split()[0]
    assert object_bytes(seaweedfs, bucket, sha) == src.read_bytes()
    body, _ = get(s3_host.blob_url("https://vendor.example/tool.tar"))
    assert body == src.read_bytes()
    admin(seaweedfs, "rm", s3_host, "https://vendor.example/tool.tar")
    listed = seaweedfs.client().list_objects_v2(Bucket=bucket, Prefix="cache/")
    assert listed.get("KeyCount", 0) == 0
    assert not local_copy(s3_host, sha).exists()


def admin(server: SeaweedFS, command: str, host: Host, *args: str) -> subprocess.CompletedProcess:
    """withcache-admin with the store's credentials in its environment (it finds the store
    itself: the host left its --store options in the data dir)."""
    out = subprocess.run(
        [tool("withcache-admin"), command, "--data-dir", str(host.data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **server.env()},
    )
    assert out.returncode == 0, out.stderr
    return out


def test_a_local_cache_moves_into_the_bucket_with_export_and_import_catalog(
    tmp_path, s3_host, seaweedfs, bucket
):
    old = tmp_path / "old"
    old.mkdir()
    src = support.write_file(tmp_path / "sdk.zip", 500_000, seed=19)
    subprocess.run(
        [tool("withcache-admin"), "import", "--data-dir", str(old)]
        + ["https://vendor.example/sdk.zip", str(src)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    export = tmp_path / "catalog.jsonl"
    subprocess.run(
        [tool("withcache-admin"), "export", "--data-dir", str(old), str(export)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    admin(seaweedfs, "import-catalog", s3_host, str(export), "--blobs-from", str(old))
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert object_bytes(seaweedfs, bucket, sha) == src.read_bytes()
    body, _ = get(s3_host.blob_url("https://vendor.example/sdk.zip"))
    assert body == src.read_bytes()


def test_eviction_under_max_bytes_deletes_the_object(origin, tmp_path, seaweedfs, bucket):
    host = start_s3_host(tmp_path, seaweedfs, bucket, "--max-bytes", "3M")
    try:
        sha_a = fill(host, f"{origin.base}/f/{2 * MIB}/10/a.run")
        fill(host, f"{origin.base}/f/{2 * MIB}/11/b.run")
        listed = seaweedfs.client().list_objects_v2(Bucket=bucket, Prefix="cache/")
        keys = {o["Key"] for o in listed.get("Contents", [])}
        assert f"cache/{sha_a[:2]}/{sha_a[2:]}" not in keys and len(keys) == 1
    finally:
        host.stop()
    assert_clean_log(host)


@pytest.mark.parametrize(
    "bucket_name, said",
    [("no-such-bucket", "no such bucket"), (None, "cannot reach the store")],
)
def test_a_store_that_cannot_be_used_stops_the_host_with_one_line(
    tmp_path, seaweedfs, bucket_name, said
):
    endpoint = seaweedfs.endpoint
    if bucket_name is None:
        bucket_name, endpoint = "any", f"http://127.0.0.1:{free_ports(1)[0]}"
    out = subprocess.run(
        [tool("twistd"), "-n", "--pidfile=", "withcache", "--data-dir", str(tmp_path / "d")]
        + ["--listen", "tcp:0:interface=127.0.0.1", "--store", f"s3://{bucket_name}/x"]
        + ["--s3-endpoint", endpoint],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **seaweedfs.env(), "AWS_SECRET_ACCESS_KEY": "wc-s3cr3t-9f2e"},
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert said in text and "Traceback" not in text
    assert "wc-s3cr3t-9f2e" not in text


def test_a_store_that_goes_down_leaves_local_hits_served_and_other_keys_missing(origin, tmp_path):
    server = start_seaweedfs()
    try:
        bucket = server.bucket()
        host = start_s3_host(tmp_path, server, bucket, "--local-cache-bytes", "3M")
        try:
            first = f"{origin.base}/f/{2 * MIB}/12/a.run"
            second = f"{origin.base}/f/{2 * MIB}/13/b.run"
            sha_a = fill(host, first)
            sha_b = fill(host, second)
            assert not local_copy(host, sha_a).exists()
            server.stop(grace=0)
            body, _ = get(host.blob_url(second))
            assert hashlib.sha256(body).hexdigest() == sha_b
            started = time.monotonic()
            done = curl("-o", "/dev/null", "-w", "%{http_code}", host.blob_url(first))
            assert done.stdout == b"404" and time.monotonic() - started < 10
            third = f"{origin.base}/f/{MIB}/14/c.run"
            curl("-o", "/dev/null", host.blob_url(third))
            failed = eventually(
                lambda: [j for j in admin_json(host.data_dir, "jobs") if j["state"] == "failed"],
                timeout=60,
                what="the fill failed",
            )
            assert f"s3://{bucket}/cache" in failed[0]["error"]
            assert db(host.data_dir, "SELECT count(*) FROM artifacts")[0][0] == 2
            assert list((host.data_dir / "tmp").iterdir()) == []
            assert not any(
                p.stat().st_size == MIB for p in (host.data_dir / "blobs").rglob("*") if p.is_file()
            )
            imported = subprocess.run(
                [tool("withcache-admin"), "import", "--data-dir", str(host.data_dir)]
                + ["https://vendor.example/x", str(tmp_path / "data" / "store.json")],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, **server.env()},
            )
            assert imported.returncode != 0 and "cannot reach the store" in imported.stderr
            assert "Traceback" not in imported.stderr
            # Still serving, no loop of errors.
            body, _ = get(host.blob_url(second))
            assert hashlib.sha256(body).hexdigest() == sha_b
        finally:
            host.stop()
        assert_clean_log(host)
    finally:
        server.stop(grace=0)
