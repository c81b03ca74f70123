"""Test helpers that run real things: the cache-host under twistd, and a plain origin server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A console script installed beside this Python (the project's venv)."""
    path = BIN / name
    if not path.exists():
        raise RuntimeError(f"{name} is not installed beside {sys.executable}; pip install -e .")
    return str(path)


def admin_json(data_dir: Path, command: str) -> list[dict]:
    """The rows `withcache-admin <command> --json` prints for a data dir."""
    out = subprocess.run(
        [tool("withcache-admin"), command, "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def artifacts_by_key(data_dir: Path) -> dict[str, dict]:
    return {row["key"]: row for row in admin_json(data_dir, "ls")}


def eventually(probe, predicate=bool, timeout: float = 10.0, *, what: str = "", every: float = 0.1):
    """probe()'s value once predicate holds for it (by default: once it is truthy), for state a
    host or a process changes a moment later, such as hit counts, which it batches; fails with
    the last value (and `what` was awaited) after timeout. The one poll helper of the end-to-end
    tests: the in-process ones wait on Deferreds and a Clock instead (tests/clocked.py)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if predicate(value) or time.monotonic() > deadline:
            assert predicate(value), (
                f"not within {timeout} s: {what or 'a change'} (last: {value!r})"
            )
            return value
        time.sleep(every)


def hit_headers(blob_url: str) -> dict[str, str] | None:
    """The headers (lower-cased names) of a HEAD that the host answers from a stored artifact;
    None for a miss or a fill streamed while in progress (which has no origin headers yet)."""
    done = subprocess.run(["curl", "-sSI", blob_url], capture_output=True, text=True, timeout=30)
    lines = done.stdout.splitlines()
    pairs = (line.partition(":") for line in lines[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
    if lines and " 200" in lines[0] and "x-withcache-streaming" not in headers:
        return headers
    return None


def wait_for_hit(host: Host, url: str, timeout: float = 120) -> dict[str, str]:
    """url's hit headers once the host has it stored (a fill it started has finished)."""
    return eventually(
        lambda: hit_headers(host.blob_url(url)), timeout=timeout, what=f"{url} cached"
    )


def db(data_dir: Path, sql: str, *params) -> list[tuple]:
    """The rows of one query on a data dir's cache.db, opened read-only (safe while the host
    runs, or after it died)."""
    conn = sqlite3.connect(f"file:{data_dir / 'cache.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def db_write(data_dir: Path, sql: str, *params) -> None:
    """Run one statement on a data dir's cache.db and commit it: a hostile or damaged catalog,
    written behind the host's back."""
    conn = sqlite3.connect(data_dir / "cache.db")
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


def fd_count(pid: int) -> int:
    """Open file descriptors of a process (/proc/<pid>/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """A kB field (VmRSS, VmHWM) of /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/{pid}/status")


def raw_request(
    host, method: str, path: str, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    """(status, body) of one request sent as given: no Host or Accept-Encoding added."""
    port = int(host.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metrics(host) -> dict[str, float]:
    """The host's /metrics samples by name (with their labels, if any)."""
    from prometheus_client.parser import text_string_to_metric_families

    _status, body = host.get("/metrics")
    values = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return values


def token(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).rstrip(b"=").decode()


@dataclass
class Host:
    """A `twistd -n withcache` subprocess on an ephemeral 127.0.0.1 port."""

    data_dir: Path
    proc: subprocess.Popen
    log_path: Path
    url: str = ""
    log_offset: int = 0  # where this process's lines start in a log shared with earlier runs

    @property
    def pid(self) -> int:
        return self.proc.pid

    def blob_url(self, origin_url: str, name: str = "file") -> str:
        return f"{self.url}/b/{token(origin_url)}/{name}"

    def seed(self, origin_url: str, path: Path | str, *extra: str) -> str:
        """Import a local file under an origin URL with withcache-admin; returns its sha256."""
        out = subprocess.run(
            [tool("withcache-admin"), "import", "--data-dir", str(self.data_dir)]
            + list(extra)
            + [origin_url, str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, f"withcache-admin import failed: {out.stderr}"
        return out.stdout.split()[0]

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str):
        status, body = self.get(path)
        assert status == 200, (status, body)
        return json.loads(body)

    def log(self) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> str:
        """The log once it contains text (the host announces each step it completes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            if self.proc.poll() is not None:
                raise RuntimeError(f"twistd exited with {self.proc.returncode}:\n{log}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log()[-4000:]}")

    def rss_kib(self, field_name: str = "VmRSS") -> int:
        return rss_kib(self.pid, field_name)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        return self.proc.returncode


def start_host(
    data_dir: Path,
    *args: str,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    twistd: list[str] | None = None,
    log_path: Path | None = None,
) -> Host:
    """Start `twistd -n withcache` on an ephemeral port. env: extra environment variables;
    twistd: the command that stands for twistd (e.g. tests.slow_disk_twistd); log_path: where
    its output goes (by default beside the data dir; hosts sharing one need one each)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir.parent / f"{data_dir.name}-twistd.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            (twistd or [tool("twistd")])
            + ["-n", "--pidfile=", "withcache", "--data-dir", str(data_dir)]
            + ["--listen", "tcp:0:interface=127.0.0.1", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
            cwd=Path(__file__).resolve().parent.parent if twistd else None,
        )
    host = Host(data_dir, proc, log_path, log_offset=offset)
    marker = "withcache listening on 127.0.0.1:"
    try:
        log = host.wait_for_log(marker, timeout)
        port = re.search(re.escape(marker) + r"(\d+)", log).group(1)
    except BaseException:
        host.stop(signal.SIGKILL)
        raise
    host.url = f"http://127.0.0.1:{port}"
    return host


def can_make_users() -> bool:
    """Root, useradd and Debian's /etc/skel: what throwaway_user needs."""
    return os.geteuid() == 0 and bool(shutil.which("useradd")) and os.path.exists("/etc/skel")


@contextlib.contextmanager
def throwaway_user(prefix: str = "wc"):
    """A fresh account made from /etc/skel (so with Debian's ~/.profile and ~/.bashrc) and its
    home, removed after (stop its processes first: userdel refuses a logged-in user)."""
    name = f"{prefix}{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, timeout=60)


def assert_clean_log(host: Host) -> None:
    text = host.log()
    for bad in ("Traceback", "Unhandled Error", "Unhandled error"):
        assert bad not in text, f"{bad} in the host's log:\n{text[-4000:]}"


@dataclass
class Origin:
    """A plain origin server on 127.0.0.1 that counts the requests it gets."""

    server: ThreadingHTTPServer
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def put(self, name: str, data: bytes) -> str:
        path = "/" + name.lstrip("/")
        self.files[path] = data
        return self.url + path

    def count(self, path: str, method: str | None = None) -> int:
        return sum(1 for m, p in self.requests if p == path and method in (None, m))


def start_origin() -> Origin:
    origin: Origin

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, with_body: bool) -> None:
            origin.requests.append((self.command, self.path))
            body = origin.files.get(self.path.split("?", 1)[0])
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self):
            self._answer(True)

        def do_HEAD(self):
            self._answer(False)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    origin = Origin(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return origin


MIB = 1 << 20


def payload(size: int, seed: int = 0, start: int = 0, end: int | None = None) -> bytes:
    """Bytes [start, end) of a deterministic pseudo-random file (what write_file writes)."""
    end = size if end is None else min(end, size)
    block = _block(seed)
    out = []
    for n in range(start // MIB, (end + MIB - 1) // MIB if end > start else start // MIB):
        # A block counter in front, so no two MiB of the file are alike.
        chunk = n.to_bytes(8, "big") + block[8:]
        lo, hi = max(start, n * MIB), min(end, (n + 1) * MIB)
        out.append(chunk[lo - n * MIB : hi - n * MIB])
    return b"".join(out)


_blocks: dict[int, bytes] = {}


def _block(seed: int) -> bytes:
    if seed not in _blocks:
        _blocks[seed] = random.Random(seed).randbytes(MIB)
    return _blocks[seed]


def payload_sha256(size: int, seed: int = 0) -> str:
    h = hashlib.sha256()
    for offset in range(0, size, 16 * MIB):
        h.update(payload(size, seed, offset, offset + 16 * MIB))
    return h.hexdigest()


def multipart_parts(body: bytes, size: int) -> list[tuple[int, int, bytes]]:
    """(first, last, bytes) of each part of a multipart/byteranges body."""
    found = []
    for part in re.split(rb"(?i)content-range: bytes ", body)[1:]:
        head, _, rest = part.partition(b"\r\n\r\n")
        first, last = (int(n) for n in head.split(b"/")[0].split(b"-"))
        assert head.startswith(f"{first}-{last}/{size}".encode())
        found.append((first, last, rest[: last - first + 1]))
    return found


def write_file(path: Path, size: int, seed: int = 0) -> Path:
    """A file of `size` pseudo-random bytes (distinct per seed), written in 16 MiB pieces."""
    with open(path, "wb") as f:
        for offset in range(0, size, 16 * MIB):
            f.write(payload(size, seed, offset, offset + 16 * MIB))
    return path


class OriginProcess:
    """tests/origin.py (the misbehaving Twisted origin) in a process of its own; with a
    tests.tls.TestCA it serves HTTPS with the CA's server certificate."""

    def __init__(self, tls=None, uplink: int | None = None):
        extra = ["--tls", str(tls.cert_pem), str(tls.key_pem)] if tls else []
        if uplink:
            extra += ["--uplink", str(uplink)]
        self._context = ssl.create_default_context(cafile=str(tls.ca_pem)) if tls else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.origin", *extra],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            text=True,
        )
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://127.0.0.1:{int(self.proc.stdout.readline())}"

    def seen(self) -> list[dict]:
        url = f"{self.base}/_requests"
        with urllib.request.urlopen(url, timeout=10, context=self._context) as r:
            return json.loads(r.read())

    def gets(self, path: str) -> int:
        return sum(1 for s in self.seen() if s["method"] == "GET" and s["path"] == path)

    def sent(self) -> int:
        """Body bytes the origin has sent, all paths together."""
        url = f"{self.base}/_sent"
        with urllib.request.urlopen(url, timeout=10, context=self._context) as r:
            return json.loads(r.read())["bytes"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


@pytest.fixture
def origin_process():
    """tests/origin.py in a process of its own; a module that wants it as its `origin` fixture
    says so (origin = origin_process)."""
    running = OriginProcess()
    yield running
    running.stop()


@pytest.fixture
def origin_in_process():
    """tests/origin.py on the test's reactor; a module that wants it as its `origin` fixture
    says so (origin = origin_in_process)."""
    from twisted.internet import reactor

    from tests.origin import listen_in_process

    res, port = listen_in_process(reactor)
    yield res
    port.stopListening()
