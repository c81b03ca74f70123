#!/usr/bin/env python3
"""Benchmark: what the native shim (shim-native/, Zig) adds to curl.

Builds the x86_64 binary if needed (`python -m ziglang build -Doptimize=ReleaseSmall
-Dtarget=x86_64-linux-musl` in shim-native/), starts a cache-host (`twistd -n withcache`) on
127.0.0.1 with a fresh data dir, seeds a 1 KiB artifact, then times, interleaved, at least 200
runs each of

    curlwithcache -s -o /dev/null <origin-url>   (native shim: in-process probe + exec curl)
    curl          -s -o /dev/null <cache-url>    (what the shim ends up running)
    curlwithcache -s -o /dev/null <cache-url>    native shim, WITHCACHE_SERVER unset
    curl          -s -o /dev/null <cache-url>    again, baseline for the line above

and prints the medians and the overheads (goals: <= 2 ms on a hit, <= 0.5 ms with no server).

    .venv/bin/python bench/shim_native.py [--runs 200]

The origin URL points at a closed port on 127.0.0.1, so even a broken setup never leaves the
machine. Helpers (host start-up, timing) are shared with bench/shim.py.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shimsrc"))

from shim import ORIGIN_URL, cache_url, check_hit, interleaved, seeded_host, server_free_env

ROOT = Path(__file__).resolve().parents[1]
SHIM_NATIVE = ROOT / "shim-native"
BINARY = SHIM_NATIVE / "zig-out" / "bin" / "withcache-shim"
GOAL_HIT_MS = 2.0
GOAL_NO_SERVER_MS = 0.5


def build() -> None:
    subprocess.run(
        [sys.executable, "-m", "ziglang", "build", "-Doptimize=ReleaseSmall"]
        + ["-Dtarget=x86_64-linux-musl"],
        cwd=SHIM_NATIVE,
        check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per command (>= 200)")
    parser.add_argument("--no-build", action="store_true", help="use the binary as it is")
    opts = parser.parse_args()
    runs = max(opts.runs, 200)
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("curl is not installed")
    if not opts.no_build:
        build()

    with tempfile.TemporaryDirectory(prefix="withcache-bench-native-") as tmp:
        tmp_path = Path(tmp)
        shim = tmp_path / "bin" / "curlwithcache"
        shim.parent.mkdir()
        shim.symlink_to(BINARY)
        with seeded_host(tmp_path) as (server, cached):
            base_env = server_free_env()
            hit_env = {**base_env, "WITHCACHE_SERVER": server}
            target = cache_url(server, ORIGIN_URL)
            check_hit([str(shim)], hit_env, cached, tmp_path)
            samples = interleaved(
                {
                    "shim, hit": ([str(shim), "-s", "-o", "/dev/null", ORIGIN_URL], hit_env),
                    "curl, cache URL": ([curl, "-s", "-o", "/dev/null", target], base_env),
                    "shim, no server": ([str(shim), "-s", "-o", "/dev/null", target], base_env),
                    "curl, again": ([curl, "-s", "-o", "/dev/null", target], base_env),
                },
                runs,
            )

    medians = {name: statistics.median(values) for name, values in samples.items()}
    print(f"native shim: {BINARY} ({BINARY.stat().st_size} bytes)")
    print(f"runs per command: {runs} (1 KiB artifact, cache-host on {server})")
    for name, values in samples.items():
        deciles = statistics.quantiles(values, n=10)
        print(
            f"  {name:16} median {medians[name]:7.2f} ms"
            f"   p10 {deciles[0]:7.2f}   p90 {deciles[-1]:7.2f}"
        )
    # On a hit the overhead includes the probe: one HEAD the shim sends itself.
    hit = medians["shim, hit"] - medians["curl, cache URL"]
    verdict = "within" if hit <= GOAL_HIT_MS else "OVER"
    print(f"overhead on a hit: {hit:.2f} ms ({verdict} the {GOAL_HIT_MS:g} ms goal)")
    bare = medians["shim, no server"] - medians["curl, again"]
    verdict = "within" if bare <= GOAL_NO_SERVER_MS else "OVER"
    print(f"overhead with no server: {bare:.2f} ms ({verdict} the {GOAL_NO_SERVER_MS:g} ms goal)")


if __name__ == "__main__":
    main()
