"""A cold herd: N clients fetch one new artifact through `curlwithcache` at once (issue 15).

The origin is the project's test origin (tests/origin.py) on 127.0.0.1 behind one shared uplink:
a token bucket (default 100 MiB/s) that every body it sends goes through, standing for a lab's
internet link. The artifact is new to a fresh cache-host, so every client's probe misses; the
host starts one fill, the probes wait for its headers (--stream-wait) and every client streams
the fill as it lands. Per N (default 8 and 32) it measures, in the same run:

* one lone direct `curl -o /dev/null` of the artifact from the origin (the baseline);
* N `curlwithcache -o /dev/null` clients started together, each timed from the common start;
* the body bytes the origin sent for the herd (its /_sent counter, before and after);
* then the same N clients again, now all hits (a warm cache): what this machine needs to hand
  N x the artifact to N local curl processes at all, the floor under any cold herd here.

It prints the origin's bytes as a multiple of the artifact (goal <= 1.1x) and the slowest
client's time as a multiple of the lone direct download (goal <= 1.5x) and of the warm herd.
Checks, any of which failing makes the exit status non-zero: every client exits 0 with a 200
of the artifact's size, --verify of them (default 2) stream their body into this script, which
checks its sha256, and no warm client reaches the origin.
The goals are reported, not enforced: on a shared 2-core VM the host, the origin and N curls
compete for the same CPUs.

Prerequisites: curl, the project installed in .venv. From the repo:

    .venv/bin/python bench/herd.py                      # 256 MiB, N = 8 and 32
    .venv/bin/python bench/herd.py --size 64 --clients 8   # a smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    MIB,
    REPO,
    BenchError,
    Workspace,
    raise_on_sigterm,
    start_host,
    system_tool,
    venv_tool,
)

CURL_W = "%{http_code} %{size_download}"


class Origin:
    """tests/origin.py in a process of its own, behind one shared uplink."""

    def __init__(self, ws: Workspace, uplink: int):
        self.proc = ws.spawn(
            [sys.executable, "-m", "tests.origin", "0", "--uplink", str(uplink)],
            cwd=REPO,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def sent(self) -> int:
        with urllib.request.urlopen(f"{self.base}/_sent", timeout=30) as r:
            return json.loads(r.read())["bytes"]


def expected_sha256(size: int, seed: int) -> str:
    from tests.support import payload_sha256

    return payload_sha256(size, seed)


def lone_curl(curl: str, url: str, size: int) -> float:
    started = time.monotonic()
    out = subprocess.run(
        [curl, "-sS", "-o", "/dev/null", "-w", CURL_W, url], capture_output=True, timeout=600
    )
    elapsed = time.monotonic() - started
    if out.returncode != 0 or out.stdout.decode().split() != ["200", str(size)]:
        raise BenchError(f"direct curl failed: {out.returncode} {out.stdout!r} {out.stderr!r}")
    return elapsed


class Client:
    """One curlwithcache run, timed from the herd's common start."""

    def __init__(self, shim: str, url: str, env: dict[str, str], verify: bool, start: float):
        self.verify, self.start = verify, start
        self.elapsed = 0.0
        self.digest = hashlib.sha256()
        self.size = 0
        argv = [shim, "-sS", "-o", "-" if verify else "/dev/null"]
        argv += [] if verify else ["-w", CURL_W]
        self.proc = subprocess.Popen(
            [*argv, url], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        out = b""
        while chunk := self.proc.stdout.read(1 << 20):
            if self.verify:
                self.digest.update(chunk)
                self.size += len(chunk)
            else:
                out += chunk
        self.proc.wait()
        self.elapsed = time.monotonic() - self.start
        self.written = out

    def result(self, size: int, sha256: str) -> float:
        self._thread.join(600)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        if self.proc.returncode != 0:
            raise BenchError(f"a client exited {self.proc.returncode}: {err}")
        if self.verify:
            if (self.size, self.digest.hexdigest()) != (size, sha256):
                raise BenchError(f"a client got {self.size} bytes with the wrong sha256")
        elif self.written.decode().split() != ["200", str(size)]:
            raise BenchError(f"a client got {self.written!r}: {err}")
        return self.elapsed


def wait_committed(data_dir: Path, timeout: float = 600) -> dict:
    """The herd's fill job once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            [venv_tool("withcache-admin"), "jobs", "--json", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        jobs = [json.loads(line) for line in out.stdout.splitlines()]
        if jobs and all(j["state"] not in ("queued", "running") for j in jobs):
            return jobs[0]
        time.sleep(0.2)
    raise BenchError("the fill did not finish")


def herd(ws: Workspace, origin: Origin, n: int, size: int, verify: int, seed: int) -> dict:
    curl = system_tool("curl", "apt-get install curl")
    url = f"{origin.base}/f/{size}/{seed}/artifact-{n}.bin?chunk={MIB}"
    sha256 = expected_sha256(size, seed)
    lone = lone_curl(curl, url, size)
    host = start_host(ws, ws.root / f"data-{n}", "--allow-private", "--no-access-log")
    env = {**os.environ, "WITHCACHE_SERVER": f"http://127.0.0.1:{host.port}"}
    shim = venv_tool("curlwithcache")
    before = origin.sent()
    start = time.monotonic()
    clients = [Client(shim, url, env, i < verify, start) for i in range(n)]
    times = [c.result(size, sha256) for c in clients]
    job = wait_committed(host.data_dir)
    if job["state"] != "completed":
        raise BenchError(f"the fill ended {job['state']}: {job.get('error')}")
    sent = origin.sent() - before
    start = time.monotonic()
    warm = [Client(shim, url, env, i < verify, start) for i in range(n)]
    warm_times = [c.result(size, sha256) for c in warm]
    if origin.sent() - before != sent:
        raise BenchError("a warm client went to the origin")
    return {"n": n, "lone": lone, "times": sorted(times), "sent": sent, "warm": max(warm_times)}


def main() -> int:
    raise_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="artifact size in MiB")
    parser.add_argument("--uplink", type=int, default=100, help="shared uplink in MiB/s")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--verify", type=int, default=2, help="clients whose sha256 is checked")
    args = parser.parse_args()
    size = args.size * MIB
    print(f"artifact {args.size} MiB, origin uplink {args.uplink} MiB/s (shared), cold cache")
    print(f"{'N':>3}  {'lone curl':>9}  {'fastest':>8}  {'median':>8}  {'slowest':>8}  "
          f"{'slowest/lone':>12}  {'origin sent':>11}  {'warm herd':>9}"
          f"  {'slowest/warm':>12}")  # fmt: skip
    ok = True
    with Workspace(prefix="withcache-herd-") as ws:
        origin = Origin(ws, args.uplink * MIB)
        for seed, n in enumerate(args.clients, start=100):
            r = herd(ws, origin, n, size, min(args.verify, n), seed)
            times, ratio, sent = r["times"], r["times"][-1] / r["lone"], r["sent"] / size
            ok &= ratio <= 1.5 and sent <= 1.1
            print(f"{n:>3}  {r['lone']:>8.2f}s  {times[0]:>7.2f}s  {times[len(times) // 2]:>7.2f}s"
                  f"  {times[-1]:>7.2f}s  {ratio:>11.2f}x  {sent:>10.2f}x  {r['warm']:>8.2f}s"
                  f"  {times[-1] / r['warm']:>11.2f}x")  # fmt: skip
    print("goals (slowest <= 1.5x lone, origin <= 1.1x):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"herd: {e}", file=sys.stderr)
        sys.exit(1)
