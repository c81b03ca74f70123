"""The catalog as of SQLite schema version 008 (withcache/schema/001-008.sql), on any backend.

Revision ID: 008_baseline
Revises: (none; a SQLite catalog made by those files is stamped with this revision)

Frozen: later changes are later revisions, never edits here. The triggers are per dialect, as
triggers are: the artifacts generation moves when an artifact row is added, removed or changed
in what it serves (not for hit counts or scrub stamps: schema/004's reasons), and the audit log
refuses updates.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "008_baseline"
down_revision = None
branch_labels = None
depends_on = None

Big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The artifact columns whose change a serving process must see (schema/007's trigger).
SERVED = (
    "key, url, sha256, size, content_type, fetched_at, pinned, origin_headers, validated_at,"
    " refresh"
)

SQLITE_TRIGGERS = [
    *(
        f"CREATE TRIGGER {name} AFTER {event} ON artifacts"
        " BEGIN UPDATE catalog_generation SET artifacts = artifacts + 1; END"
        for name, event in (
            ("artifacts_added", "INSERT"),
            ("artifacts_removed", "DELETE"),
            ("artifacts_changed", f"UPDATE OF {SERVED}"),
        )
    ),
    "CREATE TRIGGER events_append_only BEFORE UPDATE ON events"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
]

POSTGRESQL_TRIGGERS = [
    "CREATE FUNCTION withcache_artifacts_changed() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN UPDATE catalog_generation SET artifacts = artifacts + 1; RETURN NULL; END $$",
    *(
        f"CREATE TRIGGER {name} AFTER {event} ON artifacts"
        " FOR EACH ROW EXECUTE FUNCTION withcache_artifacts_changed()"
        for name, event in (
            ("artifacts_added", "INSERT"),
            ("artifacts_removed", "DELETE"),
            ("artifacts_changed", f"UPDATE OF {SERVED}"),
        )
    ),
    "CREATE FUNCTION withcache_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
    "CREATE TRIGGER events_append_only BEFORE UPDATE ON events"
    " FOR EACH ROW EXECUTE FUNCTION withcache_events_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("size", Big, nullable=False),
        sa.Column("content_type", sa.Text),
        sa.Column("fetched_at", sa.Float, nullable=False),
        sa.Column("hits", Big, nullable=False, server_default="0"),
        sa.Column("misses", Big, nullable=False, server_default="0"),
        sa.Column("last_hit_at", sa.Float),
        sa.Column("pinned", sa.Integer, nullable=False, server_default="0"),
        sa.Column("verified_at", sa.Float),
        sa.Column("origin_headers", sa.Text),
        sa.Column("validated_at", sa.Float),
        sa.Column("refresh", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("artifacts_sha256", "artifacts", ["sha256"])
    op.create_index("artifacts_fetched_at", "artifacts", ["fetched_at"])
    op.create_index("artifacts_verified_at", "artifacts", ["verified_at"])

    op.create_table(
        "misses",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("count", Big, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    op.create_index("misses_last_seen", "misses", ["last_seen"])

    op.create_table(
        "jobs",
        sa.Column("id", Big, primary_key=True, autoincrement=True),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("bytes_done", Big, nullable=False, server_default="0"),
        sa.Column("bytes_total", Big),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("finished_at", sa.Float),
        sqlite_autoincrement=True,
    )
    op.create_index("jobs_state", "jobs", ["state"])
    op.create_index("jobs_key", "jobs", ["key"])

    generation = op.create_table(
        "catalog_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("artifacts", Big, nullable=False),
        sa.CheckConstraint("id = 1"),
    )
    op.bulk_insert(generation, [{"id": 1, "artifacts": 0}])

    op.create_table(
        "sessions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_index("sessions_expires", "sessions", ["expires"])

    rules = op.create_table(
        "key_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("query", sa.Text, nullable=False),
        sa.CheckConstraint("id = 1"),
    )
    # A new catalog is keyed as a host keys by default (withcache.keys.SIGNED); one started
    # with another query mode re-keys it (an empty catalog: nothing moves) and records that.
    op.bulk_insert(rules, [{"id": 1, "query": "signed"}])

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("hash", sa.Text, nullable=False),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
    )

    op.create_table(
        "events",
        sa.Column("id", Big, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("client", sa.Text),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("subject", sa.Text),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("detail", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("events_at", "events", ["at"])
    op.create_index("events_action", "events", ["action", "id"])
    op.create_index("events_actor", "events", ["actor", "id"])

    op.create_table(
        "daily_traffic",
        sa.Column("day", sa.Text, primary_key=True),
        sa.Column("served", Big, nullable=False, server_default="0"),
        sa.Column("fetched", Big, nullable=False, server_default="0"),
    )

    dialect = op.get_bind().dialect.name
    for statement in SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRESQL_TRIGGERS:
        op.execute(statement)
