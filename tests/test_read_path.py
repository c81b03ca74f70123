"""End to end: the real host under twistd, driven by the real curl (sendfile bodies, big blobs,
TLS, curl's own options). Range answers, 304s, misses and malformed requests are tested in
process: tests/web/test_read_path_routes.py."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.support import (
    artifacts_by_key,
    assert_clean_log,
    eventually,
    multipart_parts,
    start_host,
    write_file,
)
from tests.tls import make_test_ca

ORIGIN = "https://vendor.example.com/cuda/cuda_12.4.0_linux.run"


def curl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout, check=False)


def headers(out: bytes) -> tuple[int, dict[str, str]]:
    lines = out.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        if ": " in line:
            name, value = line.split(": ", 1)
            fields[name.lower()] = value
    return status, fields


def listed(host) -> dict[str, dict]:
    return artifacts_by_key(host.data_dir)


@pytest.fixture
def seeded(host, tmp_path):
    path = write_file(tmp_path / "artifact.run", 3 * 1024 * 1024 + 17)
    digest = host.seed(ORIGIN, path, "--content-type", "application/x-sh")
    return host, path.read_bytes(), digest


def test_get_serves_the_bytes_with_cache_headers(seeded):
    host, data, digest = seeded
    out = curl("-D", "-", "-o", "/dev/null", host.blob_url(ORIGIN, "cuda.run"))
    status, h = headers(out.stdout)
    assert status == 200
    assert h["content-length"] == str(len(data))
    assert h["content-type"] == "application/x-sh"
    assert h["etag"] == f'"{digest}"'
    assert h["x-withcache-sha256"] == digest
    assert h["accept-ranges"] == "bytes"
    assert "last-modified" in h
    body = curl(host.blob_url(ORIGIN, "cuda.run")).stdout
    assert hashlib.sha256(body).hexdigest() == digest == hashlib.sha256(data).hexdigest()


def test_head_never_counts_a_hit_and_get_counts_one(seeded):
    host, _data, _digest = seeded
    for _ in range(3):
        assert curl("-fI", host.blob_url(ORIGIN)).returncode == 0
    assert curl("-f", "-o", "/dev/null", host.blob_url(ORIGIN)).returncode == 0
    # Hit counts are written in batches; had the HEADs counted, it would never read 1.
    row = eventually(lambda: listed(host)[ORIGIN], lambda row: row["hits"] != 0)
    assert row["hits"] == 1 and row["last_hit_at"] is not None


def test_blob_query_route_serves_the_same_artifact(seeded):
    host, data, _digest = seeded
    out = curl("-f", "--get", "--data-urlencode", f"url={ORIGIN}", f"{host.url}/blob")
    assert out.returncode == 0 and out.stdout == data


def test_urls_differing_only_in_signatures_hit_the_same_artifact(seeded):
    host, data, _digest = seeded
    for query in ("?X-Amz-Signature=abc", "?X-Amz-Signature=def&X-Amz-Date=9", "?sig=x&se=1"):
        out = curl("-f", host.blob_url(ORIGIN + query))
        assert out.returncode == 0 and out.stdout == data
    assert eventually(lambda: listed(host)[ORIGIN]["hits"], lambda n: n >= 3) == 3


def test_single_range_is_a_206_with_the_right_bytes(seeded):
    host, data, _digest = seeded
    out = curl("-D", "/dev/stderr", "-r", "1000-1999", host.blob_url(ORIGIN))
    status, h = headers(out.stderr)
    assert status == 206
    assert h["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert out.stdout == data[1000:2000]
    tail = curl("-r", "-100", host.blob_url(ORIGIN)).stdout
    assert tail == data[-100:]


def test_many_ranges_up_to_the_limit_are_each_answered_with_their_own_bytes(seeded):
    host, data, _digest = seeded
    spans = [(i * 10_000, i * 10_000 + 99) for i in range(200)]  # 200: the most answered
    ranges = ",".join(f"{a}-{b}" for a, b in reversed(spans))  # answered in the blob's order
    out = curl("-D", "/dev/stderr", "-H", f"Range: bytes={ranges}", host.blob_url(ORIGIN))
    status, h = headers(out.stderr)
    assert status == 206 and h["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(h["content-length"]) == len(out.stdout)
    assert multipart_parts(out.stdout, len(data)) == [(a, b, data[a : b + 1]) for a, b in spans]


def test_curl_remote_name_uses_the_decorative_name(seeded, tmp_path):
    host, data, _digest = seeded
    out = subprocess.run(
        ["curl", "-sSfO", host.blob_url(ORIGIN, "cuda_12.4.0_linux.run")],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cuda_12.4.0_linux.run").read_bytes() == data


def test_big_artifact_streams_in_bounded_memory_to_concurrent_clients(host, tmp_path):
    size = 256 * 1024 * 1024
    path = write_file(tmp_path / "big.bin", size, seed=7)
    digest = host.seed("https://vendor.example.com/big.bin", path)
    path.unlink()
    url = host.blob_url("https://vendor.example.com/big.bin", "big.bin")
    assert curl("-fI", url).returncode == 0  # warm the code path before the baseline
    baseline = host.rss_kib("VmRSS")

    results: list[str] = []

    def download() -> None:
        # Rate-limited, so the transfers overlap the health probes below.
        with subprocess.Popen(
            ["curl", "-sSf", "--limit-rate", "100M", url], stdout=subprocess.PIPE
        ) as proc:
            h = hashlib.sha256()
            while chunk := proc.stdout.read(1 << 20):
                h.update(chunk)
            proc.wait(timeout=120)
        results.append(h.hexdigest() if proc.returncode == 0 else f"curl exit {proc.returncode}")

    workers = [threading.Thread(target=download) for _ in range(2)]
    for w in workers:
        w.start()
    slowest, peak = 0.0, baseline
    while any(w.is_alive() for w in workers):
        started = time.monotonic()
        with urllib.request.urlopen(f"{host.url}/healthz", timeout=1.0) as r:
            assert r.status == 200
        slowest = max(slowest, time.monotonic() - started)
        peak = max(peak, host.rss_kib("VmRSS"))
        time.sleep(0.1)
    for w in workers:
        w.join()

    assert results == [digest, digest]
    assert slowest < 1.0
    assert (peak - baseline) < 64 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"


def test_if_modified_since_with_the_served_date_is_a_304_on_every_path(seeded):
    """The blob's mtime has a fraction of a second: the whole-blob and the range answers give
    the same Last-Modified, and echoing it back gets a 304 (curl -z, wget -N)."""
    host, _data, digest = seeded
    blob = host.data_dir / "blobs" / digest[:2] / digest[2:]
    os.utime(blob, ns=(1_700_000_000_600_000_000, 1_700_000_000_600_000_000))
    url = host.blob_url(ORIGIN, "cuda.run")
    _status, whole = headers(curl("-D", "-", "-o", "/dev/null", url).stdout)
    _status, part = headers(curl("-D", "-", "-o", "/dev/null", "-r", "0-9", url).stdout)
    assert whole["last-modified"] == part["last-modified"] == "Tue, 14 Nov 2023 22:13:21 GMT"
    for extra in ([], ["-r", "0-9"]):
        out = curl(
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-H",
            f"If-Modified-Since: {whole['last-modified']}",
            *extra,
            url,
        )
        assert headers(out.stdout)[0] == 304, extra


def test_curl_z_and_wget_n_do_not_download_an_unchanged_artifact_again(seeded, tmp_path):
    host, data, digest = seeded
    blob = host.data_dir / "blobs" / digest[:2] / digest[2:]
    os.utime(blob, ns=(1_700_000_000_250_000_000, 1_700_000_000_250_000_000))
    url = host.blob_url(ORIGIN, "cuda.run")
    first = tmp_path / "cuda.run"
    assert curl("-fR", "-o", str(first), url).returncode == 0
    again = curl(
        "-f", "-z", str(first), "-o", str(tmp_path / "again.run"), "-w", "%{http_code}", url
    )
    assert again.stdout == b"304" and not (tmp_path / "again.run").exists()
    wget_dir = tmp_path / "wget"
    wget_dir.mkdir()
    for _ in range(2):
        out = subprocess.run(
            ["wget", "-N", "-S", url], cwd=wget_dir, capture_output=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
    assert "304 Not Modified" in out.stderr.decode() or "not retrieving" in out.stderr.decode()
    assert (wget_dir / "cuda.run").read_bytes() == data


def test_a_tls_listener_serves_whole_blobs_ranges_and_multi_ranges(tmp_path):
    ca = make_test_ca(tmp_path / "ca")
    listen = f"ssl:0:interface=127.0.0.1:privateKey={ca.key_pem}:certKey={ca.cert_pem}"
    host = start_host(tmp_path / "data", "--curate", "--listen", listen)
    try:
        data = write_file(tmp_path / "artifact.run", 5 * 1024 * 1024 + 3).read_bytes()
        host.seed(ORIGIN, tmp_path / "artifact.run")
        url = host.blob_url(ORIGIN, "cuda.run").replace("http://", "https://")
        tls = ("--cacert", str(ca.ca_pem))
        assert curl(*tls, url).stdout == data
        assert curl(*tls, "-r", "1000-1999", url).stdout == data[1000:2000]
        both = curl(*tls, "-r", "0-9,4000000-4000009", url).stdout
        assert data[:10] in both and data[4000000:4000010] in both
    finally:
        host.stop()
    assert_clean_log(host)
