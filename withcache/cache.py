"""The domain facade the web layer and the admin CLI talk to: lookups, imports, listings.

It owns the rules that span the store and the catalog (commit a blob before its row; count a
GET hit but never a HEAD; record a miss) and takes `now` as an argument so tests can drive time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer, threads

from withcache import catalog as cat
from withcache._log import make_logger
from withcache.keys import cache_key
from withcache.store import Store

log = make_logger()


@dataclass(frozen=True)
class Settings:
    """Behaviour switches from the command line (see withcache.tap)."""

    keep_query: bool = False
    curate: bool = False
    workers: int = 2
    max_bytes: int = 0


@dataclass(frozen=True)
class Hit:
    artifact: cat.Artifact
    path: str


class Cache(service.Service):
    """Lookups and bookkeeping over one data directory, for code running on the reactor."""

    def __init__(
        self,
        store: Store,
        catalog: cat.Catalog,
        settings: Settings,
        *,
        reactor: Any,
        now: Callable[[], float],
    ):
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self._reactor = reactor
        self._now = now

    def key_for(self, url: str) -> str:
        """The cache key of an origin URL under this host's settings (raises InvalidURL)."""
        return cache_key(url, keep_query=self.settings.keep_query)

    async def lookup(self, url: str, *, count_hit: bool) -> Hit | None:
        """The cached artifact for url, or None after recording the miss."""
        key = self.key_for(url)
        found = await self.catalog.lookup(key, url, self._now(), count_hit)
        if found is None:
            return None
        return Hit(found, self.store.path_for(found.sha256))

    async def artifacts(self, limit: int = -1, offset: int = 0) -> list[cat.Artifact]:
        return await self.catalog.list_artifacts(limit, offset)

    async def misses(self, limit: int = -1, offset: int = 0) -> list[cat.Miss]:
        return await self.catalog.list_misses(limit, offset)

    def startService(self) -> None:
        super().startService()
        d = defer.ensureDeferred(self.recover())
        d.addErrback(lambda f: log.failure("start-up recovery failed", failure=f))

    async def recover(self) -> None:
        """Sweep tmp/ and blobs no row names: what a crash mid-fill can leave behind."""
        swept = await threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self.store.sweep_tmp
        )
        # On the database thread, so each blob is checked against the catalog under its lock.
        orphans = await self.catalog.run(
            lambda conn: self.store.sweep_orphans(lambda digest: cat.referenced(conn, digest))
        )
        log.info(
            "recovered data dir: {tmp} tmp files and {orphans} orphan blobs removed",
            tmp=swept,
            orphans=len(orphans),
        )


def import_file(
    store: Store,
    conn: Any,
    url: str,
    path: str,
    *,
    keep_query: bool,
    now: float,
    content_type: str | None = None,
) -> cat.Artifact:
    """Blocking: put a local file into the cache under an origin URL (for withcache-admin)."""
    key = cache_key(url, keep_query=keep_query)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    ingest = store.import_file(path)
    try:
        blob = ingest.blob
        assert blob is not None
        artifact = cat.Artifact(key, url, blob.sha256, blob.size, content_type, now)
        stale = cat.put_artifact(conn, artifact)
    finally:
        ingest.close()
    if stale is not None:
        store.delete(stale)
    return cat.get_artifact(conn, key) or artifact
