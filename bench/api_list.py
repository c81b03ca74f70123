"""Listing 100k artifacts through the API: time per page, against the same page from SQLite
directly (the floor) and from the operator dashboard (the host's other face), in one run.

    .venv/bin/python bench/api_list.py [--artifacts 100000] [--runs 20]

Builds a catalog of N artifact rows (no blobs: listing never opens one; the host runs with
--scrub-interval 0 so nothing goes looking), starts `twistd -n withcache` on it, and times
GET /api/v1/artifacts pages (first, middle, last; limit 50 and 1000; a search) over one
keep-alive connection. Each figure is the median of --runs requests; every answer is checked
(status, item count, total). Exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BenchError, Workspace, raise_on_sigterm, start_host, venv_tool


def make_catalog(data_dir: Path, count: int) -> str:
    """A migrated cache.db with `count` artifacts; returns an admin token's secret."""
    data_dir.mkdir(parents=True)
    admin = venv_tool("withcache-admin")
    out = subprocess.run(
        [admin, "token", "create", "bench", "--scope", "read", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    conn = sqlite3.connect(data_dir / "cache.db")
    now = time.time()
    rows = (
        (
            f"https://vendor{n % 97}.example.com/releases/{n // 1000}/pkg-{n}.tar.gz",
            f"https://vendor{n % 97}.example.com/releases/{n // 1000}/pkg-{n}.tar.gz",
            f"{n:064x}",
            1_000_000 + n,
            "application/gzip",
            now - n,
        )
        for n in range(count)
    )
    with conn:
        conn.executemany(
            "INSERT INTO artifacts (key, url, sha256, size, content_type, fetched_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()
    return out.stdout.strip()


def timed(
    conn: http.client.HTTPConnection, path: str, headers: dict, runs: int
) -> tuple[float, bytes]:
    times, body = [], b""
    for _ in range(runs):
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        times.append(time.perf_counter() - start)
        if r.status != 200:
            raise BenchError(f"{path}: {r.status} {body[:200]!r}")
    return statistics.median(times) * 1000, body


def sqlite_page(db: Path, limit: int, offset: int, needle: str, runs: int) -> float:
    """The API's own queries (withcache.catalog), run in process: the floor."""
    from withcache import catalog as cat
    from withcache import listing

    conn = cat.connect(str(db))
    times = []
    try:
        for _ in range(runs):
            start = time.perf_counter()
            if needle:
                listing.search(conn, needle, limit, offset=offset)
            else:
                listing.artifacts_page(conn, limit, offset=offset)
                cat.count_artifacts(conn)
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return statistics.median(times) * 1000


def sqlite_cursor(db: Path, item: dict, runs: int) -> float:
    from withcache import catalog as cat
    from withcache import listing

    conn = cat.connect(str(db))
    (fetched_at,) = conn.execute(
        "SELECT fetched_at FROM artifacts WHERE key = ?", (item["key"],)
    ).fetchone()
    times = []
    try:
        for _ in range(runs):
            start = time.perf_counter()
            listing.artifacts_page(conn, 50, after=(fetched_at, item["key"]))
            cat.count_artifacts(conn)
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    raise_on_sigterm()
    n = args.artifacts
    with Workspace() as ws:
        data = ws.root / "data"
        secret = make_catalog(data, n)
        os.environ.pop("WITHCACHE_ADMIN_PASSWORD", None)  # the dashboard open, for the peer
        host = start_host(ws, data, "--curate", "--scrub-interval", "0", "--no-access-log")
        conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=120)
        auth = {"Authorization": f"Bearer {secret}"}
        cases = [
            ("first page, limit 50", 50, 0, ""),
            ("middle page, limit 50", 50, n // 2, ""),
            ("last page, limit 50", 50, n - 50, ""),
            ("first page, limit 1000", 1000, 0, ""),
            ("search 'pkg-4242', limit 50", 50, 0, "pkg-4242"),
        ]
        print(f"{n} artifacts; median of {args.runs} requests each, over one keep-alive connection")
        head = f"{'case':<30} {'API ms':>8} {'SQLite ms':>10} {'API/SQLite':>11}"
        print(f"{head} {'UI ms':>8} {'API/UI':>7}")
        # The last page by cursor: follow `next` from the page before the last.
        prev = json.loads(timed(conn, f"/api/v1/artifacts?limit=50&offset={n - 100}", auth, 1)[1])
        cursor_path = prev["next"]
        for name, limit, offset, needle in cases:
            query = f"limit={limit}&offset={offset}" + (f"&q={needle}" if needle else "")
            api_ms, body = timed(conn, f"/api/v1/artifacts?{query}", auth, args.runs)
            page = json.loads(body)
            expected = min(limit, n - offset) if not needle else min(limit, page["total"])
            if len(page["items"]) != expected or (not needle and page["total"] != n):
                raise BenchError(f"{name}: {len(page['items'])} items, total {page['total']}")
            floor = sqlite_page(data / "cache.db", limit, offset, needle, args.runs)
            ui = ""
            if limit == 50:
                ui_query = f"page={offset // 50 + 1}" + (f"&q={needle}" if needle else "")
                ui_ms, _ = timed(conn, f"/?{ui_query}", {}, args.runs)
                ui = f"{ui_ms:>8.1f} {api_ms / ui_ms:>7.2f}"
            print(f"{name:<30} {api_ms:>8.1f} {floor:>10.1f} {api_ms / floor:>11.1f} {ui}")
        cursor_ms, body = timed(conn, cursor_path, auth, args.runs)
        last = json.loads(body)
        if len(last["items"]) != 50 or last["items"][-1]["sha256"] != f"{n - 1:064x}":
            raise BenchError(f"the last page by cursor is not the last 50 rows: {cursor_path}")
        floor = sqlite_cursor(data / "cache.db", prev["items"][-1], args.runs)
        ratio = cursor_ms / floor
        print(f"{'last page by cursor (next)':<30} {cursor_ms:>8.1f} {floor:>10.1f} {ratio:>11.1f}")
        conn.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench/api_list.py: {e}", file=sys.stderr)
        sys.exit(1)
