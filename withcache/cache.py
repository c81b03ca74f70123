"""The domain facade the web layer and the admin CLI talk to.

It owns the rules that span the store, the catalog and the download manager: commit a blob
before its row; count a GET hit but never a HEAD; record a miss and, unless curating, queue a
fill; make room under --max-bytes; hand a key whose fill is under way to its stream (and let a
miss wait a moment for the fill's headers, so the first client streams too), or, when another
host on the catalog is filling it, name that host (FilledElsewhere). It takes the
reactor, the fetcher and `now` as arguments so tests can drive it with a Clock and a stub HTTP
client.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

from sqlalchemy.exc import OperationalError
from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet import defer, task, threads
from twisted.python.failure import Failure

from withcache import catalog as cat
from withcache import datadir, freshness, leases
from withcache._log import make_logger
from withcache.blobstore import BlobStore, ObjectMissing, RemoteBlobStore
from withcache.cache_views import CacheViews
from withcache.downloads import DownloadManager, Job
from withcache.events import Actor, EventLog
from withcache.fetcher import Fetcher
from withcache.fillstream import FillStream
from withcache.freshness import NotCacheable
from withcache.hits import Hit, KnownHits, Tally
from withcache.hits import artifact_verdict as artifact_verdict  # withcache-admin's, too
from withcache.index import PendingHits
from withcache.jobs import ACTIVE, JobState
from withcache.keys import DEFAULT_QUERY
from withcache.leases import LEASE, Identity, LeaseLost
from withcache.logs import redact_url
from withcache.metrics import Metrics
from withcache.policy import OriginPolicy
from withcache.revalidation import FAILED, NOT_MODIFIED, Revalidations
from withcache.store import Ingest, Store
from withcache.storefill import StoreFills
from withcache.writer import ThreadedWriter

log = make_logger()

# A miss of a key whose fill failed this recently does not queue another fill by itself.
RETRY_FAILED_AFTER = 600.0
# How often batched hit counts are written and the catalog is checked for other writers; a
# crash loses at most this much of hit counting, and withcache-admin's changes show this late.
INDEX_SYNC_INTERVAL = 1.0
# How long a miss waits for a fill's origin headers so its client can stream: well inside the
# shims' 3-second probe (curl --max-time 3, wget --timeout=3), with room for the round trip.
STREAM_WAIT = 1.5


P = ParamSpec("P")
T = TypeVar("T")


def to_completion(operation: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, defer.Deferred[T]]:
    """An operation that, once started, runs to its end even if its caller stops waiting.

    Klein cancels a route's Deferred when the client hangs up. Cancelling the caller's Deferred
    here only stops the wait: a miss is still recorded and its fill queued, a deleted row still
    takes its blob and the index with it. A failure nobody waits for any more is logged.
    """

    @functools.wraps(operation)
    def run(*args: P.args, **kwargs: P.kwargs) -> defer.Deferred[T]:
        caller: defer.Deferred[T] = defer.Deferred()

        def relay(result: Any) -> None:
            if not caller.called:
                if isinstance(result, Failure):
                    caller.errback(result)
                else:
                    caller.callback(result)
            elif isinstance(result, Failure):
                log.failure("{what} failed after its caller left", result, what=operation.__name__)

        defer.ensureDeferred(operation(*args, **kwargs)).addBoth(relay)
        return caller

    return run


@dataclass(frozen=True)
class Settings:
    """Behaviour switches from the command line (see withcache.tap)."""

    query: str = DEFAULT_QUERY  # the query mode of cache keys: signed, keep or drop
    curate: bool = False
    workers: int = 2
    max_bytes: int = 0
    max_queued: int = 100
    fills_per_client: int = 10
    stream_wait: float = STREAM_WAIT  # 0: a miss never waits (a servable fill still streams)
    lease: float = LEASE  # seconds a fill's lease lasts unless renewed (withcache.leases)
    policy: OriginPolicy = field(default_factory=OriginPolicy)
    freshness: freshness.Policy = field(default_factory=freshness.Policy)


@dataclass(frozen=True)
class Streaming:
    """A key whose fill is under way and servable: its bytes follow the fill's progress."""

    stream: FillStream
    # Set when the fill is a copy from the object store (withcache.storefill) of this artifact.
    artifact: cat.Artifact | None = None


@dataclass(frozen=True)
class FilledElsewhere:
    """A key another host on the catalog is filling: its host id, and the URL it serves its
    read path on (from the lease row; None when it advertises none)."""

    owner: str
    url: str | None


@dataclass(frozen=True)
class Stats:
    artifacts: int
    bytes: int
    capacity: int
    hits: int
    misses: int
    bytes_saved: int
    queued: int
    running: int


class Cache(KnownHits, CacheViews, service.MultiService):
    """Lookups, fills and bookkeeping over one data directory, for code on the reactor.

    It is the read path's HitSource (withcache.hits), as a serving worker's WorkerCache is."""

    def __init__(
        self,
        store: BlobStore,
        catalog: cat.Catalog,
        settings: Settings,
        *,
        reactor: Any,
        now: Callable[[], float],
        fetcher: Fetcher | None = None,
        metrics: Metrics | None = None,
        events: EventLog | None = None,
        identity: Identity | None = None,
    ):
        service.MultiService.__init__(self)
        KnownHits.__init__(self)
        # The audit log of state changes (withcache.events); each change below records one row.
        self.events = events or EventLog(catalog, now)
        self.metrics = metrics or Metrics()
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.query = settings.query
        self.freshness_policy = settings.freshness
        self.fetcher = fetcher
        self._reactor = reactor
        self._now = now
        self.downloads = DownloadManager(
            catalog,
            self._fill,
            reactor=reactor,
            workers=settings.workers,
            now=now,
            metrics=self.metrics,
            max_queued=settings.max_queued,
            per_client=settings.fills_per_client,
            events=self.events,
            identity=identity,
            lease=settings.lease,
        )
        self.downloads.setServiceParent(self)
        # Hits of blobs whose home is a remote store and that have no local copy here.
        self.store_fills: StoreFills | None = None
        if store.remote:
            self.store_fills = StoreFills(
                cast(RemoteBlobStore, store),
                reactor,
                on_bad_object=self._bad_object,
                metrics=self.metrics,
            )
            self.store_fills.setServiceParent(self)
            local = getattr(store, "local", None)
            if local is not None:
                self.metrics.local_copy_bytes.set_function(lambda: local.used)
        self.revalidations = Revalidations(
            fetcher,
            catalog,
            self._refill,
            reactor=reactor,
            now=now,
            metrics=self.metrics,
            on_change=self.index.invalidate,
        )
        self._quarantining: set[str] = set()
        # Set first thing when stopping: sweeps and blob deletions in other threads stop at the
        # next file. What they leave is what a crash would leave, swept at the next start.
        self._stopping = threading.Event()
        sync = TimerService(INDEX_SYNC_INTERVAL, self._sync_tick)
        sync.clock = reactor
        sync.setServiceParent(self)
        self.metrics.capacity.set(settings.max_bytes)
        for state in ACTIVE:
            self.metrics.count_jobs(state, partial(self._count_jobs, state))
        self.metrics.streaming.set_function(self._count_streaming)

    def _count_jobs(self, state: str) -> int:
        return sum(1 for job in self.downloads.active_jobs() if job.state == state)

    def _count_streaming(self) -> int:
        copies = 0 if self.store_fills is None else self.store_fills.readers()
        return copies + sum(
            job.stream.readers for job in self.downloads.active_jobs() if job.stream
        )

    @property
    def served_bytes(self) -> Tally:
        return self.metrics.served_bytes

    def count_hit(self, hit: Hit) -> None:
        super().count_hit(hit)
        self.metrics.hits.inc()
        self.store.touch(hit.artifact.sha256)

    def record_remote_hits(self, hits: dict[str, PendingHits], served: int) -> None:
        """Hits and body bytes a serving worker process counted (see withcache.web.workers)."""
        self.index.merge_hits(hits)
        for key in hits:
            if (known := self.index.get(key)) is not None:
                self.store.touch(known.sha256)
        self.metrics.hits.inc(sum(p.count for p in hits.values()))
        self.metrics.served_bytes.inc(served)

    @to_completion
    async def lookup(
        self, url: str, *, count_hit: bool, client: str | None = None
    ) -> Hit | Streaming | FilledElsewhere | None:
        """The cached artifact for url; else its fill in progress, once servable; else the host
        filling it, if that is another; or None after recording the miss (and queueing a fill
        on behalf of the client address, if given, within its share of the queue). A miss with
        a fill under way here waits up to settings.stream_wait for the fill's headers."""
        hit = self.cached(url)
        if hit is not None:
            if _size_on_disk(hit.path) == hit.artifact.size:
                if count_hit:
                    self.count_hit(hit)
                return hit
            self.blob_changed()
        key = self.key_for(url)
        streaming = self._streaming(key, count_hit)
        if streaming is not None:
            return streaming
        remote = self.downloads.elsewhere(key)
        if remote is not None:
            return _filled_elsewhere(remote)
        generation = self.index.generation
        found = await self.catalog.run(cat.lookup, key, url, self._now(), False)
        if found is not None:
            path = self.store.path_for(found.sha256)
            local = _size_on_disk(path) == found.size
            if local or self.store_fills is not None:
                if local:
                    self.index.remember(found, generation)
                hit = Hit(found, path)
                if self.fresh(found) or await self._usable_when_stale(url, hit, client):
                    if not local:
                        # Its home is the object store: stream it in (withcache.storefill).
                        return await self._from_store(url, hit, count_hit)
                    if count_hit:
                        self.count_hit(hit)
                    return hit
                # Its origin has other bytes (now being fetched: stream them if that starts
                # in time) or could not say so in time.
                self.metrics.misses.inc()
                return await self._wait_for_stream(key)
            # A cheap check on every hit: a truncated or missing blob is never served as good.
            bad = defer.ensureDeferred(self.quarantine(found.sha256, "blob size on disk is wrong"))
            bad.addErrback(lambda f: log.failure("could not quarantine {sha}", f, sha=found.sha256))
        self.metrics.misses.inc()
        if self.downloads.active(key) is None:
            remote = await self._fill_or_find(url, key, client, absent=found is None)
            if remote is not None:
                if remote.elsewhere:
                    return _filled_elsewhere(remote)
                return await self._filled_meanwhile(url, key, count_hit)
        return await self._wait_for_stream(key)

    async def _fill_or_find(
        self, url: str, key: str, client: str | None, absent: bool
    ) -> Job | None:
        """Queue a fill of a miss if this host auto-fills it; another host's job filling key
        (which the claim found, or the catalog names), if there is one; or, for a miss that
        found no artifact (absent), a COMPLETED job if another host committed one since."""
        try:
            if self._should_auto_fill(url, key):
                job = await self.downloads.enqueue(url, key, "auto", client, absent=absent)
                filled = job.id is None and job.state == JobState.COMPLETED
                return job if job.elsewhere or filled else None
            return await self.downloads.holder(key)
        except Exception:
            log.failure("could not queue a fill of {url}", url=redact_url(url))
            return None

    async def _filled_meanwhile(
        self, url: str, key: str, count_hit: bool
    ) -> Hit | Streaming | None:
        """The artifact another host committed between this miss's lookup and its claim (so
        it is not fetched twice); None if it is not there to serve after all."""
        found = await self.catalog.run(cat.get_artifact, key)
        if found is None:
            return None
        hit = self.hit_of(found)
        if _size_on_disk(hit.path) == found.size:
            if count_hit:
                self.count_hit(hit)
            return hit
        if self.store_fills is not None:
            return await self._from_store(url, hit, count_hit)
        return None

    def _streaming(self, key: str, count_hit: bool) -> Streaming | None:
        """The servable stream of key's fill in progress, if any; a GET of it counts a hit
        (written on the artifact once the fill has committed it)."""
        job = self.downloads.active(key)
        stream = None if job is None else job.stream
        if stream is None or not stream.servable or stream.ended:
            return None
        if count_hit:
            stream.hits += 1
            self.metrics.hits.inc()
        return Streaming(stream)

    async def _wait_for_stream(self, key: str) -> Streaming | FilledElsewhere | None:
        """Key's fill as soon as its headers are in, if that is within settings.stream_wait;
        else None (the client falls through to the origin, as before streaming). A fill whose
        claim finds another host filling the key ends the wait with that host."""
        job = self.downloads.active(key)
        if job is None or self.settings.stream_wait <= 0:
            return None
        stream = self.stream_of(job)
        # The job's end also ends the wait (one cancelled while queued never becomes servable).
        finished = self.downloads.wait(job).addCallback(lambda _: False)
        timer = task.deferLater(self._reactor, self.settings.stream_wait, lambda: False)
        # The first to fire wins; race cancels the others (the timer's call, our waits).
        _which, ok = await defer.race([stream.when_servable(), finished, timer])
        if job.elsewhere:
            return _filled_elsewhere(job)
        return Streaming(stream) if ok and not stream.ended else None

    def stream_of(self, job: Job) -> FillStream:
        """The stream a job's fill publishes its progress on (made on first use)."""
        if job.stream is None:
            job.stream = FillStream(job.key)
        return job.stream

    async def _from_store(self, url: str, hit: Hit, count_hit: bool) -> Hit | Streaming | None:
        """A hit with no local copy: the object store's bytes as they land locally, once the
        GET answers (within stream_wait, at least a second). A missing object drops its rows
        and, unless curating, refills it; a store that cannot answer makes this a miss."""
        assert self.store_fills is not None
        artifact = hit.artifact
        fill = self.store_fills.start(artifact)
        if await fill.servable(self._reactor, max(self.settings.stream_wait, 1.0)):
            if count_hit:
                self.count_hit(hit)
            return Streaming(fill.stream, artifact)
        if fill.stream.size is not None and _size_on_disk(hit.path) == artifact.size:
            if count_hit:
                self.count_hit(hit)
            return hit  # it was quick: the copy is local already
        self.metrics.misses.inc()
        if isinstance(fill.failure, ObjectMissing):
            # Its rows go (_bad_object), so the miss is the key's, and a refill is queued.
            await self.catalog.run(cat.record_miss, artifact.key, url, self._now())
        return None

    def _bad_object(self, sha256: str, why: str) -> None:
        """The object store has no object for a digest the catalog names, or wrong bytes:
        take it out of service as a bad local blob would be (rows dropped, refill queued)."""
        bad = defer.ensureDeferred(self.quarantine(sha256, why))
        bad.addErrback(lambda f: log.failure("could not quarantine {sha}", f, sha=sha256))

    async def _usable_when_stale(self, url: str, hit: Hit, client: str | None) -> bool:
        """Revalidate a stale artifact (one revalidation per key, waited for at most
        --revalidate-wait); whether it may be served now: confirmed by the origin, or stale
        within what the origin (or the operator, for an origin that fails) allows."""
        verdict = self.verdict(hit.artifact)
        if self.downloads.active(hit.artifact.key):
            # Its new version is being fetched already: nothing to ask the origin.
            return verdict.may_serve_stale(self._now(), origin_failed=False)
        outcome = await self.revalidations.wait(
            url, hit.artifact, client, self.settings.freshness.revalidate_wait
        )
        if outcome == NOT_MODIFIED:
            return True
        return verdict.may_serve_stale(self._now(), origin_failed=outcome == FAILED)

    async def _refill(
        self, url: str, artifact: cat.Artifact, client: str | None, by_operator: bool
    ) -> None:
        """The origin has other bytes for a stored artifact (or nothing to validate them
        with): fetch them as a new version, which replaces the old when it is complete."""
        if by_operator:
            await self.downloads.enqueue(url, artifact.key, "operator")
            return
        if self.settings.curate or self.fetcher is None:
            # The operator approves each fill: it shows as a miss to download again.
            await self.catalog.run(cat.record_miss, artifact.key, url, self._now())
            return
        await self.downloads.enqueue(url, artifact.key, "auto", client)

    @to_completion
    async def refresh(self, key: str) -> str | None:
        """Revalidate an artifact now (the operator's "Refresh now"); the outcome
        (withcache.revalidation's NOT_MODIFIED, CHANGED or FAILED), None if there is none."""
        artifact = await self.catalog.run(cat.get_artifact, key)
        if artifact is None:
            return None
        return await self.revalidations.wait(artifact.url, artifact, None, None, by_operator=True)

    def _sync_tick(self) -> defer.Deferred:
        d = defer.ensureDeferred(self.sync_index())
        d.addErrback(self._sync_failed)
        return d

    def _sync_failed(self, failure: Any) -> None:
        if failure.check(OperationalError):
            # A full disk, say: expected to pass, and the hits wait in memory meanwhile.
            log.warn("could not write hit counts yet: {error}", error=str(failure.value))
        else:
            log.failure("could not write hit counts", failure)

    async def sync_index(self) -> None:
        """Write the hits counted in memory; forget the index and refresh the totals gauges if
        the artifact rows changed since the last sync (by another process, the admin CLI, say)."""

        async def write(hits: dict[str, PendingHits]) -> int:
            batch = [(key, p.count, p.last_at) for key, p in hits.items()]
            return await self.catalog.run(cat.add_hits, batch)

        if await self.sync_hits(write):
            # Another process (withcache-admin import, rm) may have changed what is held: the
            # gauges follow, as the dashboard does (it reads the catalog on every poll).
            await self.refresh_totals()

    def _should_auto_fill(self, url: str, key: str) -> bool:
        if self.settings.curate or self.fetcher is None or self.downloads.active(key):
            return False
        if not self.settings.policy.auto_fetch_allowed(urlsplit(url).hostname or ""):
            return False
        now = self._now()
        if self.downloads.uncacheable_since(key, now - self.settings.freshness.uncacheable_for):
            return False
        return not self.downloads.failed_since(key, now - RETRY_FAILED_AFTER)

    @to_completion
    async def add(self, url: str, actor: Actor | None = None) -> Job:
        """Queue a fill of url on an operator's say-so (pre-seed); works when curating too."""
        return await self.downloads.enqueue(url, self.key_for(url), "operator", actor=actor)

    @to_completion
    async def add_miss(self, key: str, actor: Actor | None = None) -> Job | None:
        """Queue a fill of a recorded miss (curate mode's "Download"), by its key: the UI never
        holds the URL, whose query may carry a signature. None if no such miss."""
        miss = await self.catalog.run(cat.get_miss, key)
        if miss is None:
            return None
        return await self.downloads.enqueue(
            miss.url, self.key_for(miss.url), "operator", actor=actor
        )

    async def _fill(self, job: Job) -> None:
        if self.fetcher is None:
            raise RuntimeError("this host has no fetcher")
        stream = self.stream_of(job)
        try:
            ingest, reader = await self._new_ingest()
            stream.attach(reader)
            try:
                await self._fill_into(job, ingest, stream)
            except BaseException as e:
                # Readers are cut off at once (before the temp file goes), never left with a
                # body that looks whole.
                stream.fail(str(e) or type(e).__name__)
                raise
            finally:
                # Uncommitted bytes (gigabytes, maybe) are deleted in a thread; a committed
                # blob's digest lock was let go as soon as its row was written (in _fill_into).
                await self._close_ingest(ingest)
        finally:
            stream.close()  # fails the stream if nothing else ended it (no ingest, say)

    async def _new_ingest(self) -> tuple[Ingest, int]:
        """An ingest and a read-only descriptor of its temp file (for streaming readers), made
        in a thread (it creates and locks a file). A Deferred of our own: a fill cancelled
        meanwhile stops waiting, and the ingest, when it comes, is thrown away."""
        made = self._in_thread(_ingest_and_reader, self.store)
        waiting: defer.Deferred = defer.Deferred()

        def arrived(result: Any) -> Any:
            if not waiting.called:
                waiting.callback(result)
            elif isinstance(result, tuple):
                os.close(result[1])
                return self._in_thread(result[0].close)
            return None

        made.addBoth(arrived)
        return await waiting

    async def _fill_into(self, job: Job, ingest: Ingest, stream: FillStream) -> None:
        assert self.fetcher is not None
        writer = ThreadedWriter(ingest, self._reactor, listener=stream)
        fetched = self.metrics.fetched_bytes

        def progress(done: int, total: int | None) -> None:
            if done > job.bytes_done:
                fetched.inc(done - job.bytes_done)
            job.progress(done, total)

        def headers_in(total: int | None, content_type: str | None, headers: Any) -> None:
            # The origin's response is in and no body byte written: from here on clients
            # stream this fill (the stream ignores a repeat for a resumed attempt).
            stream.headers(total, content_type)

        try:
            result = await self.fetcher.fetch(job.url, writer, progress, headers_in)
        except NotCacheable as e:
            self.metrics.uncacheable.labels(e.kind).inc()
            raise
        finally:
            # Whatever happened, the writer thread is done with the ingest after this.
            job.committing = True
            await writer.finish()
        blob = await self._in_thread(ingest.commit, result.size)
        try:
            # Uploaded and confirmed (a remote store) before any row may name it.
            await self._in_thread(self.store.publish, blob)
        except BaseException:
            ingest.close()  # let go of the blob's digest lock so it can go
            await self._delete_blobs([blob.sha256])
            raise
        now = self._now()
        artifact = cat.Artifact(
            job.key,
            job.url,
            blob.sha256,
            blob.size,
            result.content_type,
            now,
            origin_headers=freshness.encode(result.headers),
            validated_at=now,
        )
        try:
            freed = await self.catalog.run(
                cat.put_artifact,
                artifact,
                self.settings.max_bytes,
                leases.held_for_commit(job.id, job.token),
            )
            # It may have replaced a row for this key or evicted others.
            self.index.invalidate()
            stream.complete(blob.size)
            if stream.hits:
                self.index.merge_hits({job.key: PendingHits(stream.hits, self._now())})
        except cat.NoRoom:
            ingest.close()  # let go of the blob's digest lock so it can go
            await self._delete_blobs([blob.sha256])
            raise
        except LeaseLost:
            # Another host fills this key now, most likely into the same digest: its upload
            # may already be in the object store without its row yet, so nothing is deleted
            # here (a local copy no row names is swept at the next start).
            raise
        finally:
            # The row is written (or never will be): a delete of this blob may go ahead now.
            await self._close_ingest(ingest)
        await self._delete_blobs(freed)
        await self._in_thread(self.store.kept_locally, blob.sha256, blob.size)
        await self.refresh_totals()

    async def _close_ingest(self, ingest: Ingest) -> None:
        """Close an ingest (idempotent). Deleting an uncommitted one happens in a thread; a
        committed one only lets go of its file and digest lock, here, so that letting go never
        waits for a pool thread that may itself be waiting for this lock."""
        if ingest.blob is None:
            await self._in_thread(ingest.close)
        else:
            ingest.close()

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> defer.Deferred:
        """Blocking file work (fsync, rename, sweeps) on the given reactor's thread pool."""
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    async def _delete_blobs(self, digests: list[str]) -> None:
        if not digests:
            return
        if not self.store.remote:
            await self.catalog.run(
                datadir.delete_unreferenced, self.store, digests, self._stopping.is_set
            )
            return
        # The catalog asked on its thread, the object store (a network round trip) on another.
        store = cast(RemoteBlobStore, self.store)
        claimed = await self.catalog.run(
            datadir.claim_unreferenced, store, digests, self._stopping.is_set
        )
        for digest, locked in claimed:
            await self._in_thread(store.delete_claimed, digest, locked)

    @to_completion
    async def quarantine(self, sha256: str, reason: str) -> list[cat.Artifact]:
        """Take a bad blob out of service: move it aside, drop its rows, fetch it again."""
        if sha256 in self._quarantining:
            return []  # many hits of one bad blob find it bad at once; one quarantine will do
        self._quarantining.add(sha256)
        try:
            # datadir.quarantine's two steps, each on its own thread: the lock and the move
            # off the database thread, which a fill holding the lock may be waiting for.
            locked = await self._in_thread(self.store.lock, sha256)
            try:
                moved = await self._in_thread(self.store.quarantine, sha256)
                dropped = await self.catalog.run(cat.drop_blob, sha256)
            finally:
                locked.release()
        finally:
            self._quarantining.discard(sha256)
        self.index.invalidate()
        log.warn(
            "quarantined blob {sha256} ({reason}) to {moved}; dropped {keys}",
            sha256=sha256,
            reason=reason,
            moved=moved,
            keys=[redact_url(a.key) for a in dropped],
        )
        await self.refresh_totals()
        for artifact in dropped:
            self.events.record(None, "artifact.quarantined", artifact.url, "ok", reason)
        if not self.settings.curate and self.fetcher is not None:
            for artifact in dropped:
                await self.downloads.enqueue(artifact.url, artifact.key, "refill")
        return dropped

    @property
    def reactor(self):
        return self._reactor

    def now(self) -> float:
        return self._now()

    def cancel(self, job: Job, actor: Actor | None = None) -> bool:
        return self.downloads.cancel(job, actor)

    @to_completion
    async def clear_finished(self) -> int:
        return await self.downloads.clear_finished()

    @to_completion
    async def dismiss(self, key: str, actor: Actor | None = None) -> bool:
        """Forget a miss (curate mode's "not this one")."""
        if done := await self.catalog.run(cat.delete_miss, key):
            self.events.record(actor, "miss.dismissed", key)
        return done

    @to_completion
    async def delete(self, key: str, actor: Actor | None = None) -> bool:
        """Remove an artifact and, when no other key shares it, its blob."""
        existed = await self.catalog.run(cat.get_artifact, key)
        freed = await self.catalog.run(cat.delete_artifact, key)
        if existed is not None:
            self.events.record(actor, "artifact.deleted", existed.url)
        self.index.invalidate()
        await self._delete_blobs([freed] if freed else [])
        await self.refresh_totals()
        return existed is not None

    @to_completion
    async def pin(self, key: str, pinned: bool = True, actor: Actor | None = None) -> bool:
        """Pinned artifacts are never evicted to make room."""
        if done := await self.catalog.run(cat.set_pinned, key, pinned):
            self.events.record(actor, f"artifact.{'pinned' if pinned else 'unpinned'}", key)
        return done

    async def misses(self, limit: int = -1, offset: int = 0) -> list[cat.Miss]:
        return await self.catalog.run(cat.list_misses, limit, offset)

    async def jobs(self, limit: int = 100) -> list[cat.JobRow]:
        """Live jobs first (with their progress), then the most recent finished ones."""
        live = self.downloads.active_jobs()
        ids = {j.id for j in live}
        stored = await self.catalog.run(cat.list_jobs, (), limit)
        return [*live, *(row for row in stored if row.id not in ids)][:limit]

    async def refresh_totals(self) -> None:
        """Bring the held-bytes and artifact gauges up to date with the catalog."""
        totals = await self.catalog.run(cat.totals)
        self.metrics.cache_bytes.set(totals["bytes"])
        self.metrics.artifacts.set(totals["artifacts"])

    async def stats(self) -> Stats:
        totals = await self.catalog.run(cat.totals)
        live = self.downloads.active_jobs()
        return Stats(
            **totals,
            capacity=self.settings.max_bytes,
            queued=sum(1 for j in live if j.state == JobState.QUEUED),
            running=sum(1 for j in live if j.state == JobState.RUNNING),
        )

    def startService(self) -> None:
        self._stopping.clear()
        super().startService()
        # Fires once the data dir is swept and interrupted fills are queued again.
        self.recovery = defer.ensureDeferred(self.recover())
        self.recovery.addErrback(lambda f: log.failure("start-up recovery failed", failure=f))

    def stopService(self) -> defer.Deferred:
        self._stopping.set()
        # Queued on the database thread now, before the catalog closes its connection.
        final = self._sync_tick()
        stopped = defer.maybeDeferred(super().stopService)
        return defer.gatherResults([final, stopped], consumeErrors=True)

    async def recover(self) -> None:
        """Sweep what a crash can leave behind, then resume the fills it interrupted."""
        stopping = self._stopping.is_set
        swept = await self._in_thread(self.store.sweep_tmp, stopping)
        # On the database thread, so each blob is checked against the catalog under its lock.
        orphans = await self.catalog.run(datadir.sweep_orphans, self.store, stopping)
        if stopping():
            log.info(
                "stopped while recovering the data dir: {tmp} tmp files and {orphans} orphan"
                " blobs removed, the rest left for the next start",
                tmp=swept,
                orphans=len(orphans),
            )
            return
        resumed = await self.downloads.resume() if self.fetcher is not None else 0
        await self.refresh_totals()
        log.info(
            "recovered data dir: {tmp} tmp files and {orphans} orphan blobs removed,"
            " {resumed} fills resumed",
            tmp=swept,
            orphans=len(orphans),
            resumed=resumed,
        )


def _filled_elsewhere(job: Job) -> FilledElsewhere:
    assert job.lease is not None
    return FilledElsewhere(job.lease.owner or "another host", job.lease.url)


def _ingest_and_reader(store: Store) -> tuple[Ingest, int]:
    """Blocking: a new ingest and a read-only descriptor of its temp file."""
    ingest = store.ingest()
    try:
        return ingest, os.open(ingest.tmp_path, os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        ingest.close()
        raise


def _size_on_disk(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1
