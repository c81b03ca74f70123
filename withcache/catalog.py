"""The catalog's query functions (artifacts, misses, jobs) and `Catalog`, which runs them for the
reactor, on SQLite or PostgreSQL (withcache.catalog_db: URLs, engines, write transactions).

The query functions are plain and blocking, taking a SQLAlchemy connection, so `withcache-admin`
can use them directly; `Catalog` runs the same functions off the reactor thread: on one
dedicated thread for SQLite (one writer at a time anyway; WAL lets the admin CLI write while
the host runs), on a bounded pool of threads for PostgreSQL, each call with a connection from
the engine's pool. Writes happen only inside `transaction(conn)`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from twisted.application import service
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from withcache._log import make_logger
from withcache.catalog_db import (
    DEFAULT_POOL,
    SQLITE,
    end_reads,
    insert,
    make_engine,
    parse_url,
    redact,
    transaction,
)
from withcache.logs import redact_url
from withcache.migrate import migrate
from withcache.rekey import ensure_keyed, keyed_with
from withcache.sanitise import sanitise_media_type
from withcache.tables import artifacts, jobs, misses
from withcache.tables import catalog_generation as generation
from withcache.tables import catalog_totals as totals_table

__all__ = ["ensure_keyed", "keyed_with", "migrate", "transaction"]

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


a = artifacts.c
_ARTIFACT_COLUMNS = (
    a.key, a.url, a.sha256, a.size, a.content_type, a.fetched_at, a.hits, a.misses,
    a.last_hit_at, a.pinned, a.origin_headers, a.validated_at, a.refresh,
)  # fmt: skip
_MISS_COLUMNS = (misses.c.key, misses.c.url, misses.c.count, misses.c.first_seen,
                 misses.c.last_seen)  # fmt: skip
# Newest first, the key breaking ties: the order of every artifact listing and page.
_NEWEST_FIRST = (a.fetched_at.desc(), a.key)


def _artifact(row: Any) -> Artifact:
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


def _limit(limit: int) -> int | None:
    return None if limit < 0 else limit


def connect(catalog: str | URL, query: str | None = None) -> Connection:
    """Open (creating and migrating) the catalog: a path, or a URL (withcache.catalog_db).
    Blocking; closing the connection closes the database connection.

    With a query mode, the catalog's keys are made under it: if they were made under another
    (a host started with other options, or a catalog older than the mode), every row is
    re-keyed first (see rekey). Without one, the keys stay as they are.
    """
    url = parse_url(catalog) if isinstance(catalog, str) else catalog
    conn = make_engine(url).connect()
    try:
        prepare(conn, query)
    except BaseException:
        conn.close()
        raise
    return conn


def prepare(conn: Connection, query: str | None) -> None:
    """Migrate the catalog and key it for the query mode (if one is given)."""
    migrate(conn, query)
    if query is not None:
        ensure_keyed(conn, query)
    end_reads(conn)


# The statements of the hit and miss paths, built once: SQLAlchemy then only binds values
# (building one per call cost ~4 times the query itself on SQLite).
_GET = select(*_ARTIFACT_COLUMNS).where(a.key == bindparam("b_key"))
_COUNT_HIT = (
    update(artifacts)
    .where(a.key == bindparam("b_key"))
    .values(hits=a.hits + 1, last_hit_at=bindparam("b_at"))
)
_GENERATION = select(generation.c.artifacts)
_REFERENCED = select(literal(1)).where(a.sha256 == bindparam("b_sha256")).limit(1)
_COUNT_MISS: dict[str, Any] = {}  # by dialect: an upsert is the dialect's own statement


def get_artifact(conn: Connection, key: str) -> Artifact | None:
    row = conn.execute(_GET, {"b_key": key}).first()
    return _artifact(row) if row else None


def lookup(conn: Connection, key: str, url: str, now: float, count_hit: bool) -> Artifact | None:
    """The artifact for key, counting a hit; or None, counting a miss.

    The counting is bookkeeping: when it cannot be written (a full disk, a lock held too long,
    a database gone for a moment) the answer is still given, and the failure logged.
    """
    found = get_artifact(conn, key)
    try:
        with transaction(conn):
            if found is None:
                _count_miss(conn, key, url, now)
            elif count_hit:
                conn.execute(_COUNT_HIT, {"b_key": key, "b_at": now})
    except OperationalError as e:
        log.warn(
            "could not record a {what} of {key}: {error}",
            what="miss" if found is None else "hit",
            key=redact_url(key),
            error=str(e.orig),
        )
    return found


def _count_miss(conn: Connection, key: str, url: str, now: float) -> None:
    upsert = _COUNT_MISS.get(conn.dialect.name)
    if upsert is None:
        stmt = insert(conn, misses).values(
            key=bindparam("b_key"),
            url=bindparam("b_url"),
            count=1,
            first_seen=bindparam("b_at"),
            last_seen=bindparam("b_at"),
        )
        upsert = _COUNT_MISS[conn.dialect.name] = stmt.on_conflict_do_update(
            index_elements=[misses.c.key],
            set_={
                "count": misses.c.count + 1,
                "last_seen": stmt.excluded.last_seen,
                "url": stmt.excluded.url,
            },
        )
    conn.execute(upsert, {"b_key": key, "b_url": url, "b_at": now})


def record_miss(conn: Connection, key: str, url: str, now: float) -> None:
    """Count a miss of key even though an artifact is stored for it (a stale one whose origin
    has other bytes, under --curate: the operator approves its new fill like any other)."""
    with transaction(conn):
        _count_miss(conn, key, url, now)


def add_hits(conn: Connection, hits: list[tuple[str, int, float]]) -> int:
    """Add batched GET hits, (key, count, last hit at) each, in one transaction; returns the
    artifacts generation after (which hit counts do not move)."""
    if hits:
        with transaction(conn):
            conn.execute(
                _ADD_HITS, [{"b_key": k, "b_count": n, "b_at": float(t)} for k, n, t in hits]
            )
    return artifacts_generation(conn)


_last: Any = func.coalesce(a.last_hit_at, 0)
_at: Any = bindparam("b_at")
_ADD_HITS = (
    update(artifacts)
    .where(a.key == bindparam("b_key"))
    .values(
        hits=a.hits + bindparam("b_count"),
        # The later of the two: MAX() is an aggregate on PostgreSQL.
        last_hit_at=case((_last > _at, _last), else_=_at),
    )
)


def artifacts_generation(conn: Connection) -> int:
    """A number that changes whenever, by any connection, an artifact row is added, removed or
    changed in what it serves (or its pin); not for hit counts, scrub stamps, misses or jobs.
    A trigger moves it (migrations/versions/008_baseline); SQLite's PRAGMA data_version moves
    on any commit, and would have every serving process forget its hit index each second the
    host writes hit counts (issue 20)."""
    return conn.execute(_GENERATION).scalar_one()


class NoRoom(Exception):
    """An artifact that cannot fit under --max-bytes even after evicting what may be evicted."""


def put_artifact(
    conn: Connection,
    artifact: Artifact,
    max_bytes: int = 0,
    guard: Callable[[Connection], None] | None = None,
) -> list[str]:
    """Record a stored artifact. Its pending misses move onto it and the miss row goes.

    Replacing an existing key keeps its counters. With max_bytes, the least recently hit unpinned
    artifacts are evicted to make room (raising NoRoom when that cannot be done). Returns the
    digests no row names any more, whose blobs the caller may delete. A content type that is
    not a media type (an origin's header, an import's option) is stored as none. A guard runs
    first in the same transaction; what it raises writes nothing (withcache.leases: the fill's
    lease must still be held).
    """
    artifact = replace(artifact, content_type=sanitise_media_type(artifact.content_type))
    served = {
        "url": artifact.url,
        "sha256": artifact.sha256,
        "size": artifact.size,
        "content_type": artifact.content_type,
        "fetched_at": artifact.fetched_at,
        "origin_headers": artifact.origin_headers,
        "validated_at": artifact.validated_at,
        "refresh": int(artifact.refresh),
    }
    with transaction(conn):
        if guard is not None:
            guard(conn)
        freed = _make_room(conn, artifact, max_bytes) if max_bytes else []
        old = get_artifact(conn, artifact.key)
        pending = conn.execute(
            delete(misses).where(misses.c.key == artifact.key).returning(misses.c.count)
        ).scalar()
        pending = pending or 0
        if old is None:
            conn.execute(
                artifacts.insert().values(
                    key=artifact.key,
                    hits=artifact.hits,
                    misses=artifact.misses + pending,
                    last_hit_at=artifact.last_hit_at,
                    pinned=int(artifact.pinned),
                    **served,
                )
            )
        else:
            conn.execute(
                update(artifacts)
                .where(a.key == artifact.key)
                .values(misses=a.misses + pending, **served)
            )
            freed.append(old.sha256)
        return [d for d in dict.fromkeys(freed) if d != artifact.sha256 and not referenced(conn, d)]


def _make_room(conn: Connection, artifact: Artifact, max_bytes: int) -> list[str]:
    """Evict to fit artifact under max_bytes: the bytes held come from catalog_totals and the
    victims from the artifacts_eviction index, so a pass reads what it evicts, not the catalog."""
    held = conn.execute(select(totals_table.c.bytes)).scalar_one()
    replaced = conn.execute(select(a.size).where(a.key == artifact.key)).scalar()
    used = int(held) - (replaced or 0)
    excess = used + artifact.size - max_bytes
    if excess <= 0:
        return []
    victims, freed = [], 0
    candidates = conn.execute(
        select(a.key, a.sha256, a.size)
        .where(a.pinned == 0, a.key != artifact.key)
        .order_by(func.coalesce(a.last_hit_at, a.fetched_at), a.fetched_at, a.key)
        .execution_options(yield_per=256)
    )
    for key, sha256, size in candidates:
        if freed >= excess:
            break
        victims.append((key, sha256))
        freed += size
    candidates.close()
    if freed < excess:
        raise NoRoom(
            f"{artifact.size} bytes do not fit in --max-bytes {max_bytes}"
            f" ({used} bytes held, {used - freed} of them pinned)"
        )
    conn.execute(
        delete(artifacts).where(a.key == bindparam("b_key")), [{"b_key": k} for k, _ in victims]
    )
    return [sha256 for _, sha256 in victims]


def revalidated(conn: Connection, key: str, sha256: str, headers: str | None, now: float) -> bool:
    """The origin confirmed the artifact's bytes (a 304) at now: its headers become `headers`
    and any refresh request is done. False if the row no longer holds those bytes."""
    with transaction(conn):
        changed = conn.execute(
            update(artifacts)
            .where(a.key == key, a.sha256 == sha256)
            .values(origin_headers=headers, validated_at=now, refresh=0)
        ).rowcount
    return changed > 0


def request_refresh(conn: Connection, key: str) -> bool:
    """Have the artifact revalidated on its next request; False if there is none."""
    with transaction(conn):
        return conn.execute(update(artifacts).where(a.key == key).values(refresh=1)).rowcount > 0


def delete_artifact(conn: Connection, key: str) -> str | None:
    """Forget an artifact; returns its digest when no other row names that blob."""
    with transaction(conn):
        old = get_artifact(conn, key)
        if old is None:
            return None
        conn.execute(delete(artifacts).where(a.key == key))
        return None if referenced(conn, old.sha256) else old.sha256


def blob_sizes(conn: Connection) -> dict[str, int]:
    """Every blob digest the catalog names, with its size."""
    rows = conn.execute(select(a.sha256, func.max(a.size)).group_by(a.sha256))
    return {sha256: size for sha256, size in rows}


def referenced(conn: Connection, sha256: str) -> bool:
    return conn.execute(_REFERENCED, {"b_sha256": sha256}).first() is not None


def totals(conn: Connection) -> dict[str, int]:
    """Counts for the dashboard: artifacts, bytes held, hits, misses, origin bytes saved. Read
    from catalog_totals, which triggers keep in each write's transaction (010_scale)."""
    t = totals_table.c
    artifacts_, size, hits, saved, absorbed, pending = conn.execute(
        select(t.artifacts, t.bytes, t.hits, t.bytes_saved, t.absorbed, t.pending)
    ).one()
    return {
        "artifacts": int(artifacts_),
        "bytes": int(size),
        "hits": int(hits),
        "misses": int(pending) + int(absorbed),
        "bytes_saved": int(saved),
    }


def next_to_verify(conn: Connection) -> tuple[str, int] | None:
    """The blob (digest, size) re-hashed longest ago, never-verified ones first."""
    row = conn.execute(
        select(a.sha256, a.size)
        .order_by(a.verified_at.is_not(None), a.verified_at, a.fetched_at)
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def set_verified(conn: Connection, sha256: str, now: float) -> None:
    with transaction(conn):
        conn.execute(update(artifacts).where(a.sha256 == sha256).values(verified_at=now))


def drop_blob(conn: Connection, sha256: str) -> list[Artifact]:
    """Remove every artifact row naming a blob (found bad); returns what was removed."""
    with transaction(conn):
        rows = conn.execute(
            delete(artifacts).where(a.sha256 == sha256).returning(*_ARTIFACT_COLUMNS)
        ).all()
    return [_artifact(row) for row in rows]


def delete_miss(conn: Connection, key: str) -> bool:
    with transaction(conn):
        return conn.execute(delete(misses).where(misses.c.key == key)).rowcount > 0


def set_pinned(conn: Connection, key: str, pinned: bool) -> bool:
    with transaction(conn):
        done = conn.execute(update(artifacts).where(a.key == key).values(pinned=int(pinned)))
        return done.rowcount > 0


def list_artifacts(conn: Connection, limit: int = -1, offset: int = 0) -> list[Artifact]:
    rows = conn.execute(
        select(*_ARTIFACT_COLUMNS).order_by(*_NEWEST_FIRST).limit(_limit(limit)).offset(offset)
    )
    return [_artifact(row) for row in rows]


def count_artifacts(conn: Connection) -> int:
    return int(conn.execute(select(totals_table.c.artifacts)).scalar_one())


def artifact_by_sha256(conn: Connection, sha256: str) -> Artifact | None:
    """The newest artifact whose bytes have this digest, if any."""
    row = conn.execute(
        select(*_ARTIFACT_COLUMNS).where(a.sha256 == sha256).order_by(*_NEWEST_FIRST).limit(1)
    ).first()
    return _artifact(row) if row else None


def get_miss(conn: Connection, key: str) -> Miss | None:
    row = conn.execute(select(*_MISS_COLUMNS).where(misses.c.key == key)).first()
    return Miss(*row) if row else None


def list_misses(conn: Connection, limit: int = -1, offset: int = 0) -> list[Miss]:
    order = (misses.c.last_seen.desc(), misses.c.key)
    # The page's keys from the misses_listed index, then its rows (see withcache.listing).
    keys = select(misses.c.key).order_by(*order).limit(_limit(limit)).offset(offset)
    rows = conn.execute(select(*_MISS_COLUMNS).where(misses.c.key.in_(keys)).order_by(*order))
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


j = jobs.c
_JOB_COLUMNS = (
    j.id, j.key, j.url, j.source, j.state, j.bytes_done, j.bytes_total, j.error, j.created_at,
    j.started_at, j.finished_at,
)  # fmt: skip


def _progress(job: JobRow) -> dict[str, Any]:
    return {
        "state": str(job.state),
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "error": job.error,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def insert_job(conn: Connection, job: JobRow) -> int:
    with transaction(conn):
        return conn.execute(
            jobs.insert()
            .values(
                key=job.key, url=job.url, source=job.source, created_at=job.created_at,
                **_progress(job),
            )
            .returning(j.id)
        ).scalar_one()  # fmt: skip


def update_job(conn: Connection, job: JobRow) -> None:
    with transaction(conn):
        conn.execute(update(jobs).where(j.id == job.id).values(**_progress(job)))


def list_jobs(conn: Connection, states: tuple[str, ...] = (), limit: int = -1) -> list[JobRow]:
    query = select(*_JOB_COLUMNS)
    if states:
        query = query.where(j.state.in_([str(s) for s in states]))
    rows = conn.execute(query.order_by(j.id.desc()).limit(_limit(limit)))
    return [JobRow(*row) for row in rows]


def get_job(conn: Connection, job_id: int) -> JobRow | None:
    row = conn.execute(select(*_JOB_COLUMNS).where(j.id == job_id)).first()
    return JobRow(*row) if row else None


def delete_jobs(conn: Connection, states: tuple[str, ...]) -> int:
    with transaction(conn):
        return conn.execute(delete(jobs).where(j.state.in_([str(s) for s in states]))).rowcount


class Catalog(service.Service):
    """The catalog for the reactor: every query runs off the reactor thread. SQLite: on one
    dedicated thread with one connection. PostgreSQL: on a pool of `threads` threads, each call
    with a connection from the engine's pool of as many, checked before use, so a call after
    the server restarted reconnects (a call the restart interrupted fails, and its caller
    handles that as any catalog error). The first call migrates the catalog and, with a query
    mode, re-keys it for the mode if needed (see connect); a call after a failed first one
    tries again."""

    def __init__(
        self,
        catalog: str | URL,
        reactor: Any,
        query: str | None = None,
        threads: int = DEFAULT_POOL,
    ):
        self.url = parse_url(catalog) if isinstance(catalog, str) else catalog
        self.dialect = self.url.get_backend_name()
        self.path = self.url.database if self.dialect == SQLITE else None
        self.query = query
        self.threads = 1 if self.dialect == SQLITE else threads
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=self.threads, name="withcache-db")
        self._engine: Engine | None = None
        self._conn: Connection | None = None  # SQLite's one connection
        self._prepared = False
        self._preparing = threading.Lock()
        self._in_flight = 0
        self._idle: list[defer.Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<Catalog {redact(self.url)}>"

    def startService(self) -> None:
        super().startService()
        self._pool.start()

    def stopService(self) -> Any:
        super().stopService()
        # Once the calls under way are done: a connection given back to the engine's pool
        # after it was disposed would stay open.
        # (A Deferred of its own, that fires only when all is closed: one chained to the wait
        # would count as called while it waits.)
        stopped: defer.Deferred[None] = defer.Deferred()
        self._when_idle().addCallback(lambda _: self._close_all().chainDeferred(stopped))
        return stopped

    def _close_all(self) -> defer.Deferred[None]:
        d = threads.deferToThreadPool(self._reactor, self._pool, self._close)
        d.addBoth(lambda _: self._pool.stop())
        return d

    def _when_idle(self) -> defer.Deferred[None]:
        if not self._in_flight:
            return defer.succeed(None)
        idle: defer.Deferred[None] = defer.Deferred()
        self._idle.append(idle)
        return idle

    def _finished(self, result: Any) -> Any:
        self._in_flight -= 1
        if not self._in_flight:
            waiting, self._idle = self._idle, []
            for idle in waiting:
                idle.callback(None)
        return result

    def run(
        self,
        fn: Callable[Concatenate[Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> defer.Deferred[T]:
        """fn(conn, *args, **kwargs) on a database thread: the one way the reactor side
        queries the catalog (fn is one of the catalog's query functions, or a blocking
        data-dir operation of withcache.datadir)."""
        call = partial(self._call, fn, *args, **kwargs)
        self._in_flight += 1
        return threads.deferToThreadPool(self._reactor, self._pool, call).addBoth(self._finished)

    def _call(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self.dialect == SQLITE:
            if self._conn is None:
                self._conn = connect(self.url, self.query)
            try:
                return fn(self._conn, *args, **kwargs)
            finally:
                end_reads(self._conn)
        engine = self._ready()
        with engine.connect() as conn:
            return fn(conn, *args, **kwargs)

    def _ready(self) -> Engine:
        """The PostgreSQL engine, once the catalog is migrated (by the first call to get here)."""
        with self._preparing:
            if self._engine is None:
                self._engine = make_engine(self.url, pool_size=self.threads)
            if not self._prepared:
                with self._engine.connect() as conn:
                    prepare(conn, self.query)
                self._prepared = True
            return self._engine

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
            self._prepared = False
