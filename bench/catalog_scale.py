"""The catalog at scale: start-up, a hit, a miss and every UI and API page of a host whose
catalog holds N artifacts and M misses, against a budget of 100 ms a page (issue 17, part 5).

    .venv/bin/python bench/catalog_scale.py [--backend sqlite|postgresql] [--catalog URL]
        [--artifacts 1000000] [--misses 100000] [--events 1000000] [--jobs 10000]
        [--runs 9] [--budget-ms 100]

The catalog is made at revision 008_baseline (the schema before the scale work) with bulk
inserts (one transaction; COPY on PostgreSQL; no API calls), then brought to the newest revision
by `withcache-admin` (timed: what upgrading a catalog of that size costs), then one real blob is
imported with `withcache-admin import` so a hit is a real hit. --backend postgresql starts a
throwaway PostgreSQL (tests/engines/postgres.py); --catalog names an empty one of your own.
The other rows name blobs that do not exist: no page opens a blob, and the host runs with
--scrub-interval 0 so nothing goes looking (start-up's orphan sweep walks blobs/, not the
catalog, so absent blobs cost it nothing). `twistd -n withcache --curate` runs on it; each
figure is the median of --runs requests over one keep-alive connection, every answer's status
checked. Then the catalog operations that are not pages run in process on the same catalog (the
eviction of one fill under --max-bytes, the scrub's next pick, a hit-count flush of 1,000 keys,
the dashboard totals).

Prints a table with PASS/FAIL against --budget-ms; exits 1 when a page is over budget, 2 when a
check fails.
"""

from __future__ import annotations

import argparse
import html
import http.client
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (
    BenchError,
    Workspace,
    raise_on_sigterm,
    token,
    venv_tool,
    wait_for_file_text,
)

from withcache.events import MAX_OFFSET as MAX_EVENT_OFFSET
from withcache.listing import MAX_OFFSET

VENDORS = 97
HIT_URL = "https://hit.example.net/releases/real-blob.bin"


def artifact_url(n: int) -> str:
    # Some URLs carry characters a search must take literally (%, _, +, spaces encoded).
    odd = "" if n % 7 else f"?v=1.{n % 10}%2B_build"
    return f"https://vendor{n % VENDORS}.example.com/releases/{n // 1000}/pkg-{n}.tar.gz{odd}"


def miss_url(m: int) -> str:
    return f"https://mirror{m % 13}.example.org/dist/{m // 100}/image-{m}.iso"


def artifact_rows(count: int, now: float) -> Iterator[tuple]:
    for n in range(count):
        url = artifact_url(n)
        fetched = now - 10 * n  # newest first is n ascending
        hit = fetched + 5 if n % 2 else None
        verified = None if n % 10 == 0 else fetched + 1
        yield (url, url, f"{n:064x}", 1_000_000 + n, "application/gzip", fetched, n % 50,
               n % 3, hit, int(n % 1000 == 0), verified)  # fmt: skip


ARTIFACT_COLUMNS = (
    "key, url, sha256, size, content_type, fetched_at, hits, misses, last_hit_at, pinned,"
    " verified_at"
)


def miss_rows(count: int, now: float) -> Iterator[tuple]:
    for m in range(count):
        url = miss_url(m)
        yield url, url, 1 + m % 5, now - 20 * m - 100, now - 20 * m


def event_rows(count: int, now: float) -> Iterator[tuple]:
    actions = ("artifact.filled", "artifact.deleted", "artifact.pinned", "miss.dismissed")
    for e in range(count):
        actor = "operator" if e % 3 else "token:ci"
        subject = artifact_url(e)
        yield now - count + e, actor, "127.0.0.1", actions[e % 4], subject, "ok", None


def job_rows(count: int, now: float) -> Iterator[tuple]:
    for j in range(count):
        url = artifact_url(j)
        at = now - count + j
        yield url, url, "miss", "completed", 1_000_000 + j, 1_000_000 + j, None, at, at, at + 1


def at_baseline(url: str) -> None:
    """A new catalog at 008_baseline: the tables the rows below go into, before the revisions
    that index and total them (so the migration's cost on a full catalog is measured too)."""
    from alembic import command

    from withcache import migrate
    from withcache.catalog_db import make_engine, parse_url, transaction

    engine = make_engine(parse_url(url))
    with engine.connect() as conn, transaction(conn):
        command.upgrade(migrate.config(conn), migrate.BASELINE)
    engine.dispose()


JOB_COLUMNS = (
    "key, url, source, state, bytes_done, bytes_total, error, created_at, started_at, finished_at"
)
EVENT_COLUMNS = "at, actor, client, action, subject, outcome, detail"
TABLES = (
    ("artifacts", ARTIFACT_COLUMNS, artifact_rows),
    ("misses", "key, url, count, first_seen, last_seen", miss_rows),
    ("events", EVENT_COLUMNS, event_rows),
    ("jobs", JOB_COLUMNS, job_rows),
)


def build(url: str, args: argparse.Namespace, now: float) -> None:
    """Bulk rows into a catalog at 008_baseline, in one transaction."""
    at_baseline(url)
    counts = {
        "artifacts": args.artifacts,
        "misses": args.misses,
        "events": args.events,
        "jobs": args.jobs,
    }
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url) as conn, conn.cursor() as cur:
            # No per-row triggers while loading (the baseline's artifacts generation): a million
            # updates of its one row in one transaction cost minutes; nothing reads it yet.
            cur.execute("SET session_replication_role = replica")
            for table, columns, rows in TABLES:
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows(counts[table], now):
                        copy.write_row(row)
            cur.execute("ANALYZE")
        return
    conn = sqlite3.connect(url)
    with conn:
        for table, columns, rows in TABLES:
            marks = ", ".join("?" * len(columns.split(", ")))
            conn.executemany(
                f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows(counts[table], now)
            )
    conn.execute("ANALYZE")
    conn.close()


def admin(*argv: str) -> str:
    out = subprocess.run(
        [venv_tool("withcache-admin"), *argv], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


class Client:
    """One keep-alive connection to the host; every answer's status is checked."""

    def __init__(self, port: int, bearer: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.auth = {"Authorization": f"Bearer {bearer}"}

    def get(self, path: str, method: str = "GET", api: bool = False, status: int = 200) -> bytes:
        self.conn.request(method, path, headers=self.auth if api else {})
        r = self.conn.getresponse()
        body = r.read()
        if r.status != status:
            raise BenchError(f"{method} {path}: {r.status} (wanted {status}) {body[:300]!r}")
        return body

    def median_ms(self, runs: int, call: Callable[[int], object]) -> float:
        times = []
        for i in range(runs):
            start = time.perf_counter()
            call(i)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the host exited {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise BenchError("the host never answered /healthz")


def pages(
    n: int, m: int, e: int, after_last: str, older_last: str
) -> list[tuple[str, str, bool, int]]:
    """(name, path, api?, status) of every page to time."""
    last_ui = -(-n // 50)
    middle = 400 if min(n // 2, n - n // 2 - 50) > MAX_OFFSET else 200
    last_event = 400 if e - 50 > MAX_EVENT_OFFSET else 200
    return [
        ("UI dashboard", "/", False, 200),
        ("UI artifacts page 2", "/?page=2", False, 200),
        ("UI artifacts page 2000 (offset 99,950)", "/?page=2000", False, 200),
        ("UI artifacts middle page (shows page 1)", f"/?page={last_ui // 2}", False, 200),
        ("UI artifacts last page", f"/?page={last_ui}", False, 200),
        ("UI artifacts last page by Older link", older_last, False, 200),
        ("UI search, one match", "/?q=pkg-424242.tar", False, 200),
        ("UI search, common", "/?q=vendor42.", False, 200),
        ("UI search, no match", "/?q=no-such-thing", False, 200),
        ("UI search, 2 characters", "/?q=zq", False, 200),
        ("UI fragment stats", "/admin/fragments/stats", False, 200),
        ("UI fragment artifacts", "/admin/fragments/artifacts", False, 200),
        ("UI fragment misses", "/admin/fragments/misses", False, 200),
        ("UI fragment downloads", "/admin/fragments/downloads", False, 200),
        ("UI events", "/admin/events", False, 200),
        ("UI events page 2000 (offset 99,950)", "/admin/events?page=2000", False, 200),
        ("UI events last page", f"/admin/events?page={-(-e // 50) or 1}", False, 200),
        ("UI events by actor", "/admin/events?actor=token%3Aci", False, 200),
        ("UI events by action prefix", "/admin/events?action=artifact.", False, 200),
        ("UI events by actor and prefix", "/admin/events?actor=operator&action=miss.", False, 200),
        ("UI tokens", "/admin/tokens", False, 200),
        ("/metrics", "/metrics", False, 200),
        ("API artifacts first", "/api/v1/artifacts?limit=50", True, 200),
        ("API artifacts offset 100,000", "/api/v1/artifacts?offset=100000", True, 200),
        # Deeper than 100,000 rows from both ends is refused (page by cursor): only above ~200,000.
        ("API artifacts offset middle", f"/api/v1/artifacts?offset={n // 2}", True, middle),
        ("API artifacts offset last", f"/api/v1/artifacts?offset={max(0, n - 50)}", True, 200),
        ("API artifacts cursor last", after_last, True, 200),
        ("API search, one match", "/api/v1/artifacts?q=pkg-424242.tar", True, 200),
        ("API search, common", "/api/v1/artifacts?q=vendor42.", True, 200),
        ("API search, no match", "/api/v1/artifacts?q=no-such-thing", True, 200),
        ("API search, 2 characters", "/api/v1/artifacts?q=zq", True, 200),
        ("API artifact by sha256", f"/api/v1/artifact?sha256={n // 3:064x}", True, 200),
        ("API misses first", "/api/v1/misses", True, 200),
        ("API misses last", f"/api/v1/misses?offset={max(0, m - 50)}", True, 200),
        ("API fills", "/api/v1/fills", True, 200),
        ("API events first", "/api/v1/events", True, 200),
        ("API events offset 100,000", "/api/v1/events?offset=100000", True, 200),
        # Deeper than 100,000 events an offset is refused: the cursor (an event id) goes on.
        ("API events offset last", f"/api/v1/events?offset={max(0, e - 50)}", True, last_event),
        ("API events cursor last", "/api/v1/events?after=51", True, 200),
        ("API events by action prefix", "/api/v1/events?action=artifact.", True, 200),
        ("API stats", "/api/v1/stats", True, 200),
    ]


def in_process(url: str, runs: int) -> list[tuple[str, float]]:
    """The catalog work that is not a page, timed on the catalog's own functions."""
    from withcache import catalog as cat

    conn = cat.connect(url)
    results = []

    def median(fn: Callable[[int], object]) -> float:
        times = []
        for i in range(runs):
            start = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    try:
        results.append(("dashboard totals", median(lambda i: cat.totals(conn))))
        results.append(("scrub: next to verify", median(lambda i: cat.next_to_verify(conn))))
        keys = [(artifact_url(k), 1, time.time()) for k in range(0, 100_000, 100)]
        results.append(("hit-count flush, 1000 keys", median(lambda i: cat.add_hits(conn, keys))))
        held = cat.totals(conn)["bytes"]

        def evicting(i: int) -> None:
            url = f"https://new.example.com/fill-{i}.bin"
            artifact = cat.Artifact(url, url, f"{i:064x}"[::-1], 3_000_000, None, time.time())
            cat.put_artifact(conn, artifact, max_bytes=held)

        results.append(("fill evicting under --max-bytes", median(evicting)))
    finally:
        conn.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--catalog", help="an empty PostgreSQL database's URL to use")
    parser.add_argument("--artifacts", type=int, default=1_000_000)
    parser.add_argument("--misses", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)  # the default retention
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--budget-ms", type=float, default=100.0)
    args = parser.parse_args()
    raise_on_sigterm()
    n, m = args.artifacts, args.misses
    with Workspace("withcache-scale-") as ws:
        data = ws.root / "data"
        data.mkdir()
        url = args.catalog or str(data / "cache.db")
        if args.backend == "postgresql" and not args.catalog:
            from tests.engines.postgres import PostgresServer

            server = PostgresServer()
            ws.callback(server.remove)
            server.start()
            server.sql("CREATE DATABASE scale")
            url = server.url("scale")
        catalog = ["--data-dir", str(data), "--catalog", url]
        now = time.time()
        started = time.perf_counter()
        build(url, args, now)
        built = time.perf_counter() - started
        started = time.perf_counter()
        secret = admin("token", "create", "bench", "--scope", "admin", *catalog)
        migrated = time.perf_counter() - started
        blob = ws.root / "real-blob.bin"
        blob.write_bytes(os.urandom(64 * 1024))
        admin("import", *catalog, HIT_URL, str(blob))
        backend = "PostgreSQL" if url.startswith("postgresql://") else "SQLite"
        print(f"{backend} catalog: {n} artifacts, {m} misses, {args.events} events,"
              f" {args.jobs} jobs (built in {built:.1f} s, migrated to the newest revision"
              f" in {migrated:.1f} s); median of {args.runs} requests each")  # fmt: skip

        os.environ.pop("WITHCACHE_ADMIN_PASSWORD", None)  # the dashboard open
        log = ws.root / "withcache.log"
        argv = [venv_tool("twistd"), "-n", "--pidfile=", "withcache", *catalog]
        argv += ["--listen", "tcp:0:interface=127.0.0.1", "--curate", "--scrub-interval", "0"]
        argv += ["--no-access-log"]
        started = time.perf_counter()
        proc = ws.spawn(argv, log=log)
        port = int(wait_for_file_text(log, r"withcache listening on 127\.0\.0\.1:(\d+)", proc, 120))
        wait_healthy(port, proc)
        healthy = time.perf_counter() - started
        wait_for_file_text(log, r"(recovered data dir)", proc, 600)
        recovered = time.perf_counter() - started
        rows: list[tuple[str, float]] = []
        print(f"start: /healthz after {healthy * 1000:.0f} ms, recovery done after"
              f" {recovered * 1000:.0f} ms")  # fmt: skip

        c = Client(port, secret)
        hit_path = f"/b/{token(HIT_URL)}/real-blob.bin"
        rows.append(("hit (GET, 64 KiB)", c.median_ms(args.runs, lambda i: c.get(hit_path))))
        rows.append(("probe (HEAD)", c.median_ms(args.runs, lambda i: c.get(hit_path, "HEAD"))))

        def miss(i: int) -> None:
            url = f"https://nowhere.example.com/miss-{i}-{time.monotonic_ns()}.bin"
            c.get(f"/b/{token(url)}/x", "HEAD", status=404)

        rows.append(("miss (HEAD, --curate)", c.median_ms(args.runs, miss)))
        prev = json.loads(c.get(f"/api/v1/artifacts?limit=50&offset={max(0, n - 100)}", api=True))
        after_last = prev["next"] or "/api/v1/artifacts"
        before_last = c.get(f"/?page={max(1, -(-n // 50) - 1)}").decode()
        older = re.search(r'<a href="([^"]*)" rel="next">', before_last)
        older_last = html.unescape(older.group(1)) if older else "/"
        for name, path, api, status in pages(n, m, args.events, after_last, older_last):
            ms = c.median_ms(args.runs, lambda i, p=path, a=api, s=status: c.get(p, "GET", a, s))
            rows.append((name, ms))
        c.conn.close()
        for name, ms in in_process(url, args.runs):
            rows.append((name + " (in process)", ms))

        over = 0
        print(f"{'what':<45} {'ms':>9}  budget {args.budget_ms:g} ms")
        for name, ms in rows:
            verdict = "PASS" if ms <= args.budget_ms else "FAIL"
            over += verdict == "FAIL"
            print(f"{name:<45} {ms:>9.1f}  {verdict}")
        print(f"{over} over budget" if over else "all within budget")
    return 1 if over else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench/catalog_scale.py: {e}", file=sys.stderr)
        sys.exit(2)
