"""The catalog on SQLite and PostgreSQL: migrations, lookups, miss bookkeeping; and the threaded
Catalog service."""

import sqlite3

import pytest
import pytest_twisted

from withcache import catalog as cat
from withcache.migrate import ALEMBIC_USER_VERSION, NewerCatalog, head


@pytest.fixture
def sqlite_conn(tmp_path):
    c = cat.connect(str(tmp_path / "cache.db"))
    yield c
    c.close()


def art(key="https://e.com/f", sha="a" * 64, size=3, **kw):
    return cat.Artifact(
        key, key, sha, size, kw.pop("content_type", None), kw.pop("at", 100.0), **kw
    )


def test_connect_migrates_a_new_sqlite_catalog_to_the_newest_revision_in_wal_mode(sqlite_conn):
    conn = sqlite_conn
    assert conn.exec_driver_sql("PRAGMA user_version").scalar() == ALEMBIC_USER_VERSION
    assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head()
    tables = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
    assert {"artifacts", "misses", "jobs", "events", "artifacts_changed"} <= tables


def test_migrate_is_a_no_op_the_second_time(conn):
    assert cat.migrate(conn) == head()
    assert cat.migrate(conn) == head()


def test_a_sqlite_catalog_newer_than_the_legacy_files_is_refused(tmp_path):
    path = str(tmp_path / "future.db")
    c = sqlite3.connect(path)
    c.execute("PRAGMA user_version = 999")
    c.close()
    with pytest.raises(NewerCatalog, match="newer than this withcache"):
        cat.connect(path)


def test_a_catalog_at_a_revision_this_withcache_does_not_know_is_refused(conn, catalog_url):
    with cat.transaction(conn):
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '999_future'")
    with pytest.raises(NewerCatalog, match="999_future is newer than this withcache"):
        cat.connect(catalog_url)


def test_lookup_counts_misses_then_the_stored_artifact_takes_them_over(conn):
    key = "https://e.com/f"
    assert cat.lookup(conn, key, key + "?sig=1", 10.0, count_hit=True) is None
    assert cat.lookup(conn, key, key + "?sig=2", 20.0, count_hit=False) is None
    (miss,) = cat.list_misses(conn)
    assert miss == cat.Miss(key, key + "?sig=2", 2, 10.0, 20.0)
    cat.put_artifact(conn, art(key))
    assert cat.list_misses(conn) == []
    assert cat.get_artifact(conn, key).misses == 2


def test_get_hits_count_and_head_lookups_do_not(conn):
    cat.put_artifact(conn, art())
    cat.lookup(conn, "https://e.com/f", "https://e.com/f", 50.0, count_hit=False)
    assert cat.get_artifact(conn, "https://e.com/f").hits == 0
    found = cat.lookup(conn, "https://e.com/f", "https://e.com/f", 60.0, count_hit=True)
    assert found.sha256 == "a" * 64
    after = cat.get_artifact(conn, "https://e.com/f")
    assert (after.hits, after.last_hit_at) == (1, 60.0)


def test_a_lookup_is_answered_even_when_its_bookkeeping_cannot_be_written(sqlite_conn, tmp_path):
    conn = sqlite_conn
    cat.put_artifact(conn, art())
    other = sqlite3.connect(str(tmp_path / "cache.db"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock, as a full disk would refuse writes
    conn.exec_driver_sql("PRAGMA busy_timeout = 50")
    try:
        found = cat.lookup(conn, "https://e.com/f", "https://e.com/f", 60.0, count_hit=True)
        assert found is not None and found.sha256 == "a" * 64
        assert cat.lookup(conn, "https://e.com/g", "https://e.com/g", 60.0, True) is None
        assert not conn.in_transaction()
    finally:
        other.execute("ROLLBACK")
        other.close()
    cat.lookup(conn, "https://e.com/f", "https://e.com/f", 70.0, count_hit=True)
    assert cat.get_artifact(conn, "https://e.com/f").hits == 1  # the lost one stays lost


def test_batched_hits_add_up_and_leave_the_artifacts_generation_where_it_was(conn, catalog_url):
    cat.put_artifact(conn, art())
    generation = cat.add_hits(conn, [])
    assert cat.add_hits(conn, [("https://e.com/f", 3, 70.0), ("https://e.com/gone", 2, 1)]) == (
        generation
    )
    cat.add_hits(conn, [("https://e.com/f", 2, 65.0)])
    after = cat.get_artifact(conn, "https://e.com/f")
    assert (after.hits, after.last_hit_at) == (5, 70.0)
    assert cat.artifacts_generation(conn) == generation
    other = cat.connect(catalog_url)  # another process's write, by hand
    with cat.transaction(other):
        other.exec_driver_sql("UPDATE artifacts SET pinned = 1")
    other.close()
    assert cat.add_hits(conn, []) != generation


def test_the_artifacts_generation_moves_for_row_changes_only(conn):
    seen = [cat.artifacts_generation(conn)]

    def moved() -> bool:
        seen.append(cat.artifacts_generation(conn))
        return seen[-1] != seen[-2]

    cat.put_artifact(conn, art())
    assert moved()
    cat.lookup(conn, "https://e.com/f", "https://e.com/f", 1.0, count_hit=True)
    cat.lookup(conn, "https://e.com/g", "https://e.com/g", 1.0, count_hit=True)  # a miss
    cat.add_hits(conn, [("https://e.com/f", 3, 2.0)])
    cat.set_verified(conn, "a" * 64, 3.0)
    cat.delete_miss(conn, "https://e.com/g")
    assert not moved()
    cat.put_artifact(conn, art(sha="b" * 64, size=4))  # replaced
    assert moved()
    cat.set_pinned(conn, "https://e.com/f", True)
    assert moved()
    cat.delete_artifact(conn, "https://e.com/f")
    assert moved()


def test_replacing_an_artifact_keeps_counters_and_reports_the_stale_blob(conn):
    cat.put_artifact(conn, art())
    cat.lookup(conn, "https://e.com/f", "https://e.com/f", 1.0, count_hit=True)
    freed = cat.put_artifact(conn, art(sha="b" * 64, size=4))
    assert freed == ["a" * 64]
    now = cat.get_artifact(conn, "https://e.com/f")
    assert (now.sha256, now.size, now.hits) == ("b" * 64, 4, 1)


def test_a_blob_shared_by_two_keys_is_kept_until_the_last_row_goes(conn):
    cat.put_artifact(conn, art("https://e.com/a"))
    cat.put_artifact(conn, art("https://e.com/b"))
    assert cat.delete_artifact(conn, "https://e.com/a") is None
    assert cat.delete_artifact(conn, "https://e.com/b") == "a" * 64
    assert cat.delete_artifact(conn, "https://e.com/b") is None


def test_max_bytes_evicts_least_recently_hit_unpinned_artifacts(conn):
    cat.put_artifact(conn, art("https://e.com/old", sha="1" * 64, size=40, at=1.0))
    cat.put_artifact(conn, art("https://e.com/pinned", sha="2" * 64, size=40, at=0.5, pinned=True))
    cat.put_artifact(conn, art("https://e.com/used", sha="3" * 64, size=40, at=2.0))
    cat.lookup(conn, "https://e.com/old", "https://e.com/old", 10.0, count_hit=True)
    # "used" was fetched after "old" but "old" was hit since: "used" goes first, pins stay.
    freed = cat.put_artifact(conn, art("https://e.com/new", sha="4" * 64, size=50), max_bytes=140)
    assert freed == ["3" * 64]
    keys = {a.key for a in cat.list_artifacts(conn)}
    assert keys == {"https://e.com/old", "https://e.com/pinned", "https://e.com/new"}


def test_an_artifact_that_cannot_fit_raises_no_room_and_changes_nothing(conn):
    cat.put_artifact(conn, art("https://e.com/pinned", sha="2" * 64, size=80, pinned=True))
    cat.put_artifact(conn, art("https://e.com/other", sha="3" * 64, size=10))
    with pytest.raises(cat.NoRoom, match="50 bytes do not fit in --max-bytes 100"):
        cat.put_artifact(conn, art("https://e.com/new", sha="4" * 64, size=50), max_bytes=100)
    assert len(cat.list_artifacts(conn)) == 2


def test_jobs_round_trip_and_clear_by_state(conn):
    first = cat.insert_job(conn, cat.JobRow(None, "k", "u", "auto", "queued", created_at=1.0))
    second = cat.insert_job(conn, cat.JobRow(None, "k2", "u2", "operator", "queued"))
    job = cat.JobRow(first, "k", "u", "auto", "failed", 5, 10, "origin answered 503", 1.0, 2.0, 3.0)
    cat.update_job(conn, job)
    assert cat.list_jobs(conn, ("failed",)) == [job]
    assert [j.id for j in cat.list_jobs(conn)] == [second, first]
    assert cat.delete_jobs(conn, ("failed", "completed")) == 1
    assert [j.id for j in cat.list_jobs(conn)] == [second]


def test_a_failed_transaction_leaves_nothing_behind(conn):
    with pytest.raises(ZeroDivisionError), cat.transaction(conn):
        conn.exec_driver_sql("INSERT INTO misses VALUES ('k', 'u', 1, 0, 0)")
        raise ZeroDivisionError
    assert cat.list_misses(conn) == []


@pytest_twisted.ensureDeferred
async def test_catalog_service_runs_queries_off_the_reactor_thread(catalog_url):
    import threading

    from twisted.internet import reactor

    service = cat.Catalog(catalog_url, reactor)
    service.startService()
    try:
        seen = await service.run(lambda conn: threading.current_thread().name)
        assert seen != threading.main_thread().name
        await service.run(cat.put_artifact, art())
        (listed,) = await service.run(cat.list_artifacts)
        assert listed.key == "https://e.com/f"
    finally:
        await service.stopService()
