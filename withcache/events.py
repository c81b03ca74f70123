"""The audit log: one row per state change, with who did it, from where, and how it ended.

Actors are a token (`token:<name>`), the operator's browser session (`operator`), the admin tool
(`withcache-admin`) or the host itself (`host`: fills started by misses, their outcomes, the
scrub). Rows are only ever added (a trigger refuses changes); retention drops the oldest by age
and by count. Subjects are URLs or names, stored with signature and credential values redacted,
as everywhere else they are shown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, func, select, union_all
from twisted.application.internet import TimerService
from twisted.internet import defer

from withcache._log import make_logger
from withcache.catalog import Catalog
from withcache.catalog_db import transaction
from withcache.logs import redact_text, redact_url
from withcache.tables import events

log = make_logger()

HOST, ADMIN_TOOL, OPERATOR = "host", "withcache-admin", "operator"
OK, FAILED, REFUSED = "ok", "failed", "refused"
ACTIONS = (
    "fill.queued",
    "fill.completed",
    "fill.failed",
    "fill.cancelled",
    "fill.uncacheable",
    "artifact.deleted",
    "artifact.pinned",
    "artifact.unpinned",
    "artifact.imported",
    "artifact.quarantined",
    "miss.dismissed",
    "token.created",
    "token.revoked",
    "login.succeeded",
    "login.failed",
    "logout",
)
DEFAULT_MAX_AGE = 365 * 86400.0
DEFAULT_MAX_COUNT = 1_000_000
PRUNE_EVERY = 3600.0
# Pages count matching events up to this many; past it, "more than COUNT_CAP".
COUNT_CAP = 10_000
# An offset reaches this deep; past it, pages go on by cursor (query's `before`).
MAX_OFFSET = 100_000


class TooDeep(ValueError):
    """An offset past MAX_OFFSET: page on by cursor."""


@dataclass(frozen=True)
class Actor:
    """Who asked for a change, and from which client address (None: not over the network)."""

    name: str
    client: str | None = None


THE_HOST = Actor(HOST)


def token_actor(name: str, client: str | None) -> Actor:
    return Actor(f"token:{name}", client)


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    actor: str
    client: str | None
    action: str
    subject: str | None
    outcome: str
    detail: str | None


e = events.c
_COLUMNS = (e.id, e.at, e.actor, e.client, e.action, e.subject, e.outcome, e.detail)


def append(
    conn: Connection,
    at: float,
    actor: Actor,
    action: str,
    subject: str | None,
    outcome: str = OK,
    detail: str | None = None,
) -> int:
    """Add one event row (blocking); its id."""
    row = events.insert().values(
        at=at,
        actor=actor.name,
        client=actor.client,
        action=action,
        subject=None if subject is None else redact_url(subject),
        outcome=outcome,
        detail=None if detail is None else redact_text(detail)[:500],
    )
    with transaction(conn):
        return conn.execute(row.returning(e.id)).scalar_one()


def query(
    conn: Connection,
    *,
    action: str = "",
    actor: str = "",
    limit: int = 50,
    offset: int = 0,
    before: int | None = None,
) -> tuple[list[Event], int | None]:
    """A page of events, newest first, filtered by action (exact, or a prefix ending in '.')
    and actor (exact), from an offset or below an event id (`before`, the cursor of the page
    after); and how many match, counted up to COUNT_CAP (None: more). Raises TooDeep for an
    offset past MAX_OFFSET: an offset walks every entry it skips, a cursor does not.

    Each page is walks of indexes in id order: the primary key, (actor, id), or (action, id) for
    each action a prefix names, merged — never a sort of every matching event (a million kept)."""
    if offset > MAX_OFFSET:
        raise TooDeep(f"offset beyond {MAX_OFFSET}")
    if action.endswith("."):
        actions = [name for name in _distinct(conn, e.action) if name.startswith(action)]
        if not actions:
            return [], 0
    else:
        actions = [action] if action else []
    where = [e.actor == actor] if actor else []
    matching = select(e.id).where(*where)
    if actions:
        matching = matching.where(e.action.in_(actions))
    counted = conn.execute(
        select(func.count()).select_from(matching.limit(COUNT_CAP + 1).subquery())
    ).scalar_one()
    if before is not None:
        where.append(e.id < before)
    walks = [
        select(e.id).where(*where, *([e.action == name] if name else []))
        .order_by(e.id.desc()).limit(offset + limit).subquery()
        for name in actions or [""]
    ]  # fmt: skip
    merged = union_all(*(select(walk.c.id) for walk in walks)).subquery()
    ids = select(merged.c.id).order_by(merged.c.id.desc()).limit(limit).offset(offset)
    # The page's ids first, then its rows: an offset skips index entries, not rows.
    rows = conn.execute(select(*_COLUMNS).where(e.id.in_(ids)).order_by(e.id.desc()))
    return [Event(*row) for row in rows], counted if counted <= COUNT_CAP else None


def _distinct(conn: Connection, column: Any) -> list[str]:
    """The distinct values of an indexed column, in order: a loose index scan, one probe per
    value, where DISTINCT read every event (30 ms for 100,000 on PostgreSQL)."""
    found = select(func.min(column).label("value")).cte("found", recursive=True)
    last = found.alias("last")
    following = select(func.min(column)).where(column > last.c.value).scalar_subquery()
    found = found.union_all(select(following).where(last.c.value.is_not(None)))
    return list(conn.execute(select(found.c.value).where(found.c.value.is_not(None))).scalars())


def actors(conn: Connection) -> list[str]:
    """The actors the log names (for the Events page's filter), in order."""
    return _distinct(conn, e.actor)


def prune(conn: Connection, now: float, max_age: float, max_count: int) -> int:
    """Drop events older than max_age seconds and beyond the newest max_count (0: no bound)."""
    with transaction(conn):
        removed = 0
        if max_age:
            removed += conn.execute(delete(events).where(e.at < now - max_age)).rowcount
        if max_count:
            oldest_kept = (
                select(e.id).order_by(e.id.desc()).limit(1).offset(max_count).scalar_subquery()
            )
            removed += conn.execute(delete(events).where(e.id <= oldest_kept)).rowcount
        return removed


class EventLog:
    """Records events for code on the reactor: each row is written on the catalog's thread.

    record() never fails its caller: an audit row that cannot be written (a full disk) is
    logged, and the change it describes stands.
    """

    def __init__(self, catalog: Catalog, now: Callable[[], float]):
        self._catalog = catalog
        self._now = now

    def record(
        self,
        actor: Actor | None,
        action: str,
        subject: str | None,
        outcome: str = OK,
        detail: str | None = None,
    ) -> defer.Deferred:
        d = self._catalog.run(
            append, self._now(), actor or THE_HOST, action, subject, outcome, detail
        )
        d.addErrback(self._failed, action)
        return d

    @staticmethod
    def _failed(failure: Any, action: str) -> None:
        log.warn(
            "could not write an audit event ({action}): {error}",
            action=action,
            error=failure.getErrorMessage(),
        )


class EventRetention(TimerService):
    """Prunes the audit log by age and count once an hour (and at start)."""

    def __init__(self, catalog: Catalog, now: Callable[[], float], max_age: float, max_count: int):
        super().__init__(PRUNE_EVERY, self._prune)
        self._catalog, self._now = catalog, now
        self.max_age, self.max_count = max_age, max_count

    def _prune(self) -> defer.Deferred:
        d = self._catalog.run(prune, self._now(), self.max_age, self.max_count)
        d.addErrback(lambda f: log.failure("could not prune the audit log", f))
        return d
