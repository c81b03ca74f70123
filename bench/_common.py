"""Shared helpers for the bench/ scripts: processes that always get cleaned up, a cache-host
and an nginx peer (http, or https with a throwaway CA) on ephemeral loopback ports, seeding, and
/proc readings.

Stdlib only, so a bench script runs with the project's venv Python and nothing else installed;
the throwaway CA (make_test_ca) uses the cryptography package that twisted[tls] brings along.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.tls import TestCA

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
GIB = 1024 * MIB


class BenchError(RuntimeError):
    """A failed check or a server that would not start: the script exits non-zero."""


def token(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).rstrip(b"=").decode()


def venv_tool(name: str) -> str:
    """A console script of the project: beside this Python, else in the repo's .venv."""
    for directory in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        if (directory / name).exists():
            return str(directory / name)
    raise BenchError(f"{name} not found; run with the project's venv (.venv/bin/python)")


def system_tool(name: str, hint: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found:
        raise BenchError(f"{name} not found ({hint})")
    return found


def raise_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so the same cleanup runs as for Ctrl-C."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)
    # A shell starts `cmd &` with SIGINT ignored, and Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)


class Workspace(contextlib.ExitStack):
    """A temp dir plus every child process started through it, all removed on exit.

    Children get their own session so a terminal Ctrl-C reaches only this script, which then
    stops them in order instead of racing them.
    """

    def __init__(self, prefix: str = "withcache-bench-"):
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.callback(shutil.rmtree, self.root, ignore_errors=True)

    def spawn(
        self, argv: Sequence[str], *, log: Path | None = None, stop: int = signal.SIGTERM, **kw
    ) -> subprocess.Popen:
        if log is not None:
            out = open(log, "wb")  # noqa: SIM115 - closed by the workspace
            self.callback(out.close)
            kw.setdefault("stdout", out)
            kw.setdefault("stderr", subprocess.STDOUT)
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(list(argv), start_new_session=True, **kw)
        self.callback(stop_process, proc, stop)
        return proc


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Ask politely, then SIGKILL the child's own process group (e.g. nginx workers)."""
    if proc.returncode is not None:
        # Reaped earlier: its pid (and group id) may belong to someone else by now.
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    # The group id is the child's pid (start_new_session); the id stays reserved while any
    # member, such as an nginx worker, is alive, so this cannot hit a stranger's group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def free_port() -> int:
    # Racy by nature (nginx binds it later), but nothing else on a bench machine grabs it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_file_text(path: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> str:
    """The first match of pattern in a child's log, failing fast if the child dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        match = re.search(pattern, text)
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.05)
    raise BenchError(f"timed out waiting for {pattern!r} in {path}")


def write_random_file(path: Path, size: int) -> str:
    """Incompressible bytes (so nothing can shortcut them); returns the sha256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 * MIB))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def read_through(path: Path) -> None:
    """Pull a file into the page cache (the `cat file > /dev/null` warm-up)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MIB):
            pass


@dataclass
class Host:
    proc: subprocess.Popen
    data_dir: Path
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url_for(self, origin_url: str, name: str = "file") -> str:
        return f"http://127.0.0.1:{self.port}/b/{token(origin_url)}/{name}"

    def pids(self) -> list[int]:
        """The host and its serving workers (--processes)."""
        return [self.pid, *children(self.pid)]


def start_host(ws: Workspace, data_dir: Path, *extra: str) -> Host:
    """`twistd -n withcache` on an ephemeral 127.0.0.1 port, parsed from its log."""
    log = ws.root / "withcache.log"
    argv = [venv_tool("twistd"), "-n", "--pidfile=", "withcache", "--data-dir", str(data_dir)]
    argv += ["--listen", "tcp:0:interface=127.0.0.1", *extra]
    proc = ws.spawn(argv, log=log)
    port = wait_for_file_text(log, r"withcache listening on 127\.0\.0\.1:(\d+)", proc, 60)
    return Host(proc, data_dir, int(port))


def seed(data_dir: Path, origin_url: str, path: Path) -> tuple[str, int]:
    """withcache-admin import; returns (sha256, size). Works while the host runs (WAL)."""
    out = subprocess.run(
        [venv_tool("withcache-admin"), "import", "--data-dir", str(data_dir), origin_url, path],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    sha256, size, _key = out.stdout.split()
    return sha256, int(size)


def blob_path(data_dir: Path, sha256: str) -> Path:
    return data_dir / "blobs" / sha256[:2] / sha256[2:]


def make_test_ca(directory: Path) -> TestCA:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (tests/tls.py), in
    directory: ca_pem for the clients to trust (curl --cacert, SSL_CERT_FILE for the host),
    cert_pem and key_pem for start_nginx(tls=...)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.tls import make_test_ca as make

    return make(directory)


@dataclass
class Nginx:
    proc: subprocess.Popen
    port: int
    root: Path
    scheme: str = "http"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url_for(self, path: Path) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{path.relative_to(self.root)}"

    def pids(self) -> list[int]:
        """Master and workers: the CPU nginx spends is spread across them."""
        return [self.pid, *children(self.pid)]


def start_nginx(
    ws: Workspace, root: Path, access_log: Path | None = None, tls: TestCA | None = None
) -> Nginx:
    """nginx in the foreground serving files under root read-only, tuned as a static peer:
    sendfile + tcp_nopush, one worker per core, and no access log unless one is asked for
    (a line per request, `METHOD URI STATUS BYTES`, e.g. to count an origin's GETs).

    With tls (make_test_ca's files) it serves https with that server certificate instead, and
    each access log line ends with the connection's TLS protocol and cipher. nginx then encrypts
    in user space: sendfile only applies to plain http (this config does not ask for kTLS)."""
    nginx = system_tool("nginx", "apt-get install nginx-light")
    conf_dir = ws.root / "nginx"
    conf_dir.mkdir()
    port = free_port()
    version = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    # Each compiled-in module wants its temp dir; the packaged defaults live under /var/lib.
    temp_paths = "".join(
        f"    {name.replace('-', '_')}_temp_path {conf_dir / name};\n"
        for name in re.findall(r"--http-([a-z-]+)-temp-path=", version)
    )
    # Workers of a root master drop to `nobody`, which cannot enter a 0700 mkdtemp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = conf_dir / "nginx.conf"
    conf.write_text(
        f"{user}daemon off;\n"
        "worker_processes auto;\n"
        f"pid {conf_dir / 'nginx.pid'};\n"
        f"error_log {conf_dir / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    default_type application/octet-stream;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        + (
            "    log_format bench '$request_method $uri $status $body_bytes_sent"
            + (" $ssl_protocol $ssl_cipher" if tls else "")
            + "';\n"
            f"    access_log {access_log} bench;\n"
            if access_log
            else "    access_log off;\n"
        )
        + f"{temp_paths}"
        "    server {\n"
        + (
            f"        listen 127.0.0.1:{port} ssl;\n"
            f"        ssl_certificate {tls.cert_pem};\n"
            f"        ssl_certificate_key {tls.key_pem};\n"
            # nginx 1.22's default leaves TLS 1.3 out (1.23.4 added it); real origins offer it.
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            if tls
            else f"        listen 127.0.0.1:{port};\n"
        )
        + f"        root {root};\n"
        "    }\n"
        "}\n"
    )
    log = conf_dir / "stdout.log"
    proc = ws.spawn(
        [nginx, "-p", str(conf_dir), "-e", str(conf_dir / "error.log"), "-c", str(conf)],
        log=log,
    )
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            errors = (conf_dir / "error.log").read_text(errors="replace")
            raise BenchError(f"nginx exited {proc.returncode}:\n{errors[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return Nginx(proc, port, root, "https" if tls else "http")
        if time.monotonic() > deadline:
            raise BenchError("nginx did not start listening")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                # Field 4 (ppid) follows the parenthesised comm, which may contain spaces.
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def proc_status(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status (VmHWM, VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no {field} in /proc/{pid}/status")


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def machine_busy(interval: float = 1.0) -> float:
    """Fraction of all CPUs busy over interval: with nothing of ours running, other people's
    work that would skew a measurement on a shared machine."""
    busy0, total0 = _cpu_ticks()
    time.sleep(interval)
    busy1, total1 = _cpu_ticks()
    return (busy1 - busy0) / max(total1 - total0, 1)


def wait_until_quiet(limit: float, patience: float) -> float:
    """Poll until the machine is less than `limit` busy or `patience` seconds passed; returns
    the last reading so the report can say how quiet the run really was."""
    deadline = time.monotonic() + patience
    busy = machine_busy()
    while busy >= limit and time.monotonic() < deadline:
        busy = machine_busy()
    return busy
