"""The stdlib client (shimsrc/withcache_client) and `withcache-admin warm` against the real host.

The client runs in a subprocess from a copy of its directory with `python -E -s -S`: nothing but
the standard library on its import path, as on a lab machine with only Python installed.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api_support import make_token
from tests.support import OriginProcess, assert_clean_log, payload, payload_sha256, tool
from tests.ui.ui_support import start_ui_host

SHIMSRC = Path(__file__).resolve().parent.parent / "shimsrc"


@pytest.fixture(scope="module")
def origin():
    running = OriginProcess()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    data = tmp_path_factory.mktemp("client") / "data"
    data.mkdir()
    secret = make_token(data, "client", "fill")  # before the start: one migration at a time
    running = start_ui_host(data, "--curate", "--allow-private")
    running.secret = secret
    yield running
    running.stop()
    assert_clean_log(running)


def run_client(tmp_path: Path, code: str, *args: str) -> dict:
    """Run code with only the copied client and the standard library importable; its JSON."""
    shutil.copytree(SHIMSRC / "withcache_client", tmp_path / "withcache_client", dirs_exist_ok=True)
    prelude = (
        "import importlib.util, json, sys\n"
        "assert importlib.util.find_spec('withcache') is None, 'the server package is visible'\n"
    )
    done = subprocess.run(
        # -S: no site-packages (no .pth, no venv); -E -s: no PYTHONPATH, no user site. Only
        # the current directory (the copied client) and the standard library remain.
        [sys.executable, "-E", "-s", "-S", "-c", prelude + code, *args],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


CLIENT_RUN = """
from withcache_client import Client, DigestMismatch
server, token, hit_url, miss_url, hit_sha, miss_sha = sys.argv[1:7]
c = Client(server, token)
out = {"cached": [c.is_cached(hit_url), c.is_cached(miss_url)]}
hit = c.download(hit_url, "hit.bin", sha256=hit_sha)
out["hit"] = [hit.from_cache, hit.sha256, hit.size]
miss = c.download(miss_url, "miss.bin", sha256=miss_sha)
out["miss"] = [miss.from_cache, miss.sha256, miss.size]
try:
    c.download(hit_url, "wrong.bin", sha256="0" * 64)
    out["wrong"] = "kept"
except DigestMismatch as e:
    import os
    out["wrong"] = ["refused", os.path.exists("wrong.bin"), str(e)]
out["stats"] = c.stats()["artifacts"]
try:
    c.events()
except Exception as e:
    out["events"] = [type(e).__name__, e.status, e.kind]
print(json.dumps(out))
"""


def test_the_client_hits_falls_back_on_a_miss_and_refuses_a_wrong_digest(host, origin, tmp_path):
    hit_url = f"{origin.base}/f/70000/3/hit.bin"
    miss_url = f"{origin.base}/f/50000/4/miss.bin"
    source = tmp_path / "seed"
    source.write_bytes(payload(70000, 3))
    host.seed(hit_url, source)
    hit_sha, miss_sha = payload_sha256(70000, 3), payload_sha256(50000, 4)
    out = run_client(
        tmp_path, CLIENT_RUN, host.url, host.secret, hit_url, miss_url, hit_sha, miss_sha
    )
    assert out["cached"] == [True, False]
    assert out["hit"] == [True, hit_sha, 70000]
    assert out["miss"] == [False, miss_sha, 50000]  # from the origin itself
    assert (tmp_path / "miss.bin").read_bytes() == payload(50000, 4)
    assert out["wrong"][:2] == ["refused", False] and "expected sha256 000" in out["wrong"][2]
    assert out["stats"] >= 1
    assert out["events"] == ["APIError", 403, "insufficient-scope"]
    # The origin was asked for the hit only when the caller's digest did not match the cache's.
    assert origin.gets("/f/70000/3/hit.bin") == 1


def test_the_client_queues_a_fill_and_builds_the_cache_url_the_host_serves(host, origin, tmp_path):
    url = f"{origin.base}/f/4096/5/queued.bin"
    code = """
from withcache_client import Client, cache_url
import time
server, token, url = sys.argv[1:4]
c = Client(server, token)
job = c.queue_fill(url)
while c.fill(job["id"])["state"] in ("queued", "running"):
    time.sleep(0.1)
print(json.dumps({"job": c.fill(job["id"]), "cache_url": cache_url(server, url),
                  "artifact": c.artifact(url=url)}))
"""
    out = run_client(tmp_path, code, host.url, host.secret, url)
    assert out["job"]["state"] == "completed"
    assert out["artifact"]["sha256"] == payload_sha256(4096, 5)
    status, body = host.get(out["cache_url"].removeprefix(host.url))
    assert status == 200 and body == payload(4096, 5)
    assert out["cache_url"].endswith("/queued.bin")


def warm(host, manifest: Path, token_file: Path, stdout=subprocess.PIPE):
    return subprocess.run(
        [tool("withcache-admin"), "warm", "--server", host.url, "--token-file", str(token_file)]
        + ["--timeout", "120", str(manifest)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=180,
    )


def test_warm_fills_checks_digests_and_names_each_url_that_failed(host, origin, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(host.secret + "\n")
    good = f"{origin.base}/f/200000/6/good.iso"
    plain = f"{origin.base}/f/3000/7/plain.bin"
    wrong = f"{origin.base}/f/1000/8/wrong.bin"
    broken = f"{origin.base}/f/1000/9/broken.bin?fail=404"
    manifest = tmp_path / "manifest"
    manifest.write_text(
        "# release 1.2 images\n\n"
        f"{good} {payload_sha256(200000, 6)}\n"
        f"{plain}   # no digest known\n"
        f"{wrong} {'ab' * 32}\n"
        f"{broken}\n"
    )
    done = warm(host, manifest, token_file)
    assert done.returncode == 1, done.stderr
    named = [line for line in done.stderr.splitlines() if "not cached:" in line]
    assert len(named) == 2
    assert any("wrong.bin" in line and "sha256 mismatch" in line for line in named)
    assert any("broken.bin" in line for line in named)
    # Plain lines (not a terminal): no cursor movement.
    assert "\r" not in done.stdout and "\033[" not in done.stdout
    assert "queued" in done.stdout and "2 of 4 URLs cached" in done.stdout
    assert "?…" in done.stdout  # a query is not echoed (it may hold a signature)
    # Again: the good ones are cached already and are not fetched a second time.
    before = origin.gets("/f/200000/6/good.iso")
    again = warm(host, manifest, token_file)
    assert again.returncode == 1
    assert "cached already" in again.stdout and origin.gets("/f/200000/6/good.iso") == before


def test_warm_draws_live_progress_on_a_terminal(host, origin, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(host.secret)
    manifest = tmp_path / "manifest"
    manifest.write_text(f"{origin.base}/f/2000000/10/slow.bin?rate=2000000\n")
    leader, follower = pty.openpty()
    try:
        done = warm(host, manifest, token_file, stdout=follower)
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert done.returncode == 0, done.stderr
    text = shown.decode()
    assert "\r\x1b[K[0/1 done, 1 running]" in text
    assert "1 of 1 URLs cached" in text


def test_warm_with_a_bad_token_or_manifest_exits_2(host, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("wct_0000000000000000_" + "x" * 43)
    manifest = tmp_path / "manifest"
    manifest.write_text("https://vendor.example.com/a.iso\n")
    done = warm(host, manifest, token_file)
    assert done.returncode == 2 and "unauthorized" in done.stderr
    manifest.write_text("not a url\n")
    done = warm(host, manifest, token_file)
    assert done.returncode == 2 and "line 1" in done.stderr
