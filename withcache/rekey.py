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

import sqlite3
from dataclasses import dataclass, field

from withcache.jobs import ACTIVE
from withcache.keys import InvalidURL, cache_key


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


def _group(rows: list[tuple], query: str) -> tuple[dict[str, list[tuple]], list[tuple]]:
    """Rows (rowid, key, url, ...) by their new key, and the rows no key exists for."""
    groups: dict[str, list[tuple]] = {}
    gone = []
    for row in rows:
        key = _key(row[2], query)
        if isinstance(key, InvalidURL):
            gone.append(row)
        else:
            groups.setdefault(key, []).append(row)
    return groups, gone


def _move_keys(conn: sqlite3.Connection, table: str, moves: list[tuple[int, str]]) -> None:
    """Give rows (by rowid) their new keys. Through unique temporary keys first, so that no
    row takes a key another row still holds (the key is the primary key)."""
    for rowid, _key in moves:
        conn.execute(f"UPDATE {table} SET key = ? WHERE rowid = ?", (f"\0rekey:{rowid}", rowid))
    for rowid, key in moves:
        conn.execute(f"UPDATE {table} SET key = ? WHERE rowid = ?", (key, rowid))


def rekey(conn: sqlite3.Connection, query: str) -> Rekeyed:
    """Re-key every row under the query mode, and record the mode. Blocking, in a transaction."""
    done = Rekeyed()
    _rekey_artifacts(conn, query, done)
    _rekey_misses(conn, query)
    _rekey_jobs(conn, query, done)
    conn.execute("UPDATE key_rules SET query = ?", (query,))
    return done


def _rekey_artifacts(conn: sqlite3.Connection, query: str, done: Rekeyed) -> None:
    rows = conn.execute(
        "SELECT rowid, key, url, COALESCE(last_hit_at, fetched_at), fetched_at, hits, misses,"
        " pinned FROM artifacts"
    ).fetchall()
    groups, gone = _group(rows, query)
    conn.executemany("DELETE FROM artifacts WHERE rowid = ?", [(r[0],) for r in gone])
    done.removed += len(gone)
    moves = []
    for key, members in groups.items():
        # The most recently hit first; ties by fetch time, then by old key (deterministic).
        members.sort(key=lambda r: (r[3], r[4], r[1]), reverse=True)
        winner, losers = members[0], members[1:]
        if losers:
            conn.executemany("DELETE FROM artifacts WHERE rowid = ?", [(r[0],) for r in losers])
            conn.execute(
                "UPDATE artifacts SET hits = ?, misses = ?, pinned = ? WHERE rowid = ?",
                (
                    sum(r[5] for r in members),
                    sum(r[6] for r in members),
                    int(any(r[7] for r in members)),
                    winner[0],
                ),
            )
            done.merged += len(losers)
        if winner[1] != key:
            moves.append((winner[0], key))
    _move_keys(conn, "artifacts", moves)
    done.moved += len(moves)


def _rekey_misses(conn: sqlite3.Connection, query: str) -> None:
    rows = conn.execute(
        "SELECT rowid, key, url, count, first_seen, last_seen FROM misses"
    ).fetchall()
    groups, gone = _group(rows, query)
    conn.executemany("DELETE FROM misses WHERE rowid = ?", [(r[0],) for r in gone])
    moves = []
    for key, members in groups.items():
        members.sort(key=lambda r: (r[5], r[1]), reverse=True)
        winner, losers = members[0], members[1:]
        if losers:
            conn.executemany("DELETE FROM misses WHERE rowid = ?", [(r[0],) for r in losers])
            conn.execute(
                "UPDATE misses SET count = ?, first_seen = ?, last_seen = ? WHERE rowid = ?",
                (
                    sum(r[3] for r in members),
                    min(r[4] for r in members),
                    max(r[5] for r in members),
                    winner[0],
                ),
            )
        if winner[1] != key:
            moves.append((winner[0], key))
    _move_keys(conn, "misses", moves)
    # A miss of what is now an artifact's key: the artifact takes it over (put_artifact does
    # the same when a fill lands).
    conn.execute(
        "UPDATE artifacts SET misses = misses"
        " + (SELECT count FROM misses WHERE misses.key = artifacts.key)"
        " WHERE key IN (SELECT key FROM misses)"
    )
    conn.execute("DELETE FROM misses WHERE key IN (SELECT key FROM artifacts)")


def _rekey_jobs(conn: sqlite3.Connection, query: str, done: Rekeyed) -> None:
    rows = conn.execute("SELECT id, key, url, state FROM jobs").fetchall()
    for job_id, old, url, state in rows:
        key = _key(url, query)
        if isinstance(key, InvalidURL):
            if state in ACTIVE:
                conn.execute(
                    "UPDATE jobs SET state = 'failed', error = ?,"
                    " finished_at = COALESCE(started_at, created_at) WHERE id = ?",
                    (f"not cacheable: {key}", job_id),
                )
                done.failed_jobs.append(job_id)
        elif key != old:
            conn.execute("UPDATE jobs SET key = ? WHERE id = ?", (key, job_id))
