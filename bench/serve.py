"""Serving throughput of the cache-host against nginx, on the same blob file, in one run.

Measures, for one artifact served by `twistd -n withcache` and by a tuned nginx (sendfile,
tcp_nopush, no access log) pointed at the very same blob file in the data dir:

* MB/s (10^6 bytes/s) of one `curl` download of a big artifact (default 1 GiB),
* aggregate MB/s of 8 concurrent `curl` downloads (total bytes / wall time of the batch),
* requests/s for a 64 KiB artifact with `wrk -t2 -c32`,
* the server's CPU time per GiB / cores busy, and the host's peak RSS (VmHWM),

each the median of --runs runs, alternating which server goes first, with the page cache warm.
It checks one full download per server against the seeded sha256, that every response was a
200 of the right size, and that the host counted every GET as a hit. Exits non-zero otherwise.

With --profile DIR it then samples the host with py-spy and counts its syscalls with strace
(for the single big stream and for the 64 KiB request rate) and prints where the time goes.

Prerequisites: `apt-get install nginx-light wrk curl` (plus `strace` for --profile), the project
installed in .venv (`pip install -e .`), and for --profile `.venv/bin/pip install py-spy` (root,
or ptrace allowed). Run from the repo root:

    .venv/bin/python bench/serve.py                 # 1 GiB, 3 runs, wrk -d10s (a few minutes)
    .venv/bin/python bench/serve.py --quick         # 64 MiB, 1 run, wrk -d3s (smoke test)
    .venv/bin/python bench/serve.py --runs 1 --profile /tmp/serve-profile

On a shared machine other work skews every number (2 cores: one busy process halves what the
servers and clients get), so each run first waits up to --wait-quiet seconds for the machine to
be under 10% busy, prints how busy it was, and the report warns if a run never got quiet.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    GIB,
    MIB,
    BenchError,
    Host,
    Workspace,
    blob_path,
    cpu_seconds,
    median,
    proc_status,
    raise_on_sigterm,
    read_through,
    seed,
    start_host,
    start_nginx,
    system_tool,
    venv_tool,
    wait_until_quiet,
    write_random_file,
)
from _pressure import cold_reads, many_readers, slow_readers

BIG_ORIGIN = "https://bench.invalid/serve/big.bin"
SMALL_ORIGIN = "https://bench.invalid/serve/small.bin"
SMALL_SIZE = 64 * 1024
CLIENTS = 8
WRK_CONNECTIONS = 32
CURL_FORMAT = "%{http_code} %{size_download} %{time_total}"
MB = 1e6
# Busier than this before a run (all CPUs, with none of ours running) and the run is suspect:
# on 2 cores even one busy process halves what the servers and the clients get.
QUIET = 0.10


@dataclass
class Server:
    name: str
    big_url: str
    small_url: str
    # A function: nginx's worker pids are only known once it runs.
    pids: Callable[[], list[int]]
    samples: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))


def curl_argv(url: str) -> list[str]:
    return ["curl", "-s", "-o", "/dev/null", "-w", CURL_FORMAT, url]


def check_curl(out: str, url: str, size: int) -> tuple[int, float]:
    parts = out.split()
    if len(parts) != 3:
        raise BenchError(f"GET {url}: curl printed {out!r}")
    code, got, seconds = parts
    if code != "200" or int(got) != size:
        raise BenchError(f"GET {url}: status {code}, {got} bytes (expected 200, {size})")
    return int(got), float(seconds)


def stream(url: str, clients: int, size: int) -> tuple[float, float]:
    """(MB/s, wall seconds) of `clients` concurrent full downloads started together."""
    procs: list[subprocess.Popen] = []
    try:
        start = time.perf_counter()
        procs = [
            subprocess.Popen(curl_argv(url), stdout=subprocess.PIPE, text=True)
            for _ in range(clients)
        ]
        outs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = [check_curl(out, url, size) for out in outs]
    if clients == 1:
        # curl's own clock leaves out its process start-up, which is not the server's cost.
        got, seconds = results[0]
        return got / seconds / MB, seconds
    return sum(got for got, _ in results) / wall / MB, wall


def verify(url: str, sha256: str, size: int, header: str | None = None) -> None:
    """One full download hashed as it arrives; optionally a response header must be sha256."""
    argv = ["curl", "-sS", "--fail", "-D", "/dev/stderr", url]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    digest, got = hashlib.sha256(), 0
    try:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(MIB):
            digest.update(chunk)
            got += len(chunk)
        headers = proc.stderr.read().decode("latin-1") if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"verify GET {url}: curl exit {proc.returncode}\n{headers}")
    if got != size or digest.hexdigest() != sha256:
        raise BenchError(f"verify GET {url}: {got} bytes sha256 {digest.hexdigest()}")
    if header and not re.search(rf"(?im)^{header}:\s*{sha256}\s*$", headers):
        raise BenchError(f"verify GET {url}: no {header}: {sha256} header\n{headers}")


@dataclass
class WrkResult:
    rps: float
    requests: int
    output: str


def wrk(url: str, seconds: int, threads: int = 2) -> WrkResult:
    argv = [
        system_tool("wrk", "apt-get install wrk"),
        f"-t{threads}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{seconds}s",
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout + out.stderr
    rps = re.search(r"Requests/sec:\s*([\d.]+)", text)
    requests = re.search(r"(\d+) requests in", text)
    if out.returncode != 0 or not rps or not requests:
        raise BenchError(f"wrk {url} failed ({out.returncode}):\n{text}")
    # wrk prints these lines only when they are non-zero.
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    if bad or errors:
        raise BenchError(f"wrk {url}: not every response was a clean 200:\n{text}")
    return WrkResult(float(rps.group(1)), int(requests.group(1)), text)


def hits(host: Host) -> dict[str, int]:
    """Hit counters by origin URL, read the way an operator would."""
    out = subprocess.run(
        [venv_tool("withcache-admin"), "ls", "--json", "--data-dir", str(host.data_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {row["url"]: row["hits"] for row in map(json.loads, out.stdout.splitlines())}


def measure_once(server: Server, size: int, wrk_seconds: int) -> str:
    s = server.samples
    pids = server.pids()
    cpu0 = cpu_seconds(pids)
    s["one"].append(stream(server.big_url, 1, size)[0])
    s["many"].append(stream(server.big_url, CLIENTS, size)[0])
    # Over all 1 + CLIENTS downloads: one alone is too few clock ticks for nginx.
    s["cpu_per_gib"].append((cpu_seconds(pids) - cpu0) / ((1 + CLIENTS) * size / GIB))
    pids = server.pids()
    cpu0, t0 = cpu_seconds(pids), time.perf_counter()
    result = wrk(server.small_url, wrk_seconds)
    s["cores"].append((cpu_seconds(pids) - cpu0) / (time.perf_counter() - t0))
    s["rps"].append(result.rps)
    s["wrk_requests"].append(result.requests)
    return (
        f"{server.name} 1c {s['one'][-1]:.0f} MB/s, {CLIENTS}c {s['many'][-1]:.0f} MB/s,"
        f" {s['rps'][-1]:.0f} req/s"
    )


ROWS = [
    ("one", "1 client, MB/s", True),
    ("many", f"{CLIENTS} clients, MB/s aggregate", True),
    ("rps", f"64 KiB, req/s (wrk -t2 -c{WRK_CONNECTIONS})", True),
    ("cpu_per_gib", "server CPU s per GiB streamed", False),
    ("cores", "server cores busy under wrk", False),
]


def report(ours: Server, peer: Server, wrk_seconds: int) -> str:
    lines = [f"{'median of runs':<36} {'withcache':>10} {'nginx':>10} {'ratio':>7}"]
    for key, label, _ in ROWS:
        a, b = median(ours.samples[key]), median(peer.samples[key])
        digits = 0 if a >= 100 else 2
        ratio = f"{a / b:.2f}" if b else "-"
        lines.append(f"{label:<36} {a:>10.{digits}f} {b:>10.{digits}f} {ratio:>7}")
    ratios = ", ".join(
        f"{label.split(',')[0]} {median(ours.samples[k]) / median(peer.samples[k]):.2f}x"
        for k, label, headline in ROWS
        if headline
    )
    lines.append(f"ratios withcache/nginx: {ratios} (wrk -d{wrk_seconds}s)")
    return "\n".join(lines)


# --- profiling -------------------------------------------------------------------------------


def attach(ws: Workspace, argv: list[str], log: Path, ready: str) -> subprocess.Popen:
    """Start a tracer and wait until it says it is attached, so the load is fully covered."""
    proc = ws.spawn(argv, log=log)
    deadline = time.monotonic() + 20
    while ready not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"{argv[0]} did not attach:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    time.sleep(0.2)
    return proc


def detach(proc: subprocess.Popen) -> None:
    # Both tracers write their report on SIGINT and detach cleanly.
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise BenchError(f"{proc.args[0]} did not stop on SIGINT") from None


def load_stream(url: str, size: int, min_seconds: float) -> tuple[int, float]:
    """Single-client downloads until min_seconds passed (enough samples); (bytes, seconds)."""
    total, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        stream(url, 1, size)
        total += size
    return total, time.perf_counter() - start


def strace_table(path: Path) -> list[tuple[str, int]]:
    """(syscall, calls) rows of an `strace -c` summary, most frequent first."""
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls = int(parts[3])
            rows.append((parts[-1], calls))
    return sorted(rows, key=lambda r: -r[1])


def summarise_strace(path: Path, unit: float, unit_name: str, top: int = 8) -> str:
    rows = strace_table(path)
    total = sum(c for _, c in rows)
    listed = ", ".join(f"{name} {calls / unit:,.1f}" for name, calls in rows[:top])
    return f"  syscalls per {unit_name}: {total / unit:,.1f} total; {listed}"


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")
# Leaves where a thread sleeps on a lock or queue; py-spy does not always see that as idle.
WAITING = ("Condition.wait (threading.py)", "Queue.get (queue.py)")
# Modules on (nearly) every stack: they say nothing about where the time goes.
GENERIC = (
    "twistd",
    "twisted.scripts",
    "twisted.application",
    "twisted.internet.base",
    "twisted.internet.epollreactor",
    "twisted.internet.posixbase",
    "twisted.python.log",
    "twisted.python.context",
    "twisted.python.threadpool",
    "twisted._threads",
    "threading",
)


def frame_name(frame: str) -> tuple[str, str]:
    """("Class.func (pkg/mod.py)", "pkg.mod") of one py-spy frame."""
    m = FRAME.match(frame)
    if not m:
        return frame, ""
    return f"{m['func']} ({m['file']})", m["file"].removesuffix(".py").replace("/", ".")


def summarise_pyspy(path: Path, top: int = 10) -> str:
    """Where the busy samples of py-spy's collapsed stacks (`--format raw --threads`, lines of
    `thread;frame;...;frame count`) go: by thread, by leaf function, by module."""
    self_time: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    waiting = total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        thread, *frames = stack.split(";")
        count = int(count_text)
        leaf = frame_name(frames[-1])[0] if frames else thread
        if leaf in WAITING:
            waiting += count
            continue
        total += count
        threads[thread.split(": ", 1)[-1]] += count
        self_time[leaf] += count
        named = {frame_name(f) for f in frames}
        for module in {module for _, module in named}:
            if module and not module.startswith(GENERIC):
                modules[module] += count
        for function, module in named:
            if module and not module.startswith(GENERIC):
                functions[function] += count
    if not total:
        return "  (no samples)"

    def pct(counter: collections.Counter[str], n: int) -> list[str]:
        return [f"    {100 * c / total:5.1f}%  {name}" for name, c in counter.most_common(n)]

    return "\n".join(
        [
            f"  {total} busy samples ({waiting} waiting on a lock/queue left out); by thread:",
            *pct(threads, 3),
            "  self time (leaf function; C calls such as read/send count as their caller):",
            *pct(self_time, top),
            "  inclusive, by module (reactor/twistd plumbing left out):",
            *pct(modules, top),
            "  inclusive, by function (same):",
            *pct(functions, top + 4),
        ]
    )


def profile(
    ws: Workspace, out_dir: Path, host: Host, peer: Server, size: int, wrk_seconds: int
) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or venv_tool("py-spy")
    strace = system_tool("strace", "apt-get install strace")
    big, small = host.url_for(BIG_ORIGIN), host.url_for(SMALL_ORIGIN)
    report_lines = []

    def pyspy(name: str) -> subprocess.Popen:
        argv = [py_spy, "record", "--pid", str(host.pid), "--format", "raw", "--threads"]
        argv += ["--function", "--rate", "250", "-o", str(out_dir / f"{name}.pyspy.txt")]
        return attach(ws, argv, out_dir / f"{name}.pyspy.log", "Sampling process")

    def trace(name: str, pids: list[int]) -> subprocess.Popen:
        argv = [strace, "-c", "-f", "-o", str(out_dir / f"{name}.strace.txt")]
        for pid in pids:
            argv += ["-p", str(pid)]
        return attach(ws, argv, out_dir / f"{name}.strace.log", "attached")

    # (a) the big single-client stream; repeated so short streams still give enough samples.
    tracer = pyspy("stream")
    got, seconds = load_stream(big, size, 8)
    detach(tracer)
    report_lines += [
        f"(a) 1 client, {got / GIB:.1f} GiB in {seconds:.1f}s under py-spy"
        f" ({got / seconds / MB:.0f} MB/s):",
        summarise_pyspy(out_dir / "stream.pyspy.txt"),
    ]
    for name, pids, url in (
        ("stream", [host.pid], big),
        ("stream-nginx", peer.pids(), peer.big_url),
    ):
        tracer = trace(name, pids)
        got, seconds = load_stream(url, size, 3)
        detach(tracer)
        who = "withcache" if name == "stream" else "nginx"
        report_lines.append(f"  {who} under strace, {got / seconds / MB:.0f} MB/s:")
        report_lines.append(summarise_strace(out_dir / f"{name}.strace.txt", got / GIB, "GiB"))

    # (b) the 64 KiB request rate.
    tracer = pyspy("small")
    result = wrk(small, wrk_seconds)
    detach(tracer)
    report_lines += [
        f"(b) 64 KiB under py-spy: {result.rps:.0f} req/s",
        summarise_pyspy(out_dir / "small.pyspy.txt"),
    ]
    tracer = trace("small", [host.pid])
    result = wrk(small, wrk_seconds)
    detach(tracer)
    report_lines.append(f"  under strace: {result.rps:.0f} req/s")
    report_lines.append(
        summarise_strace(out_dir / "small.strace.txt", max(result.requests, 1), "request")
    )
    report_lines.append(f"raw files in {out_dir}")
    return "\n".join(report_lines)


# --- pressure ---------------------------------------------------------------------------------


def pressure(host: Host, size: int, blob: Path) -> str:
    """The issue's memory and latency goals, on the host alone (RSS summed over its serving
    processes)."""
    big = host.url_for(BIG_ORIGIN)
    read_through(blob)
    many = many_readers(host.pids, big, size)
    slow = slow_readers(host.pids, big)
    lines = [
        f"{many['readers']} concurrent readers of the {size // MIB} MiB blob:"
        f" RSS {many['rss_before_mib']:.1f} MiB before, +{many['rss_growth_mib']:.1f} MiB at"
        f" most (goal <= 64), {many['aggregate_mb_s']:.0f} MB/s aggregate",
        f"{slow['clients']} readers at {slow['rate_kib_s']:.0f} KiB/s:"
        f" RSS +{slow['rss_growth_mib']:.1f} MiB at most,"
        f" {slow['read_mib_each']:.2f} MiB read each",
    ]
    if os.geteuid() != 0:
        lines.append("cold reads: skipped (dropping the page cache needs root)")
        return "\n".join(lines)
    cold = cold_reads(host.url_for(BIG_ORIGIN).split("/b/")[0], big, size)
    lines.append(
        f"/healthz while {cold['readers']} readers pull the blob from disk"
        f" ({cold['cold_mb_s']:.0f} MB/s, page cache dropped): p50 {cold['p50_ms']:.1f} ms,"
        f" p99 {cold['p99_ms']:.1f} ms, max {cold['max_ms']:.1f} ms over {cold['probes']}"
        f" probes (idle: p50 {cold['idle_p50_ms']:.1f}, p99 {cold['idle_p99_ms']:.1f} ms)"
    )
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=None, help="big artifact (default 1024)")
    parser.add_argument("--runs", type=int, default=None, help="runs to take medians of (3)")
    parser.add_argument("--wrk-seconds", type=int, default=None, help="wrk -d (default 10)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 64 MiB, 1 run, wrk -d3s")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="also profile the host")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="both servers log every request (default: neither, like a tuned nginx)",
    )
    parser.add_argument(
        "--processes",
        default="auto",
        help="the host's --processes (default auto: one per CPU, as nginx's worker_processes)",
    )
    parser.add_argument(
        "--no-pressure",
        action="store_true",
        help="skip the 32-reader, slow-reader and cold-read checks",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120,
        metavar="SECONDS",
        help="before each run, wait up to this long for other work on the machine to stop",
    )
    args = parser.parse_args(argv)
    defaults = (64, 1, 3) if args.quick else (1024, 3, 10)
    for name, default in zip(("size_mib", "runs", "wrk_seconds"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run(args: argparse.Namespace) -> None:
    for tool, hint in (("curl", "apt-get install curl"), ("wrk", "apt-get install wrk")):
        system_tool(tool, hint)
    system_tool("nginx", "apt-get install nginx-light")
    size = args.size_mib * MIB
    with Workspace() as ws:
        data_dir, src = ws.root / "data", ws.root / "src"
        src.mkdir()
        print(f"workspace {ws.root}; writing a {args.size_mib} MiB artifact", file=sys.stderr)
        host = start_host(
            ws,
            data_dir,
            "--processes",
            args.processes,
            *([] if args.access_log else ["--no-access-log"]),
        )
        digests = {}
        for origin, nbytes in ((BIG_ORIGIN, size), (SMALL_ORIGIN, SMALL_SIZE)):
            path = src / origin.rsplit("/", 1)[1]
            expected = write_random_file(path, nbytes)
            digests[origin] = seed(data_dir, origin, path)[0]
            if digests[origin] != expected:
                raise BenchError(f"import of {origin} reported {digests[origin]}, not {expected}")
            # Only the blob copy stays, so both servers read the same pages.
            path.unlink()
        blobs = {origin: blob_path(data_dir, sha) for origin, sha in digests.items()}
        nginx = start_nginx(ws, data_dir, ws.root / "nginx-access.log" if args.access_log else None)
        servers = [
            Server(
                "withcache",
                host.url_for(BIG_ORIGIN),
                host.url_for(SMALL_ORIGIN),
                host.pids,
            ),
            Server(
                "nginx",
                nginx.url_for(blobs[BIG_ORIGIN]),
                nginx.url_for(blobs[SMALL_ORIGIN]),
                nginx.pids,
            ),
        ]
        for server in servers:
            for origin, url, nbytes in (
                (BIG_ORIGIN, server.big_url, size),
                (SMALL_ORIGIN, server.small_url, SMALL_SIZE),
            ):
                header = "X-Withcache-Sha256" if server.name == "withcache" else None
                verify(url, digests[origin], nbytes, header)
        print("verified sha256 of one full download per server and artifact", file=sys.stderr)
        for blob in blobs.values():
            read_through(blob)

        background = []
        for i in range(args.runs):
            background.append(wait_until_quiet(QUIET, args.wait_quiet))
            order = servers if i % 2 == 0 else servers[::-1]
            notes = [measure_once(server, size, args.wrk_seconds) for server in order]
            print(
                f"run {i + 1}/{args.runs} (machine {background[-1]:.0%} busy before): "
                + " | ".join(notes),
                file=sys.stderr,
            )

        ours, peer = servers
        big_gets = 1 + args.runs * (1 + CLIENTS)
        small_gets = 1 + sum(ours.samples["wrk_requests"])
        # wrk stops counting at its deadline while up to -c requests are still in flight.
        in_flight = args.runs * WRK_CONNECTIONS

        def counted_right(counted: dict[str, int]) -> bool:
            return counted.get(BIG_ORIGIN) == big_gets and (
                small_gets <= counted.get(SMALL_ORIGIN, -1) <= small_gets + in_flight
            )

        # The host writes hit counts in batches, once a second.
        deadline = time.monotonic() + 10
        while not counted_right(counted := hits(host)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not counted_right(counted):
            raise BenchError(
                f"hit counters {counted} do not match the GETs sent"
                f" (big {big_gets}, small {small_gets}..{small_gets + in_flight})"
            )

        print()
        print(
            f"withcache serve bench: {args.size_mib} MiB artifact, median of {args.runs} run(s),"
            f" {os.cpu_count()} CPUs, loopback, MB = 10^6 bytes, page cache warm"
        )
        print(report(ours, peer, args.wrk_seconds))
        hwm, rss = proc_status(host.pid, "VmHWM"), proc_status(host.pid, "VmRSS")
        print(f"withcache host RSS: VmHWM {hwm / MIB:.1f} MiB, VmRSS {rss / MIB:.1f} MiB")
        if max(background) >= QUIET:
            print(
                f"WARNING: other work kept the machine up to {max(background):.0%} busy before"
                " a run; these numbers are skewed. Re-run on a quiet machine."
            )

        if not args.no_pressure:
            print()
            print(pressure(host, size, blobs[BIG_ORIGIN]))

        if args.profile:
            print()
            print(profile(ws, args.profile, host, peer, size, args.wrk_seconds))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Progress goes to stderr; keep the two streams in order when both go to one file.
    sys.stdout.reconfigure(line_buffering=True)
    raise_on_sigterm()
    try:
        run(args)
    except BenchError as e:
        print(f"serve bench FAILED: {e}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:
        print(f"serve bench FAILED: {e}\n{e.stderr or ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("serve bench interrupted; servers stopped, temp dir removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
