"""What the read path's fast path needs to answer a hit, named once.

`HitSource` is the interface the read path takes (withcache.web.blobs.HitServer): the host's
Cache implements it, and so does a serving worker's WorkerCache (withcache.web.worker), which
answers hits from its own index and forwards everything else to the host. Both get the shared
part from `KnownHits`: the in-memory index (withcache.index), the freshness check a hit must
pass, and the sync that hands the counted hits on and forgets the index when the catalog's
artifact rows changed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from withcache import catalog as cat
from withcache import freshness
from withcache.blobstore import BlobStore
from withcache.index import HitIndex, PendingHits
from withcache.keys import remembered_key


@dataclass(frozen=True)
class Hit:
    artifact: cat.Artifact
    path: str


class Tally(Protocol):
    """A counter that only goes up (a prometheus Counter, or a worker's byte count)."""

    def inc(self, amount: float = 1) -> None: ...


class HitSource(Protocol):
    """What the read path needs to answer a hit without the catalog."""

    @property
    def reactor(self) -> Any: ...

    @property
    def served_bytes(self) -> Tally: ...

    def cached(self, url: str) -> Hit | None: ...

    def count_hit(self, hit: Hit) -> None: ...

    def blob_changed(self) -> None: ...


def artifact_verdict(
    artifact: cat.Artifact, policy: freshness.Policy, now: float
) -> freshness.Verdict:
    """An artifact's freshness at now under policy (for the host and its serving workers)."""
    return freshness.verdict(
        freshness.decode(artifact.origin_headers),
        artifact.checked_at,
        policy.rule_for(artifact.url),
        policy,
        now,
    )


class KnownHits:
    """The index of artifacts served lately, and the checks and bookkeeping of a hit on it.

    Subclasses set `store`, `query`, `freshness_policy` and `_now` (a clock a test may replace)."""

    store: BlobStore
    query: str
    freshness_policy: freshness.Policy
    _now: Callable[[], float]

    def __init__(self) -> None:
        self.index = HitIndex()
        self._generation: int | None = None

    def key_for(self, url: str) -> str:
        """The cache key of an origin URL under this host's settings (raises InvalidURL)."""
        return remembered_key(url, self.query)

    def verdict(self, artifact: cat.Artifact) -> freshness.Verdict:
        """The artifact's freshness now, under this host's rules."""
        return artifact_verdict(artifact, self.freshness_policy, self._now())

    def fresh(self, artifact: cat.Artifact) -> bool:
        return not artifact.refresh and self.verdict(artifact).fresh

    def hit_of(self, artifact: cat.Artifact) -> Hit:
        return Hit(artifact, self.store.path_for(artifact.sha256))

    def cached(self, url: str) -> Hit | None:
        """The artifact for url if the index knows it and it is fresh, with no I/O at all; None
        means "ask the catalog". The caller checks the blob's size as it opens it, then calls
        count_hit, or blob_changed if the blob is not what the index says. Raises InvalidURL."""
        found = self.index.get(self.key_for(url))
        return None if found is None or not self.fresh(found) else self.hit_of(found)

    def count_hit(self, hit: Hit) -> None:
        self.index.count_hit(hit.artifact.key, self._now())

    def blob_changed(self) -> None:
        """A blob on disk is not what the index says (deleted or replaced under us): drop the
        index so the next lookup asks the catalog what is true now."""
        self.index.invalidate()

    async def sync_hits(self, deliver: Callable[[dict[str, PendingHits]], Awaitable[int]]) -> bool:
        """Hand the hits counted since the last sync to deliver, which answers the catalog's
        artifacts generation; forget the index if that moved. True if it did.

        If deliver fails the hits are kept for the next sync."""
        hits = self.index.take_hits()
        try:
            generation = await deliver(hits)
        except BaseException:
            self.index.merge_hits(hits)
            raise
        if generation == self._generation:
            return False
        self.index.invalidate()
        self._generation = generation
        return True
