"""Catalog URLs and the upgrade path: SQLite catalogs made by the hand-written schema files (any
version up to 008) open under Alembic with their data intact."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import DBAPIError

from withcache import catalog as cat
from withcache import events as ev
from withcache import tokens
from withcache.catalog_db import CatalogURLError, catalog_of, parse_url, redact
from withcache.migrate import ALEMBIC_USER_VERSION, head, legacy_migrations

URL = "https://vendor.example/tool.run"


def legacy_catalog(path: str, version: int) -> None:
    """A catalog exactly as withcache made it at schema `version`: its own SQL files, with rows
    in every table that version had."""
    conn = sqlite3.connect(path, isolation_level=None)
    for number, sql in legacy_migrations():
        if number > version:
            break
        conn.executescript(sql)
        if number == 6:
            conn.execute("UPDATE key_rules SET query = 'signed'")  # what 006's step recorded
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute(
        "INSERT INTO artifacts (key, url, sha256, size, content_type, fetched_at, hits, misses,"
        " last_hit_at, pinned, verified_at) VALUES (?, ?, ?, 3, 'text/plain', 10.0, 4, 2, 20.0,"
        " 1, 30.0)",
        (URL, URL, "a" * 64),
    )
    conn.execute("INSERT INTO misses VALUES (?, ?, 5, 1.0, 2.0)", (URL + ".sig", URL + ".sig"))
    conn.execute(
        "INSERT INTO jobs (key, url, source, state, bytes_done, created_at)"
        " VALUES (?, ?, 'auto', 'completed', 3, 9.0)",
        (URL, URL),
    )
    if version >= 5:
        conn.execute("INSERT INTO sessions VALUES ('f' || hex(randomblob(31)), 9e9)")
    if version >= 8:
        conn.execute(
            "INSERT INTO api_tokens (id, name, hash, scopes, created_at)"
            " VALUES ('0123456789abcdef', 'ci', ?, 'read', 1.0)",
            ("0" * 64,),
        )
        conn.execute(
            "INSERT INTO events (at, actor, action, subject, outcome)"
            " VALUES (1.0, 'host', 'fill.completed', ?, 'ok')",
            (URL,),
        )
    conn.close()


@pytest.mark.parametrize("version", [5, 8])
def test_a_catalog_made_by_the_old_schema_files_opens_with_its_data_intact(tmp_path, version):
    path = str(tmp_path / "cache.db")
    legacy_catalog(path, version)
    conn = cat.connect(path, "signed")
    try:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head()
        assert conn.exec_driver_sql("PRAGMA user_version").scalar() == ALEMBIC_USER_VERSION
        found = cat.get_artifact(conn, URL)
        assert found == cat.Artifact(
            URL, URL, "a" * 64, 3, "text/plain", 10.0, 4, 2, 20.0, True, None, None, False
        )
        assert cat.next_to_verify(conn) == ("a" * 64, 3)
        assert cat.list_misses(conn) == [cat.Miss(URL + ".sig", URL + ".sig", 5, 1.0, 2.0)]
        (job,) = cat.list_jobs(conn)
        assert (job.key, job.state, job.bytes_done) == (URL, "completed", 3)
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM sessions").scalar() == 1
        if version >= 8:
            assert [t.name for t in tokens.list_tokens(conn)] == ["ci"]
            assert ev.query(conn)[1] == 1
        # The triggers are the old ones or the baseline's: either way they still work.
        generation = cat.artifacts_generation(conn)
        cat.set_pinned(conn, URL, False)
        assert cat.artifacts_generation(conn) == generation + 1
        ev.append(conn, 2.0, ev.THE_HOST, "fill.queued", URL)
        with pytest.raises(DBAPIError, match="append-only"):
            conn.exec_driver_sql("UPDATE events SET outcome = 'failed'")
    finally:
        conn.close()
    # Opened again: nothing left to do, nothing changed.
    again = cat.connect(path)
    assert cat.get_artifact(again, URL).hits == 4
    again.close()


def test_a_legacy_catalog_at_version_8_is_stamped_not_rebuilt(tmp_path):
    path = str(tmp_path / "cache.db")
    legacy_catalog(path, 8)
    before = sqlite3.connect(path)
    schema = before.execute("SELECT sql FROM sqlite_master WHERE name = 'artifacts'").fetchone()
    before.close()
    cat.connect(path).close()
    after = sqlite3.connect(path)
    assert after.execute("SELECT sql FROM sqlite_master WHERE name = 'artifacts'").fetchone() == (
        schema
    )
    after.close()


@pytest.mark.parametrize(
    ("value", "driver", "shown"),
    [
        ("data/cache.db", "sqlite", "data/cache.db"),
        ("sqlite:////srv/withcache/cache.db", "sqlite", "/srv/withcache/cache.db"),
        (
            "postgresql://withcache:s3cret@db.lab:5433/withcache",
            "postgresql+psycopg",
            "postgresql+psycopg://withcache:***@db.lab:5433/withcache",
        ),
        ("postgres://db.lab/cache", "postgresql+psycopg", "postgresql+psycopg://db.lab/cache"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg", "postgresql+psycopg://u@h/d"),
    ],
)
def test_catalog_urls_name_sqlite_files_or_postgresql_databases(value, driver, shown):
    url = parse_url(value)
    assert url.drivername == driver
    assert redact(url) == shown
    assert "s3cret" not in redact(value)


@pytest.mark.parametrize(
    "value",
    [
        "mysql://root:s3cret@db/withcache",
        "postgresql+psycopg2://u:s3cret@h/d",
        "postgresql://u:s3cret@h/",
        "http://u:s3cret@h/d",
        "",
    ],
)
def test_other_catalog_urls_are_refused_without_showing_their_password(value):
    with pytest.raises(CatalogURLError, match="a catalog is a path") as refused:
        parse_url(value)
    assert "s3cret" not in str(refused.value)


def test_the_catalog_is_the_option_else_the_environment_else_the_data_dirs_file():
    env = {"WITHCACHE_CATALOG": "postgresql://h/d"}
    assert catalog_of("x.db", "/d", env) == "x.db"
    assert catalog_of(None, "/d", env) == "postgresql://h/d"
    assert catalog_of(None, "/d", {}) == "/d/cache.db"


def test_a_bad_catalog_option_is_a_usage_error_that_does_not_echo_the_password(tmp_path):
    from twisted.python import usage

    from withcache.tap import Options

    options = Options()
    with pytest.raises(usage.UsageError, match="--catalog: unsupported catalog") as refused:
        options.parseOptions(
            ["--data-dir", str(tmp_path), "--catalog", "mysql://root:s3cret@db/withcache"]
        )
    assert "s3cret" not in str(refused.value)


def test_the_admin_tool_says_which_catalog_it_cannot_reach_without_its_password(tmp_path):
    import socket
    import subprocess

    from tests.support import tool

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = closed.getsockname()[1]
        done = subprocess.run(
            [tool("withcache-admin"), "ls", "--data-dir", str(tmp_path), "--catalog",
             f"postgresql://withcache:s3cret@127.0.0.1:{port}/withcache"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode != 0
    assert "cannot open the catalog postgresql+psycopg://withcache:***@127.0.0.1" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout
