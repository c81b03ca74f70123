#!/usr/bin/env python3
"""Benchmark: what the Python shim adds to a cache hit.

Starts a cache-host (`twistd -n withcache`) on 127.0.0.1 with a fresh data dir, seeds a 1 KiB
artifact, then times, interleaved, at least 200 runs each of

    curlwithcache -s -o /dev/null <origin-url>   (probe + exec of curl on the cache URL)
    curl          -s -o /dev/null <cache-url>    (what the shim ends up running)
    curlwithcache -s -o /dev/null <origin-url>   with no server set (pure pass-through)

and prints the median wall times and the shim's overhead on a hit (goal: <= 25 ms).

    .venv/bin/python bench/shim.py [--runs 200]

The origin URL points at a closed port on 127.0.0.1, so even a broken setup never leaves the
machine. The tools come from the directory of this Python (the project's venv).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ORIGIN_URL = "http://127.0.0.1:9/bench/artifact-1k.bin"  # port 9 (discard): refused
GOAL_MS = 25.0


def shim_command() -> tuple[list[str], str]:
    script = BIN / "curlwithcache"
    if script.exists():
        return [str(script)], str(script)
    return [sys.executable, "-m", "withcache_shim", "curl"], "python -m withcache_shim curl"


def start_host(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    log = open(log_path, "wb")  # noqa: SIM115 - stays open for the server's lifetime
    proc = subprocess.Popen(
        [str(BIN / "twistd"), "-n", "--pidfile=", "withcache", "--data-dir", str(data_dir)]
        + ["--listen", "tcp:0:interface=127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    marker = "withcache listening on 127.0.0.1:"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if marker in text:
            port = int(text.split(marker, 1)[1].split()[0])
            return proc, f"http://127.0.0.1:{port}"
        if proc.poll() is not None:
            raise SystemExit(f"twistd exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the cache-host did not start within 60 s")


def cache_url(server: str, url: str) -> str:
    sys.path.insert(0, str(ROOT / "shimsrc"))
    from withcache_shim.urls import cache_url as build

    return build(server, url)


def time_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{argv} exited with {done.returncode}")
    return elapsed * 1000


@contextlib.contextmanager
def seeded_host(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A running cache-host holding a 1 KiB artifact under ORIGIN_URL: (its URL, the bytes)."""
    cached = os.urandom(1024)
    artifact = tmp_path / "artifact-1k.bin"
    artifact.write_bytes(cached)
    data_dir = tmp_path / "data"
    subprocess.run(
        [str(BIN / "withcache-admin"), "import", "--data-dir", str(data_dir)]
        + [ORIGIN_URL, str(artifact)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    proc, server = start_host(data_dir, tmp_path / "twistd.log")
    try:
        yield server, cached
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def server_free_env() -> dict[str, str]:
    """This environment without proxies or any *WITHCACHE_SERVER setting."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and "WITHCACHE_SERVER" not in k
    }


def check_hit(shim: list[str], env: dict[str, str], cached: bytes, tmp_path: Path) -> None:
    """The shim must really hit: what it downloads must be the seeded bytes."""
    check = tmp_path / "check.bin"
    subprocess.run([*shim, "-sf", "-o", str(check), ORIGIN_URL], env=env, check=True)
    if check.read_bytes() != cached:
        raise SystemExit(f"{shim[-1]} did not download the cached artifact")


def interleaved(
    commands: dict[str, tuple[list[str], dict[str, str]]], runs: int
) -> dict[str, list[float]]:
    """Milliseconds per run of each command, runs interleaved so all see the same conditions."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for argv, env in commands.values():  # warm the page cache before measuring
        time_once(argv, env)
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            samples[name].append(time_once(argv, env))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per command (>= 200)")
    opts = parser.parse_args()
    runs = max(opts.runs, 200)
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("curl is not installed")

    shim, shim_label = shim_command()
    with tempfile.TemporaryDirectory(prefix="withcache-bench-") as tmp:
        tmp_path = Path(tmp)
        with seeded_host(tmp_path) as (server, cached):
            base_env = server_free_env()
            base_env.pop("PYTHONDONTWRITEBYTECODE", None)
            base_env["PYTHONPATH"] = str(ROOT / "shimsrc")
            # Measure the shim as installed, i.e. with its bytecode cached (pip compiles it at
            # install time); the warm-up run below writes that cache outside the source tree.
            base_env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
            hit_env = {**base_env, "WITHCACHE_SERVER": server}
            target = cache_url(server, ORIGIN_URL)
            check_hit([*shim], hit_env, cached, tmp_path)
            samples = interleaved(
                {
                    "shim, hit": ([*shim, "-s", "-o", "/dev/null", ORIGIN_URL], hit_env),
                    "curl, cache URL": ([curl, "-s", "-o", "/dev/null", target], base_env),
                    "shim, no server": ([*shim, "-s", "-o", "/dev/null", target], base_env),
                },
                runs,
            )

    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"shim: {shim_label}")
    print(f"runs per command: {runs} (1 KiB artifact, cache-host on {server})")
    for name, values in samples.items():
        p10, p90 = statistics.quantiles(values, n=10)[0], statistics.quantiles(values, n=10)[-1]
        print(f"  {name:16} median {medians[name]:7.2f} ms   p10 {p10:7.2f}   p90 {p90:7.2f}")
    overhead = medians["shim, hit"] - medians["curl, cache URL"]
    verdict = "within" if overhead <= GOAL_MS else "OVER"
    print(f"overhead of the shim on a hit: {overhead:.2f} ms ({verdict} the {GOAL_MS:.0f} ms goal)")
    passthrough = medians["shim, no server"] - medians["curl, cache URL"]
    print(f"overhead of the shim with no server (pass-through): {passthrough:.2f} ms")


if __name__ == "__main__":
    main()
