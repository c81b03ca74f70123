"""`curl -OJ` and `wget --content-disposition` through the shims: hits with the origin's names.

The contract with the cache-host (issue 14): a host that serves the origin's
Content-Disposition and Last-Modified with its hits says so on every hit answer with
`X-Withcache-Origin-Headers: content-disposition, last-modified`. The shims rewrite such
command lines only when the probe's answer lists `content-disposition`.

Two hosts are used:
- `contract_host`: a stand-in on 127.0.0.1 that keeps the contract (and one that does not,
  an older host), so the shims' side is tested with the real tools now;
- the real cache-host (`twistd -n withcache --allow-private`), filled from the origin.

Each command runs directly against the origin and through the shim, each in an empty
directory: same file names, the cached bytes through the shim, and the origin not asked.
"""

from __future__ import annotations

import base64
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import clean_env, run_shim

from tests.shim_e2e_support import CACHED, FRESH
from tests.support import assert_clean_log, start_host, wait_for_hit

pytestmark = pytest.mark.e2e

DISPOSITION = 'attachment; filename="tool-1.2.3-linux.tar.gz"'
LAST_MODIFIED = "Tue, 02 Jan 2024 03:04:05 GMT"
CASES = [
    ("curl", ["-fsSOJ"], "dl/latest"),
    ("curl", ["-fsSL", "-O", "-J"], "dl/get?id=7&arch=x86_64"),
    ("wget", ["-q", "--content-disposition"], "dl/latest"),
    ("wget", ["-q", "--content-disposition"], "dl/get?id=7"),
]


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 answering every GET/HEAD with `answer(path)`:
    (status, headers, body). It records (method, path)."""

    def __init__(self, answer) -> None:
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _go(self, with_body: bool) -> None:
                server.requests.append((self.command, self.path))
                status, headers, body = answer(self.path)
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self):
                self._go(True)

            def do_HEAD(self):
                self._go(False)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def origin():
    headers = {"Content-Disposition": DISPOSITION, "Last-Modified": LAST_MODIFIED}
    running = Server(lambda path: (200, headers, FRESH))
    yield running
    running.close()


def contract(origin_headers: str | None):
    """A stand-in cache-host holding every URL (CACHED), serving the origin's headers."""

    def answer(path: str):
        if not path.startswith("/b/"):
            return 404, {}, b""
        token = path.split("/")[2]
        base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))  # a real token
        headers = {"Content-Disposition": DISPOSITION, "Last-Modified": LAST_MODIFIED}
        if origin_headers is not None:
            headers["X-Withcache-Origin-Headers"] = origin_headers
        else:
            headers = {}
        return 200, headers, CACHED

    return answer


def run_both(tool, opts, url, server, tmp_path: Path) -> tuple[list[str], Path, Path]:
    direct, shimmed = tmp_path / "direct", tmp_path / "shimmed"
    direct.mkdir()
    shimmed.mkdir()
    env = clean_env(PATH="/usr/bin:/bin", HOME=str(tmp_path))
    done = run_shim(tool, [*opts, url], env, cwd=direct)
    assert done.returncode == 0, done.stderr
    done = run_shim(tool, [*opts, url], {**env, "WITHCACHE_SERVER": server}, cwd=shimmed)
    assert done.returncode == 0, done.stderr
    names = sorted(os.listdir(direct))
    assert sorted(os.listdir(shimmed)) == names == ["tool-1.2.3-linux.tar.gz"]
    return names, direct, shimmed


@pytest.mark.parametrize(("tool", "opts", "path"), CASES)
def test_a_host_that_serves_the_origins_disposition_makes_them_hits(
    origin, tmp_path, tool, opts, path
) -> None:
    host = Server(contract("content-disposition, last-modified"))
    try:
        url = f"{origin.url}/{path}"
        (name,), direct, shimmed = run_both(tool, opts, url, host.url, tmp_path)
        assert (direct / name).read_bytes() == FRESH
        assert (shimmed / name).read_bytes() == CACHED
        assert [m for m, _p in origin.requests] == ["GET"]  # the direct run only
        assert [m for m, _p in host.requests] == ["HEAD", "GET"]
    finally:
        host.close()


@pytest.mark.parametrize(("tool", "opts", "path"), CASES)
def test_an_older_host_leaves_them_to_the_origin(origin, tmp_path, tool, opts, path) -> None:
    host = Server(contract(None))
    try:
        url = f"{origin.url}/{path}"
        (name,), _direct, shimmed = run_both(tool, opts, url, host.url, tmp_path)
        assert (shimmed / name).read_bytes() == FRESH
        assert [m for m, _p in host.requests] == ["HEAD"]
    finally:
        host.close()


@pytest.fixture
def filling_host(tmp_path):
    running = start_host(tmp_path / "data", "--allow-private")
    yield running
    running.stop()
    assert_clean_log(running)


@pytest.mark.parametrize(("tool", "opts", "path"), CASES)
def test_the_real_host_serves_them_as_hits(filling_host, origin, tmp_path, tool, opts, path):
    url = f"{origin.url}/{path}"
    headers = wait_for_hit(filling_host, url, timeout=60)
    listed = headers.get("x-withcache-origin-headers", "").lower()
    assert "content-disposition" in [item.strip() for item in listed.split(",")]
    origin.requests.clear()
    (name,), direct, shimmed = run_both(tool, opts, url, filling_host.url, tmp_path)
    assert (shimmed / name).read_bytes() == (direct / name).read_bytes() == FRESH
    assert [m for m, _p in origin.requests] == ["GET"]  # the direct run only
