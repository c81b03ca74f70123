"""Background scrub: re-hash one blob per tick, oldest-verified first, at a bounded read rate.

A blob whose bytes no longer match its digest is quarantined, its artifact rows go, and (unless
curating) it is fetched again. Each tick is wrapped so one failure is logged and the loop goes on.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer, threads

from withcache import catalog as cat
from withcache._log import make_logger

log = make_logger()

# Reads at most this fast, so a scrub never competes with serving for the disk.
SCRUB_BYTES_PER_SECOND = 32 << 20


class _Pace:
    """Sleeps (in the scrub's thread) to keep reading under a rate."""

    def __init__(self, rate: float):
        self.rate, self.read, self.start = rate, 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.read += n
        ahead = self.read / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


class Scrubber(TimerService):
    def __init__(self, cache: Any, interval: float, rate: float = SCRUB_BYTES_PER_SECOND):
        super().__init__(interval, self._tick)
        self.cache = cache
        self.rate = rate

    def _tick(self) -> defer.Deferred:
        d = defer.ensureDeferred(self.verify_next())
        d.addErrback(lambda f: log.failure("scrub step failed", f))
        return d

    async def verify_next(self) -> str | None:
        """Verify the next blob; returns its digest if it was bad."""
        nxt = await self.cache.catalog.run(cat.next_to_verify)
        if nxt is None:
            return None
        sha256, size = nxt
        reactor = self.cache.reactor
        good = await threads.deferToThreadPool(
            reactor,
            reactor.getThreadPool(),
            self.cache.store.verify,
            sha256,
            size,
            _Pace(self.rate),
        )
        if good:
            await self.cache.catalog.run(cat.set_verified, sha256, self.cache.now())
            return None
        await self.cache.quarantine(sha256, "scrub: bytes on disk do not match the sha256")
        return sha256
