"""`withcache-admin token|events|warm`: API tokens and the audit log on a data dir, and cache
warming through a running host's API.

token and events work on the data dir like the other admin commands (safe while the host runs);
warm talks to a host over HTTP with the stdlib client (withcache_client), so it needs no data dir.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from dataclasses import asdict

from sqlalchemy import Connection

from withcache import events as ev
from withcache import tokens


def _open(args: argparse.Namespace):
    from withcache.cli import _open as open_data_dir  # at call time: cli imports this module

    return open_data_dir(args)


def admin_actor() -> ev.Actor:
    """The admin tool as an audit actor; its "client" is the local account that ran it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return ev.Actor(ev.ADMIN_TOOL, f"local:{user}")


def print_json(rows) -> int:
    """One JSON object per line (for scripts), from dataclass rows."""
    for row in rows:
        print(json.dumps(asdict(row), sort_keys=True))
    return 0


def audit(conn: Connection, action: str, subject: str | None, detail: str | None = None):
    """One audit event for a change the admin tool made."""
    ev.append(conn, time.time(), admin_actor(), action, subject, ev.OK, detail)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def _cmd_token(args: argparse.Namespace) -> int:
    with _open(args) as (_store, conn):
        if args.token_command == "create":
            try:
                made, secret = tokens.create_token(conn, args.name, args.scope, time.time())
            except tokens.TokenError as e:
                print(f"withcache-admin token create: {e}", file=sys.stderr)
                return 2
            audit(conn, "token.created", made.name, " ".join(made.scopes))
            if args.out:
                _write_secret(args.out, secret)
                print(f"token {made.name} ({' '.join(made.scopes)}) written to {args.out}")
            else:
                # The only time the secret is shown: it is stored as a hash.
                print(secret)
                print(
                    f"token {made.name} ({' '.join(made.scopes)}): shown once, keep it safe",
                    file=sys.stderr,
                )
            return 0
        if args.token_command == "revoke":
            if not tokens.revoke_token(conn, args.name, time.time()):
                print(f"withcache-admin token revoke: no live token {args.name!r}", file=sys.stderr)
                return 1
            audit(conn, "token.revoked", args.name)
            print(f"revoked: {args.name}")
            return 0
        found = tokens.list_tokens(conn, include_revoked=args.all)
    if args.json:
        return print_json(found)
    print(f"{'NAME':<20}  {'SCOPES':<16}  {'CREATED':<19}  {'LAST USED':<19}  REVOKED")
    for t in found:
        print(
            f"{t.name:<20}  {' '.join(t.scopes):<16}  {_when(t.created_at):<19}"
            f"  {_when(t.last_used_at):<19}  {_when(t.revoked_at)}"
        )
    return 0


def _write_secret(path: str, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


def _cmd_events(args: argparse.Namespace) -> int:
    with _open(args) as (_store, conn):
        try:
            found, total = ev.query(
                conn, action=args.action, actor=args.actor, limit=args.limit, offset=args.offset
            )
        except ev.TooDeep as deep:
            print(f"withcache-admin events: {deep}; narrow with --action/--actor", file=sys.stderr)
            return 2
    if args.json:
        return print_json(found)
    print(f"{'TIME (UTC)':<19}  {'ACTOR':<20}  {'CLIENT':<15}  {'ACTION':<20}  OUTCOME  SUBJECT")
    for e in found:
        print(
            f"{_when(e.at):<19}  {e.actor:<20}  {e.client or '-':<15}  {e.action:<20}"
            f"  {e.outcome:<7}  {e.subject or '-'}{f'  ({e.detail})' if e.detail else ''}"
        )
    of = f"more than {ev.COUNT_CAP}" if total is None else total
    print(f"{len(found)} of {of} events", file=sys.stderr)
    return 0


def _cmd_warm(args: argparse.Namespace) -> int:
    from withcache_client.warm import main as warm_main

    return warm_main(args.server, args.token_file, args.manifest, timeout=args.timeout)


def add_commands(commands) -> list[argparse.ArgumentParser]:
    """Add token, events and warm to withcache-admin; the subparsers that take --data-dir."""
    token = commands.add_parser("token", help="create, list or revoke API tokens")
    verbs = token.add_subparsers(dest="token_command", required=True)
    create = verbs.add_parser("create", help="make a token; its secret is printed once")
    create.add_argument("name", help="a name for the token (who or what uses it)")
    create.add_argument(
        "--scope",
        action="append",
        choices=tokens.SCOPES,
        required=True,
        help="read, fill (queue fills) or admin (delete, pin, tokens); repeatable; admin"
        " includes fill and fill includes read",
    )
    create.add_argument("--out", help="write the secret to this new file (0600) instead")
    revoke = verbs.add_parser("revoke", help="revoke a token: it stops working at once")
    revoke.add_argument("name")
    listing = verbs.add_parser("ls", help="list tokens (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked ones too")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    for sub in (create, revoke, listing):
        sub.set_defaults(func=_cmd_token)

    events = commands.add_parser("events", help="the audit log, newest first")
    events.add_argument("--action", default="", help="an action, or a prefix ending in '.'")
    events.add_argument("--actor", default="", help="e.g. operator, token:ci, withcache-admin")
    events.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    events.add_argument("--offset", type=int, default=0, help="skip this many newest")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(func=_cmd_events)

    warm = commands.add_parser(
        "warm", help="queue a fill for each URL of a manifest on a running host, and follow them"
    )
    warm.add_argument(
        "manifest", help="one URL a line, optionally followed by its sha256; # comments"
    )
    warm.add_argument("--server", required=True, help="the cache-host, e.g. http://cachehost:3000")
    warm.add_argument("--token-file", required=True, help="a file holding a token with fill scope")
    warm.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for the fills (default 3600)"
    )
    warm.set_defaults(func=_cmd_warm)
    return [create, revoke, listing, events]
