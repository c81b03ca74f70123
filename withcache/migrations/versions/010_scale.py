"""The catalog at scale (issue 17): totals kept by the writes, indexes in the order pages and
background work read, a trigram index for substring search.

Revision ID: 010_scale
Revises: 009_leases

With a million artifacts no page, start-up, eviction or scrub may read the whole catalog.
Measured before this revision with 1,000,000 artifacts on SQLite (docs/benchmarks.md): the
dashboard 359 ms (its totals were COUNT/SUM over every row), a search 1.1 s, the last page by
page number 990 ms, an eviction 928 ms, the scrub's next pick 188 ms.

- catalog_totals: one row holding what the dashboard, /api/v1/stats and the gauges show, kept by
  triggers in the transaction of each write, whoever writes (the host, withcache-admin, a
  re-key), so no reader sums the catalog. Writes are already serialised (BEGIN IMMEDIATE on
  SQLite, the write advisory lock on PostgreSQL), so the single row adds no contention.
- Indexes: the artifact and miss lists newest first with the key breaking ties (replacing the
  single-column ones; DESC so PostgreSQL can walk it for the mixed order), the eviction order
  (least recently hit unpinned first, a partial index), the scrub order (never verified first).
- Search: on SQLite an FTS5 trigram index (SQLite >= 3.34), whose rows live in artifact_urls
  with an INTEGER PRIMARY KEY of their own — artifacts has an implicit rowid, which VACUUM may
  renumber under an external-content index — kept by triggers; on PostgreSQL pg_trgm's GIN
  index on artifacts.url (a trusted extension since PostgreSQL 13: a database owner may create
  it). Both are built here from the rows an existing catalog holds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "010_scale"
down_revision = "009_leases"
branch_labels = None
depends_on = None

Big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# (column, how an artifact row adds to it) of catalog_totals; misses rows add to `pending`.
ARTIFACT_TOTALS = {
    "artifacts": "1",
    "bytes": "{row}.size",
    "hits": "{row}.hits",
    "bytes_saved": "{row}.size * {row}.hits",
    "absorbed": "{row}.misses",
}


def _delta(sign: str, row: str) -> str:
    return ", ".join(
        f"{column} = {column} {sign} {term.format(row=row)}"
        for column, term in ARTIFACT_TOTALS.items()
    )


def _change(new: str, old: str) -> str:
    return ", ".join(
        f"{column} = {column} + {term.format(row=new)} - {term.format(row=old)}"
        for column, term in ARTIFACT_TOTALS.items()
        if column != "artifacts"
    )


SQLITE = [
    f"CREATE TRIGGER artifacts_totals_added AFTER INSERT ON artifacts"
    f" BEGIN UPDATE catalog_totals SET {_delta('+', 'new')}; END",
    f"CREATE TRIGGER artifacts_totals_removed AFTER DELETE ON artifacts"
    f" BEGIN UPDATE catalog_totals SET {_delta('-', 'old')}; END",
    f"CREATE TRIGGER artifacts_totals_changed AFTER UPDATE OF size, hits, misses ON artifacts"
    f" BEGIN UPDATE catalog_totals SET {_change('new', 'old')}; END",
    "CREATE TRIGGER misses_totals_added AFTER INSERT ON misses"
    " BEGIN UPDATE catalog_totals SET pending = pending + new.count; END",
    "CREATE TRIGGER misses_totals_removed AFTER DELETE ON misses"
    " BEGIN UPDATE catalog_totals SET pending = pending - old.count; END",
    "CREATE TRIGGER misses_totals_changed AFTER UPDATE OF count ON misses"
    " BEGIN UPDATE catalog_totals SET pending = pending + new.count - old.count; END",
    # The search index's rows, and the index.
    "CREATE TABLE artifact_urls (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
    " url TEXT NOT NULL)",
    "CREATE VIRTUAL TABLE artifact_urls_search USING fts5(url, content='artifact_urls',"
    " content_rowid='id', tokenize='trigram', detail='none')",
    "CREATE TRIGGER artifact_urls_added AFTER INSERT ON artifact_urls"
    " BEGIN INSERT INTO artifact_urls_search (rowid, url) VALUES (new.id, new.url); END",
    "CREATE TRIGGER artifact_urls_removed AFTER DELETE ON artifact_urls"
    " BEGIN INSERT INTO artifact_urls_search (artifact_urls_search, rowid, url)"
    " VALUES ('delete', old.id, old.url); END",
    "CREATE TRIGGER artifact_urls_changed AFTER UPDATE OF url ON artifact_urls"
    " BEGIN INSERT INTO artifact_urls_search (artifact_urls_search, rowid, url)"
    " VALUES ('delete', old.id, old.url);"
    " INSERT INTO artifact_urls_search (rowid, url) VALUES (new.id, new.url); END",
    "INSERT INTO artifact_urls (key, url) SELECT key, url FROM artifacts",
    "CREATE TRIGGER artifacts_search_added AFTER INSERT ON artifacts"
    " BEGIN INSERT INTO artifact_urls (key, url) VALUES (new.key, new.url); END",
    "CREATE TRIGGER artifacts_search_removed AFTER DELETE ON artifacts"
    " BEGIN DELETE FROM artifact_urls WHERE key = old.key; END",
    "CREATE TRIGGER artifacts_search_changed AFTER UPDATE OF key, url ON artifacts"
    " BEGIN UPDATE artifact_urls SET key = new.key, url = new.url WHERE key = old.key; END",
]

POSTGRESQL = [
    "CREATE FUNCTION withcache_artifacts_totals() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    f" IF TG_OP = 'INSERT' THEN UPDATE catalog_totals SET {_delta('+', 'NEW')};"
    f" ELSIF TG_OP = 'DELETE' THEN UPDATE catalog_totals SET {_delta('-', 'OLD')};"
    f" ELSE UPDATE catalog_totals SET {_change('NEW', 'OLD')};"
    " END IF; RETURN NULL; END $$",
    "CREATE TRIGGER artifacts_totals AFTER INSERT OR DELETE OR UPDATE OF size, hits, misses"
    " ON artifacts FOR EACH ROW EXECUTE FUNCTION withcache_artifacts_totals()",
    "CREATE FUNCTION withcache_misses_totals() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " IF TG_OP = 'INSERT' THEN UPDATE catalog_totals SET pending = pending + NEW.count;"
    " ELSIF TG_OP = 'DELETE' THEN UPDATE catalog_totals SET pending = pending - OLD.count;"
    " ELSE UPDATE catalog_totals SET pending = pending + NEW.count - OLD.count;"
    " END IF; RETURN NULL; END $$",
    "CREATE TRIGGER misses_totals AFTER INSERT OR DELETE OR UPDATE OF count"
    " ON misses FOR EACH ROW EXECUTE FUNCTION withcache_misses_totals()",
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX artifacts_url_trgm ON artifacts USING gin (url gin_trgm_ops)",
]


def upgrade() -> None:
    op.create_table(
        "catalog_totals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("artifacts", Big, nullable=False),
        sa.Column("bytes", Big, nullable=False),
        sa.Column("hits", Big, nullable=False),
        sa.Column("bytes_saved", Big, nullable=False),
        sa.Column("absorbed", Big, nullable=False),
        sa.Column("pending", Big, nullable=False),
        sa.CheckConstraint("id = 1"),
    )
    # Summed once, here, in the migration's transaction: from now on the triggers keep it.
    op.execute(
        "INSERT INTO catalog_totals (id, artifacts, bytes, hits, bytes_saved, absorbed, pending)"
        " SELECT 1, COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(hits), 0),"
        " COALESCE(SUM(size * hits), 0), COALESCE(SUM(misses), 0),"
        " (SELECT COALESCE(SUM(count), 0) FROM misses) FROM artifacts"
    )
    op.drop_index("artifacts_fetched_at", "artifacts")
    op.create_index("artifacts_listed", "artifacts", [sa.text("fetched_at DESC"), "key"])
    op.drop_index("misses_last_seen", "misses")
    op.create_index("misses_listed", "misses", [sa.text("last_seen DESC"), "key"])
    op.create_index(
        "artifacts_eviction",
        "artifacts",
        [sa.text("COALESCE(last_hit_at, fetched_at)"), "fetched_at", "key"],
        sqlite_where=sa.text("pinned = 0"),
        postgresql_where=sa.text("pinned = 0"),
    )
    op.drop_index("artifacts_verified_at", "artifacts")
    op.create_index(
        "artifacts_scrub",
        "artifacts",
        [sa.text("(verified_at IS NOT NULL)"), "verified_at", "fetched_at"],
    )
    dialect = op.get_bind().dialect.name
    for statement in SQLITE if dialect == "sqlite" else POSTGRESQL:
        op.execute(statement)
