"""DownloadManager: background fill jobs, one per cache key, at most `workers` at a time.

A job goes queued -> running -> completed | failed | cancelled and is persisted at each step,
or is refused at once when the queue or its client's share of it is full,
so a restarted host re-queues what was queued or running. What a fill *does* is the `fill`
callable given to the manager (withcache.cache supplies it); this module owns the lifecycle:
single flight per key, the semaphore, waiters, cancellation and persistence.

Single flight holds across hosts sharing the catalog (withcache.leases): a job is claimed with a
lease this manager renews every third of its length while the job is queued or running. A key
another live host holds is not filled here: enqueue answers that host's job (see `elsewhere`).
Every third of a lease the manager also takes over the jobs whose lease expired (their host
died) and runs them from byte 0; a job whose lease was taken from it stops and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet import defer

from withcache import catalog as cat
from withcache import leases
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
from withcache.leases import Claim, Identity, Lease, LeaseLost
from withcache.logs import redact_text, redact_url
from withcache.sanitise import ERROR_TEXT, printable

log = make_logger()

# A key refused again within this many seconds gets no new job row.
REFUSALS_KEPT_EVERY = 60.0
# How long a host remembers that another host is filling a key, so a burst of misses of it asks
# the catalog once (and a lease that ends sooner is remembered only until it ends).
ELSEWHERE_KEPT = 1.0


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
    # Its lease on the catalog (withcache.leases): this host's, or, for a job another host
    # holds (elsewhere), that host's.
    lease: Lease | None = field(default=None, repr=False, compare=False)
    elsewhere: bool = field(default=False, repr=False, compare=False)
    # Taken over by another host: this host writes nothing more of it.
    lost: bool = field(default=False, repr=False, compare=False)

    @property
    def token(self) -> str | None:
        return None if self.lease is None else self.lease.token

    def progress(self, done: int, total: int | None) -> None:
        self.bytes_done, self.bytes_total = done, total

    def row(self) -> cat.JobRow:
        return cat.JobRow(**{k: getattr(self, k) for k in cat.JobRow.__dataclass_fields__})


Fill = Callable[[Job], Coroutine[Any, Any, None]]


class DownloadManager(service.MultiService):
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
        identity: Identity | None = None,
        lease: float = leases.LEASE,
    ):
        super().__init__()
        self.catalog = catalog
        self.identity = identity or Identity(leases.default_host_id())
        self.lease_length = lease
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
        # Keys other hosts hold, as last read: key -> (their job, remembered until).
        self._elsewhere: dict[str, tuple[Job, float]] = {}
        # Expired leases are taken over only once start-up has resumed what it resumes.
        self._resumed = False
        for tick in (self._renew_tick, self._watch_tick):
            timer = TimerService(lease / 3, tick)
            timer.clock = reactor
            timer.setServiceParent(self)

    def active(self, key: str) -> Job | None:
        return self._active.get(key)

    def elsewhere(self, key: str) -> Job | None:
        """Another host's job filling key, if one was seen lately (no I/O)."""
        seen = self._elsewhere.get(key)
        if seen is None:
            return None
        if seen[1] < self._now():
            del self._elsewhere[key]
            return None
        return seen[0]

    async def holder(self, key: str) -> Job | None:
        """Another host's job filling key, asking the catalog if need be (a host that does not
        fill misses itself: curating, or a key it may not auto-fetch)."""
        known = self.elsewhere(key)
        if known is not None or key in self._active:
            return known
        lease = await self.catalog.run(leases.holder, key, self._now())
        if lease is None or lease.owner == self.identity.host_id:
            return None
        job = Job(None, key, "", "", RUNNING, lease=lease, elsewhere=True)
        return self._remember_elsewhere(job)

    def _remember_elsewhere(self, job: Job) -> Job:
        assert job.lease is not None and job.lease.until is not None
        if len(self._elsewhere) > 10_000:
            self._elsewhere.clear()
        self._elsewhere[job.key] = (job, min(job.lease.until, self._now() + ELSEWHERE_KEPT))
        return job

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
        absent: bool = False,
    ) -> Job:
        """Queue a fill of url under key, or return the job already filling that key: this
        host's, or another host's (`elsewhere` set, not run here; wait() answers it at once).
        A fill over the bounds is not queued: the job returned is already finished, REFUSED,
        with the reason in its error. With absent (the caller's miss found no artifact), a key
        another host committed meanwhile is not filled again: the job returned is COMPLETED
        with no id."""
        existing = self._active.get(key) or self.elsewhere(key)
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
            claim: Claim = await self.catalog.run(
                leases.claim,
                job.row(),
                self.identity.host_id,
                self.identity.advertise(),
                self._now(),
                self.lease_length,
                absent,
            )
        except BaseException:
            del self._active[key]
            raise
        if claim.filled:
            del self._active[key]
            job.state, job.finished_at = COMPLETED, self._now()
            self._wake(job)
            return job
        if not claim.ours:
            del self._active[key]
            # Callers that found this job meanwhile hold it: it becomes the other host's.
            for name in cat.JobRow.__dataclass_fields__:
                setattr(job, name, getattr(claim.job, name))
            job.lease, job.elsewhere = claim.lease, True
            self._wake(job)
            log.info(
                "{url} is being filled by {owner} (job {id})",
                url=redact_url(url),
                owner=claim.lease.owner,
                id=job.id,
            )
            return self._remember_elsewhere(job)
        job.id, job.lease = claim.job.id, claim.lease
        assert job.id is not None
        self._ours.add(job.id)
        if claim.taken_over:
            log.info("job {id} taken over: its lease had expired", id=job.id)
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
        to resume); at once for another host's job (still queued or running there)."""
        if job.state in FINISHED or job.elsewhere:
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
        d = defer.ensureDeferred(self._finish(job, CANCELLED, "cancelled while queued"))
        # A stop waits for it too (it lets go of the job's lease).
        self._runs.add(d)
        d.addBoth(self._forget_run, d)
        return d

    def _forget_run(self, result, d):
        self._runs.discard(d)
        return result

    async def _run(self, job: Job) -> None:
        job.state, job.started_at = RUNNING, self._now()
        if not await self._write(job):
            await self._finish(job, CANCELLED, "taken over by another host")
            return
        log.info("job {id} running: {url}", id=job.id, url=redact_url(job.url), state=RUNNING)
        fill = defer.ensureDeferred(self._fill(job))
        # Cancelling now cancels the fill itself (dropping its connection), not this bookkeeping.
        job.in_flight = fill
        try:
            await fill
        except LeaseLost:
            job.lost = True
            await self._finish(job, CANCELLED, "taken over by another host")
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
        if job.lost:
            # Another host holds it now: the row is its to write, and the outcome its to tell.
            log.warn(
                "job {id} stopped: another host took it over ({url})",
                id=job.id,
                url=redact_url(job.url),
            )
            job.state, job.error = CANCELLED, "taken over by another host"
            self._wake(job)
            return
        if self._stopping and state == CANCELLED:
            # Left queued/running in the catalog on purpose: the next start (or, sooner, another
            # host) resumes it, its lease let go. Its waiters still hear of it, as it stays.
            self._wake(job)
            if job.token is not None:
                await self.catalog.run(leases.release, job.token)
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
            await self._write(job)
        finally:
            self._wake(job)

    async def _write(self, job: Job) -> bool:
        """Persist the job's row, if its lease is still this host's; whether it was."""
        if await self.catalog.run(leases.update_job, job.row(), job.token):
            return True
        job.lost = True
        return False

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
        """Re-queue the jobs a previous run of this host left queued or running, and those whose
        lease is free or expired; returns how many. From now on expired leases are watched."""
        rows = await self.catalog.run(cat.list_jobs, ACTIVE)
        resumed = 0
        for row in sorted(rows, key=lambda r: r.id or 0):
            if await self._adopt(row):
                resumed += 1
        self._resumed = True
        return resumed

    async def _adopt(self, row: cat.JobRow) -> bool:
        """Take over an active job from the catalog and queue it here; False if it is this
        process's already, or another live host's."""
        if row.id is None or row.id in self._ours or row.key in self._active:
            return False
        taken = await self.catalog.run(
            leases.take_over,
            row.id,
            self.identity.host_id,
            self.identity.advertise(),
            self._now(),
            self.lease_length,
        )
        if taken is None or self._stopping or row.key in self._active:
            if taken is not None and taken[1].token is not None:
                await self.catalog.run(leases.release, taken[1].token)
            return False
        fresh, lease, before = taken
        job = Job(**vars(fresh), lease=lease)
        self._active[job.key] = job
        self._ours.add(row.id)
        self._elsewhere.pop(job.key, None)
        if before.owner not in (None, self.identity.host_id):
            log.info(
                "job {id} taken over from {owner}, whose lease had expired: {url}",
                id=job.id,
                owner=before.owner,
                url=redact_url(job.url),
            )
        self._start(job)
        return True

    def _watch_tick(self) -> defer.Deferred | None:
        """Take over the jobs whose lease expired (their host died or lost the catalog)."""
        if not self._resumed or self._stopping:
            return None
        d = defer.ensureDeferred(self._take_over_expired())
        d.addErrback(
            lambda f: log.warn("could not look for expired fill leases: {error}", error=f.value)
        )
        return d

    async def _take_over_expired(self) -> None:
        for row in await self.catalog.run(leases.expired, self._now()):
            if self._stopping:
                return
            await self._adopt(row)

    def _renew_tick(self) -> defer.Deferred | None:
        """Renew the leases of this host's jobs; stop those another host took over. A renewal
        that fails (the catalog unreachable) is logged and tried again next tick: the fill goes
        on, and commits only if its lease is still its own then (leases.held_for_commit)."""
        held = {job.token: job for job in self._active.values() if job.token is not None}
        if not held:
            return None
        now = self._now()
        d = self.catalog.run(leases.renew, list(held), now, self.lease_length)

        def renewed(lost: list[str]) -> None:
            for token, job in held.items():
                if token in lost:
                    self._lose(job)
                elif job.lease is not None:
                    job.lease = replace(job.lease, until=now + self.lease_length)

        d.addCallback(renewed)
        d.addErrback(lambda f: log.warn("could not renew fill leases: {error}", error=f.value))
        return d

    def _lose(self, job: Job) -> None:
        """Another host took the job over: stop it here, writing nothing."""
        if self._active.get(job.key) is not job or job.committing:
            return  # finished meanwhile; or committing, which checks the lease itself
        job.lost = True
        if job.in_flight is not None:
            job.in_flight.cancel()

    async def clear_finished(self) -> int:
        return await self.catalog.run(cat.delete_jobs, FINISHED)

    def stopService(self):
        timers = super().stopService()
        self._stopping = True
        for job in list(self._active.values()):
            if job.in_flight is not None and not job.committing:
                job.in_flight.cancel()
        # Wait for fills to unwind (their tmp files removed, commits finished).
        return defer.DeferredList([timers, *self._runs], consumeErrors=True)
