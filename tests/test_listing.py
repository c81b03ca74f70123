"""The catalog at scale (withcache.listing, migration 010_scale), on both backends: totals kept by
the writes themselves, pages by cursor and by offset, the trigram search and its bounds, and the
migration that builds all of it for a catalog that already holds rows."""

import contextlib
import random
import sqlite3

import pytest
from alembic import command

from withcache import catalog as cat
from withcache import listing
from withcache import migrate as migrations
from withcache.catalog_db import end_reads, make_engine, parse_url, transaction
from withcache.keys import DROP, KEEP
from withcache.tables import artifacts, misses


def art(key="https://e.com/f", sha="a" * 64, size=3, at=100.0, **kw):
    return cat.Artifact(key, key, sha, size, None, at, **kw)


def counted(conn) -> dict[str, int]:
    """What catalog_totals stands for, summed the slow way."""
    artifacts, size, hits, saved, absorbed = map(
        int,
        conn.exec_driver_sql(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(hits), 0),"
            " COALESCE(SUM(size * hits), 0), COALESCE(SUM(misses), 0) FROM artifacts"
        ).one(),
    )
    pending = int(conn.exec_driver_sql("SELECT COALESCE(SUM(count), 0) FROM misses").scalar_one())
    end_reads(conn)
    return {
        "artifacts": artifacts,
        "bytes": size,
        "hits": hits,
        "misses": pending + absorbed,
        "bytes_saved": saved,
    }


def searched(conn, needle: str) -> list[str]:
    """Every key a search for needle finds, following cursors from page to page."""
    keys, after = [], None
    while True:
        found = listing.search(conn, needle, 7, after=after)
        keys += [a.key for a in found.artifacts]
        if len(found.artifacts) < 7:
            return keys
        after = listing.cursor_of(found.artifacts[-1])


# -- totals ---------------------------------------------------------------------------------

OPERATIONS = (
    "put",
    "replace",
    "delete",
    "miss",
    "hits",
    "evict",
    "pin",
    "dismiss",
    "drop",
    "rekey",
)


def random_operations(seed: int, count: int) -> list[tuple[str, int, int]]:
    """(operation, which of 12 URLs, a size) — seeded, so a failure replays."""
    rng = random.Random(seed)
    return [
        (rng.choice(OPERATIONS), rng.randrange(12), rng.randrange(1, 900)) for _ in range(count)
    ]


@pytest.mark.parametrize("seed", range(6))
def test_totals_stay_equal_to_a_count_of_the_rows_through_any_writes(conn, seed):
    """After every write of a random sequence, the totals equal a count of the rows."""
    ops = random_operations(seed, 60)
    for op, n, size in ops:
        url = f"https://e.com/f{n}?token=t{n % 2}&v={n}"
        sha = f"{n % 5:064x}"
        if op in ("put", "replace"):
            cat.put_artifact(conn, art(url, sha, size, at=float(size), hits=n % 3))
        elif op == "delete":
            cat.delete_artifact(conn, url)
        elif op == "miss":
            cat.lookup(conn, url, url, float(size), count_hit=True)
        elif op == "hits":
            cat.add_hits(conn, [(url, size, float(size)), ("https://e.com/none", 2, 1.0)])
        elif op == "evict":
            with contextlib.suppress(cat.NoRoom):  # everything left pinned: nothing moves
                cat.put_artifact(conn, art(url + "&new", sha, size, at=999.0), max_bytes=1000)
        elif op == "pin":
            cat.set_pinned(conn, url, bool(size % 2))
        elif op == "dismiss":
            cat.delete_miss(conn, url)
        elif op == "drop":
            cat.drop_blob(conn, sha)
        else:
            cat.ensure_keyed(conn, KEEP if size % 2 else DROP)
        assert cat.totals(conn) == counted(conn)
        assert cat.count_artifacts(conn) == counted(conn)["artifacts"]


def test_eviction_reads_the_bytes_held_from_the_totals_and_frees_in_recency_order(conn):
    for i in range(5):
        cat.put_artifact(conn, art(f"https://e.com/{i}", f"{i:064x}", 100, at=float(i)))
    cat.add_hits(conn, [("https://e.com/0", 1, 50.0)])  # hit last: evicted last
    cat.set_pinned(conn, "https://e.com/1", True)
    freed = cat.put_artifact(conn, art("https://e.com/n", "f" * 64, 250, at=60.0), max_bytes=500)
    assert freed == [f"{i:064x}" for i in (2, 3, 4)]
    assert cat.totals(conn)["bytes"] == 450 == counted(conn)["bytes"]


# -- pages ----------------------------------------------------------------------------------


def test_cursor_pages_cover_every_row_once_while_rows_are_added(conn):
    for i in range(53):
        cat.put_artifact(conn, art(f"https://e.com/{i:03d}", at=float(i % 20)))  # ties
    before = {a.key for a in cat.list_artifacts(conn)}
    seen, after, added = [], None, 0
    while True:
        page = listing.artifacts_page(conn, 10, after=after)
        seen += [a.key for a in page]
        if len(page) < 10:
            break
        after = listing.cursor_of(page[-1])
        # New fills land at the top (newer) and within the ties of the page just read.
        cat.put_artifact(conn, art(f"https://e.com/new-{added}", at=1000.0 + added))
        cat.put_artifact(conn, art(f"https://e.com/000-{added}", at=page[-1].fetched_at))
        added += 1
    assert len(seen) == len(set(seen))
    assert before <= set(seen)
    assert not any("new-" in k for k in seen)


def test_offset_pages_and_before_cursors_give_the_list_order(conn):
    for i in range(25):
        cat.put_artifact(conn, art(f"https://e.com/{i:02d}", at=float(i // 3)))
    everything = [a.key for a in cat.list_artifacts(conn)]
    by_offset = [a.key for o in range(0, 25, 6) for a in listing.artifacts_page(conn, 6, offset=o)]
    assert by_offset == everything
    page3 = listing.artifacts_page(conn, 6, offset=12)
    newer = listing.artifacts_page(conn, 6, before=listing.cursor_of(page3[0]))
    assert [a.key for a in newer] == everything[6:12]


def test_miss_pages_are_newest_first_by_offset(conn):
    for i in range(12):
        cat.lookup(conn, f"https://e.com/m{i:02d}", f"https://e.com/m{i:02d}", float(i), True)
    pages = [m.key for o in (0, 5, 10) for m in cat.list_misses(conn, 5, o)]
    assert pages == [f"https://e.com/m{i:02d}" for i in range(11, -1, -1)]


# -- search ---------------------------------------------------------------------------------


def test_search_matches_url_substrings_and_digest_prefixes_with_a_total(conn):
    for i in range(30):
        sha = f"{i:02d}" + "c" * 62
        cat.put_artifact(conn, art(f"https://e.com/CUDA_{i}.run", sha=sha, at=float(i)))
    cat.put_artifact(conn, art("https://e.com/rocm_%_x.deb", sha="ab" + "d" * 62, at=99.0))
    found = listing.search(conn, "cuda_", limit=10, offset=10)
    assert found.total == 30 and not found.windowed
    assert [a.key for a in found.artifacts] == [
        f"https://e.com/CUDA_{i}.run" for i in range(19, 9, -1)
    ]
    assert listing.search(conn, "AB", 10).total == 1  # sha256 prefix, any case
    assert listing.search(conn, "abdddd", 10).total == 1  # a longer one, through its index
    assert listing.search(conn, "%", 10).total == 1  # LIKE wildcards are literal
    assert listing.search(conn, "m_%_x", 10).total == 1
    assert listing.search(conn, "_", 10).total == 31  # a substring of every URL here
    assert listing.search(conn, "nothing", 10) == listing.Found([], 0)


@pytest.mark.parametrize(
    ("needle", "expected"),
    [
        ("PKG-1.2+B", ["https://v.example/Pkg-1.2+build%20x.tar.gz?sig=Ab%2F"]),
        ("%20x.t", ["https://v.example/Pkg-1.2+build%20x.tar.gz?sig=Ab%2F"]),
        ("ab%2f", ["https://v.example/Pkg-1.2+build%20x.tar.gz?sig=Ab%2F"]),
        ("[x]", ["https://v.example/a[x]*?.iso"]),
        ("]*?", ["https://v.example/a[x]*?.iso"]),
        ('"quo', ['https://v.example/"quoted"\'s.bin']),
        ("'s.b", ['https://v.example/"quoted"\'s.bin']),
        ("x.ts", []),
    ],
)
def test_search_takes_odd_characters_literally_in_any_case(conn, needle, expected):
    urls = [
        "https://v.example/Pkg-1.2+build%20x.tar.gz?sig=Ab%2F",
        "https://v.example/a[x]*?.iso",
        'https://v.example/"quoted"\'s.bin',
        "https://v.example/plain.bin",
    ]
    for i, url in enumerate(urls):
        cat.put_artifact(conn, art(url, sha=f"{i:064x}", at=float(i)))
    assert searched(conn, needle) == expected


def test_the_search_index_follows_replaced_deleted_and_rekeyed_rows(conn):
    cat.put_artifact(conn, art("https://e.com/one.iso?v=1", at=1.0))
    cat.put_artifact(conn, art("https://e.com/two.iso?v=2", sha="b" * 64, at=2.0))
    assert searched(conn, "one.iso") == ["https://e.com/one.iso?v=1"]
    moved = cat.Artifact(
        "https://e.com/one.iso?v=1", "https://e.com/uno.iso?v=1", "a" * 64, 3, None, 3.0
    )
    cat.put_artifact(conn, moved)  # the same key, another URL
    assert searched(conn, "one.iso") == []
    assert searched(conn, "uno.iso") == ["https://e.com/one.iso?v=1"]
    cat.delete_artifact(conn, "https://e.com/one.iso?v=1")
    assert searched(conn, "uno.iso") == []
    cat.ensure_keyed(conn, DROP)  # keys lose their query; the URL stays searchable
    assert searched(conn, "two.iso?v=2") == ["https://e.com/two.iso"]


def test_a_common_needle_pages_in_order_without_an_exact_total(conn, monkeypatch):
    monkeypatch.setattr(listing, "COUNT_CAP", 5)
    for i in range(40):
        cat.put_artifact(
            conn, art(f"https://e.com/{'hit' if i % 3 else 'other'}-{i:02d}", at=float(i % 7))
        )
    wanted = [a.key for a in cat.list_artifacts(conn) if "hit-" in a.key]
    first = listing.search(conn, "hit-", 4)
    assert first.total is None
    assert [a.key for a in first.artifacts] == wanted[:4]
    assert searched(conn, "hit-") == wanted
    with pytest.raises(listing.TooDeep):
        listing.search(conn, "hit-", 4, offset=4)
    back = listing.search(conn, "hit-", 4, before=listing.cursor_of(first.artifacts[-1]))
    assert [a.key for a in back.artifacts] == wanted[:3]


def test_a_short_needle_searches_the_newest_artifacts_only(conn, monkeypatch):
    monkeypatch.setattr(listing, "SHORT_WINDOW", 10)
    for i in range(30):
        cat.put_artifact(
            conn,
            art(f"https://e.com/{i:02d}.q{'z' if i in (3, 25) else ''}", f"{i:064x}", at=float(i)),
        )
    found = listing.search(conn, "qz", 10)
    assert found.windowed and found.total == 1
    assert [a.key for a in found.artifacts] == ["https://e.com/25.qz"]  # 3 is older than 10
    assert listing.search(conn, "qz.", 10).total == 0  # 3 characters: the whole catalog
    assert [a.key for a in listing.search(conn, "https://e.com/03.qz"[-4:], 10).artifacts] == [
        "https://e.com/03.qz"
    ]


# -- the migration --------------------------------------------------------------------------


def old_rows(count: int) -> list[dict]:
    rng = random.Random(7)
    rows = []
    for i in range(count):
        url = f"https://old.example/{i}/Build-{rng.randrange(10**6)}.tgz"
        rows.append(
            {"key": url, "url": url, "sha256": f"{i:064x}", "size": rng.randrange(1, 10**9),
             "fetched_at": float(i), "hits": i % 4, "misses": i % 3}
        )  # fmt: skip
    return rows


def assert_built(conn) -> None:
    assert cat.totals(conn) == counted(conn)
    assert counted(conn)["artifacts"] == 200 and counted(conn)["misses"] > 4
    assert searched(conn, "/150/build-") == [
        a.key for a in cat.list_artifacts(conn) if "/150/Build-" in a.url
    ]
    assert listing.search(conn, ".TGZ", 50).total == 200


def test_the_migration_builds_totals_and_search_for_a_catalog_that_has_rows(catalog_url):
    """A catalog at 008_baseline with rows in it: 010_scale sums its totals and indexes its
    URLs for search."""
    engine = make_engine(parse_url(catalog_url))
    with engine.connect() as old:
        with transaction(old):
            command.upgrade(migrations.config(old), "008_baseline")
        with transaction(old):
            old.execute(artifacts.insert(), old_rows(200))
            old.execute(
                misses.insert().values(key="https://m.example/x", url="https://m.example/x",
                                       count=4, first_seen=1.0, last_seen=2.0)
            )  # fmt: skip
    engine.dispose()
    conn = cat.connect(catalog_url)
    try:
        assert_built(conn)
    finally:
        conn.close()


def test_a_sqlite_catalog_from_before_alembic_gets_totals_and_search(tmp_path):
    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path, isolation_level=None)
    for _number, sql in migrations.legacy_migrations():
        old.executescript(f"BEGIN;\n{sql}\nCOMMIT;")
    old.execute("PRAGMA user_version = 8")
    columns = "key, url, sha256, size, fetched_at, hits, misses"
    old.executemany(
        f"INSERT INTO artifacts ({columns}) VALUES (:{', :'.join(columns.split(', '))})",
        old_rows(200),
    )
    old.execute("INSERT INTO misses VALUES ('https://m.example/x', 'https://m.example/x', 4, 1, 2)")
    old.close()
    conn = cat.connect(path)
    try:
        assert_built(conn)
    finally:
        conn.close()


def test_deep_offsets_count_from_the_nearer_end_and_the_middle_is_refused(conn, monkeypatch):
    monkeypatch.setattr(listing, "MAX_OFFSET", 10)
    for i in range(40):
        cat.put_artifact(conn, art(f"https://e.com/{i:02d}", at=float(i // 4)))
    everything = [a.key for a in cat.list_artifacts(conn)]
    for offset in (0, 7, 10, 26, 30, 35, 39, 40, 45):
        page = listing.artifacts_page(conn, 6, offset=offset)
        assert [a.key for a in page] == everything[offset : offset + 6], offset
    with pytest.raises(listing.TooDeep):
        listing.artifacts_page(conn, 6, offset=15)  # 15 from the newest, 19 from the oldest


def test_the_events_page_lists_each_actor_once_in_order(conn):
    from withcache import events as ev

    assert ev.actors(conn) == []
    for i, name in enumerate(["token:ci", "operator", "token:ci", "host", "operator", "a b"] * 3):
        ev.append(conn, float(i), ev.Actor(name), "artifact.pinned", None)
    assert ev.actors(conn) == ["a b", "host", "operator", "token:ci"]
