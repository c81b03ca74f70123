"""Schema 006 and re-keying: catalogs keyed under the old rules stay reachable under the new."""

from __future__ import annotations

import sqlite3

import pytest

from withcache import catalog as cat
from withcache import migrate
from withcache.keys import cache_key
from withcache.tables import artifacts as artifacts_table
from withcache.tables import misses as misses_table

V = "https://vendor.example"
S3 = "https://bucket.s3.amazonaws.com/tool.tar.gz"


def sigv4(sig: str, date: str = "20240101T000000Z") -> str:
    return (
        f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2Fx&X-Amz-Date={date}"
        f"&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={sig}"
    )


def old_catalog(path: str) -> sqlite3.Connection:
    """A catalog as withcache made it before schema 006 (the same SQL files, up to 004)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for number, sql in migrate.legacy_migrations():
        if number <= 4:
            conn.executescript(sql)
    conn.execute("PRAGMA user_version = 4")
    return conn


def put(conn, key, url, sha, *, hits=0, misses=0, last_hit_at=None, fetched_at=100.0, pinned=0):
    conn.execute(
        "INSERT INTO artifacts (key, url, sha256, size, content_type, fetched_at, hits, misses,"
        " last_hit_at, pinned) VALUES (?, ?, ?, 1, NULL, ?, ?, ?, ?, ?)",
        (key, url, sha * 64, fetched_at, hits, misses, last_hit_at, pinned),
    )


def miss(conn, key, url, count, first, last):
    conn.execute(
        "INSERT INTO misses (key, url, count, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)",
        (key, url, count, first, last),
    )


def job(conn, key, url, state):
    conn.execute(
        "INSERT INTO jobs (key, url, source, state, created_at) VALUES (?, ?, 'auto', ?, 1.0)",
        (key, url, state),
    )


def artifacts(conn) -> dict[str, tuple]:
    rows = conn.exec_driver_sql("SELECT key, url, sha256, hits, misses, pinned FROM artifacts")
    return {
        key: (url, sha[0], hits, misses, pinned) for key, url, sha, hits, misses, pinned in rows
    }


@pytest.fixture
def old_default_catalog(tmp_path):
    """An old catalog keyed under the old default: the whole query dropped from keys."""
    path = str(tmp_path / "cache.db")
    conn = old_catalog(path)
    put(conn, f"{V}/tool.sh", f"{V}/tool.sh?version=1.2.3", "a", hits=5, last_hit_at=500.0)
    put(conn, S3, f"{S3}?{sigv4('aaaa')}", "b", hits=2)
    put(conn, f"{V}/plain.iso", f"{V}/plain.iso", "c")
    put(conn, f"{V}/private.run", f"{V}/private.run?access_token=SECRET", "d", hits=9)
    miss(conn, f"{V}/new.run", f"{V}/new.run?arch=arm64", 3, 10.0, 20.0)
    miss(conn, f"{V}/leak.run", f"{V}/leak.run?api_key=SECRET", 1, 10.0, 10.0)
    job(conn, f"{V}/new.run", f"{V}/new.run?arch=arm64", "queued")
    job(conn, f"{V}/leak.run", f"{V}/leak.run?api_key=SECRET", "queued")
    job(conn, f"{V}/old.run", f"{V}/old.run?api_key=SECRET", "completed")
    conn.close()
    return path


def test_finding6_migration_rekeys_artifacts_so_they_are_reachable_under_the_new_keys(
    old_default_catalog,
):
    conn = cat.connect(old_default_catalog)
    assert conn.exec_driver_sql("PRAGMA user_version").scalar() == migrate.ALEMBIC_USER_VERSION
    assert cat.keyed_with(conn) == "signed"
    for url in (f"{V}/tool.sh?version=1.2.3", f"{S3}?{sigv4('zzzz')}", f"{V}/plain.iso"):
        found = cat.get_artifact(conn, cache_key(url))
        assert found is not None, url
    assert artifacts(conn) == {
        f"{V}/tool.sh?version=1.2.3": (f"{V}/tool.sh?version=1.2.3", "a", 5, 0, 0),
        S3: (f"{S3}?{sigv4('aaaa')}", "b", 2, 0, 0),
        f"{V}/plain.iso": (f"{V}/plain.iso", "c", 0, 0, 0),
    }


def test_finding6_migration_removes_rows_whose_query_carries_credentials(old_default_catalog):
    conn = cat.connect(old_default_catalog)
    urls = [
        r[0]
        for r in conn.exec_driver_sql("SELECT url FROM artifacts UNION ALL SELECT url FROM misses")
    ]
    assert not any("SECRET" in url for url in urls)
    assert cat.referenced(conn, "d" * 64) is False  # an orphan blob, swept at the next start


def test_finding6_migration_rekeys_misses_and_fails_uncacheable_fills(old_default_catalog):
    conn = cat.connect(old_default_catalog)
    assert cat.list_misses(conn) == [
        cat.Miss(f"{V}/new.run?arch=arm64", f"{V}/new.run?arch=arm64", 3, 10.0, 20.0)
    ]
    jobs = {j.url: (j.key, j.state, j.error) for j in cat.list_jobs(conn)}
    assert jobs[f"{V}/new.run?arch=arm64"] == (f"{V}/new.run?arch=arm64", "queued", None)
    _key, state, error = jobs[f"{V}/leak.run?api_key=SECRET"]
    assert state == "failed" and "not cacheable" in error and "SECRET" not in error
    assert jobs[f"{V}/old.run?api_key=SECRET"][1] == "completed"


def test_finding6_rows_meeting_on_one_key_keep_the_most_recently_hit(tmp_path):
    """A catalog of a host that ran with --keep-query: three presigned URLs of one object
    were three artifacts; under the new default they are one key, and the most recently hit
    row wins, with all the hits and misses counted."""
    path = str(tmp_path / "cache.db")
    conn = old_catalog(path)
    urls = [f"{S3}?{sigv4(s, d)}" for s, d in (("a1", "1"), ("b2", "2"), ("c3", "3"))]
    put(conn, urls[0], urls[0], "a", hits=1, last_hit_at=300.0, fetched_at=100.0)
    put(conn, urls[1], urls[1], "b", hits=4, last_hit_at=900.0, fetched_at=50.0, misses=2)
    put(conn, urls[2], urls[2], "c", hits=0, last_hit_at=None, fetched_at=800.0, pinned=1)
    miss(conn, f"{V}/m?{sigv4('x', '1')}", f"{V}/m?{sigv4('x', '1')}", 2, 5.0, 50.0)
    miss(conn, f"{V}/m?{sigv4('y', '2')}", f"{V}/m?{sigv4('y', '2')}", 1, 1.0, 70.0)
    other = f"{S3}?{sigv4('d4', '4')}"  # missed under --keep-query; the artifact's key now
    miss(conn, other, other, 7, 1.0, 1.0)
    conn.close()

    conn = cat.connect(path)
    assert artifacts(conn) == {S3: (urls[1], "b", 5, 2 + 7, 1)}
    assert cat.list_misses(conn) == [cat.Miss(f"{V}/m", f"{V}/m?{sigv4('y', '2')}", 3, 1.0, 70.0)]


def test_finding6_a_host_with_keep_query_migrates_to_its_own_keys(tmp_path):
    path = str(tmp_path / "cache.db")
    conn = old_catalog(path)
    url = f"{S3}?{sigv4('a')}"
    put(conn, url, url, "a")
    conn.close()
    conn = cat.connect(path, "keep")
    assert cat.keyed_with(conn) == "keep"
    assert list(artifacts(conn)) == [url]


def test_finding6_starting_with_another_query_mode_rekeys_and_bumps_the_generation(catalog_url):
    path = catalog_url
    conn = cat.connect(path)
    url = f"{V}/tool.sh?version=2&sig=s"
    cat.put_artifact(conn, cat.Artifact(cache_key(url), url, "a" * 64, 1, None, 1.0))
    generation = cat.artifacts_generation(conn)
    conn.close()

    conn = cat.connect(path, "drop")
    assert list(artifacts(conn)) == [f"{V}/tool.sh"]
    assert cat.artifacts_generation(conn) > generation
    assert cat.ensure_keyed(conn, "drop") is False  # keyed already: nothing to do
    conn.close()
    conn = cat.connect(path, "keep")
    assert list(artifacts(conn)) == [f"{V}/tool.sh?version=2&sig=s"]
    conn.close()
    conn = cat.connect(path)  # no mode (withcache-admin ls): the keys stay as they are
    assert cat.keyed_with(conn) == "keep"


def test_finding6_a_failing_python_step_leaves_the_old_catalog_as_it_was(
    old_default_catalog, monkeypatch
):
    def broken(conn, query):
        conn.exec_driver_sql("DELETE FROM artifacts")
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(migrate._PYTHON_STEPS, 6, broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        cat.connect(old_default_catalog)
    conn = sqlite3.connect(old_default_catalog)
    # Each version commits on its own: 005 (sessions) went in, 006 rolled back whole.
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    assert conn.execute("SELECT COUNT(*) FROM artifacts").fetchone()[0] == 4
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "key_rules" not in tables


def test_rows_meeting_on_one_key_merge_on_either_backend(catalog_url):
    """Re-keying itself (not the legacy step): a catalog keyed with --keep-query opened by a
    host with the default mode merges three presigned URLs of one object into the most
    recently hit, and two misses into one."""
    conn = cat.connect(catalog_url, "keep")
    urls = [f"{S3}?{sigv4(s, d)}" for s, d in (("a1", "1"), ("b2", "2"), ("c3", "3"))]
    rows = [
        (urls[0], "a", 1, 300.0, 100.0, 0, 0),
        (urls[1], "b", 4, 900.0, 50.0, 2, 0),
        (urls[2], "c", 0, None, 800.0, 0, 1),
    ]
    missed = [
        (f"{V}/m?{sigv4('x', '1')}", 2, 5.0, 50.0),
        (f"{V}/m?{sigv4('y', '2')}", 1, 1.0, 70.0),
        (f"{S3}?{sigv4('d4', '4')}", 7, 1.0, 1.0),
    ]
    with cat.transaction(conn):
        for url, sha, hits, last, fetched, misses, pinned in rows:
            conn.execute(
                artifacts_table.insert().values(
                    key=url, url=url, sha256=sha * 64, size=1, fetched_at=fetched, hits=hits,
                    misses=misses, last_hit_at=last, pinned=pinned,
                )
            )  # fmt: skip
        for url, count, first, last in missed:
            conn.execute(
                misses_table.insert().values(
                    key=url, url=url, count=count, first_seen=first, last_seen=last
                )
            )
    conn.close()

    conn = cat.connect(catalog_url, "signed")
    assert artifacts(conn) == {S3: (urls[1], "b", 5, 2 + 7, 1)}
    assert cat.list_misses(conn) == [cat.Miss(f"{V}/m", f"{V}/m?{sigv4('y', '2')}", 3, 1.0, 70.0)]
    conn.close()


def test_active_jobs_meeting_on_one_key_leave_the_newest_active(catalog_url):
    """One active job per key (fill leases, revision 009_leases) holds across a re-keying:
    fills of two URLs that one key now names become one, the newest."""
    conn = cat.connect(catalog_url)
    urls = [f"{V}/tool.sh?v=1", f"{V}/tool.sh?v=2", f"{V}/other.sh"]
    ids = [cat.insert_job(conn, cat.JobRow(None, cache_key(u), u, "auto", "queued")) for u in urls]
    conn.close()
    conn = cat.connect(catalog_url, "drop")
    jobs = {j.id: (j.key, j.state) for j in cat.list_jobs(conn)}
    assert jobs == {
        ids[0]: (f"{V}/tool.sh?v=1", "cancelled"),  # finished: its key no longer matters
        ids[1]: (f"{V}/tool.sh", "queued"),
        ids[2]: (f"{V}/other.sh", "queued"),
    }
    conn.close()
