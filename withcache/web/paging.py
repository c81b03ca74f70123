"""The paging links of the operator UI's artifacts table (withcache.listing underneath).

Older/Newer links carry the cursor of the page's neighbour row, so the thousandth page costs what
the first does; the page number rides along for the "page N of M" line. A link without a cursor
(a bookmark, the page an action returns to) is read by page number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from withcache import listing
from withcache.web.api_json import cursor_of, decode_cursor

PAGE_SIZE = 50


def page_cursors(after: str, before: str) -> dict[str, listing.Cursor]:
    """{"after": cursor} or {"before": cursor} from a link's fields; {} when it has neither,
    both, or one that is not a cursor (then the page number rules)."""
    found = {}
    for name, raw in (("after", after), ("before", before)):
        try:
            found[name] = decode_cursor(raw)
        except ValueError:
            continue
    return found if len(found) == 1 else {}


@dataclass(frozen=True)
class ArtifactPage:
    """A page of the artifacts table and what its paging links need."""

    artifacts: list
    page: int
    total: int | None  # None: more than listing.COUNT_CAP matches
    cursors: dict[str, Any]
    windowed: bool = False

    def links(self, query: str) -> dict[str, Any]:
        """The template's paging context: where this page, the newer and older ones are."""
        pages = None if self.total is None else max(1, -(-self.total // PAGE_SIZE))
        first, last = (self.artifacts[0], self.artifacts[-1]) if self.artifacts else (None, None)
        full = len(self.artifacts) == PAGE_SIZE
        older = full and (pages is None or self.page < pages)

        def at(page: int, **cursor: Any) -> str:
            fields = {"q": query, "page": page if page > 1 else ""}
            fields.update({k: cursor_of(*v) for k, v in cursor.items()})
            return urlencode({k: v for k, v in fields.items() if v})

        return {
            "page": self.page,
            "pages": pages,
            "matches": self.total,
            "more_than": listing.COUNT_CAP,
            "windowed": self.windowed and listing.SHORT_WINDOW,
            "this_query": at(self.page, **self.cursors),
            "back": {
                "q": query,
                "page": self.page,
                **{k: cursor_of(*v) for k, v in self.cursors.items()},
            },
            "newer_link": _link(
                at(self.page - 1, before=listing.cursor_of(first))
                if first and self.page > 2
                else at(1)
            ),
            "older_link": _link(at(self.page + 1, after=listing.cursor_of(last)) if last else ""),
            "has_newer": self.page > 1,
            "has_older": older,
        }


def _link(query: str) -> str:
    return f"/?{query}" if query else "/"
