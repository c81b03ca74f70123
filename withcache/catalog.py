"""SQLite metadata: artifacts and misses, with numbered migrations by PRAGMA user_version.

The query functions are plain and blocking, taking a connection, so `withcache-admin` can use
them directly; `Catalog` runs the same functions on one dedicated database thread for the
reactor. WAL mode lets the admin CLI write while the host is running.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from importlib import resources
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.application import service
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from withcache._log import make_logger
from withcache.keys import DEFAULT_QUERY
from withcache.logs import redact_url
from withcache.rekey import rekey
from withcache.sanitise import sanitise_media_type

T = TypeVar("T")
P = ParamSpec("P")
log = make_logger()


@dataclass(frozen=True)
class Artifact:
    key: str
    url: str
    sha256: str
    size: int
    content_type: str | None
    fetched_at: float
    hits: int = 0
    misses: int = 0
    last_hit_at: float | None = None
    pinned: bool = False
    # The origin's KEPT headers as JSON (withcache.freshness), None if stored before they were.
    origin_headers: str | None = None
    # When the origin last confirmed these bytes (None: at fetched_at).
    validated_at: float | None = None
    # An operator asked for it to be revalidated on its next request.
    refresh: bool = False

    @property
    def checked_at(self) -> float:
        return self.fetched_at if self.validated_at is None else self.validated_at


@dataclass(frozen=True)
class Miss:
    key: str
    url: str
    count: int
    first_seen: float
    last_seen: float


_ARTIFACT_COLUMNS = (
    "key, url, sha256, size, content_type, fetched_at, hits, misses, last_hit_at, pinned,"
    " origin_headers, validated_at, refresh"
)


def _artifact(row: tuple) -> Artifact:
    (key, url, sha256, size, content_type, fetched_at, hits, misses, last_hit_at, pinned,
     headers, validated_at, refresh) = row  # fmt: skip
    return Artifact(
        key,
        url,
        sha256,
        size,
        content_type,
        fetched_at,
        hits,
        misses,
        last_hit_at,
        bool(pinned),
        headers,
        validated_at,
        bool(refresh),
    )


def migrations() -> list[tuple[int, str]]:
    """(version, sql) for each schema file shipped in withcache/schema, in order."""
    found = []
    for entry in resources.files("withcache").joinpath("schema").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("-", 1)[0]), entry.read_text("utf-8")))
    return sorted(found)


def connect(path: str, query: str | None = None) -> sqlite3.Connection:
    """Open (creating and migrating) the catalog database. Blocking.

    With a query mode, the catalog's keys are made under it: if they were made under another
    (a host started with other options, or a catalog older than the mode), every row is
    re-keyed first (see rekey). Without one, the keys stay as they are.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable in WAL mode except for the last commits before a power loss. Losing
    # one of those loses a hit count or leaves a blob without its row (swept at start), never a
    # row naming bad bytes; FULL would fsync on every hit counted.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(conn, query)
    if query is not None:
        ensure_keyed(conn, query)
    return conn


def migrate(conn: sqlite3.Connection, query: str | None = None) -> int:
    """Apply every migration newer than the database; returns the resulting version. A
    version with a Python step (_PYTHON_STEPS) runs it after its SQL, in the same
    transaction; `query` is the key mode for steps that re-key (the default when None)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    known = migrations()
    newest = known[-1][0] if known else 0
    if version > newest:
        raise RuntimeError(f"catalog schema version {version} is newer than this withcache")
    for number, sql in known:
        if number > version:
            # One transaction, so the schema change, its Python step and the version bump
            # commit together (executescript leaves the BEGIN open: no isolation level).
            try:
                conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\n")
                step = _PYTHON_STEPS.get(number)
                if step is not None:
                    step(conn, query or DEFAULT_QUERY)
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            version = number
    return version


def keyed_with(conn: sqlite3.Connection) -> str:
    """The query mode the catalog's keys were made with (see withcache.keys)."""
    return conn.execute("SELECT query FROM key_rules").fetchone()[0]


def ensure_keyed(conn: sqlite3.Connection, query: str) -> bool:
    """Re-key the catalog under a query mode unless its keys were made with it already;
    whether it had to. Safe against another process doing the same at the same time."""
    if keyed_with(conn) == query:
        return False
    with transaction(conn):
        if keyed_with(conn) == query:
            return False  # another process re-keyed it while we waited for the lock
        _rekey(conn, query)
    return True


def _rekey(conn: sqlite3.Connection, query: str) -> None:
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


# Python steps of migrations, by version, run after that version's SQL in its transaction.
_PYTHON_STEPS: dict[int, Callable[[sqlite3.Connection, str], None]] = {
    # 006: keys keep the query but for signatures; credential-like queries are not cacheable.
    6: _rekey,
}


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself failed (a full disk): never leave the connection mid-transaction.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def get_artifact(conn: sqlite3.Connection, key: str) -> Artifact | None:
    row = conn.execute(
        f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE key = ?", (key,)
    ).fetchone()
    return _artifact(row) if row else None


def lookup(
    conn: sqlite3.Connection, key: str, url: str, now: float, count_hit: bool
) -> Artifact | None:
    """The artifact for key, counting a hit; or None, counting a miss.

    The counting is bookkeeping: when it cannot be written (a full disk, a lock held too long)
    the answer is still given, and the failure logged.
    """
    found = get_artifact(conn, key)
    try:
        with transaction(conn):
            if found is None:
                _count_miss(conn, key, url, now)
            elif count_hit:
                conn.execute(
                    "UPDATE artifacts SET hits = hits + 1, last_hit_at = ? WHERE key = ?",
                    (now, key),
                )
    except sqlite3.OperationalError as e:
        log.warn(
            "could not record a {what} of {key}: {error}",
            what="miss" if found is None else "hit",
            key=redact_url(key),
            error=str(e),
        )
    return found


def _count_miss(conn: sqlite3.Connection, key: str, url: str, now: float) -> None:
    conn.execute(
        "INSERT INTO misses (key, url, count, first_seen, last_seen)"
        " VALUES (?, ?, 1, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET count = count + 1,"
        " last_seen = excluded.last_seen, url = excluded.url",
        (key, url, now, now),
    )


def record_miss(conn: sqlite3.Connection, key: str, url: str, now: float) -> None:
    """Count a miss of key even though an artifact is stored for it (a stale one whose origin
    has other bytes, under --curate: the operator approves its new fill like any other)."""
    with transaction(conn):
        _count_miss(conn, key, url, now)


def add_hits(conn: sqlite3.Connection, hits: list[tuple[str, int, float]]) -> int:
    """Add batched GET hits, (key, count, last hit at) each, in one transaction; returns the
    artifacts generation after (which hit counts do not move)."""
    if hits:
        with transaction(conn):
            conn.executemany(
                "UPDATE artifacts SET hits = hits + ?,"
                " last_hit_at = MAX(COALESCE(last_hit_at, 0), ?) WHERE key = ?",
                [(count, last_at, key) for key, count, last_at in hits],
            )
    return artifacts_generation(conn)


def artifacts_generation(conn: sqlite3.Connection) -> int:
    """A number that changes whenever, by any connection, an artifact row is added, removed or
    changed in what it serves (or its pin); not for hit counts, scrub stamps, misses or jobs.
    PRAGMA data_version moves on any commit, and would have every serving process forget its
    hit index each second the host writes hit counts (issue 20; schema/004)."""
    return conn.execute("SELECT artifacts FROM catalog_generation").fetchone()[0]


class NoRoom(Exception):
    """An artifact that cannot fit under --max-bytes even after evicting what may be evicted."""


def put_artifact(conn: sqlite3.Connection, artifact: Artifact, max_bytes: int = 0) -> list[str]:
    """Record a stored artifact. Its pending misses move onto it and the miss row goes.

    Replacing an existing key keeps its counters. With max_bytes, the least recently hit unpinned
    artifacts are evicted to make room (raising NoRoom when that cannot be done). Returns the
    digests no row names any more, whose blobs the caller may delete. A content type that is
    not a media type (an origin's header, an import's option) is stored as none.
    """
    artifact = replace(artifact, content_type=sanitise_media_type(artifact.content_type))
    with transaction(conn):
        freed = _make_room(conn, artifact, max_bytes) if max_bytes else []
        old = get_artifact(conn, artifact.key)
        miss = conn.execute("SELECT count FROM misses WHERE key = ?", (artifact.key,)).fetchone()
        pending = miss[0] if miss else 0
        conn.execute("DELETE FROM misses WHERE key = ?", (artifact.key,))
        if old is None:
            conn.execute(
                f"INSERT INTO artifacts ({_ARTIFACT_COLUMNS}) VALUES ({', '.join('?' * 13)})",
                (
                    artifact.key,
                    artifact.url,
                    artifact.sha256,
                    artifact.size,
                    artifact.content_type,
                    artifact.fetched_at,
                    artifact.hits,
                    artifact.misses + pending,
                    artifact.last_hit_at,
                    int(artifact.pinned),
                    artifact.origin_headers,
                    artifact.validated_at,
                    int(artifact.refresh),
                ),
            )
        else:
            conn.execute(
                "UPDATE artifacts SET url = ?, sha256 = ?, size = ?, content_type = ?,"
                " fetched_at = ?, misses = misses + ?, origin_headers = ?, validated_at = ?,"
                " refresh = ? WHERE key = ?",
                (
                    artifact.url,
                    artifact.sha256,
                    artifact.size,
                    artifact.content_type,
                    artifact.fetched_at,
                    pending,
                    artifact.origin_headers,
                    artifact.validated_at,
                    int(artifact.refresh),
                    artifact.key,
                ),
            )
            freed.append(old.sha256)
        return [d for d in dict.fromkeys(freed) if d != artifact.sha256 and not referenced(conn, d)]


def _make_room(conn: sqlite3.Connection, artifact: Artifact, max_bytes: int) -> list[str]:
    """Evict to fit artifact under max_bytes: the bytes held come from catalog_totals and the
    victims from the artifacts_eviction index, so a pass reads what it evicts, not the catalog."""
    (held,) = conn.execute("SELECT bytes FROM catalog_totals").fetchone()
    replaced = conn.execute("SELECT size FROM artifacts WHERE key = ?", (artifact.key,)).fetchone()
    used = held - (replaced[0] if replaced else 0)
    excess = used + artifact.size - max_bytes
    if excess <= 0:
        return []
    victims, freed = [], 0
    candidates = conn.execute(
        "SELECT key, sha256, size FROM artifacts WHERE pinned = 0 AND key != ?"
        " ORDER BY COALESCE(last_hit_at, fetched_at), fetched_at, key",
        (artifact.key,),
    )
    for key, sha256, size in candidates:
        if freed >= excess:
            break
        victims.append((key, sha256))
        freed += size
    if freed < excess:
        raise NoRoom(
            f"{artifact.size} bytes do not fit in --max-bytes {max_bytes}"
            f" ({used} bytes held, {used - freed} of them pinned)"
        )
    conn.executemany("DELETE FROM artifacts WHERE key = ?", [(key,) for key, _ in victims])
    return [sha256 for _, sha256 in victims]


def revalidated(
    conn: sqlite3.Connection, key: str, sha256: str, headers: str | None, now: float
) -> bool:
    """The origin confirmed the artifact's bytes (a 304) at now: its headers become `headers`
    and any refresh request is done. False if the row no longer holds those bytes."""
    with transaction(conn):
        changed = conn.execute(
            "UPDATE artifacts SET origin_headers = ?, validated_at = ?, refresh = 0"
            " WHERE key = ? AND sha256 = ?",
            (headers, now, key, sha256),
        ).rowcount
    return changed > 0


def request_refresh(conn: sqlite3.Connection, key: str) -> bool:
    """Have the artifact revalidated on its next request; False if there is none."""
    with transaction(conn):
        return conn.execute("UPDATE artifacts SET refresh = 1 WHERE key = ?", (key,)).rowcount > 0


def delete_artifact(conn: sqlite3.Connection, key: str) -> str | None:
    """Forget an artifact; returns its digest when no other row names that blob."""
    with transaction(conn):
        old = get_artifact(conn, key)
        if old is None:
            return None
        conn.execute("DELETE FROM artifacts WHERE key = ?", (key,))
        return None if referenced(conn, old.sha256) else old.sha256


def blob_sizes(conn: sqlite3.Connection) -> dict[str, int]:
    """Every blob digest the catalog names, with its size."""
    return dict(conn.execute("SELECT sha256, size FROM artifacts GROUP BY sha256"))


def referenced(conn: sqlite3.Connection, sha256: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM artifacts WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
        is not None
    )


def totals(conn: sqlite3.Connection) -> dict[str, int]:
    """Counts for the dashboard: artifacts, bytes held, hits, misses, origin bytes saved. Read
    from catalog_totals, which triggers keep in each write's transaction (schema/009)."""
    artifacts, size, hits, saved, absorbed, pending = conn.execute(
        "SELECT artifacts, bytes, hits, bytes_saved, absorbed, pending FROM catalog_totals"
    ).fetchone()
    return {
        "artifacts": artifacts,
        "bytes": size,
        "hits": hits,
        "misses": pending + absorbed,
        "bytes_saved": saved,
    }


def next_to_verify(conn: sqlite3.Connection) -> tuple[str, int] | None:
    """The blob (digest, size) re-hashed longest ago, never-verified ones first."""
    return conn.execute(
        "SELECT sha256, size FROM artifacts ORDER BY verified_at IS NOT NULL, verified_at,"
        " fetched_at LIMIT 1"
    ).fetchone()


def set_verified(conn: sqlite3.Connection, sha256: str, now: float) -> None:
    with transaction(conn):
        conn.execute("UPDATE artifacts SET verified_at = ? WHERE sha256 = ?", (now, sha256))


def drop_blob(conn: sqlite3.Connection, sha256: str) -> list[Artifact]:
    """Remove every artifact row naming a blob (found bad); returns what was removed."""
    with transaction(conn):
        rows = conn.execute(
            f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE sha256 = ?", (sha256,)
        ).fetchall()
        conn.execute("DELETE FROM artifacts WHERE sha256 = ?", (sha256,))
    return [_artifact(row) for row in rows]


def delete_miss(conn: sqlite3.Connection, key: str) -> bool:
    with transaction(conn):
        return conn.execute("DELETE FROM misses WHERE key = ?", (key,)).rowcount > 0


def set_pinned(conn: sqlite3.Connection, key: str, pinned: bool) -> bool:
    with transaction(conn):
        cursor = conn.execute("UPDATE artifacts SET pinned = ? WHERE key = ?", (int(pinned), key))
        return cursor.rowcount > 0


def list_artifacts(conn: sqlite3.Connection, limit: int = -1, offset: int = 0) -> list[Artifact]:
    rows = conn.execute(
        f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts ORDER BY fetched_at DESC, key LIMIT ? OFFSET ?",
        (limit, offset),
    )
    return [_artifact(row) for row in rows]


def count_artifacts(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT artifacts FROM catalog_totals").fetchone()[0]


def artifact_by_sha256(conn: sqlite3.Connection, sha256: str) -> Artifact | None:
    """The newest artifact whose bytes have this digest, if any."""
    row = conn.execute(
        f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE sha256 = ?"
        " ORDER BY fetched_at DESC, key LIMIT 1",
        (sha256,),
    ).fetchone()
    return _artifact(row) if row else None


def get_miss(conn: sqlite3.Connection, key: str) -> Miss | None:
    row = conn.execute(
        "SELECT key, url, count, first_seen, last_seen FROM misses WHERE key = ?", (key,)
    ).fetchone()
    return Miss(*row) if row else None


def list_misses(conn: sqlite3.Connection, limit: int = -1, offset: int = 0) -> list[Miss]:
    # The page's keys from the misses_listed index, then its rows (see withcache.listing).
    rows = conn.execute(
        "SELECT key, url, count, first_seen, last_seen FROM misses WHERE key IN"
        " (SELECT key FROM misses ORDER BY last_seen DESC, key LIMIT ? OFFSET ?)"
        " ORDER BY last_seen DESC, key",
        (limit, offset),
    )
    return [Miss(*row) for row in rows]


@dataclass
class JobRow:
    """A fill as persisted; withcache.downloads keeps the live one."""

    id: int | None
    key: str
    url: str
    source: str
    state: str
    bytes_done: int = 0
    bytes_total: int | None = None
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None


_JOB_COLUMNS = (
    "id, key, url, source, state, bytes_done, bytes_total, error, created_at, started_at,"
    " finished_at"
)


def insert_job(conn: sqlite3.Connection, job: JobRow) -> int:
    with transaction(conn):
        cursor = conn.execute(
            "INSERT INTO jobs (key, url, source, state, bytes_done, bytes_total, error, created_at,"
            " started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.key,
                job.url,
                job.source,
                job.state,
                job.bytes_done,
                job.bytes_total,
                job.error,
                job.created_at,
                job.started_at,
                job.finished_at,
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid


def update_job(conn: sqlite3.Connection, job: JobRow) -> None:
    with transaction(conn):
        conn.execute(
            "UPDATE jobs SET state = ?, bytes_done = ?, bytes_total = ?, error = ?, started_at = ?,"
            " finished_at = ? WHERE id = ?",
            (
                job.state,
                job.bytes_done,
                job.bytes_total,
                job.error,
                job.started_at,
                job.finished_at,
                job.id,
            ),
        )


def list_jobs(
    conn: sqlite3.Connection, states: tuple[str, ...] = (), limit: int = -1
) -> list[JobRow]:
    where = f"WHERE state IN ({', '.join('?' * len(states))})" if states else ""
    rows = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs {where} ORDER BY id DESC LIMIT ?", (*states, limit)
    )
    return [JobRow(*row) for row in rows]


def get_job(conn: sqlite3.Connection, job_id: int) -> JobRow | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return JobRow(*row) if row else None


def delete_jobs(conn: sqlite3.Connection, states: tuple[str, ...]) -> int:
    with transaction(conn):
        cursor = conn.execute(
            f"DELETE FROM jobs WHERE state IN ({', '.join('?' * len(states))})", states
        )
        return cursor.rowcount


class Catalog(service.Service):
    """The catalog for the reactor: every query runs on one dedicated database thread. With
    a query mode, the first query re-keys the catalog for it if needed (see connect)."""

    def __init__(self, path: str, reactor: Any, query: str | None = None):
        self.path = path
        self.query = query
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="withcache-db")
        self._conn: sqlite3.Connection | None = None

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> Any:
        super().stopService()
        d = threads.deferToThreadPool(self._reactor, self._pool, self._close)
        d.addBoth(lambda _: self._pool.stop())
        return d

    def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> defer.Deferred[T]:
        """fn(conn, *args, **kwargs) on the database thread: the one way the reactor side
        queries the catalog (fn is one of this module's query functions, or a blocking
        data-dir operation of withcache.datadir)."""
        call = partial(self._call, fn, *args, **kwargs)
        return threads.deferToThreadPool(self._reactor, self._pool, call)

    def _call(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self._conn is None:
            self._conn = connect(self.path, self.query)
        return fn(self._conn, *args, **kwargs)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
