"""Console scripts: `withcache-server` (the twistd service) and `withcache-admin` (data-dir tools).

Both are thin. The admin commands use the blocking catalog functions directly and are safe to run
while the host serves the same data dir (SQLite WAL, blobs committed by rename before their row).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from withcache import catalog as cat
from withcache import datadir, freshness
from withcache.cache import artifact_verdict
from withcache.catalog_db import CatalogURLError, catalog_of, parse_url, redact
from withcache.cli_automation import add_commands, audit, print_json
from withcache.keys import DROP, KEEP, InvalidURL, cache_key
from withcache.logs import redact_text, redact_url
from withcache.sanitise import printable, sanitise_media_type
from withcache.sizes import format_size
from withcache.store import Store, keep_files_private


def server_main(argv: list[str] | None = None) -> None:
    """Run the same service and options as `twistd -n withcache`, in the foreground."""
    from twisted.scripts.twistd import run

    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["withcache-server", "--nodaemon", "--pidfile=", "withcache", *args]
    run()


@contextlib.contextmanager
def _open(args: argparse.Namespace, query: str | None = None) -> Iterator[tuple[Store, Connection]]:
    """The data dir's store and the catalog's connection (--catalog, else $WITHCACHE_CATALOG,
    else the data dir's cache.db), closed when the command is done; with a query mode, the
    catalog is re-keyed for it first if it was keyed with another."""
    data_dir = args.data_dir
    if not os.path.isdir(data_dir):
        raise SystemExit(f"withcache-admin: no such data dir: {data_dir}")
    try:
        url = parse_url(catalog_of(args.catalog, data_dir))
    except CatalogURLError as e:
        raise SystemExit(f"withcache-admin: --catalog: {e}") from None
    try:
        conn = cat.connect(url, query)
    except OperationalError as e:
        # The driver's message names the server, never the password.
        shown = redact(url)
        raise SystemExit(f"withcache-admin: cannot open the catalog {shown}: {e.orig}") from None
    try:
        yield Store(data_dir), conn
    finally:
        conn.close()


def _cmd_import(args: argparse.Namespace) -> int:
    os.makedirs(args.data_dir, exist_ok=True)
    with _open(args, _query(args)) as (store, conn):
        try:
            artifact = datadir.import_file(
                conn,
                store,
                args.url,
                args.file,
                query=cat.keyed_with(conn),
                now=time.time(),
                content_type=args.content_type,
            )
        except (InvalidURL, FileNotFoundError, IsADirectoryError) as e:
            print(f"withcache-admin import: {e}", file=sys.stderr)
            return 2
        audit(conn, "artifact.imported", artifact.url, artifact.sha256)
    print(f"{artifact.sha256}  {artifact.size}  {artifact.key}")
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    with _open(args) as (_store, conn):
        artifacts = cat.list_artifacts(conn)
    policy, now = freshness.Policy.saved(args.data_dir), time.time()
    verdicts = [artifact_verdict(a, policy, now) for a in artifacts]
    if args.json:
        for a, verdict in zip(artifacts, verdicts, strict=True):
            row = {**asdict(a), "origin_headers": freshness.decode(a.origin_headers)}
            row["freshness"] = {
                "fresh": verdict.fresh and not a.refresh,
                "fresh_until": verdict.fresh_until,
                "by_rule": verdict.by_rule,
                "text": freshness.describe(verdict, now),
            }
            print(json.dumps(row, sort_keys=True))
        return 0
    print(f"{'SHA256':<12}  {'SIZE':>10}  {'HITS':>6}  {'MISSES':>6}  PINNED  KEY")
    for a, verdict in zip(artifacts, verdicts, strict=True):
        size = format_size(a.size)
        pinned = "yes" if a.pinned else "no"
        print(f"{a.sha256[:12]}  {size:>10}  {a.hits:>6}  {a.misses:>6}  {pinned:<6}  {a.key}")
        fresh = freshness.describe(verdict, now) + (", refresh asked" if a.refresh else "")
        shown = freshness.validators(freshness.decode(a.origin_headers))
        print(f"{'':>12}  {fresh}; validators: {printable(shown)}")
    return 0


def _cmd_refresh(args: argparse.Namespace) -> int:
    """Have the host revalidate an artifact with its origin on the artifact's next request."""
    with _open(args, _query(args)) as (_store, conn):
        key = _key(conn, args.url)
        if not cat.request_refresh(conn, key):
            print(f"withcache-admin refresh: not cached: {redact_url(key)}", file=sys.stderr)
            return 1
    print(f"{redact_url(key)} will be revalidated with its origin on its next request")
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    with _open(args) as (_store, conn):
        jobs = cat.list_jobs(conn, limit=args.limit)
    if args.json:
        return print_json(jobs)
    print(f"{'ID':>5}  {'STATE':<9}  {'DONE':>10}  URL / ERROR")
    for job in jobs:
        done = format_size(job.bytes_done)
        print(f"{job.id:>5}  {job.state:<9}  {done:>10}  {redact_url(job.url)}")
        if job.error:
            print(f"{'':>30}{redact_text(job.error)}")
    return 0


def _query(args: argparse.Namespace) -> str | None:
    """The query mode a command's flags ask for; None: the one the catalog is keyed with."""
    return KEEP if args.keep_query else DROP if args.drop_query else None


def _key(conn: Connection, url: str) -> str:
    try:
        return cache_key(url, query=cat.keyed_with(conn))
    except InvalidURL as e:
        raise SystemExit(f"withcache-admin: {e}") from None


def _cmd_rm(args: argparse.Namespace) -> int:
    with _open(args, _query(args)) as (store, conn):
        key = _key(conn, args.url)
        existed = datadir.remove(conn, store, key)
        if existed:
            audit(conn, "artifact.deleted", key)
    print(f"{'removed' if existed else 'not cached'}: {key}")
    return 0 if existed else 1


def _cmd_pin(args: argparse.Namespace) -> int:
    with _open(args, _query(args)) as (_store, conn):
        key = _key(conn, args.url)
        changed = cat.set_pinned(conn, key, args.command == "pin")
        if changed:
            audit(conn, f"artifact.{args.command}ned", key)
    print(f"{args.command}ned: {key}" if changed else f"not cached: {key}")
    return 0 if changed else 1


def _cmd_verify(args: argparse.Namespace) -> int:
    """Re-hash every blob the catalog names; quarantine the bad ones and drop their rows."""
    bad = 0
    with _open(args) as (store, conn):
        blobs = cat.blob_sizes(conn)
        for sha256, size in sorted(blobs.items()):
            if store.verify(sha256, size):
                cat.set_verified(conn, sha256, time.time())
                continue
            bad += 1
            with store.lock(sha256):
                moved, dropped = datadir.quarantine(conn, store, sha256)
            for artifact in dropped:
                audit(conn, "artifact.quarantined", artifact.url, "verify: digest mismatch")
                print(f"BAD  {sha256[:12]}  {artifact.key}  -> {moved or 'missing'}")
    print(f"{len(blobs) - bad} blobs ok, {bad} bad")
    return 1 if bad else 0


def _cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as (_store, conn):
        artifacts = cat.list_artifacts(conn)
    with open(args.out, "w", encoding="utf-8") as out:
        for artifact in artifacts:
            out.write(json.dumps(asdict(artifact), sort_keys=True) + "\n")
    print(f"exported {len(artifacts)} artifacts to {args.out}")
    return 0


def _cmd_import_catalog(args: argparse.Namespace) -> int:
    """Rows from an export, for blobs present here or copied (and re-hashed) from another dir."""
    # The export is read whole first: a missing or malformed file is one line and exit 2, and
    # leaves the data dir as it was.
    try:
        with open(args.file, encoding="utf-8") as f:
            rows = [cat.Artifact(**json.loads(line)) for line in f if line.strip()]
    except OSError as e:
        print(f"withcache-admin import-catalog: {e.strerror}: {args.file}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:
        print(
            f"withcache-admin import-catalog: {args.file} is not an export ({e})", file=sys.stderr
        )
        return 2
    os.makedirs(args.data_dir, exist_ok=True)
    source = Store(args.blobs_from) if args.blobs_from else None
    imported = skipped = 0
    with _open(args) as (store, conn):
        query = cat.keyed_with(conn)
        for exported in rows:
            # Keyed here as this catalog keys (the export may come from an older withcache, or
            # a host with another query mode); a URL no longer cacheable is not imported.
            try:
                artifact = replace(exported, key=cache_key(exported.url, query=query))
            except InvalidURL as e:
                print(f"skipped ({e}): {redact_url(exported.key)}")
                skipped += 1
                continue
            # The digest's lock from the blob check to the row: a host starting beside us must
            # not sweep the blob as an orphan in between.
            with store.lock(artifact.sha256) as locked:
                why_not = datadir.import_row(conn, store, source, artifact, locked)
            if why_not:
                print(f"skipped ({why_not}): {artifact.key}")
                skipped += 1
            else:
                imported += 1
        if imported:
            audit(conn, "artifact.imported", args.file, f"import-catalog: {imported} artifacts")
    print(f"imported {imported} artifacts, skipped {skipped}")
    return 1 if skipped else 0


def _media_type(value: str) -> str:
    checked = sanitise_media_type(value)
    if checked is None:
        raise argparse.ArgumentTypeError(
            f"not a media type (type/subtype[; name=value], printable ASCII): {value!r}"
        )
    return checked


def admin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="withcache-admin",
        description="Operator tools for a withcache data dir: put artifacts in, list them and the"
        " fill jobs, remove, pin, verify, move a cache. Safe while the host runs; it notices"
        " changes within a second.",
        epilog="`withcache-admin COMMAND --help` shows a command's options; every command takes"
        " --data-dir (default ./data) and --catalog.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    imp = commands.add_parser("import", help="put a local file into the cache under an origin URL")
    imp.add_argument("url", help="the origin URL the file stands for")
    imp.add_argument("file", help="the local file to copy in")
    imp.add_argument(
        "--content-type",
        default=None,
        type=_media_type,
        help="served Content-Type, e.g. application/x-sh (default: application/octet-stream)",
    )
    imp.set_defaults(func=_cmd_import)

    refresh = commands.add_parser(
        "refresh", help="revalidate an artifact with its origin on its next request"
    )
    ls = commands.add_parser("ls", help="list cached artifacts with their freshness")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_cmd_ls)

    jobs = commands.add_parser("jobs", help="list fill jobs, newest first")
    jobs.add_argument("--json", action="store_true", help="one JSON object per line")
    jobs.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    jobs.set_defaults(func=_cmd_jobs)

    rm = commands.add_parser("rm", help="remove an artifact (by its origin URL or key)")
    pin = commands.add_parser("pin", help="never evict this artifact to make room")
    unpin = commands.add_parser("unpin", help="let this artifact be evicted again")
    for sub, func in ((rm, _cmd_rm), (pin, _cmd_pin), (unpin, _cmd_pin), (refresh, _cmd_refresh)):
        sub.add_argument("url", help="the origin URL (or the cache key)")
        sub.set_defaults(func=func)
    for sub in (imp, rm, pin, unpin, refresh):
        mode = sub.add_mutually_exclusive_group()
        for flag, what in (("--keep-query", "the whole query"), ("--drop-query", "no query")):
            mode.add_argument(
                flag,
                action="store_true",
                help=f"key with {what}, like the host's {flag} (re-keys the catalog if it was"
                " keyed otherwise; default: as the catalog is keyed, i.e. as the host last ran)",
            )

    verify = commands.add_parser("verify", help="re-hash every blob; quarantine mismatches")
    verify.set_defaults(func=_cmd_verify)

    export = commands.add_parser("export", help="write the artifact catalog as JSON lines")
    export.add_argument("out", help="the file to write")
    export.set_defaults(func=_cmd_export)

    imp_cat = commands.add_parser(
        "import-catalog", help="add the artifacts of an export (blobs copied with --blobs-from)"
    )
    imp_cat.add_argument("file", help="a file written by export")
    imp_cat.add_argument("--blobs-from", help="the exporting host's data dir, to copy blobs from")
    imp_cat.set_defaults(func=_cmd_import_catalog)

    automation = add_commands(commands)
    for sub in (imp, ls, jobs, rm, pin, unpin, refresh, verify, export, imp_cat, *automation):
        sub.add_argument("--data-dir", "-d", default="./data", help="the host's data dir")
        sub.add_argument(
            "--catalog",
            default=None,
            metavar="URL",
            help="the host's --catalog: a SQLite path or postgresql://user@host:port/db"
            " (default: $WITHCACHE_CATALOG, else DATA_DIR/cache.db; put a password in"
            " PGPASSWORD or ~/.pgpass, not here)",
        )
    return parser


def admin_main(argv: list[str] | None = None) -> int:
    args = admin_parser().parse_args(argv)
    keep_files_private()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(admin_main())
