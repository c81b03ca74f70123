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

from sqlalchemy import Connection, delete, func, select
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
) -> tuple[list[Event], int]:
    """A page of events, newest first, filtered by action (exact, or a prefix ending in '.')
    and actor (exact); and how many match."""
    where = []
    if action:
        if action.endswith("."):
            where.append(func.substr(e.action, 1, len(action)) == action)
        else:
            where.append(e.action == action)
    if actor:
        where.append(e.actor == actor)
    total = conn.execute(select(func.count()).select_from(events).where(*where)).scalar_one()
    rows = conn.execute(
        select(*_COLUMNS).where(*where).order_by(e.id.desc()).limit(limit).offset(offset)
    )
    return [Event(*row) for row in rows], total


def actors(conn: Connection) -> list[str]:
    """The actors the log names (for the Events page's filter), in order: a loose index scan of
    events_actor, one probe per actor, where DISTINCT read every event (30 ms for 100,000 on
    PostgreSQL; the log keeps up to a million)."""
    found = select(func.min(e.actor).label("actor")).cte("found", recursive=True)
    last = found.alias("last")
    following = select(func.min(e.actor)).where(e.actor > last.c.actor).scalar_subquery()
    found = found.union_all(select(following).where(last.c.actor.is_not(None)))
    return list(conn.execute(select(found.c.actor).where(found.c.actor.is_not(None))).scalars())


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
