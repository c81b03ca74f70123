"""Bringing a catalog to the newest schema: Alembic's history, and the SQLite files before it.

One history serves every backend (withcache/migrations/versions/, from `008_baseline` on),
run programmatically on the caller's connection inside a write transaction, so two processes
starting on the same catalog migrate one after the other. SQLite catalogs older than that were
versioned by `PRAGMA user_version` with the files in withcache/schema/:

- user_version 1-7: those files (and version 6's Python re-keying step) bring it to 8 first;
- user_version 8 and no alembic_version table: it is stamped as `008_baseline`;
- a new catalog: `upgrade head` makes every table.

Once Alembic manages a SQLite catalog its user_version is set to 9 (`ALEMBIC_USER_VERSION`), so
that a withcache from before Alembic refuses it ("newer than this withcache") rather than
running on a schema it does not know.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect

from withcache.catalog_db import SQLITE, end_reads, transaction
from withcache.keys import DEFAULT_QUERY
from withcache.rekey import rekey_logged

BASELINE = "008_baseline"
LEGACY_NEWEST = 8
ALEMBIC_USER_VERSION = 9


class NewerCatalog(RuntimeError):
    """A catalog made by a newer withcache: its schema is not one this one knows."""


def legacy_migrations() -> list[tuple[int, str]]:
    """(version, sql) for each hand-written SQLite schema file, in order."""
    found = []
    for entry in resources.files("withcache").joinpath("schema").iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("-", 1)[0]), entry.read_text("utf-8")))
    return sorted(found)


def config(conn: Connection | None = None) -> Config:
    """Alembic's configuration for this package, with no alembic.ini: the revisions run on conn."""
    cfg = Config()
    cfg.set_main_option("script_location", "withcache:migrations")
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    """The newest revision this withcache knows."""
    found = ScriptDirectory.from_config(config()).get_current_head()
    assert found is not None
    return found


def current(conn: Connection) -> str | None:
    """The revision the catalog is at (None: not managed by Alembic yet)."""
    return MigrationContext.configure(conn).get_current_revision()


def migrate(conn: Connection, query: str | None = None) -> str:
    """Apply every migration the catalog lacks; the revision it is at after. Blocking. `query`
    is the key mode for the legacy step that re-keys (the default when None)."""
    if conn.dialect.name == SQLITE:
        _legacy(conn, query or DEFAULT_QUERY)
    with transaction(conn):
        tables = inspect(conn).get_table_names()
        legacy = "artifacts" in tables and conn.dialect.name == SQLITE
        if legacy and "alembic_version" not in tables:
            # A catalog the hand-written files made (user_version 8 by now).
            command.stamp(config(conn), BASELINE)
        revision = current(conn)
        scripts = ScriptDirectory.from_config(config())
        try:
            if revision is not None:
                scripts.get_revision(revision)
        except CommandError:
            raise NewerCatalog(
                f"catalog schema revision {revision} is newer than this withcache"
            ) from None
        command.upgrade(config(conn), "head")
        if conn.dialect.name == SQLITE:
            conn.exec_driver_sql(f"PRAGMA user_version = {ALEMBIC_USER_VERSION}")
        done = current(conn)
    assert done is not None
    return done


def _legacy(conn: Connection, query: str) -> None:
    """Bring a SQLite catalog made before Alembic to user_version 8, one file a transaction."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    (version,) = raw.execute("PRAGMA user_version").fetchone()
    end_reads(conn)
    if version == ALEMBIC_USER_VERSION or version == 0:
        return  # managed by Alembic, or new
    if version > LEGACY_NEWEST:
        raise NewerCatalog(f"catalog schema version {version} is newer than this withcache")
    for number, sql in legacy_migrations():
        if number <= version:
            continue
        # One transaction, so the schema change, its Python step and the version bump commit
        # together (executescript leaves the BEGIN open: no isolation level).
        try:
            raw.executescript(f"BEGIN IMMEDIATE;\n{sql}\n")
            step = _PYTHON_STEPS.get(number)
            if step is not None:
                # On the same SQLite connection, inside the BEGIN above (no BEGIN of its own).
                step(conn, query)
            raw.execute(f"PRAGMA user_version = {number}")
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        finally:
            # SQLAlchemy's own idea of a transaction (begun by the step's statements) ends
            # only now: its rollback inside the BEGIN above would have undone the step.
            end_reads(conn)


# Python steps of legacy migrations, by version, run after that version's SQL in its transaction.
_PYTHON_STEPS: dict[int, Callable[[Connection, str], None]] = {
    # 006: keys keep the query but for signatures; credential-like queries are not cacheable.
    6: rekey_logged,
}
