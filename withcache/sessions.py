"""Operator sessions the host holds live: a login begins one, a logout ends it.

A signed cookie cannot be taken back once issued, so the signature alone would let a cookie
copied before a logout keep working until it expires. The catalog's `sessions` table is the
host's word on which logged-in sessions are live, and, being in cache.db, it outlasts a restart.
It is bounded: expired rows are pruned whenever a session begins, and past `MAX_LIVE` sessions
the oldest end (those operators log in again) - a refusal too many, never a session too many.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import Connection, delete, select

from withcache.catalog import Catalog
from withcache.catalog_db import insert, transaction
from withcache.tables import sessions

MAX_LIVE = 1000


def _row_id(session_id: str) -> str:
    # A copy of cache.db (a backup) should not hold the ids cookies carry.
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def begin_session(
    conn: Connection, session_id: str, expires: float, now: float, cap: int = MAX_LIVE
) -> None:
    s = sessions.c
    row = insert(conn, sessions).values(id=_row_id(session_id), expires=expires)
    with transaction(conn):
        conn.execute(delete(sessions).where(s.expires <= now))
        conn.execute(row.on_conflict_do_update(index_elements=[s.id], set_={"expires": expires}))
        # Beyond the cap, the sessions that expire first end (ties: by id, for a fixed order).
        beyond = select(s.id).order_by(s.expires.desc(), s.id.desc()).offset(cap)
        conn.execute(delete(sessions).where(s.id.in_(beyond)))


def session_live(conn: Connection, session_id: str, now: float) -> bool:
    s = sessions.c
    row = conn.execute(select(s.id).where(s.id == _row_id(session_id), s.expires > now)).first()
    return row is not None


def end_session(conn: Connection, session_id: str) -> bool:
    with transaction(conn):
        done = conn.execute(delete(sessions).where(sessions.c.id == _row_id(session_id)))
        return done.rowcount > 0


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
