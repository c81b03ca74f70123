"""HTTP freshness end to end: the real host under twistd, tests/origin.py as a process (it can
send caching headers, change its files and answer conditional requests), and the real curl and
wget, through the shims as a user would run them. Lifetimes are a second or two of real time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests import support
from tests.support import (
    OriginProcess,
    assert_clean_log,
    eventually,
    metrics,
    payload,
    start_host,
    tool,
)

pytestmark = pytest.mark.e2e

origin = support.origin_process  # the `origin` fixture here: tests/origin.py in a process


@pytest.fixture
def host(tmp_path):
    running = start_host(tmp_path / "data", "--allow-private", "--revalidate-wait", "2")
    yield running
    running.stop()
    assert_clean_log(running)


@pytest.fixture
def work(tmp_path) -> Path:
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


def shim(name: str, args: list[str], host, cwd: Path) -> subprocess.CompletedProcess:
    """`curlwithcache`/`wgetwithcache` as a user runs it, the server set, nothing else."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "WITHCACHE_SERVER": host.url}
    return subprocess.run(
        [tool(f"{name}withcache"), *args], env=env, cwd=cwd, capture_output=True, timeout=120
    )


def real(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([name, *args], cwd=cwd, capture_output=True, timeout=120)


def stats(origin) -> dict:
    with urllib.request.urlopen(f"{origin.base}/_stats", timeout=10) as r:
        return json.loads(r.read())


def bump(origin, url: str) -> None:
    """The origin has a new version of url's file from now on."""
    path = "/" + url.split("/", 3)[3].split("?")[0]
    urllib.request.urlopen(f"{origin.base}/_bump?path={path}", timeout=10).read()


def head(host, url: str) -> tuple[int, str]:
    """(status, headers) of a HEAD of url's cache URL, as the shims probe."""
    out = real("curl", ["-sI", "-w", "%{http_code}", host.blob_url(url)], Path())
    headers, _, code = out.stdout.decode("latin-1").rpartition("\r\n\r\n")
    return int(code), headers.lower()


def cached(host, url: str) -> bool:
    """Whether the host would serve url now from a stored artifact (not streamed from a fill)."""
    status, headers = head(host, url)
    return status == 200 and "x-withcache-streaming" not in headers


def wait_cached(host, url: str) -> None:
    eventually(lambda: cached(host, url), bool, 60, what=f"{url} cached")


def gets(origin, url: str) -> int:
    return origin.gets("/" + url.split("/", 3)[3].split("?")[0])


def test_a_no_store_api_answers_live_on_every_call(origin, host, work):
    url = f"{origin.base}/f/300/1/api/releases/latest?cc=no-store"
    for version in range(3):
        out = shim("curl", ["-fsS", url], host, work)
        assert out.returncode == 0, out.stderr
        assert out.stdout == payload(300, 1 + version)
        # The host has tried the URL and refused to store it: the next call is live too.
        eventually(
            lambda: metrics(host).get("withcache_uncacheable_total{reason=no-store}", 0),
            lambda n: n >= 1,
            what="the fill refused",
        )
        assert not cached(host, url)
        bump(origin, url)
    # A negative entry: later misses of it do not make the host fetch it again.
    assert metrics(host)["withcache_uncacheable_total{reason=no-store}"] == 1
    assert gets(origin, url) == 3 + 1


def test_a_short_lived_latest_url_serves_the_new_content_once_its_lifetime_has_passed(
    origin, host, work
):
    url = f"{origin.base}/f/5000/2/latest/tool.tar.gz?cc=max-age%3D3"
    assert shim("curl", ["-fsS", url], host, work).stdout == payload(5000, 2)
    wait_cached(host, url)
    sent = stats(origin)["body_bytes"]
    assert shim("curl", ["-fsS", url], host, work).stdout == payload(5000, 2)
    assert stats(origin)["body_bytes"] == sent  # served by the cache
    bump(origin, url)
    time.sleep(3.1)
    # Stale: its revalidation finds a new version, streamed from its fill (or, if that does not
    # start in time, fetched from the origin by the shim).
    assert shim("curl", ["-fsS", url], host, work).stdout == payload(5000, 3)
    wait_cached(host, url)
    sent = stats(origin)["body_bytes"]
    assert shim("curl", ["-fsS", url], host, work).stdout == payload(5000, 3)
    # From the cache (a revalidation, if its lifetime passed meanwhile, is a 304: no body).
    assert stats(origin)["body_bytes"] == sent
    assert metrics(host)["withcache_revalidations_total{outcome=changed}"] == 1


def test_a_304_revalidation_fetches_no_body(origin, host, work):
    # HTTP dates are whole seconds, so a 304's Date may make the answer up to a second old on
    # arrival: a 3 s lifetime leaves the probe's GET at least 2 s of freshness.
    url = f"{origin.base}/f/400000/3/tool.run?cc=max-age%3D3"
    shim("curl", ["-fsS", "-o", "first", url], host, work)
    wait_cached(host, url)
    time.sleep(3.1)
    sent = stats(origin)["body_bytes"]
    out = shim("curl", ["-fsS", "-o", "second", url], host, work)
    assert out.returncode == 0, out.stderr
    assert (work / "second").read_bytes() == payload(400000, 3)
    after = stats(origin)
    assert after["body_bytes"] == sent and after["not_modified"] >= 1
    assert metrics(host)["withcache_revalidations_total{outcome=not_modified}"] >= 1


def test_a_slow_reader_of_the_old_version_finishes_with_the_old_bytes(origin, host, work):
    url = f"{origin.base}/f/1000000/4/latest/image.iso?cc=max-age%3D1"
    shim("curl", ["-fsS", "-o", "/dev/null", url], host, work)
    wait_cached(host, url)
    slow = subprocess.Popen(
        ["curl", "-fsS", "--limit-rate", "200K", "-o", "old.iso", host.blob_url(url)],
        cwd=work,
    )
    time.sleep(1.1)
    bump(origin, url)
    # Stale and changed: a miss, or the new version streamed from its fill; never the old.
    status, headers = head(host, url)
    assert status == 404 or "x-withcache-streaming: fill" in headers, (status, headers)
    wait_cached(host, url)
    assert slow.wait(timeout=60) == 0
    assert (work / "old.iso").read_bytes() == payload(1000000, 4)
    new = real("curl", ["-fsS", host.blob_url(url)], work).stdout
    assert hashlib.sha256(new).digest() == hashlib.sha256(payload(1000000, 5)).digest()


CD = "attachment%3B%20filename%3D%22driver-5.1.run%22"


def downloaded_directly_then_cached(origin, host, work, tool_name, args, url):
    """Run the tool against the origin in work/direct, then have the host cache url; returns
    (work/direct, an empty work/via-cache) for the same command line's second run."""
    direct, via_cache = work / "direct", work / "via-cache"
    direct.mkdir()
    via_cache.mkdir()
    assert real(tool_name, [*args, url], direct).returncode == 0
    shim("curl", ["-fsS", "-o", "/dev/null", url], host, work)
    wait_cached(host, url)
    return direct, via_cache


@pytest.mark.parametrize(
    ("tool_name", "args"),
    [("curl", ["-fsS", "-R", "-O"]), ("wget", ["-q", "-N"])],
)
def test_curl_r_and_wget_n_give_the_origin_mtime_through_the_shims(
    origin, host, work, tool_name, args
):
    url = f"{origin.base}/f/2000/5/pkg/driver.run"
    direct, shimmed = downloaded_directly_then_cached(origin, host, work, tool_name, args, url)
    before = gets(origin, url)
    out = shim(tool_name, [*args, url], host, shimmed)
    assert out.returncode == 0, out.stderr
    assert gets(origin, url) == before  # a hit
    (name,) = os.listdir(direct)
    assert os.listdir(shimmed) == [name]
    assert (shimmed / name).read_bytes() == (direct / name).read_bytes()
    assert (shimmed / name).stat().st_mtime == (direct / name).stat().st_mtime
    # wget -N again: the host's Last-Modified is the origin's, so nothing is downloaded again.
    if tool_name == "wget":
        again = shim(tool_name, ["-N", "-S", url], host, shimmed)
        assert b"304" in again.stderr or b"not retrieving" in again.stderr.lower(), again.stderr


@pytest.mark.parametrize(
    ("tool_name", "args"),
    [("curl", ["-fsS", "-O", "-J"]), ("wget", ["-q", "--content-disposition"])],
)
def test_the_cache_url_names_the_file_as_the_origins_content_disposition_does(
    origin, host, work, tool_name, args
):
    url = f"{origin.base}/f/2000/6/download?cd={CD}"
    direct, cache = downloaded_directly_then_cached(origin, host, work, tool_name, args, url)
    assert real(tool_name, [*args, host.blob_url(url, "download")], cache).returncode == 0
    assert os.listdir(direct) == os.listdir(cache) == ["driver-5.1.run"]
    assert (cache / "driver-5.1.run").read_bytes() == payload(2000, 6)


def test_the_origin_down_while_stale_follows_stale_if_error_and_must_revalidate(tmp_path, work):
    origin = OriginProcess()
    host = start_host(tmp_path / "down", "--allow-private", "--stale-if-error", "1h")
    try:
        lenient = f"{origin.base}/f/3000/7/a.run?cc=max-age%3D1"
        strict = f"{origin.base}/f/3000/8/b.run?cc=max-age%3D1,must-revalidate"
        for url in (lenient, strict):
            shim("curl", ["-fsS", "-o", "/dev/null", url], host, work)
            wait_cached(host, url)
        origin.stop()
        time.sleep(1.1)
        served = shim("curl", ["-fsS", lenient], host, work)
        assert (served.returncode, served.stdout) == (0, payload(3000, 7))
        # must-revalidate: never served stale; the shim falls through to the origin, which is
        # down, and curl fails as it would without the cache.
        refused = shim("curl", ["-fsS", strict], host, work)
        assert refused.returncode == 7 and refused.stdout == b""
        assert metrics(host)["withcache_revalidations_total{outcome=failed}"] == 2
    finally:
        host.stop()
        if origin.proc.poll() is None:
            origin.stop()
