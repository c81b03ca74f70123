"""Console scripts: `withcache-server` (the twistd service) and `withcache-admin` (data-dir tools).

Both are thin. The admin commands use the blocking catalog functions directly and are safe to run
while the host serves the same data dir (SQLite WAL, blobs committed by rename before their row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

from withcache import catalog as cat
from withcache.cache import import_file
from withcache.keys import InvalidURL
from withcache.sizes import format_size
from withcache.store import Store


def server_main(argv: list[str] | None = None) -> None:
    """Run the same service and options as `twistd -n withcache`, in the foreground."""
    from twisted.scripts.twistd import run

    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["withcache-server", "--nodaemon", "--pidfile=", "withcache", *args]
    run()


def _open(data_dir: str) -> tuple[Store, cat.sqlite3.Connection]:
    if not os.path.isdir(data_dir):
        raise SystemExit(f"withcache-admin: no such data dir: {data_dir}")
    return Store(data_dir), cat.connect(os.path.join(data_dir, "cache.db"))


def _cmd_import(args: argparse.Namespace) -> int:
    os.makedirs(args.data_dir, exist_ok=True)
    store, conn = _open(args.data_dir)
    try:
        artifact = import_file(
            store,
            conn,
            args.url,
            args.file,
            keep_query=args.keep_query,
            now=time.time(),
            content_type=args.content_type,
        )
    except (InvalidURL, FileNotFoundError, IsADirectoryError) as e:
        print(f"withcache-admin import: {e}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(f"{artifact.sha256}  {artifact.size}  {artifact.key}")
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    _store, conn = _open(args.data_dir)
    try:
        artifacts = cat.list_artifacts(conn)
    finally:
        conn.close()
    if args.json:
        for a in artifacts:
            print(json.dumps(asdict(a), sort_keys=True))
        return 0
    print(f"{'SHA256':<12}  {'SIZE':>10}  {'HITS':>6}  {'MISSES':>6}  KEY")
    for a in artifacts:
        size = format_size(a.size)
        print(f"{a.sha256[:12]}  {size:>10}  {a.hits:>6}  {a.misses:>6}  {a.key}")
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    _store, conn = _open(args.data_dir)
    try:
        jobs = cat.list_jobs(conn, limit=args.limit)
    finally:
        conn.close()
    if args.json:
        for job in jobs:
            print(json.dumps(asdict(job), sort_keys=True))
        return 0
    print(f"{'ID':>5}  {'STATE':<9}  {'DONE':>10}  URL / ERROR")
    for job in jobs:
        done = format_size(job.bytes_done)
        print(f"{job.id:>5}  {job.state:<9}  {done:>10}  {job.url}")
        if job.error:
            print(f"{'':>30}{job.error}")
    return 0


def admin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="withcache-admin", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    imp = commands.add_parser("import", help="put a local file into the cache under an origin URL")
    imp.add_argument("url", help="the origin URL the file stands for")
    imp.add_argument("file", help="the local file to copy in")
    imp.add_argument("--content-type", default=None, help="served Content-Type (default: none)")
    imp.add_argument(
        "--keep-query", action="store_true", help="key with the query (match the host's setting)"
    )
    imp.set_defaults(func=_cmd_import)

    ls = commands.add_parser("ls", help="list cached artifacts")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_cmd_ls)

    jobs = commands.add_parser("jobs", help="list fill jobs, newest first")
    jobs.add_argument("--json", action="store_true", help="one JSON object per line")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    jobs.set_defaults(func=_cmd_jobs)

    for sub in (imp, ls, jobs):
        sub.add_argument("--data-dir", "-d", default="./data", help="the host's data dir")
    return parser


def admin_main(argv: list[str] | None = None) -> int:
    args = admin_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(admin_main())
