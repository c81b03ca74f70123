"""Operator sessions the host holds live: a login begins one, a logout ends it.

A signed cookie cannot be taken back once issued, so the signature alone would let a cookie
copied before a logout keep working until it expires. The catalog's `sessions` table is the
host's word on which logged-in sessions are live, and, being in cache.db, it outlasts a restart.
It is bounded: expired rows are pruned whenever a session begins, and past `MAX_LIVE` sessions
the oldest end (those operators log in again) - a refusal too many, never a session too many.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from withcache.catalog import Catalog, transaction

MAX_LIVE = 1000


def _row_id(session_id: str) -> str:
    # A copy of cache.db (a backup) should not hold the ids cookies carry.
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def begin_session(
    conn: sqlite3.Connection, session_id: str, expires: float, now: float, cap: int = MAX_LIVE
) -> None:
    with transaction(conn):
        conn.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
        conn.execute(
            "INSERT OR REPLACE INTO sessions (id, expires) VALUES (?, ?)",
            (_row_id(session_id), expires),
        )
        conn.execute(
            "DELETE FROM sessions WHERE id IN"
            " (SELECT id FROM sessions ORDER BY expires DESC, rowid DESC LIMIT -1 OFFSET ?)",
            (cap,),
        )


def session_live(conn: sqlite3.Connection, session_id: str, now: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sessions WHERE id = ? AND expires > ?", (_row_id(session_id), now)
    ).fetchone()
    return row is not None


def end_session(conn: sqlite3.Connection, session_id: str) -> bool:
    with transaction(conn):
        cursor = conn.execute("DELETE FROM sessions WHERE id = ?", (_row_id(session_id),))
        return cursor.rowcount > 0


class CatalogSessions:
    """The sessions table for the reactor (withcache.web.auth's `Sessions`): each call runs on
    the catalog's database thread and answers a Deferred."""

    def __init__(self, catalog: Catalog):
        self._catalog = catalog

    def begin(self, session_id: str, expires: float, now: float) -> Any:
        return self._catalog.run(begin_session, session_id, expires, now)

    def live(self, session_id: str, now: float) -> Any:
        return self._catalog.run(session_live, session_id, now)

    def end(self, session_id: str) -> Any:
        return self._catalog.run(end_session, session_id)
