"""Fill throughput of the cache-host against plain curl, from the same nginx origin, in one run.

The origin is nginx on 127.0.0.1 serving a generated file over http (sendfile), or with --https
over TLS: a throwaway CA and a server certificate for 127.0.0.1 are made at run time (tests/tls.py,
TLS 1.2 or 1.3 offered), the cache-host trusts the CA through SSL_CERT_FILE (its TLS client uses
the system trust store, which honours it) and curl through --cacert. nginx encrypts in user space
then, without sendfile, so an https origin is slower and costs more CPU on the same 2 cores; the
scheme is the only difference, every check below applies to both.

Measures, per run and with the origin file warm in the page cache:

* withcache: one `curl -sI` miss on a fresh cache-host (fresh data dir) queues a background fill;
  timed from the probe until the job row's finished_at (the blob is fsynced, renamed and listed
  by then), and separately the job's own started_at -> finished_at;
* curl: `curl -s -o FILE` of the same URL into the same filesystem, timed without and with an
  fsync of FILE afterwards (curl never fsyncs; the host fsyncs before it commits a blob).

It prints MB/s (10^6 bytes/s) of each and the ratio withcache/curl (goal >= 0.8x), medians of
--runs runs, alternating which one goes first. Then 50 `curl -sI` misses of one new URL, released
together, must cost the origin exactly one GET (counted in nginx's access log).

To show where a fill's time goes it also times the probe until the ingest file in tmp/ holds
every byte (streamed, not yet fsynced): that part compares with curl's own work; the rest is the
commit (fsync, rename, catalog row) that curl never does.

Checks, any of which failing makes the exit status non-zero: every fill completes with exactly one
origin GET and the origin's size and sha256 (the blob on disk is re-hashed once), every curl gets
a 200 of the right size, every first probe a 404, and the 50 misses make one job and one origin
GET. The throughput goal is reported, not enforced: it depends on the machine and its disk.
A fill that fails stops the run with the job's error, how many of its bytes it had, what the
origin sent on each GET and the host's log lines about failed attempts (issue 20, item 1: a fill
from an https origin faster than the disk dropped its connection and gave up).
With --https the report also names the TLS protocol and cipher of the origin's GETs.

With --profile DIR it samples one extra fill with py-spy (`.venv/bin/pip install py-spy`; root or
ptrace allowed), prints each thread's busy share and the hottest lines by own time, and leaves
the collapsed stacks in DIR/fill.collapsed (for speedscope or flamegraph.pl).

Prerequisites: `apt-get install nginx-light curl`, the project installed in .venv. From the repo:

    .venv/bin/python bench/fill.py                  # 1 GiB, 3 runs (about a minute)
    .venv/bin/python bench/fill.py --https          # the same from an https origin
    .venv/bin/python bench/fill.py --quick          # 64 MiB, 1 run (smoke test)
    .venv/bin/python bench/fill.py --runs 1 --profile /tmp/fill-profile
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    REPO,
    BenchError,
    Workspace,
    make_test_ca,
    median,
    raise_on_sigterm,
    read_through,
    start_nginx,
    stop_process,
    system_tool,
    token,
    venv_tool,
    wait_for_file_text,
    wait_until_quiet,
)

MB = 1e6
GOAL = 0.8
MISSES = 50
POLL = 0.05
# Busier than this before a run (all CPUs, none of ours running) and the run is suspect.
QUIET = 0.10
BIG = "big.bin"
# A second name for the same bytes: a URL no run has filled, without another GiB on disk.
CONCURRENT = "concurrent.bin"
JOB_DONE = re.compile(r"job (\d+) (completed|failed|cancelled)")


@dataclass
class Origin:
    proc: subprocess.Popen
    port: int
    access_log: Path
    ca: Path | None = None  # https: the throwaway CA the clients trust; None for http

    @property
    def scheme(self) -> str:
        return "https" if self.ca else "http"

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{name}"

    def curl_tls(self) -> list[str]:
        """curl's options to trust this origin."""
        return ["--cacert", str(self.ca)] if self.ca else []

    def host_env(self) -> dict[str, str] | None:
        """The cache-host's environment: its TLS client uses the system trust store, which
        honours SSL_CERT_FILE."""
        return {**os.environ, "SSL_CERT_FILE": str(self.ca)} if self.ca else None

    def requests(self, name: str) -> list[list[str]]:
        """The access log's GETs of name: [GET, /name, status, body bytes sent, (https:)
        TLS protocol, cipher]. nginx logs a request when it ends, cut short or not."""
        text = self.access_log.read_text() if self.access_log.exists() else ""
        lines = (line.split() for line in text.splitlines())
        return [fields for fields in lines if fields[:2] == ["GET", f"/{name}"]]

    def gets(self, name: str) -> int:
        return len(self.requests(name))


@dataclass
class Host:
    proc: subprocess.Popen
    data_dir: Path
    log: Path
    port: int

    def url(self, origin_url: str, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/b/{token(origin_url)}/{name}"


@dataclass
class Fill:
    wall: float  # HEAD probe sent -> job finished_at
    polled: float  # HEAD probe sent -> "job N completed" seen in the log
    streamed: float  # HEAD probe sent -> all bytes written to the ingest file (not yet fsynced)
    job: float  # started_at -> finished_at
    cpu: tuple[float, float]  # host (user, system) CPU seconds, all threads, over the fill
    blob: Path


@dataclass
class Curl:
    wall: float
    fsync: float  # fsync of the output afterwards
    cpu: tuple[float, float]  # (user, system)


def make_origin_file(path: Path, size: int) -> str:
    """Incompressible but cheap: one random MiB, each copy stamped with its index so no two
    blocks are equal (nothing can dedupe them). Returns the sha256."""
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size // MIB):
            chunk = struct.pack("<Q", i) + block[8:]
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def start_origin(ws: Workspace, root: Path, https: bool) -> Origin:
    """nginx as a fast static origin (sendfile; with https a throwaway CA's certificate for
    127.0.0.1), logging each request so GETs can be counted."""
    access_log = ws.root / "origin-access.log"
    ca = make_test_ca(ws.root / "ca") if https else None
    nginx = start_nginx(ws, root, access_log=access_log, tls=ca)
    return Origin(nginx.proc, nginx.port, access_log, ca.ca_pem if ca else None)


def start_host(ws: Workspace, run_dir: Path, origin: Origin) -> Host:
    data_dir, log = run_dir / "data", run_dir / "withcache.log"
    argv = [venv_tool("twistd"), "-n", "--pidfile=", "withcache", "--data-dir", str(data_dir)]
    argv += ["--listen", "tcp:0:interface=127.0.0.1", "--allow-private"]
    proc = ws.spawn(argv, log=log, env=origin.host_env())
    port = wait_for_file_text(log, r"withcache listening on 127\.0\.0\.1:(\d+)", proc, 60)
    # Start-up recovery runs after listening; let it finish so it is not inside the timing.
    wait_for_file_text(log, r"(recovered data dir)", proc, 60)
    return Host(proc, data_dir, log, int(port))


def admin(*args: str) -> list[dict]:
    out = subprocess.run(
        [venv_tool("withcache-admin"), *args, "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def probe(url: str) -> str:
    return subprocess.run(
        ["curl", "-sI", "-o", "/dev/null", "-w", "%{http_code}", url],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout


def wait_job_done(host: Host, timeout: float, size: int = 0) -> tuple[str, str, float | None]:
    """(job id, final state, when the ingest file in tmp/ first had all `size` bytes) once the
    host logs the job's end. The log, not withcache-admin, is polled because each admin call
    is a Python start-up competing with the fill for 2 cores.

    The ingest writes through a 1 MiB buffer that commit() flushes (at the latest) right before
    its fsync, so the full size appears in tmp/ as streaming ends and committing begins: that
    splits the fill into the part curl also does and the durability curl does not."""
    deadline = time.monotonic() + timeout
    tmp = host.data_dir / "tmp"
    streamed = None
    tick = 0
    while time.monotonic() < deadline:
        if size and streamed is None:
            # stat() is cheap, so this is polled 5x as often as the log.
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(tmp):
                    with contextlib.suppress(FileNotFoundError):
                        if entry.stat().st_size >= size:
                            streamed = time.perf_counter()
        if tick % 5 == 0:
            match = JOB_DONE.search(host.log.read_text(errors="replace"))
            if match:
                return match.group(1), match.group(2), streamed
            if host.proc.poll() is not None:
                raise BenchError(f"the cache-host exited {host.proc.returncode}")
        tick += 1
        time.sleep(POLL / 5)
    raise BenchError(f"no fill finished within {timeout:.0f} s (see {host.log})")


def run_fill(
    ws: Workspace, origin: Origin, run_dir: Path, size: int, sha256: str, timeout: float
) -> Fill:
    host = start_host(ws, run_dir, origin)
    try:
        origin_url = origin.url(BIG)
        gets_before = origin.gets(BIG)
        cpu_before = user_system(host.proc.pid)
        start_epoch, start = time.time(), time.perf_counter()
        code = probe(host.url(origin_url, BIG))
        if code != "404":
            raise BenchError(f"probe of an empty cache answered {code!r}, not 404")
        job_id, state, streamed = wait_job_done(host, timeout, size)
        polled = time.perf_counter() - start
        cpu_after = user_system(host.proc.pid)
        [job] = [
            j for j in admin("jobs", "--data-dir", str(host.data_dir)) if str(j["id"]) == job_id
        ]
        if state != "completed":
            report = failure_report(host, origin, job, BIG, gets_before)
            raise BenchError(f"fill {state}: {job['error']}\n{report}")
        if streamed is None:
            raise BenchError("never saw the complete ingest file in tmp/ before the commit")
        # finished_at is the host's wall clock; it must fall before the log line was seen.
        if not 0 < job["finished_at"] - start_epoch <= polled + 0.01:
            raise BenchError(f"job finished_at {job['finished_at']} is off this machine's clock")
        [artifact] = admin("ls", "--data-dir", str(host.data_dir))
        if (artifact["size"], artifact["sha256"]) != (size, sha256):
            raise BenchError(f"filled {artifact['size']} bytes, sha256 {artifact['sha256']}")
        if (gets := wait_gets(origin, BIG, gets_before + 1) - gets_before) != 1:
            raise BenchError(f"one fill made {gets} origin GETs")
    finally:
        stop_process(host.proc)
    blob = host.data_dir / "blobs" / sha256[:2] / sha256[2:]
    return Fill(
        wall=job["finished_at"] - start_epoch,
        polled=polled,
        streamed=streamed - start,
        job=job["finished_at"] - job["started_at"],
        cpu=(cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1]),
        blob=blob,
    )


def run_curl(origin: Origin, run_dir: Path, size: int) -> Curl:
    out = run_dir / "curl.out"
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [
            "curl",
            "-s",
            *origin.curl_tls(),
            "-o",
            str(out),
            "-w",
            "%{http_code} %{size_download}",
            origin.url(BIG),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync = time.perf_counter() - start - wall
    if result.returncode or result.stdout != f"200 {size}":
        raise BenchError(f"curl exited {result.returncode} with {result.stdout!r}")
    return Curl(wall, fsync, (after.ru_utime - usage.ru_utime, after.ru_stime - usage.ru_stime))


def user_system(pid: int) -> tuple[float, float]:
    """utime and stime of a process (all its threads) in seconds: the split shows how much of
    a transfer is the kernel's copying, which curl pays as well."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def cpu_text(cpus: list[tuple[float, float]]) -> str:
    user, system = median([u for u, _ in cpus]), median([s for _, s in cpus])
    return f"{user:.2f} user + {system:.2f} sys s"


def wait_gets(origin: Origin, name: str, at_least: int, settle: float = 0.5) -> int:
    """The GET count for name once it reaches at_least, plus a settle period in which a
    duplicate request would show up; nginx logs a request only after its last byte."""
    deadline = time.monotonic() + 10
    while origin.gets(name) < at_least and time.monotonic() < deadline:
        time.sleep(POLL)
    time.sleep(settle)
    return origin.gets(name)


def concurrent_misses(ws: Workspace, origin: Origin, timeout: float) -> tuple[int, int, dict]:
    """(origin GETs, fill jobs, probe status counts) for MISSES simultaneous misses of one URL."""
    run_dir = ws.root / "concurrent"
    run_dir.mkdir()
    host = start_host(ws, run_dir, origin)
    try:
        url = host.url(origin.url(CONCURRENT), CONCURRENT)
        # Every curl is started first and blocks reading a shared pipe; closing its write end
        # releases them all at once, so process start-up does not spread the probes out.
        gate_r, gate_w = os.pipe()
        probes = [
            ws.spawn(
                ["sh", "-c", 'read -r _; exec curl -sI -o /dev/null -w "%{http_code}" "$0"', url],
                stdin=gate_r,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(MISSES)
        ]
        os.close(gate_r)
        time.sleep(0.5)
        os.close(gate_w)
        codes = collections.Counter(p.communicate(timeout=60)[0] or "?" for p in probes)
        # 404 is a miss; a 200 is a probe that lost the race to the finished fill.
        if set(codes) - {"404", "200"}:
            raise BenchError(f"the concurrent probes answered {dict(codes)}")
        job_id, state, _ = wait_job_done(host, timeout)
        jobs = admin("jobs", "--data-dir", str(host.data_dir))
        if state != "completed":
            [job] = [j for j in jobs if str(j["id"]) == job_id]
            report = failure_report(host, origin, job, CONCURRENT, 0)
            raise BenchError(f"the fill after {MISSES} misses {state}: {job['error']}\n{report}")
    finally:
        stop_process(host.proc)
    return wait_gets(origin, CONCURRENT, 1, settle=1.0), len(jobs), dict(codes)


def profile_fill(ws: Workspace, origin: Origin, out_dir: Path, timeout: float) -> None:
    """Sample one fill with py-spy; print where the host's threads spend their samples."""
    py_spy = venv_tool("py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir = ws.root / "profile"
    run_dir.mkdir()
    host = start_host(ws, run_dir, origin)
    raw = out_dir / "fill.collapsed"
    try:
        # --nonblocking: pausing the host 250 times a second would distort what is measured.
        spy = ws.spawn(
            [py_spy, "record", "-p", str(host.proc.pid), "-r", "250", "--threads",
             "--nonblocking", "-f", "raw", "-o", str(raw)],
            log=out_dir / "py-spy.log",
        )  # fmt: skip
        time.sleep(1.5)  # py-spy attaches asynchronously
        start = time.perf_counter()
        if probe(host.url(origin.url(BIG), BIG)) != "404":
            raise BenchError("the profiled probe was not a miss")
        wait_job_done(host, timeout)
        seconds = time.perf_counter() - start
    finally:
        # py-spy writes its output when the target exits.
        stop_process(host.proc)
    spy.wait(60)
    if not raw.exists():
        raise BenchError(f"py-spy wrote nothing; see {out_dir / 'py-spy.log'}")
    own: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        threads[frames[0]] += int(count)
        own[frames[-1]] += int(count)
    busy = sum(threads.values())
    print(f"\nprofile of one fill under py-spy ({seconds:.2f} s wall), samples in {raw}")
    print("  busy share of the fill's wall time, per thread:")
    for thread, count in threads.most_common(4):
        print(f"  {100 * count / (250 * seconds):5.1f}%  {thread}")
    print("  own time of the hottest lines, share of all busy samples:")
    for frame, count in own.most_common(10):
        print(f"  {100 * count / busy:5.1f}%  {frame}{source_line(frame)}")


def source_line(frame: str) -> str:
    """`  | the code` for a py-spy frame like `Ingest.write (withcache/store.py:170)` in this
    repo, so a reader need not look the line up (and a stale line number shows)."""
    match = re.search(r"\((withcache/[^:]+):(\d+)\)$", frame)
    if not match:
        return ""
    with contextlib.suppress(OSError, IndexError):
        text = (REPO / match.group(1)).read_text().splitlines()[int(match.group(2)) - 1]
        return f"  | {text.strip()}"
    return ""


def mbps(size: int, seconds: float) -> float:
    return size / MB / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="artifact size (MiB)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 MiB, 1 run")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy one extra fill")
    parser.add_argument(
        "--https", action="store_true", help="the origin serves TLS (a throwaway CA's certificate)"
    )
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.runs = 64, 1
    if args.size_mib < 1 or args.runs < 1:
        parser.error("--size-mib and --runs must be at least 1")
    raise_on_sigterm()
    size = args.size_mib * MIB
    # Generous: a fill slower than 5 MB/s is broken, not slow.
    timeout = 60 + size / (5 * MB)
    try:
        system_tool("curl", "apt-get install curl")
        with Workspace("withcache-bench-fill-") as ws:
            return bench(ws, args, size, timeout)
    except BenchError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130


def bench(ws: Workspace, args, size: int, timeout: float) -> int:
    www = ws.root / "www"
    www.mkdir()
    print(f"generating {args.size_mib} MiB origin file in {ws.root} ...", file=sys.stderr)
    sha256 = make_origin_file(www / BIG, size)
    os.link(www / BIG, www / CONCURRENT)
    origin = start_origin(ws, www, args.https)
    read_through(www / BIG)
    os.sync()
    # One untimed download so nginx's open-file and sendfile paths are warm too.
    subprocess.run(
        ["curl", "-s", *origin.curl_tls(), "-o", "/dev/null", origin.url(BIG)], check=True
    )

    fills: list[Fill] = []
    curls: list[Curl] = []
    busy: list[float] = []
    for i in range(args.runs):
        run_dir = ws.root / f"run{i + 1}"
        run_dir.mkdir()
        busy.append(wait_until_quiet(QUIET, 30))
        # Alternate the order so whatever the first transfer leaves behind (warm caches, a
        # busier disk) favours neither side.
        order = ("curl", "fill") if i % 2 == 0 else ("fill", "curl")
        for which in order:
            if which == "fill":
                fills.append(run_fill(ws, origin, run_dir, size, sha256, timeout))
                # Once: the bytes on disk, not only the digest the host computed.
                if i == 0 and hash_file(fills[-1].blob) != sha256:
                    raise BenchError(f"blob {fills[-1].blob} does not hash to {sha256}")
                shutil.rmtree(run_dir / "data")
            else:
                curls.append(run_curl(origin, run_dir, size))
                (run_dir / "curl.out").unlink()
            # Write-back of one side's GiB must not land in the other side's timing.
            os.sync()
        f, c = fills[-1], curls[-1]
        print(
            f"run {i + 1} ({order[0]} first): withcache {mbps(size, f.wall):.0f} MB/s"
            f" (streamed {mbps(size, f.streamed):.0f}, host CPU {sum(f.cpu):.2f} s),"
            f" curl {mbps(size, c.wall):.0f} MB/s (+fsync {mbps(size, c.wall + c.fsync):.0f},"
            f" CPU {sum(c.cpu):.2f} s), machine {100 * busy[-1]:.0f}% busy before"
        )

    print(f"{MISSES} concurrent misses of one new URL ...", file=sys.stderr)
    gets, jobs, codes = concurrent_misses(ws, origin, timeout)

    def row(label: str, seconds: list[float]) -> tuple[str, float, float]:
        return label, median([mbps(size, t) for t in seconds]), median(seconds)

    rows = [
        row("withcache: probe -> job finished (fsynced, listed)", [f.wall for f in fills]),
        row("withcache: job started_at -> finished_at", [f.job for f in fills]),
        row("withcache: probe -> all bytes in tmp/ (pre-fsync)", [f.streamed for f in fills]),
        row("curl -s -o FILE (curl never fsyncs)", [c.wall for c in curls]),
        row("curl -s -o FILE, then fsync(FILE)", [c.wall + c.fsync for c in curls]),
    ]
    fill, _, streamed, curl, curl_fsync = (rate for _, rate, _ in rows)
    served = "https (TLS, no sendfile)" if origin.ca else "http (sendfile)"
    print(
        f"\n{args.size_mib} MiB from nginx over {served} on 127.0.0.1, {os.cpu_count()} cores,"
        f" medians of {args.runs} run(s); MB = 10^6 bytes"
    )
    print(f"  {'':52} {'MB/s':>7} {'s':>6}")
    for label, rate, seconds in rows:
        print(f"  {label:52} {rate:7.0f} {seconds:6.2f}")
    print(
        f"  CPU per transfer: host {cpu_text([f.cpu for f in fills])},"
        f" curl {cpu_text([c.cpu for c in curls])}"
    )
    print(f"  filled blobs' sha256 = the origin file's ({sha256[:16]}...)")
    if origin.ca:
        tls = sorted(
            {" ".join(r[4:6]) for name in (BIG, CONCURRENT) for r in origin.requests(name)}
        )
        print(f"  TLS of the origin's GETs (nginx's log): {', '.join(tls)}")
    print(
        f"  {MISSES} concurrent misses of one new URL: {gets} origin GET(s), {jobs} fill job(s),"
        f" probes answered {dict(sorted(codes.items()))}"
    )
    for label, ratio in (
        ("withcache/curl, end to end", fill / curl),
        ("withcache/curl, both fsynced", fill / curl_fsync),
        ("withcache/curl, streaming only (neither fsynced)", streamed / curl),
    ):
        print(f"  ratio {label:48} {ratio:5.2f}x")
    verdict = "meets" if fill / curl >= GOAL else "below"
    print(
        f"ratio withcache/curl = {fill / curl:.2f}x ({verdict} the {GOAL}x goal);"
        f" {fill / curl_fsync:.2f}x against curl + fsync"
    )
    ok = gets == 1 and jobs == 1
    if not ok:
        print(f"FAIL: {MISSES} concurrent misses made {gets} origin GETs and {jobs} jobs, not 1")
    if args.profile:
        profile_fill(ws, origin, args.profile, timeout)
    return 0 if ok else 1


def failure_report(host: Host, origin: Origin, job: dict, name: str, gets_before: int) -> str:
    """How far a failed fill got: the job's bytes, what the origin sent on each of the fill's
    GETs (those after the first gets_before), and the host's lines about failed attempts."""
    wait_gets(origin, name, gets_before + 1)  # nginx logs a GET when it ends
    sent = [f"{r[2]} {int(r[3]):,}" for r in origin.requests(name)[gets_before:]]
    attempts = [
        line.split(" ", 2)[-1]
        for line in host.log.read_text(errors="replace").splitlines()
        if re.search(r"attempt \d+ failed|gave up", line)
    ]
    total = f"{job['bytes_total']:,}" if job["bytes_total"] is not None else "?"
    return "\n".join(
        [
            f"  job {job['id']}: {job['bytes_done'] or 0:,} of {total} bytes done",
            f"  origin GETs of /{name} logged so far (status, body bytes sent; nginx logs a"
            f" GET when its connection closes): {'; '.join(sent)}",
            *(f"  host log: {line}" for line in attempts),
        ]
    )


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    sys.exit(main())
