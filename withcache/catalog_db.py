"""Where the catalog lives and how it is written: `--catalog` URLs, engines, write transactions.

A catalog is a SQLite file (the default, `<data-dir>/cache.db`: a path or `sqlite:///PATH`) or a
PostgreSQL database (`postgresql://user@host:port/db`, through psycopg 3). Both are reached with
SQLAlchemy Core; the query functions (withcache.catalog and its neighbours) take a SQLAlchemy
`Connection` and write only inside `transaction(conn)`, which keeps SQLite's single-writer
serialisation on both: `BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory lock on
PostgreSQL. Reads run concurrently. URLs may carry a password; only `redact`ed ones are shown.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import NullPool

SQLITE, POSTGRESQL = "sqlite", "postgresql"
DEFAULT_POOL = 4
# How long a SQLite writer waits for another process's write (the admin CLI, a serving worker),
# and how long a PostgreSQL connection attempt may take, in seconds.
BUSY_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10
# The key of the advisory lock every write transaction on PostgreSQL takes ("withcache" as an
# integer, so that another application's locks on the same database do not collide with it).
WRITE_LOCK = int.from_bytes(b"withcach", "big") & 0x7FFF_FFFF_FFFF_FFFF
_IN_WRITE = "withcache_in_write"
USAGE = "a catalog is a path, sqlite:///PATH, or postgresql://[user[:password]@]host[:port]/db"


# A catalog that cannot answer now (a PostgreSQL server restarting, a SQLite lock held past the
# busy timeout, a full disk): the call fails, and a later one may work.
CatalogUnavailable = OperationalError


class CatalogURLError(ValueError):
    """A --catalog value that names no catalog; its message never holds a password."""


def parse_url(value: str) -> URL:
    """The SQLAlchemy URL for a --catalog value (a bare path is a SQLite file)."""
    if "://" not in value:
        if not value:
            raise CatalogURLError(f"empty catalog; {USAGE}")
        return URL.create("sqlite", database=value)
    try:
        url = make_url(value)
    except ArgumentError:
        scheme = value.partition("://")[0]
        raise CatalogURLError(f"not a catalog URL ({scheme}://…); {USAGE}") from None
    if url.drivername == SQLITE:
        return url
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        if not url.database:
            raise CatalogURLError(f"no database named in {redact(url)}; {USAGE}")
        return url.set(drivername="postgresql+psycopg")
    raise CatalogURLError(f"unsupported catalog {redact(url)}; {USAGE}")


def redact(url: URL | str) -> str:
    """The URL as it may be logged or shown: any password replaced by ***."""
    if isinstance(url, str):
        try:
            url = parse_url(url)
        except CatalogURLError:
            return "<not a catalog URL>"
    if url.drivername == SQLITE:
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def has_password(url: URL) -> bool:
    return url.password is not None


def make_engine(url: URL, pool_size: int | None = None) -> Engine:
    """An engine for the catalog. pool_size None: one connection at a time, closed when given
    back (the admin CLI, SQLite); a number: a bounded PostgreSQL pool that checks each
    connection before use, so calls after a server restart reconnect."""
    # Statement parameters stay out of error messages: they can hold signed URLs and tokens.
    common: dict[str, Any] = {"hide_parameters": True}
    if url.drivername == SQLITE:
        if url.database and url.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
        engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={"timeout": BUSY_TIMEOUT, "check_same_thread": False},
            **common,
        )
        event.listen(engine, "connect", _sqlite_connected)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    connect_args = {"connect_timeout": CONNECT_TIMEOUT, "application_name": "withcache"}
    if pool_size is None:
        return create_engine(url, poolclass=NullPool, connect_args=connect_args, **common)
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        connect_args=connect_args,
        **common,
    )


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling is off: transaction() says when to BEGIN, and
    # every read outside one sees the latest commit (as each statement did before SQLAlchemy).
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable in WAL mode except for the last commits before a power loss. Losing
    # one of those loses a hit count or leaves a blob without its row (swept at start), never a
    # row naming bad bytes; FULL would fsync on every hit counted.
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
    dbapi_connection.execute("PRAGMA foreign_keys=ON")


def _sqlite_begin(conn: Connection) -> None:
    # Only a write transaction really begins: taking the write lock up front means two writers
    # never both read and then deadlock upgrading; reads need no BEGIN in WAL mode.
    if conn.info.get(_IN_WRITE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextlib.contextmanager
def transaction(conn: Connection) -> Iterator[Connection]:
    """One write transaction, serialised with every other writer of the catalog: committed
    when the block ends, rolled back when it raises (or when the commit itself fails)."""
    if conn.info.get(_IN_WRITE):
        raise RuntimeError("catalog write transactions do not nest")
    if conn.in_transaction():
        conn.commit()  # the reads before this write (SQLAlchemy begins one on any statement)
    conn.info[_IN_WRITE] = True
    try:
        conn.begin()
        if conn.dialect.name == POSTGRESQL:
            conn.execute(select(func.pg_advisory_xact_lock(WRITE_LOCK)))
        yield conn
        conn.commit()
    except BaseException:
        # Also when COMMIT itself failed (a full disk): never leave the connection mid-transaction.
        if conn.in_transaction():
            with contextlib.suppress(Exception):
                conn.rollback()
        raise
    finally:
        conn.info[_IN_WRITE] = False


def end_reads(conn: Connection) -> None:
    """End the transaction SQLAlchemy began for reads, so a pooled or long-held connection
    holds no snapshot (nor, on PostgreSQL, sits idle in a transaction) between calls."""
    if conn.in_transaction():
        conn.rollback()


def insert(conn: Connection, table: Table) -> Any:
    """An INSERT for this connection's dialect, which has `on_conflict_do_update` (an upsert)."""
    return (postgresql if conn.dialect.name == POSTGRESQL else sqlite).insert(table)


ENV = "WITHCACHE_CATALOG"


def catalog_of(value: str | None, data_dir: str, env: dict[str, str] | None = None) -> str:
    """The catalog a host or the admin tool uses: --catalog's value, else $WITHCACHE_CATALOG
    (where a URL with a password stays out of `ps`), else the data dir's cache.db."""
    env = dict(os.environ) if env is None else env
    return value or env.get(ENV) or os.path.join(data_dir, "cache.db")
