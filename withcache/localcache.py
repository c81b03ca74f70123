"""The bounded local disk cache of hot blobs in front of an object store.

With `--store s3://…` the object store holds every blob and the data dir's `blobs/` holds local
copies of the ones served lately, so warm hits still go out with sendfile. This module only
keeps the books: which local copies there are, their sizes, when each was last used, and which
to drop when the copies exceed `--local-cache-bytes` (least recently used first). Dropping a
local copy never touches the catalog: the object store still has the bytes and the next hit
fetches them again. Pinned artifacts are not special here: a pin keeps the catalog row (and so
the object) from eviction under --max-bytes; its local copy is as re-fetchable as any other.

Thread-safe: hits touch entries on the reactor thread, fills and trims run in pool threads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable


class LocalCache:
    """LRU bookkeeping of the local copies under a byte limit (0: no limit)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._sizes)

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._sizes

    def load(self, entries: Iterable[tuple[str, int, float]]) -> None:
        """What is on disk at start: (digest, size, last use), in any order."""
        with self._lock:
            for sha256, size, _ in sorted(entries, key=lambda e: e[2]):
                self._put(sha256, size)

    def added(self, sha256: str, size: int) -> None:
        """A local copy was made (or found): it is the most recently used."""
        with self._lock:
            self._put(sha256, size)

    def touched(self, sha256: str) -> None:
        """A hit served the local copy."""
        with self._lock:
            if sha256 in self._sizes:
                self._sizes.move_to_end(sha256)

    def removed(self, sha256: str) -> None:
        with self._lock:
            size = self._sizes.pop(sha256, None)
            if size is not None:
                self.used -= size

    def victims(self, keep: str | None = None) -> list[str]:
        """The least recently used copies to drop to get under the limit (never keep)."""
        if not self.limit:
            return []
        with self._lock:
            excess = self.used - self.limit
            chosen = []
            for sha256, size in self._sizes.items():
                if excess <= 0:
                    break
                if sha256 == keep:
                    continue
                chosen.append(sha256)
                excess -= size
            return chosen

    def _put(self, sha256: str, size: int) -> None:
        old = self._sizes.pop(sha256, None)
        if old is not None:
            self.used -= old
        self._sizes[sha256] = size
        self.used += size


def default_limit(data_dir: str, fraction: float) -> int:
    """fraction of the size of the filesystem holding data_dir, in bytes."""
    st = os.statvfs(data_dir)
    return int(st.f_blocks * st.f_frsize * fraction)
