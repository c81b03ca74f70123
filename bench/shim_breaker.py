#!/usr/bin/env python3
"""Benchmark: 100 sequential calls through a shim whose cache-host is hung.

The "cache-host" is a socket on 127.0.0.1 that accepts connections and never answers (a hung
process); the origin is a small HTTP server on 127.0.0.1 serving 1 KiB. For the native shim
and the Python shim, each with a fresh breaker state directory, it runs 100 sequential

    curlwithcache -s -o /dev/null <origin-url>

interleaved with the bare `curl -s -o /dev/null <origin-url>` (the real peer, same run), and
prints the first call's time (one probe budget: the breaker opens), then the median, p90 and
maximum of calls 2-100 against the bare tool's (goal for the native shim: each of calls 2-100
adds <= 5 ms). With the breaker off (WITHCACHE_BREAKER=off) it times 5 calls for comparison:
each waits for the whole budget.

    .venv/bin/python bench/shim_breaker.py [--calls 100]

Nothing leaves 127.0.0.1. Build the native shim first (bench/shim_native.py does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from shim import server_free_env, shim_command

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "shim-native" / "zig-out" / "bin" / "withcache-shim"
GOAL_MS = 5.0
BODY = os.urandom(1024)


class Origin(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def hung_host() -> tuple[socket.socket, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited with {done.returncode}")
    return elapsed


def series(shim: list[str], curl: str, url: str, env: dict[str, str], calls: int):
    shim_ms, bare_ms = [], []
    for _ in range(calls):
        shim_ms.append(timed([*shim, "-s", "-o", "/dev/null", url], env))
        bare_ms.append(timed([curl, "-s", "-o", "/dev/null", url], env))
    return shim_ms, bare_ms


def report(label: str, shim_ms: list[float], bare_ms: list[float], goal: float | None) -> None:
    rest, bare = shim_ms[1:], bare_ms[1:]
    extra = [s - b for s, b in zip(rest, bare, strict=True)]
    deciles = statistics.quantiles(rest, n=10)
    print(f"{label}:")
    print(f"  call 1:        {shim_ms[0]:8.1f} ms  (bare curl {bare_ms[0]:.1f} ms)")
    print(
        f"  calls 2-{len(shim_ms)}: median {statistics.median(rest):6.2f} ms"
        f"  p90 {deciles[-1]:6.2f}  max {max(rest):6.2f}"
        f"   bare curl median {statistics.median(bare):6.2f} ms"
    )
    added = statistics.median(rest) - statistics.median(bare)
    line = f"  added per call (2-{len(shim_ms)}): median {added:.2f} ms, paired p90 "
    line += f"{statistics.quantiles(extra, n=10)[-1]:.2f} ms"
    if goal is not None:
        line += f" ({'within' if added <= goal else 'OVER'} the {goal:g} ms goal)"
    print(line)
    print(
        f"  100 calls in all: {sum(shim_ms) / 1000:.2f} s (bare curl {sum(bare_ms) / 1000:.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    opts = parser.parse_args()
    curl = shutil.which("curl")
    if curl is None or not BINARY.exists():
        raise SystemExit("needs curl and the native shim (run bench/shim_native.py first)")
    origin = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    origin.daemon_threads = True
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{origin.server_address[1]}/dl/artifact-1k.bin"
    sock, server = hung_host()
    with tempfile.TemporaryDirectory(prefix="withcache-bench-breaker-") as tmp:
        native = Path(tmp) / "bin" / "curlwithcache"
        native.parent.mkdir()
        native.symlink_to(BINARY)
        python_shim, _label = shim_command()
        base = server_free_env()
        base.pop("PYTHONDONTWRITEBYTECODE", None)  # measure the shim as installed: compiled
        base["PYTHONPATH"] = str(ROOT / "shimsrc")
        base["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        print(f"hung cache-host {server}, origin {url}, {opts.calls} sequential calls each")
        for label, shim, goal in (
            ("native shim", [str(native)], GOAL_MS),
            ("python shim", python_shim, None),
        ):
            state = Path(tmp) / label.replace(" ", "-")
            state.mkdir(mode=0o700)
            env = {**base, "WITHCACHE_SERVER": server, "XDG_RUNTIME_DIR": str(state)}
            report(label, *series(shim, curl, url, env, opts.calls), goal)
        env = {**base, "WITHCACHE_SERVER": server, "WITHCACHE_BREAKER": "off"}
        off = [timed([str(native), "-s", "-o", "/dev/null", url], env) for _ in range(5)]
        print(f"native shim, breaker off: 5 calls, median {statistics.median(off):.0f} ms each")
    sock.close()
    origin.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    main()
