"""Revalidation of stale artifacts with their origins: one conditional request per key at a
time, however many requests find it stale, each of which waits for it as long as it can afford.

A 304 makes the stored artifact fresh again (its headers updated as RFC 9111 section 4.3.4 says,
no body fetched); a 200 means the origin has other bytes, which are fetched as a new version by
an ordinary fill (`refill`) and replace the old row only once complete. An artifact with nothing
to validate with (no ETag, no Last-Modified) is fetched again the same way. A revalidation that
fails (the origin down, an error answer) is not tried again for FAILED_BACKOFF seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer

from withcache import catalog as cat
from withcache import freshness
from withcache._log import make_logger
from withcache.fetcher import describe
from withcache.logs import redact_url

log = make_logger()

NOT_MODIFIED, CHANGED, FAILED, PENDING = "not_modified", "changed", "failed", "pending"
# After a failed revalidation, requests of that key do not ask the origin again for this long
# (they get what stale-if-error allows meanwhile): an origin that is down costs one attempt
# a minute, not one per request.
FAILED_BACKOFF = 60.0

# (url, artifact, client address or None, whether an operator asked for it)
Refill = Callable[[str, cat.Artifact, "str | None", bool], Coroutine[Any, Any, None]]


class Revalidations:
    def __init__(
        self,
        fetcher: Any,
        catalog: cat.Catalog,
        refill: Refill,
        *,
        reactor: Any,
        now: Callable[[], float],
        metrics: Any,
        on_change: Callable[[], None],
    ):
        self._fetcher, self._catalog, self._refill = fetcher, catalog, refill
        self._reactor, self._now, self._metrics = reactor, now, metrics
        self._on_change = on_change
        self._running: dict[str, defer.Deferred[str]] = {}
        self._failed_at: dict[str, float] = {}

    def running(self, key: str) -> bool:
        return key in self._running

    def wait(
        self,
        url: str,
        artifact: cat.Artifact,
        client: str | None,
        timeout: float | None,
        *,
        by_operator: bool = False,
    ) -> defer.Deferred[str]:
        """The outcome of revalidating artifact (asked for as url, whose query may carry a
        fresher signature than the stored one), started now unless one is running: NOT_MODIFIED,
        CHANGED or FAILED; PENDING if it takes longer than timeout (None: no limit). An
        operator's request is never turned away by FAILED_BACKOFF."""
        failed_at = self._failed_at.get(artifact.key)
        recent = failed_at is not None and self._now() - failed_at < FAILED_BACKOFF
        if recent and not by_operator:
            return defer.succeed(FAILED)
        shared = self._running.get(artifact.key)
        if shared is None:
            shared = self._running[artifact.key] = defer.ensureDeferred(
                self._revalidate(url, artifact, client, by_operator)
            )
            shared.addBoth(self._done, artifact.key)
        # Each caller its own Deferred: one that stops waiting cancels nobody else's.
        mine: defer.Deferred[str] = defer.Deferred()
        timer = None
        if timeout is not None:
            timer = self._reactor.callLater(timeout, lambda: mine.called or mine.callback(PENDING))

        def relay(outcome: str) -> str:
            if timer is not None and timer.active():
                timer.cancel()
            if not mine.called:
                mine.callback(outcome)
            return outcome

        shared.addCallback(relay)
        return mine

    def _done(self, outcome: Any, key: str) -> Any:
        del self._running[key]
        if outcome == FAILED:
            self._failed_at[key] = self._now()
        else:
            self._failed_at.pop(key, None)
        return outcome

    async def _revalidate(
        self, url: str, artifact: cat.Artifact, client: str | None, by_operator: bool
    ) -> str:
        headers = freshness.decode(artifact.origin_headers) or {}
        shown = redact_url(url)
        try:
            if self._fetcher is None or not {"etag", "last-modified"} & headers.keys():
                await self._refill(url, artifact, client, by_operator)
                outcome = CHANGED
            else:
                answer = await self._fetcher.revalidate(url, headers)
                if answer.not_modified:
                    updated = freshness.encode(freshness.merged(headers, answer.headers))
                    same = await self._catalog.run(
                        cat.revalidated, artifact.key, artifact.sha256, updated, self._now()
                    )
                    self._on_change()
                    # Replaced meanwhile (a fill, an import): the new row is fresh on its own.
                    outcome = NOT_MODIFIED if same else CHANGED
                else:
                    await self._refill(url, artifact, client, by_operator)
                    outcome = CHANGED
        except Exception as e:  # whatever went wrong, the waiters hear FAILED
            log.warn("revalidation of {url} failed: {why}", url=shown, why=describe(e))
            outcome = FAILED
        else:
            log.info("revalidated {url}: {outcome}", url=shown, outcome=outcome)
        self._metrics.revalidations.labels(outcome).inc()
        return outcome
