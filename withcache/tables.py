"""The catalog's tables, once for every backend: SQLAlchemy Core metadata the queries are built on.

The columns, indexes and constraints are those of the SQLite schema as of its last hand-written
migration (withcache/schema/008), so that a catalog SQLite made then and one the migrations make
now hold the same rows the same way. Two type choices serve PostgreSQL: sizes, byte counts and
ids are 64-bit there (`BIGINT`; SQLite's INTEGER already is), and times are double precision
(`FLOAT`, SQLite's REAL). Changing a table here needs an Alembic revision beside it
(withcache/migrations/versions/).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    text,
)

# 64-bit on PostgreSQL; on SQLite plain INTEGER, which an `INTEGER PRIMARY KEY` needs to be the
# rowid (and AUTOINCREMENT needs to be allowed at all).
Big = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

# A job that is queued or running (withcache.jobs.ACTIVE), as SQL.
ACTIVE_JOB = "state IN ('queued', 'running')"

artifacts = Table(
    "artifacts",
    metadata,
    Column("key", Text, primary_key=True),
    Column("url", Text, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("size", Big, nullable=False),
    Column("content_type", Text),
    Column("fetched_at", Float, nullable=False),
    Column("hits", Big, nullable=False, server_default="0"),
    Column("misses", Big, nullable=False, server_default="0"),
    Column("last_hit_at", Float),
    Column("pinned", Integer, nullable=False, server_default="0"),
    Column("verified_at", Float),
    Column("origin_headers", Text),
    Column("validated_at", Float),
    Column("refresh", Integer, nullable=False, server_default="0"),
    Index("artifacts_sha256", "sha256"),
)
_a = artifacts.c
# The orders pages and background work read in (010_scale): the list newest first, ties by key
# (DESC, so PostgreSQL walks it for that mixed order); eviction, least recently hit unpinned
# first; the scrub, never verified first, then oldest verified.
Index("artifacts_listed", _a.fetched_at.desc(), _a.key)
Index(
    "artifacts_eviction",
    func.coalesce(_a.last_hit_at, _a.fetched_at),
    _a.fetched_at,
    _a.key,
    sqlite_where=_a.pinned == 0,
    postgresql_where=_a.pinned == 0,
)
Index("artifacts_scrub", _a.verified_at.is_not(None), _a.verified_at, _a.fetched_at)

misses = Table(
    "misses",
    metadata,
    Column("key", Text, primary_key=True),
    Column("url", Text, nullable=False),
    Column("count", Big, nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)
Index("misses_listed", misses.c.last_seen.desc(), misses.c.key)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Big, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("bytes_done", Big, nullable=False, server_default="0"),
    Column("bytes_total", Big),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    # Its lease (revision 009_leases, withcache.leases): the holding host's id, this claim's
    # token, the holder's advertise URL, the expiry (seconds since the epoch; NULL: free).
    Column("lease_owner", Text),
    Column("lease_token", Text),
    Column("lease_url", Text),
    Column("lease_until", Float),
    Index("jobs_state", "state"),
    Index("jobs_key", "key"),
    # One active job per key, on every host sharing the catalog.
    Index(
        "jobs_one_active_per_key",
        "key",
        unique=True,
        sqlite_where=text(ACTIVE_JOB),
        postgresql_where=text(ACTIVE_JOB),
    ),
    sqlite_autoincrement=True,
)

catalog_generation = Table(
    "catalog_generation",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("artifacts", Big, nullable=False),
    CheckConstraint("id = 1"),
)

# What the dashboard, /api/v1/stats and the gauges show, kept by triggers in each write's
# transaction (010_scale): artifact rows, SUM(size), SUM(hits), SUM(size * hits), SUM(misses)
# (misses counted before a fill), and SUM(misses.count) (misses not filled).
catalog_totals = Table(
    "catalog_totals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("artifacts", Big, nullable=False),
    Column("bytes", Big, nullable=False),
    Column("hits", Big, nullable=False),
    Column("bytes_saved", Big, nullable=False),
    Column("absorbed", Big, nullable=False),
    Column("pending", Big, nullable=False),
    CheckConstraint("id = 1"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("expires", Float, nullable=False),
    Index("sessions_expires", "expires"),
)

key_rules = Table(
    "key_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("query", Text, nullable=False),
    CheckConstraint("id = 1"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("hash", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float),
    Column("revoked_at", Float),
)

events = Table(
    "events",
    metadata,
    Column("id", Big, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", Text, nullable=False),
    Column("client", Text),
    Column("action", Text, nullable=False),
    Column("subject", Text),
    Column("outcome", Text, nullable=False),
    Column("detail", Text),
    Index("events_at", "at"),
    Index("events_action", "action", "id"),
    Index("events_actor", "actor", "id"),
    sqlite_autoincrement=True,
)

daily_traffic = Table(
    "daily_traffic",
    metadata,
    Column("day", Text, primary_key=True),
    Column("served", Big, nullable=False, server_default="0"),
    Column("fetched", Big, nullable=False, server_default="0"),
)
