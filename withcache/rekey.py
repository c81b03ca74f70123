"""Re-keying a catalog: every artifact, miss and job gets the key its stored URL has now.

Keys are a function of the URL and the query mode (withcache.keys). When either changes (schema
version 6 changed the rules; a host started with another mode than the last), the catalog's
rows are moved to their new keys so that what was cached stays reachable. Blocking, on one
connection, inside the caller's transaction:

- Artifacts: a URL that is no longer cacheable (a credential-like query parameter) loses its
  row; its blob, if no other row names it, is an orphan the host sweeps at its next start.
  Rows whose URLs now share a key are merged into the most recently hit one (last hit, or
  fetched if never hit, as eviction orders them), which takes the others' hit and miss
  counts and stays pinned if any of them was.
- Misses: merged the same way (counts added, first and last seen widened, the latest URL
  kept); a miss whose key is now an artifact's moves its count onto it, as a fill would.
- Jobs: re-keyed; a queued or running fill of a URL that is no longer cacheable fails with
  the reason instead of being resumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, func, select, update

from withcache._log import make_logger
from withcache.catalog_db import transaction
from withcache.jobs import ACTIVE
from withcache.keys import InvalidURL, cache_key
from withcache.tables import artifacts, jobs, key_rules, misses

log = make_logger()


@dataclass
class Rekeyed:
    """What a re-keying did, for its log line."""

    moved: int = 0
    merged: int = 0
    removed: int = 0
    failed_jobs: list[int] = field(default_factory=list)


def _key(url: str, query: str) -> str | InvalidURL:
    try:
        return cache_key(url, query=query)
    except InvalidURL as e:
        return e


def _group(rows: Sequence[Any], query: str) -> tuple[dict[str, list[Any]], list[Any]]:
    """Rows (key, url, ...) by their new key, and the rows no key exists for."""
    groups: dict[str, list[Any]] = {}
    gone = []
    for row in rows:
        key = _key(row[1], query)
        if isinstance(key, InvalidURL):
            gone.append(row)
        else:
            groups.setdefault(key, []).append(row)
    return groups, gone


def _delete(conn: Connection, table: Table, keys: list[str]) -> None:
    if keys:
        step = delete(table).where(table.c.key == bindparam("old"))
        conn.execute(step, [{"old": k} for k in keys])


def _move_keys(conn: Connection, table: Table, moves: list[tuple[str, str]]) -> None:
    """Give rows (by their old key) their new keys. Through unique temporary keys first, so that
    no row takes a key another row still holds (the key is the primary key). A temporary key
    starts with a control character: no cache key (a URL) does."""
    if not moves:
        return
    step = update(table).where(table.c.key == bindparam("old")).values(key=bindparam("new"))
    conn.execute(step, [{"old": old, "new": f"\x01rekey:{n}"} for n, (old, _) in enumerate(moves)])
    conn.execute(step, [{"old": f"\x01rekey:{n}", "new": new} for n, (_, new) in enumerate(moves)])


def rekey(conn: Connection, query: str) -> Rekeyed:
    """Re-key every row under the query mode, and record the mode. Blocking, in a transaction."""
    done = Rekeyed()
    _rekey_artifacts(conn, query, done)
    _rekey_misses(conn, query)
    _rekey_jobs(conn, query, done)
    conn.execute(update(key_rules).values(query=query))
    return done


def _rekey_artifacts(conn: Connection, query: str, done: Rekeyed) -> None:
    a = artifacts.c
    rows = conn.execute(
        select(
            a.key, a.url, func.coalesce(a.last_hit_at, a.fetched_at), a.fetched_at, a.hits,
            a.misses, a.pinned,
        )
    ).all()  # fmt: skip
    groups, gone = _group(rows, query)
    _delete(conn, artifacts, [r[0] for r in gone])
    done.removed += len(gone)
    moves = []
    for key, members in groups.items():
        # The most recently hit first; ties by fetch time, then by old key (deterministic).
        members.sort(key=lambda r: (r[2], r[3], r[0]), reverse=True)
        winner, losers = members[0], members[1:]
        if losers:
            _delete(conn, artifacts, [r[0] for r in losers])
            conn.execute(
                update(artifacts)
                .where(a.key == winner[0])
                .values(
                    hits=sum(r[4] for r in members),
                    misses=sum(r[5] for r in members),
                    pinned=int(any(r[6] for r in members)),
                )
            )
            done.merged += len(losers)
        if winner[0] != key:
            moves.append((winner[0], key))
    _move_keys(conn, artifacts, moves)
    done.moved += len(moves)


def _rekey_misses(conn: Connection, query: str) -> None:
    m = misses.c
    rows = conn.execute(select(m.key, m.url, m.count, m.first_seen, m.last_seen)).all()
    groups, gone = _group(rows, query)
    _delete(conn, misses, [r[0] for r in gone])
    moves = []
    for key, members in groups.items():
        members.sort(key=lambda r: (r[4], r[0]), reverse=True)
        winner, losers = members[0], members[1:]
        if losers:
            _delete(conn, misses, [r[0] for r in losers])
            conn.execute(
                update(misses)
                .where(m.key == winner[0])
                .values(
                    count=sum(r[2] for r in members),
                    first_seen=min(r[3] for r in members),
                    last_seen=max(r[4] for r in members),
                )
            )
        if winner[0] != key:
            moves.append((winner[0], key))
    _move_keys(conn, misses, moves)
    # A miss of what is now an artifact's key: the artifact takes it over (put_artifact does
    # the same when a fill lands).
    pending = select(m.count).where(m.key == artifacts.c.key).scalar_subquery()
    conn.execute(
        update(artifacts)
        .where(artifacts.c.key.in_(select(m.key)))
        .values(misses=artifacts.c.misses + pending)
    )
    conn.execute(delete(misses).where(m.key.in_(select(artifacts.c.key))))


def _rekey_jobs(conn: Connection, query: str, done: Rekeyed) -> None:
    j = jobs.c
    # Newest first: of two active jobs that end up under one key the newest stays (one active
    # job per key: revision 009_leases).
    rows = conn.execute(select(j.id, j.key, j.url, j.state).order_by(j.id.desc())).all()
    active: set[str] = set()
    moves: list[tuple[int, str]] = []
    for job_id, old, url, state in rows:
        key = _key(url, query)
        if not isinstance(key, InvalidURL) and state in ACTIVE:
            if key in active:
                conn.execute(
                    update(jobs)
                    .where(j.id == job_id)
                    .values(
                        state="cancelled",
                        error="duplicate of a newer job of this key",
                        finished_at=func.coalesce(j.started_at, j.created_at),
                    )
                )
                continue
            active.add(key)
        if isinstance(key, InvalidURL):
            if state in ACTIVE:
                conn.execute(
                    update(jobs)
                    .where(j.id == job_id)
                    .values(
                        state="failed",
                        error=f"not cacheable: {key}",
                        finished_at=func.coalesce(j.started_at, j.created_at),
                    )
                )
                done.failed_jobs.append(job_id)
        elif key != old:
            moves.append((job_id, key))
    # Through a key of its own first: one job may move onto a key another is moving off.
    for job_id, _key_after in moves:
        conn.execute(update(jobs).where(j.id == job_id).values(key=f"rekeying:{job_id}"))
    for job_id, key_after in moves:
        conn.execute(update(jobs).where(j.id == job_id).values(key=key_after))


def keyed_with(conn: Connection) -> str:
    """The query mode the catalog's keys were made with (see withcache.keys)."""
    return conn.execute(select(key_rules.c.query)).scalar_one()


def ensure_keyed(conn: Connection, query: str) -> bool:
    """Re-key the catalog under a query mode unless its keys were made with it already;
    whether it had to. Safe against another process doing the same at the same time."""
    if keyed_with(conn) == query:
        return False
    with transaction(conn):
        if keyed_with(conn) == query:
            return False  # another process re-keyed it while we waited for the lock
        rekey_logged(conn, query)
    return True


def rekey_logged(conn: Connection, query: str) -> None:
    """rekey, with a log line saying what it did when it did anything."""
    done = rekey(conn, query)
    if not (done.moved or done.merged or done.removed or done.failed_jobs):
        return  # a new catalog, or one whose keys the mode does not change
    log.info(
        "re-keyed the catalog for query mode {query}: {moved} artifacts under new keys,"
        " {merged} merged into a more recently hit one, {removed} removed (credentials in"
        " their query), {failed} fills failed",
        query=query,
        moved=done.moved,
        merged=done.merged,
        removed=done.removed,
        failed=len(done.failed_jobs),
    )
