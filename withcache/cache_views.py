"""What the operator UI, the API and the scrubber ask of the Cache beyond lookups and fills.

These are the façade's named doors to its parts (download jobs, metrics, catalog queries, the
origin precheck), so the web layer and the scrubber never reach into `cache.downloads`,
`cache.metrics`, `cache.catalog` or the reactor. Cache inherits them (withcache.cache), and
with them implements withcache.scrub.ScrubTarget.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, threads

from withcache import catalog as cat
from withcache import events as ev
from withcache import listing, tokens
from withcache.origin_client import precheck_origin
from withcache.traffic import last_days

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from withcache.blobstore import BlobStore
    from withcache.downloads import DownloadManager, Job
    from withcache.metrics import Metrics


class CacheViews:
    """Named queries and actions for the web layer and the scrubber (mixed into Cache)."""

    catalog: cat.Catalog
    downloads: DownloadManager
    events: ev.EventLog
    metrics: Metrics
    settings: Any
    store: BlobStore
    _reactor: Any
    _now: Callable[[], float]

    # -- download jobs ---------------------------------------------------------------------

    def active_jobs(self) -> list[Job]:
        """Fills queued or running now."""
        return list(self.downloads.active_jobs())

    def active_job(self, key: str) -> Job | None:
        """The fill of key queued or running now, if any."""
        return self.downloads.active(key)

    async def job(self, job_id: int) -> cat.JobRow | None:
        """A fill by id: the live job if it is queued or running, else its row."""
        for live in self.downloads.active_jobs():
            if live.id == job_id:
                return live
        return await self.catalog.run(cat.get_job, job_id)

    # -- catalog reads ---------------------------------------------------------------------

    async def artifact(self, key: str) -> cat.Artifact | None:
        return await self.catalog.run(cat.get_artifact, key)

    async def artifacts(
        self,
        limit: int = -1,
        offset: int = 0,
        after: listing.Cursor | None = None,
        before: listing.Cursor | None = None,
    ) -> list[cat.Artifact]:
        """A page of artifacts, newest first: from an offset, or after/before a cursor
        (withcache.listing); every artifact without a limit."""
        if limit < 0:
            return await self.catalog.run(cat.list_artifacts)
        return await self.catalog.run(
            partial(listing.artifacts_page, limit=limit, offset=offset, after=after, before=before)
        )

    async def search_artifacts(
        self,
        needle: str,
        limit: int,
        offset: int = 0,
        after: listing.Cursor | None = None,
        before: listing.Cursor | None = None,
    ) -> listing.Found:
        """A page of artifacts whose URL contains needle or whose sha256 starts with it, and
        how many match (withcache.listing.search); raises listing.TooDeep."""
        return await self.catalog.run(
            partial(listing.search, needle=needle, limit=limit, offset=offset, after=after,
                    before=before)
        )  # fmt: skip

    async def artifact_by_sha256(self, sha256: str) -> cat.Artifact | None:
        return await self.catalog.run(cat.artifact_by_sha256, sha256)

    async def count_artifacts(self) -> int:
        return await self.catalog.run(cat.count_artifacts)

    async def query_events(
        self, action: str, actor: str, limit: int, offset: int, before: int | None = None
    ) -> tuple[list[ev.Event], int | None]:
        """A page of the audit log, filtered, and how many events match (None: more than
        events.COUNT_CAP); raises events.TooDeep (withcache.events.query)."""
        return await self.catalog.run(
            partial(ev.query, action=action, actor=actor, limit=limit, offset=offset,
                    before=before)
        )  # fmt: skip

    async def event_actors(self) -> list[str]:
        """Every actor the audit log names (the Events page's filter)."""
        return await self.catalog.run(ev.actors)

    async def traffic_days(self) -> list[tuple[str, int, int]]:
        """Hits, misses and bytes by day for the last 30 days (withcache.traffic)."""
        return await self.catalog.run(last_days, self._now())

    # -- API tokens ------------------------------------------------------------------------

    async def list_tokens(self) -> list[tokens.Token]:
        return await self.catalog.run(tokens.list_tokens)

    async def check_token(self, presented: str) -> tokens.Token | None:
        """The live token a bearer string names (stamping its use), else None."""
        return await self.catalog.run(tokens.check_token, presented, self._now())

    async def create_token(
        self, name: str, scopes: list[str], actor: ev.Actor
    ) -> tuple[tokens.Token, str]:
        """A new token and its secret (recording the event); raises tokens.TokenError."""
        made = await self.catalog.run(tokens.create_token, name, scopes, self._now())
        self.events.record(actor, "token.created", name, "ok", " ".join(made[0].scopes))
        return made

    async def revoke_token(self, name: str, actor: ev.Actor) -> bool:
        done = await self.catalog.run(tokens.revoke_token, name, self._now())
        if done:
            self.events.record(actor, "token.revoked", name)
        return done

    # -- metrics and origins ---------------------------------------------------------------

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """What /metrics exposes."""
        return self.metrics.registry

    def byte_totals(self) -> tuple[int, int]:
        """Bytes served to clients and bytes fetched from origins since this host started."""
        get = self.metrics.registry.get_sample_value
        served = get("withcache_served_bytes_total") or 0
        fetched = get("withcache_origin_fetched_bytes_total") or 0
        return int(served), int(fetched)

    async def precheck(self, url: str) -> None:
        """Raise RefusedOrigin now if a fill of url would be refused by the origin policy's
        address check (the UI's Add and the API's fills say so at once)."""
        await precheck_origin(self.settings.policy, url, self._reactor)

    # -- withcache.scrub.ScrubTarget ----------------------------------------------------------

    async def next_to_verify(self) -> tuple[str, int] | None:
        return await self.catalog.run(cat.next_to_verify)

    def verify_blob(
        self, sha256: str, size: int, pace: Callable[[int], None]
    ) -> defer.Deferred[bool]:
        """Re-hash a blob in the reactor's thread pool; pace is called with each chunk read."""
        pool = self._reactor.getThreadPool()
        return threads.deferToThreadPool(self._reactor, pool, self.store.verify, sha256, size, pace)

    async def mark_verified(self, sha256: str) -> None:
        await self.catalog.run(cat.set_verified, sha256, self._now())
