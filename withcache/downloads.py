"""DownloadManager: background fill jobs, one per cache key, at most `workers` at a time.

A job goes queued -> running -> completed | failed | cancelled and is persisted at each step,
or is refused at once when the queue or its client's share of it is full,
so a restarted host re-queues what was queued or running. What a fill *does* is the `fill`
callable given to the manager (withcache.cache supplies it); this module owns the lifecycle:
single flight per key, the semaphore, waiters, cancellation and persistence.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from twisted.application import service
from twisted.internet import defer

from withcache import catalog as cat
from withcache._log import make_logger
from withcache.events import THE_HOST, Actor, EventLog
from withcache.freshness import NotCacheable
from withcache.jobs import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    FAILED,
    FINISHED,
    QUEUED,
    REFUSED,
    RUNNING,
    UNCACHEABLE,
)
from withcache.logs import redact_text, redact_url
from withcache.sanitise import ERROR_TEXT, printable

log = make_logger()

# A key refused again within this many seconds gets no new job row.
REFUSALS_KEPT_EVERY = 60.0


@dataclass
class Job(cat.JobRow):
    """A fill job as the manager tracks it (the persisted row plus live state)."""

    committing: bool = False
    # The client address whose miss asked for this fill (auto fills), for the per-client bound.
    client: str | None = field(default=None, repr=False, compare=False)
    # What cancel() cancels: the wait for a worker slot, then the fill itself.
    in_flight: defer.Deferred | None = field(default=None, repr=False, compare=False)
    waiters: list[defer.Deferred] = field(default_factory=list, repr=False, compare=False)
    # Who queued it, and who cancelled it (the audit log's actors).
    actor: Actor | None = field(default=None, repr=False, compare=False)
    cancelled_by: Actor | None = field(default=None, repr=False, compare=False)
    # Its withcache.fillstream.FillStream, once a fill or a waiting client asked for one.
    stream: Any = field(default=None, repr=False, compare=False)

    def progress(self, done: int, total: int | None) -> None:
        self.bytes_done, self.bytes_total = done, total

    def row(self) -> cat.JobRow:
        return cat.JobRow(**{k: getattr(self, k) for k in cat.JobRow.__dataclass_fields__})


Fill = Callable[[Job], Coroutine[Any, Any, None]]


class DownloadManager(service.Service):
    def __init__(
        self,
        catalog: cat.Catalog,
        fill: Fill,
        *,
        reactor,
        workers: int,
        now,
        metrics=None,
        max_queued: int = 0,
        per_client: int = 0,
        events: EventLog | None = None,
    ):
        self.catalog = catalog
        self.events = events
        # Bounds on fills nobody vouched for (misses, refills); 0 is no bound. An operator's add
        # is never refused.
        self.max_queued, self.per_client = max_queued, per_client
        self.metrics = metrics
        self._fill = fill
        self._reactor = reactor
        self._now = now
        self._semaphore = defer.DeferredSemaphore(workers)
        self._active: dict[str, Job] = {}
        self._last_failure: dict[str, float] = {}
        self._uncacheable: dict[str, float] = {}
        self._refused: dict[str, float] = {}
        self._runs: set[defer.Deferred] = set()
        # Jobs this process created; resume() runs concurrently with new requests and must not
        # mistake them for leftovers of the previous run.
        self._ours: set[int] = set()
        self._stopping = False

    def active(self, key: str) -> Job | None:
        return self._active.get(key)

    def active_jobs(self) -> list[Job]:
        return sorted(self._active.values(), key=lambda j: j.id or 0)

    def failed_since(self, key: str, since: float) -> bool:
        """Whether the last fill of key failed after `since` (so a miss should not retry yet)."""
        return self._last_failure.get(key, float("-inf")) > since

    def uncacheable_since(self, key: str, since: float) -> bool:
        """Whether the origin's last answer for key, after `since`, was one that may not be
        stored (a negative entry: a miss should not fetch it again yet)."""
        return self._uncacheable.get(key, float("-inf")) > since

    async def enqueue(
        self,
        url: str,
        key: str,
        source: str,
        client: str | None = None,
        actor: Actor | None = None,
    ) -> Job:
        """Queue a fill of url under key, or return the job already filling that key. A fill
        over the bounds is not queued: the job returned is already finished, REFUSED, with the
        reason in its error."""
        existing = self._active.get(key)
        if existing is not None:
            return existing
        refusal = self._over_bounds(source, client)
        if refusal is not None:
            return await self._refuse(Job(None, key, url, source, REFUSED), refusal)
        job = Job(None, key, url, source, QUEUED, created_at=self._now(), client=client)
        job.actor = actor or Actor(THE_HOST.name, client)
        # Claimed before the first await: concurrent misses of one key must find this job.
        self._active[key] = job
        try:
            job.id = await self.catalog.run(cat.insert_job, job.row())
            self._ours.add(job.id)
        except BaseException:
            del self._active[key]
            raise
        log.info("job {id} queued: {url} ({source})", id=job.id, url=redact_url(url), source=source)
        self._event(job, "fill.queued", job.actor)
        self._start(job)
        return job

    def _over_bounds(self, source: str, client: str | None) -> str | None:
        if source == "operator":
            return None
        live = self._active.values()
        if self.max_queued and sum(1 for j in live if j.state == QUEUED) >= self.max_queued:
            return f"refused: {self.max_queued} fills already queued (--max-queued)"
        mine = sum(1 for j in live if client is not None and j.client == client)
        if self.per_client and mine >= self.per_client:
            return (
                f"refused: {client} already has {self.per_client} fills queued or running"
                " (--max-fills-per-client)"
            )
        return None

    async def _refuse(self, job: Job, reason: str) -> Job:
        job.error, job.created_at = reason, self._now()
        job.finished_at = job.created_at
        if self.metrics is not None:
            self.metrics.fills.labels(REFUSED).inc()
        last = self._refused.get(job.key)
        if last is not None and job.created_at - last < REFUSALS_KEPT_EVERY:
            return job  # a flood of misses of one key leaves one row a minute, not one each
        if len(self._refused) > 10_000:
            now = job.created_at
            self._refused = {
                k: t for k, t in self._refused.items() if now - t < REFUSALS_KEPT_EVERY
            }
        self._refused[job.key] = job.created_at
        log.warn("fill of {url} {reason}", url=redact_url(job.url), reason=reason, state=REFUSED)
        job.id = await self.catalog.run(cat.insert_job, job.row())
        return job

    def wait(self, job: Job) -> defer.Deferred:
        """A Deferred of its own for this caller, fired with the job once it has finished, or
        once the manager has stopped (the job then still queued or running, for the next start
        to resume)."""
        if job.state in FINISHED:
            return defer.succeed(job)
        waiters = job.waiters
        d: defer.Deferred[Job] = defer.Deferred(
            canceller=lambda d: waiters.remove(d) if d in waiters else None
        )
        waiters.append(d)
        return d

    def cancel(self, job: Job, actor: Actor | None = None) -> bool:
        """Cancel a queued or running job; False when it has finished or is already committing."""
        if job.state not in ACTIVE or job.in_flight is None or job.committing:
            return False
        job.cancelled_by = actor
        job.in_flight.cancel()
        return True

    def _start(self, job: Job) -> None:
        d = job.in_flight = self._semaphore.acquire()
        d.addCallback(lambda _: self._run_in_slot(job))
        d.addErrback(self._not_started, job)

    def _run_in_slot(self, job: Job) -> defer.Deferred | None:
        if self._stopping:
            # Not started; its row stays queued for the next start to resume.
            self._semaphore.release()
            self._wake(job)
            return None
        d = defer.ensureDeferred(self._run(job))
        self._runs.add(d)
        d.addBoth(self._release, d)
        return d

    def _release(self, result, d):
        self._runs.discard(d)
        self._semaphore.release()
        return result

    def _not_started(self, failure, job: Job):
        failure.trap(defer.CancelledError)
        return defer.ensureDeferred(self._finish(job, CANCELLED, "cancelled while queued"))

    async def _run(self, job: Job) -> None:
        job.state, job.started_at = RUNNING, self._now()
        await self.catalog.run(cat.update_job, job.row())
        log.info("job {id} running: {url}", id=job.id, url=redact_url(job.url), state=RUNNING)
        fill = defer.ensureDeferred(self._fill(job))
        # Cancelling now cancels the fill itself (dropping its connection), not this bookkeeping.
        job.in_flight = fill
        try:
            await fill
        except defer.CancelledError:
            await self._finish(job, CANCELLED, "cancelled while running")
        except NotCacheable as e:
            await self._finish(job, UNCACHEABLE, str(e))
        except Exception as e:
            # Logged, stored and shown to the operator; it may quote what an origin sent.
            await self._finish(job, FAILED, printable(str(e) or type(e).__name__, ERROR_TEXT))
        else:
            await self._finish(job, COMPLETED, None)

    async def _finish(self, job: Job, state: str, error: str | None) -> None:
        job.in_flight = None
        if self._active.get(job.key) is job:
            del self._active[job.key]
        if self._stopping and state == CANCELLED:
            # Left queued/running in the catalog on purpose: the next start resumes it. Its
            # waiters still hear of it, with the job as it stays.
            self._wake(job)
            return
        # An error text may quote a URL (a redirect's, say): never with its signature.
        error = None if error is None else redact_text(error)
        job.state, job.error, job.finished_at = state, error, self._now()
        job.committing = False
        if self.metrics is not None:
            self.metrics.fills.labels(state).inc()
            if job.started_at is not None:
                elapsed = max(0.0, job.finished_at - job.started_at)
                self.metrics.fill_seconds.labels(state).observe(elapsed)
        if state == FAILED:
            self._last_failure[job.key] = job.finished_at
        elif state == UNCACHEABLE:
            self._uncacheable[job.key] = job.finished_at
        elif state == COMPLETED:
            self._last_failure.pop(job.key, None)
            self._uncacheable.pop(job.key, None)
        log.info(
            "job {id} {state}: {url}{why}",
            id=job.id,
            state=state,
            url=redact_url(job.url),
            why=f" ({error})" if error else "",
        )
        by = job.cancelled_by if state == CANCELLED else None
        outcomes: dict[str, str] = {FAILED: FAILED, UNCACHEABLE: REFUSED}
        outcome = outcomes.get(state, "ok")
        self._event(job, f"fill.{state}", by, outcome, error)
        try:
            await self.catalog.run(cat.update_job, job.row())
        finally:
            self._wake(job)

    def _event(
        self,
        job: Job,
        action: str,
        actor: Actor | None,
        outcome: str = "ok",
        detail: str | None = None,
    ) -> None:
        if self.events is not None:
            self.events.record(actor, action, job.url, outcome, detail)

    @staticmethod
    def _wake(job: Job) -> None:
        waiters, job.waiters = job.waiters, []
        for waiter in waiters:
            waiter.callback(job)

    async def resume(self) -> int:
        """Re-queue the jobs a previous run left queued or running; returns how many."""
        rows = await self.catalog.run(cat.list_jobs, ACTIVE)
        resumed = 0
        for row in sorted(rows, key=lambda r: r.id or 0):
            if row.id is None or row.id in self._ours:
                continue
            job = Job(**vars(row))
            job.state, job.bytes_done, job.started_at = QUEUED, 0, None
            if job.key in self._active:
                await self._finish(job, CANCELLED, "duplicate of a resumed job")
                continue
            self._active[job.key] = job
            self._ours.add(row.id)
            await self.catalog.run(cat.update_job, job.row())
            self._start(job)
            resumed += 1
        return resumed

    async def clear_finished(self) -> int:
        return await self.catalog.run(cat.delete_jobs, FINISHED)

    def stopService(self):
        super().stopService()
        self._stopping = True
        for job in list(self._active.values()):
            if job.in_flight is not None and not job.committing:
                job.in_flight.cancel()
        # Wait for fills to unwind (their tmp files removed, commits finished).
        return defer.DeferredList(list(self._runs), consumeErrors=True)
