"""deploy/cluster/nginx.conf, run for real: Debian's nginx with that file (only the upstream
addresses, the listen address and the process paths rewritten for loopback) in front of two
small HTTP backends that answer with their own name.

What the cluster relies on: one artifact always reaches the same host (whatever the file name or
the method, so a shim's HEAD probe and its GET warm the same local copy), artifacts spread over
the hosts, a host that is down is skipped, and bytes pass through as they come (a fill streams).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "deploy" / "cluster" / "nginx.conf"


class _Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        if self.server.down.is_set():  # type: ignore[attr-defined]
            # A dead host's kept-alive connections die with it: no answer, the socket closed.
            self.close_connection = True
            return
        name = self.server.name.encode()  # type: ignore[attr-defined]
        if self.path.startswith("/slow"):
            # The first bytes, then a pause the client must not have to wait out to see them.
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"first")
            self.wfile.flush()
            self.server.release.wait(10)  # type: ignore[attr-defined]
            self.wfile.write(b"-last")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.send_header("X-Backend", name.decode())
        self.end_headers()
        if body:
            self.wfile.write(name)

    def log_message(self, *args: object) -> None:
        pass


def _serve(name: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    server.daemon_threads = True
    server.name = name  # type: ignore[attr-defined]
    server.release = threading.Event()  # type: ignore[attr-defined]
    server.down = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def front(tmp_path):
    """(port, {name: backend server}) with the cluster's front in the middle."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "Debian's nginx is needed (./dev test installs it)"
    backends = {"withcache-a": _serve("withcache-a"), "withcache-b": _serve("withcache-b")}
    port = _free_port()
    text = CONF.read_text()
    for name, server in backends.items():
        text, n = re.subn(rf"server {name}:3000", f"server 127.0.0.1:{server.server_port}", text)
        assert n == 1, f"the front names {name} once"
    text, n = re.subn(r"listen 3000;", f"listen 127.0.0.1:{port};", text)
    assert n == 1
    version = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    temp_paths = "".join(
        f"    {name.replace('-', '_')}_temp_path {tmp_path / name};\n"
        for name in re.findall(r"--http-([a-z-]+)-temp-path=", version)
    )
    text = text.replace("http {\n", "http {\n    access_log off;\n" + temp_paths, 1)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"{user}daemon off;\npid {tmp_path / 'nginx.pid'};\n{text}")
    log = tmp_path / "error.log"
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-e", str(log), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "nginx did not start listening"
            time.sleep(0.05)
        yield port, backends
    finally:
        for server in backends.values():
            server.release.set()  # type: ignore[attr-defined]
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for server in backends.values():
            server.shutdown()
            server.server_close()


def _ask(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, response.getheader("X-Backend") or body
    finally:
        conn.close()


def _token(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def test_one_artifact_reaches_one_host_whatever_the_name_or_method(front):
    port, _ = front
    for i in range(20):
        token = _token(f"https://vendor.example/cuda-{i}.run")
        answers = {
            _ask(port, f"/b/{token}/cuda-{i}.run")[1],
            _ask(port, f"/b/{token}/renamed.bin")[1],
            _ask(port, f"/b/{token}/cuda-{i}.run", "HEAD")[1],
        }
        assert len(answers) == 1, (i, answers)


def test_blob_by_url_is_hashed_on_the_url(front):
    port, _ = front
    for i in range(20):
        url = f"https://vendor.example/rocm-{i}.deb"
        first = _ask(port, f"/blob?url={url}")[1]
        assert _ask(port, f"/blob?url={url}", "HEAD")[1] == first


def test_artifacts_spread_over_the_hosts(front):
    port, _ = front
    served = Counter(_ask(port, f"/b/{_token(f'https://h.example/{i}')}/f")[1] for i in range(200))
    assert set(served) == {"withcache-a", "withcache-b"}, served
    assert min(served.values()) >= 40, served  # ketama over 2 hosts: far from all-on-one


def test_a_host_that_is_down_is_skipped(front):
    port, backends = front
    token = next(
        _token(f"https://h.example/{i}")
        for i in range(100)
        if _ask(port, f"/b/{_token(f'https://h.example/{i}')}/f")[1] == "withcache-a"
    )
    backends["withcache-a"].down.set()  # type: ignore[attr-defined]
    backends["withcache-a"].shutdown()
    backends["withcache-a"].server_close()
    for _ in range(5):
        assert _ask(port, f"/b/{token}/f") == (200, "withcache-b")


def test_bytes_pass_through_as_they_come(front):
    port, backends = front
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: front\r\n\r\n")
        s.settimeout(5)
        seen = b""
        while b"first" not in seen:
            chunk = s.recv(4096)
            assert chunk, seen
            seen += chunk
        # The backend is still holding the rest back: the front did not wait for it.
        for server in backends.values():
            server.release.set()  # type: ignore[attr-defined]
        while not seen.endswith(b"-last"):
            chunk = s.recv(4096)
            assert chunk, seen
            seen += chunk
