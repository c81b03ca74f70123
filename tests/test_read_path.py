"""End to end: the real host under twistd, driven by the real curl."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.support import (
    artifacts_by_key,
    assert_clean_log,
    db,
    eventually,
    start_host,
    token,
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


def misses(host) -> dict[str, tuple]:
    rows = db(host.data_dir, "SELECT key, url, count, first_seen, last_seen FROM misses")
    return {row[0]: row[1:] for row in rows}


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


def test_finding6_a_query_that_selects_content_cannot_poison_another(host, tmp_path):
    """Whoever is first to ask for `tool.sh?version=attacker` does not decide what
    `tool.sh?version=1.2.3` gets: they are two keys."""
    tool = "https://vendor.example.com/tool.sh"
    bad = tmp_path / "bad.sh"
    bad.write_bytes(b"echo pwned\n")
    host.seed(f"{tool}?version=attacker", bad)
    out = curl("-D", "/dev/stderr", host.blob_url(f"{tool}?version=1.2.3"))
    assert headers(out.stderr)[0] == 404 and b"pwned" not in out.stdout
    assert misses(host)[f"{tool}?version=1.2.3"][1] == 1
    assert curl("-f", host.blob_url(f"{tool}?version=attacker")).stdout == b"echo pwned\n"


def test_single_range_is_a_206_with_the_right_bytes(seeded):
    host, data, _digest = seeded
    out = curl("-D", "/dev/stderr", "-r", "1000-1999", host.blob_url(ORIGIN))
    status, h = headers(out.stderr)
    assert status == 206
    assert h["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert out.stdout == data[1000:2000]
    tail = curl("-r", "-100", host.blob_url(ORIGIN)).stdout
    assert tail == data[-100:]


def multipart_parts(body: bytes, size: int) -> list[tuple[int, int, bytes]]:
    """(first, last, bytes) of each part of a multipart/byteranges body."""
    found = []
    for part in re.split(rb"(?i)content-range: bytes ", body)[1:]:
        head, _, rest = part.partition(b"\r\n\r\n")
        first, last = (int(n) for n in head.split(b"/")[0].split(b"-"))
        assert head.startswith(f"{first}-{last}/{size}".encode())
        found.append((first, last, rest[: last - first + 1]))
    return found


def test_many_ranges_up_to_the_limit_are_each_answered_with_their_own_bytes(seeded):
    host, data, _digest = seeded
    spans = [(i * 10_000, i * 10_000 + 99) for i in range(200)]  # 200: the most answered
    ranges = ",".join(f"{a}-{b}" for a, b in reversed(spans))  # answered in the blob's order
    out = curl("-D", "/dev/stderr", "-H", f"Range: bytes={ranges}", host.blob_url(ORIGIN))
    status, h = headers(out.stderr)
    assert status == 206 and h["content-type"].startswith("multipart/byteranges; boundary=")
    assert int(h["content-length"]) == len(out.stdout)
    assert multipart_parts(out.stdout, len(data)) == [(a, b, data[a : b + 1]) for a, b in spans]


def range_answer(host, url: str, ranges: str) -> tuple[int, dict[str, str], bytes]:
    out = curl("-D", "/dev/stderr", "-H", f"Range: {ranges}", host.blob_url(url))
    status, h = headers(out.stderr)
    return status, h, out.stdout


def test_range_amplification_500_whole_blob_ranges_send_the_blob_at_most_once(host, tmp_path):
    """`bytes=0-,0-,0-,...` (a short header) used to send the blob once per range."""
    url = "https://vendor.example.com/amplified.bin"
    data = write_file(tmp_path / "a.bin", 200_000).read_bytes()
    host.seed(url, tmp_path / "a.bin")
    for count in (2, 150, 500):
        status, _h, body = range_answer(host, url, "bytes=" + ",".join(["0-"] * count))
        assert len(body) <= len(data), count
        assert body == data and status in (200, 206), count


def test_range_amplification_overlapping_and_adjacent_ranges_are_coalesced(seeded):
    host, data, _digest = seeded
    status, h, body = range_answer(host, ORIGIN, "bytes=1000-1099,0-99,50-149,150-199,1050-1060")
    assert status == 206 and h["content-type"].startswith("multipart/byteranges")
    size = len(data)
    assert multipart_parts(body, size) == [(0, 199, data[:200]), (1000, 1099, data[1000:1100])]
    status, h, body = range_answer(host, ORIGIN, "bytes=10-19,0-9,15-29")
    assert (status, h["content-range"], body) == (206, f"bytes 0-29/{size}", data[:30])


def test_range_amplification_parts_longer_than_the_blob_get_the_whole_blob(host, tmp_path):
    """Tiny ranges with gaps between them cannot be coalesced; their part headers would make the
    answer many times the blob: the whole blob (200) is shorter."""
    url = "https://vendor.example.com/small.bin"
    data = write_file(tmp_path / "s.bin", 1_000).read_bytes()
    host.seed(url, tmp_path / "s.bin")
    ranges = "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 300, 2))
    status, h, body = range_answer(host, url, ranges)
    assert (status, body) == (200, data) and h["content-type"] == "application/octet-stream"


def test_range_amplification_more_ranges_than_the_limit_get_the_whole_blob(seeded):
    host, data, _digest = seeded
    ranges = "bytes=" + ",".join(f"{i * 10_000}-{i * 10_000}" for i in range(201))
    status, _h, body = range_answer(host, ORIGIN, ranges)
    assert (status, len(body)) == (200, len(data)) and body == data


def test_multi_range_on_a_zero_byte_blob_is_not_a_500(host, tmp_path):
    url = "https://vendor.example.com/empty.bin"
    (tmp_path / "empty").write_bytes(b"")
    host.seed(url, tmp_path / "empty")
    for ranges in ("bytes=0-0,1-1", "bytes=0-,-5", "bytes=-1", "bytes=0-0"):
        status, h, body = range_answer(host, url, ranges)
        assert (status, h["content-length"], body) == (200, "0", b""), ranges


def test_multi_range_with_nothing_satisfiable_is_a_416(seeded):
    host, data, _digest = seeded
    size = len(data)
    status, h, _body = range_answer(host, ORIGIN, f"bytes={size}-,{size + 10}-{size + 20}")
    assert (status, h["content-range"]) == (416, f"bytes */{size}")


def test_unsatisfiable_range_is_a_416(seeded):
    host, data, _digest = seeded
    out = curl("-D", "-", "-o", "/dev/null", "-r", f"{len(data) + 10}-", host.blob_url(ORIGIN))
    status, h = headers(out.stdout)
    assert status == 416
    assert h["content-range"] == f"bytes */{len(data)}"


def test_matching_if_none_match_is_a_304(seeded):
    host, _data, digest = seeded
    for tags in (f'"{digest}"', f'"other", "{digest}"', f'W/"{digest}"', "*"):
        out = curl("-D", "-", "-H", f"If-None-Match: {tags}", host.blob_url(ORIGIN))
        status, _h = headers(out.stdout)
        assert status == 304, tags
        assert out.stdout.endswith(b"\r\n\r\n")
    out = curl(
        "-o", "/dev/null", "-w", "%{http_code}", "-H", 'If-None-Match: "x"', host.blob_url(ORIGIN)
    )
    assert out.stdout == b"200"


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


def test_a_miss_is_a_404_with_one_line_and_is_recorded(host):
    url = "https://vendor.example.com/rocm/amdgpu-install_6.1.deb?X-Amz-Signature=1"
    out = curl("-D", "/dev/stderr", host.blob_url(url))
    status, _h = headers(out.stderr)
    assert status == 404
    assert out.stdout.count(b"\n") == 1 and b"not cached" in out.stdout
    curl("-I", host.blob_url(url.replace("Signature=1", "Signature=2")))
    key = "https://vendor.example.com/rocm/amdgpu-install_6.1.deb"
    (url_seen, count, first, last) = misses(host)[key]
    assert count == 2 and first <= last and url_seen.endswith("Signature=2")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/b/!!notbase64!!/x", "malformed token"),
        ("/b/a/x", "malformed token"),
        (f"/b/{token('ftp://vendor.example.com/f')}/f", "only http and https"),
        (f"/b/{token('not a url')}/f", "whitespace"),
        ("/blob", "missing url"),
        ("/blob?url=", "missing url"),
        ("/blob?url=file:///etc/passwd", "only http and https"),
        ("/blob?url=https://user:pw@vendor.example.com/f", "credentials"),
        (f"/b/{token('https://vendor.example.com/f?access_token=SECRET')}/f", "credentials"),
        ("/blob?url=https://vendor.example.com/f%3Fapi_key%3DSECRET", "credentials"),
    ],
)
def test_bad_requests_are_400_with_a_one_line_reason(host, path, reason):
    out = curl("-D", "/dev/stderr", host.url + path)
    status, h = headers(out.stderr)
    assert status == 400
    assert h["content-type"].startswith("text/plain")
    assert out.stdout.count(b"\n") == 1 and reason.encode() in out.stdout
    assert b"Traceback" not in out.stdout and b"SECRET" not in out.stdout


def test_healthz_is_json(host):
    out = curl("-f", "-D", "/dev/stderr", f"{host.url}/healthz")
    _status, h = headers(out.stderr)
    assert h["content-type"] == "application/json"
    body = json.loads(out.stdout)
    assert body["status"] == "ok" and body["version"]


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
