"""Pages of the artifact list and of a search, at a cost that does not grow with the catalog.

The list is newest first (fetched_at descending, ties by key). A page is found by a cursor — the
(fetched_at, key) of the row before it (`after`) or after it (`before`) — which is a walk of the
artifacts_listed index from that row: the last page costs what the first does. An `offset` still
works, through the same index without reading the rows it skips.

A search matches a substring of the URL in any case, or a sha256 prefix. Needles of 3 characters
or more go through a trigram index (schema/009-scale.sql), which finds the candidates; each is
then checked exactly (`instr`, so % and _ are literal). When at most COUNT_CAP rows match, they
are sorted and paged in memory and their total is exact; when more match, the needle is common
and the list itself is walked with the filter (a page needs about limit / share-of-matches rows),
and the total is reported as "more than COUNT_CAP". A needle shorter than 3 characters has no
trigrams: it is matched against the newest SHORT_WINDOW artifacts only (and sha256 prefixes,
which have their own index), and the page says so.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from withcache.catalog import _ARTIFACT_COLUMNS, Artifact, _artifact

# A search counts its matches up to this many; past it, "more than COUNT_CAP".
COUNT_CAP = 1000
# A search shorter than MIN_INDEXED characters looks at this many of the newest artifacts.
SHORT_WINDOW = 10_000
# The trigram index needs a run of this many literal characters.
MIN_INDEXED = 3
HEX = frozenset("0123456789abcdef")

# An artifact's place in the list: its (fetched_at, key).
Cursor = tuple[float, str]

_NEWEST_FIRST = "ORDER BY fetched_at DESC, key"
_OLDEST_FIRST = "ORDER BY fetched_at ASC, key DESC"
# Rows after / before a cursor in the list's order, written so the index range applies.
_AFTER = "fetched_at <= ? AND NOT (fetched_at = ? AND key <= ?)"
_BEFORE = "fetched_at >= ? AND NOT (fetched_at = ? AND key >= ?)"


@dataclass(frozen=True)
class Found:
    """A page of a search: its artifacts, how many match in all (None: more than COUNT_CAP),
    and whether only the newest SHORT_WINDOW artifacts were searched (a short needle)."""

    artifacts: list[Artifact]
    total: int | None
    windowed: bool = False


class TooDeep(ValueError):
    """An offset into a search past its first COUNT_CAP matches: page on by cursor."""


def cursor_of(artifact: Artifact) -> Cursor:
    return artifact.fetched_at, artifact.key


def _keyset(after: Cursor | None, before: Cursor | None) -> tuple[str, tuple, str, bool]:
    """(condition, its parameters, ORDER BY, whether the rows come oldest first)."""
    if after is not None and before is not None:
        raise ValueError("after and before do not go together")
    if after is not None:
        return _AFTER, (after[0], after[0], after[1]), _NEWEST_FIRST, False
    if before is not None:
        return _BEFORE, (before[0], before[0], before[1]), _OLDEST_FIRST, True
    return "1 = 1", (), _NEWEST_FIRST, False


def artifacts_page(
    conn: sqlite3.Connection,
    limit: int,
    *,
    offset: int = 0,
    after: Cursor | None = None,
    before: Cursor | None = None,
) -> list[Artifact]:
    """A page of the artifact list, newest first: `limit` rows after/before a cursor, or from
    an offset (which walks only the index, not the rows it skips)."""
    where, params, order, reverse = _keyset(after, before)
    # The page's keys from the covering index, then its rows: an OFFSET over full rows would
    # read every row it skips (990 ms for the last of 1,000,000 here).
    rows = conn.execute(
        f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE key IN"
        f" (SELECT key FROM artifacts WHERE {where} {order} LIMIT ? OFFSET ?) {order}",
        (*params, limit, offset),
    ).fetchall()
    found = [_artifact(row) for row in rows]
    return found[::-1] if reverse else found


def search(
    conn: sqlite3.Connection,
    needle: str,
    limit: int,
    *,
    offset: int = 0,
    after: Cursor | None = None,
    before: Cursor | None = None,
) -> Found:
    """A page of the artifacts matching needle (module docstring), newest first."""
    needle = needle.lower()
    if offset and offset + limit > COUNT_CAP:
        raise TooDeep(f"a search pages by offset through its first {COUNT_CAP} matches only")
    if not _indexable(needle):
        return _search_window(conn, needle, limit, offset, after, before)
    keys = _candidates(conn, needle)
    if len(keys) > COUNT_CAP:
        return Found(_walk(conn, needle, limit, offset, after, before), None)
    return Found(_page_of(_rows(conn, keys), limit, offset, after, before), len(keys))


def _indexable(needle: str) -> bool:
    """Whether the trigram index can narrow a LIKE for needle: a run of MIN_INDEXED characters
    that are not LIKE's wildcards."""
    run = 0
    for c in needle:
        run = 0 if c in "%_" else run + 1
        if run >= MIN_INDEXED:
            return True
    return False


def _sha_range(needle: str) -> tuple[str, str] | None:
    """The sha256 range a hex needle is a prefix of (an index range in any collation)."""
    if needle and len(needle) <= 64 and set(needle) <= HEX:
        return needle, needle + "g"
    return None


def _candidates(conn: sqlite3.Connection, needle: str) -> list[str]:
    """The keys matching needle, up to COUNT_CAP + 1 of them."""
    # The wildcards a needle may hold make the LIKE a superset; instr keeps it exact.
    keys = [
        row[0]
        for row in conn.execute(
            "SELECT u.key FROM artifact_urls_search s JOIN artifact_urls u ON u.id = s.rowid"
            " WHERE s.url LIKE ? AND instr(lower(u.url), ?) > 0 LIMIT ?",
            (f"%{needle}%", needle, COUNT_CAP + 1),
        )
    ]
    shas = _sha_range(needle)
    if shas is not None and len(keys) <= COUNT_CAP:
        keys += [
            row[0]
            for row in conn.execute(
                "SELECT key FROM artifacts WHERE sha256 >= ? AND sha256 < ? LIMIT ?",
                (*shas, COUNT_CAP + 1),
            )
        ]
    return list(dict.fromkeys(keys))


def _rows(conn: sqlite3.Connection, keys: list[str]) -> list[Artifact]:
    if not keys:
        return []
    marks = ", ".join("?" * len(keys))
    rows = conn.execute(f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE key IN ({marks})", keys)
    return [_artifact(row) for row in rows]


def _page_of(
    found: list[Artifact], limit: int, offset: int, after: Cursor | None, before: Cursor | None
) -> list[Artifact]:
    """A page of rows held in memory, in the list's order."""
    found.sort(key=lambda a: (-a.fetched_at, a.key))
    if after is not None:
        found = [a for a in found if (-a.fetched_at, a.key) > (-after[0], after[1])]
    elif before is not None:
        earlier = [a for a in found if (-a.fetched_at, a.key) < (-before[0], before[1])]
        return earlier[-limit:]
    return found[offset : offset + limit]


def _matches(needle: str) -> tuple[str, tuple]:
    """The exact match as an SQL condition over artifacts."""
    condition, params = "instr(lower(url), ?) > 0", (needle,)
    shas = _sha_range(needle)
    if shas is not None:
        condition, params = f"({condition} OR (sha256 >= ? AND sha256 < ?))", (*params, *shas)
    return condition, params


def _walk(
    conn: sqlite3.Connection,
    needle: str,
    limit: int,
    offset: int,
    after: Cursor | None,
    before: Cursor | None,
) -> list[Artifact]:
    """A page of a common needle's matches by walking the list in order (more than COUNT_CAP
    match, so a page is near)."""
    where, params, order, reverse = _keyset(after, before)
    match, match_params = _matches(needle)
    rows = conn.execute(
        f"SELECT {_ARTIFACT_COLUMNS} FROM artifacts WHERE {where} AND {match}"
        f" {order} LIMIT ? OFFSET ?",
        (*params, *match_params, limit, offset),
    ).fetchall()
    found = [_artifact(row) for row in rows]
    return found[::-1] if reverse else found


def _search_window(
    conn: sqlite3.Connection,
    needle: str,
    limit: int,
    offset: int,
    after: Cursor | None,
    before: Cursor | None,
) -> Found:
    """A needle the trigram index cannot narrow, matched (URL and sha256 prefix) against the
    newest SHORT_WINDOW artifacts only: a bounded read whatever the catalog holds."""
    where, params, order, reverse = _keyset(after, before)
    match, match_params = _matches(needle)
    window = (
        f"(SELECT {_ARTIFACT_COLUMNS} FROM artifacts {_NEWEST_FIRST} LIMIT {SHORT_WINDOW}) AS w"
    )
    (total,) = conn.execute(f"SELECT COUNT(*) FROM {window} WHERE {match}", match_params).fetchone()
    rows = conn.execute(
        f"SELECT {_ARTIFACT_COLUMNS} FROM {window} WHERE {where} AND {match}"
        f" {order} LIMIT ? OFFSET ?",
        (*params, *match_params, limit, offset),
    ).fetchall()
    found = [_artifact(row) for row in rows]
    return Found(found[::-1] if reverse else found, total, windowed=True)
