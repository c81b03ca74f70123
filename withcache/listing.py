"""Pages of the artifact list and of a search, at a cost that does not grow with the catalog.

The list is newest first (fetched_at descending, ties by key). A page is found by a cursor — the
(fetched_at, key) of the row before it (`after`) or after it (`before`) — which is a walk of the
artifacts_listed index from that row: the last page costs what the first does. An `offset` still
works, through the same index without reading the rows it skips, and from whichever end of the
list is nearer, up to MAX_OFFSET rows deep (an OFFSET of a million index entries is ~300 ms on
PostgreSQL here).

A search matches a substring of the URL in any case, or a sha256 prefix. Needles of 3 characters
or more go through a trigram index (migration 010_scale): on SQLite an FTS5 trigram index finds
the candidates, each checked exactly (% and _ are literal); on PostgreSQL the newest matches are
asked for in order, and the planner either reads pg_trgm's index (a rare needle) or walks the
list (a common one, where a page is near). When at most COUNT_CAP rows match, they are sorted
and paged in memory and their total is exact; when more match, the list itself is walked with
the filter (a page needs about limit / share-of-matches rows) and the total is "more than
COUNT_CAP". A needle shorter than 3 characters has no trigrams: it is matched against the newest
SHORT_WINDOW artifacts only, and the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, text, true

from withcache.catalog import _ARTIFACT_COLUMNS, _NEWEST_FIRST, Artifact, _artifact, count_artifacts
from withcache.catalog_db import SQLITE
from withcache.tables import artifacts

# A search counts its matches up to this many; past it, "more than COUNT_CAP".
COUNT_CAP = 1000
# A search shorter than MIN_INDEXED characters looks at this many of the newest artifacts.
SHORT_WINDOW = 10_000
# An offset reaches this many rows into the list from either end; past that, a cursor does.
MAX_OFFSET = 100_000
# A trigram index needs a run of this many literal characters.
MIN_INDEXED = 3
HEX = frozenset("0123456789abcdef")

# An artifact's place in the list: its (fetched_at, key).
Cursor = tuple[float, str]

a = artifacts.c
_OLDEST_FIRST = (a.fetched_at.asc(), a.key.desc())
# The trigram index's candidates on SQLite: LIKE on the FTS5 table (the needle's own % and _
# make it a superset, which instr then narrows to the exact matches).
_FTS_CANDIDATES = text(
    "SELECT u.key FROM artifact_urls_search s JOIN artifact_urls u ON u.id = s.rowid"
    " WHERE s.url LIKE :pattern AND instr(lower(u.url), :needle) > 0 LIMIT :cap"
)


@dataclass(frozen=True)
class Found:
    """A page of a search: its artifacts, how many match in all (None: more than COUNT_CAP),
    and whether only the newest SHORT_WINDOW artifacts were searched (a short needle)."""

    artifacts: list[Artifact]
    total: int | None
    windowed: bool = False


class TooDeep(ValueError):
    """An offset into a search past its first COUNT_CAP matches, or into the list more than
    MAX_OFFSET rows from both its ends: page on by cursor."""


def cursor_of(artifact: Artifact) -> Cursor:
    return artifact.fetched_at, artifact.key


def _keyset(after: Cursor | None, before: Cursor | None, table: Any = a) -> tuple[Any, Any, bool]:
    """(condition, order, whether the rows come oldest first) for rows after/before a cursor,
    written so an index range applies."""
    if after is not None and before is not None:
        raise ValueError("after and before do not go together")
    newest = (table.fetched_at.desc(), table.key)
    if after is not None:
        at, key = after
        return (
            and_(table.fetched_at <= at, ~and_(table.fetched_at == at, table.key <= key)),
            newest,
            False,
        )
    if before is not None:
        at, key = before
        condition = and_(table.fetched_at >= at, ~and_(table.fetched_at == at, table.key >= key))
        return condition, (table.fetched_at.asc(), table.key.desc()), True
    return true(), newest, False


def artifacts_page(
    conn: Connection,
    limit: int,
    *,
    offset: int = 0,
    after: Cursor | None = None,
    before: Cursor | None = None,
) -> list[Artifact]:
    """A page of the artifact list, newest first: `limit` rows after/before a cursor, or from
    an offset. An offset walks the index only (not the rows it skips), from whichever end of
    the list is nearer; one more than MAX_OFFSET rows from both ends raises TooDeep."""
    if offset > MAX_OFFSET and after is None and before is None:
        return _from_the_end(conn, limit, offset)
    where, order, reverse = _keyset(after, before)
    # The page's keys from the covering index, then its rows: an OFFSET over whole rows reads
    # every row it skips (990 ms for the last of 1,000,000 on SQLite).
    keys = select(a.key).where(where).order_by(*order).limit(limit).offset(offset)
    rows = conn.execute(select(*_ARTIFACT_COLUMNS).where(a.key.in_(keys)).order_by(*order))
    found = [_artifact(row) for row in rows]
    return found[::-1] if reverse else found


def _from_the_end(conn: Connection, limit: int, offset: int) -> list[Artifact]:
    """A deep page by offset, counted from the oldest artifact (the totals know how many)."""
    total = count_artifacts(conn)
    if offset >= total:
        return []
    skip = total - offset - limit  # rows older than the page
    if skip > MAX_OFFSET:
        raise TooDeep(
            f"offset {offset} is more than {MAX_OFFSET} rows from both ends of the list:"
            " page by cursor"
        )
    keys = select(a.key).order_by(*_OLDEST_FIRST).limit(limit + min(0, skip)).offset(max(0, skip))
    rows = conn.execute(select(*_ARTIFACT_COLUMNS).where(a.key.in_(keys)).order_by(*_NEWEST_FIRST))
    return [_artifact(row) for row in rows]


def search(
    conn: Connection,
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
    """Whether a trigram index can narrow a LIKE for needle: a run of MIN_INDEXED characters
    that are not LIKE's wildcards."""
    run = 0
    for c in needle:
        run = 0 if c in "%_\\" else run + 1
        if run >= MIN_INDEXED:
            return True
    return False


def _sha_prefix(needle: str) -> Any:
    """The condition for sha256s needle is a prefix of (an index range), or None."""
    if needle and len(needle) <= 64 and set(needle) <= HEX:
        return and_(a.sha256 >= needle, a.sha256 < needle + "g")
    return None


def _escaped(needle: str) -> str:
    return needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _candidates(conn: Connection, needle: str) -> list[str]:
    """The keys matching needle, up to COUNT_CAP + 1 of them, through the trigram index."""
    cap = COUNT_CAP + 1
    if conn.dialect.name != SQLITE:
        # The newest matches, in order: PostgreSQL's planner walks artifacts_listed when its
        # statistics say the needle is common (a page is near) and reads pg_trgm's index when
        # it is rare, so neither a common nor a rare needle reads every row.
        found = conn.execute(
            select(a.key).where(_matches(conn, needle)).order_by(*_NEWEST_FIRST).limit(cap)
        )
        return list(found.scalars())
    params = {"pattern": f"%{needle}%", "needle": needle, "cap": cap}
    keys = list(conn.execute(_FTS_CANDIDATES, params).scalars())
    shas = _sha_prefix(needle)
    if shas is not None and len(keys) <= COUNT_CAP:
        keys += conn.execute(select(a.key).where(shas).limit(cap)).scalars().all()
    return list(dict.fromkeys(keys))


def _rows(conn: Connection, keys: list[str]) -> list[Artifact]:
    if not keys:
        return []
    return [
        _artifact(row) for row in conn.execute(select(*_ARTIFACT_COLUMNS).where(a.key.in_(keys)))
    ]


def _page_of(
    found: list[Artifact], limit: int, offset: int, after: Cursor | None, before: Cursor | None
) -> list[Artifact]:
    """A page of rows held in memory, in the list's order."""
    found.sort(key=lambda x: (-x.fetched_at, x.key))
    if after is not None:
        found = [x for x in found if (-x.fetched_at, x.key) > (-after[0], after[1])]
    elif before is not None:
        earlier = [x for x in found if (-x.fetched_at, x.key) < (-before[0], before[1])]
        return earlier[-limit:]
    return found[offset : offset + limit]


def _matches(conn: Connection, needle: str, table: Any = a) -> Any:
    """The exact match as a condition: the URL holds needle in any case (% and _ literal), or
    the sha256 starts with it. ILIKE on PostgreSQL, where pg_trgm's statistics estimate it."""
    if conn.dialect.name == SQLITE:
        condition = func.lower(table.url).contains(needle, autoescape=True)
    else:
        condition = table.url.ilike(f"%{_escaped(needle)}%", escape="\\")
    if needle and len(needle) <= 64 and set(needle) <= HEX:
        condition = or_(condition, and_(table.sha256 >= needle, table.sha256 < needle + "g"))
    return condition


def _walk(
    conn: Connection,
    needle: str,
    limit: int,
    offset: int,
    after: Cursor | None,
    before: Cursor | None,
) -> list[Artifact]:
    """A page of a common needle's matches by walking the list in order (more than COUNT_CAP
    match, so a page is near)."""
    where, order, reverse = _keyset(after, before)
    rows = conn.execute(
        select(*_ARTIFACT_COLUMNS)
        .where(where, _matches(conn, needle))
        .order_by(*order)
        .limit(limit)
        .offset(offset)
    )
    found = [_artifact(row) for row in rows]
    return found[::-1] if reverse else found


def _search_window(
    conn: Connection,
    needle: str,
    limit: int,
    offset: int,
    after: Cursor | None,
    before: Cursor | None,
) -> Found:
    """A needle a trigram index cannot narrow, matched (URL and sha256 prefix) against the
    newest SHORT_WINDOW artifacts only: a bounded read whatever the catalog holds."""
    window = select(*_ARTIFACT_COLUMNS).order_by(*_NEWEST_FIRST).limit(SHORT_WINDOW).subquery("w")
    w = window.c
    match = _matches(conn, needle, w)
    total = conn.execute(select(func.count()).select_from(window).where(match)).scalar_one()
    where, order, reverse = _keyset(after, before, w)
    rows = conn.execute(
        select(window).where(where, match).order_by(*order).limit(limit).offset(offset)
    )
    found = [_artifact(row) for row in rows]
    return Found(found[::-1] if reverse else found, int(total), windowed=True)
