"""The hit path's memory: key → artifact for recently served keys, and GET hits not yet written.

A hit answered from here costs no database round-trip. The index is a cache of the catalog, not
a copy: a key it does not know is looked up in the catalog (which also records misses), and any
change to the artifact rows (a fill, a delete, a quarantine here; `withcache-admin` in another
process, noticed through the catalog's artifacts generation, which hit counts do not move)
empties it, so a stale entry lives at most until the next sync. Hit counts add up here and are
written in one transaction per sync, so a crash loses at most one sync interval of hit counts,
never an artifact.
"""

from __future__ import annotations

from dataclasses import dataclass

from withcache.catalog import Artifact

# Far above any lab's catalog; a bound so the index can never grow without one.
MAX_ENTRIES = 200_000


@dataclass
class PendingHits:
    count: int
    last_at: float


class HitIndex:
    """Key → artifact, with a generation that lets a slow catalog read know it is out of date."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self._entries: dict[str, Artifact] = {}
        self._pending: dict[str, PendingHits] = {}
        self._max_entries = max_entries
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Artifact | None:
        return self._entries.get(key)

    def remember(self, artifact: Artifact, generation: int) -> None:
        """Keep an artifact read from the catalog, unless the catalog changed since the read
        began (the row may already be gone)."""
        if generation != self.generation:
            return
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[artifact.key] = artifact

    def invalidate(self) -> None:
        """Forget every entry: the catalog's artifact rows changed."""
        self.generation += 1
        self._entries.clear()

    def count_hit(self, key: str, now: float) -> None:
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = PendingHits(1, now)
        else:
            pending.count += 1
            pending.last_at = now

    def take_hits(self) -> dict[str, PendingHits]:
        """The hits counted since the last call, handed over for writing."""
        taken, self._pending = self._pending, {}
        return taken

    def merge_hits(self, hits: dict[str, PendingHits]) -> None:
        """Add hits counted elsewhere (a serving worker), or put back hits whose write failed
        so the next sync tries again."""
        for key, pending in hits.items():
            mine = self._pending.get(key)
            if mine is None:
                self._pending[key] = pending
            else:
                mine.count += pending.count
                mine.last_at = max(mine.last_at, pending.last_at)
