"""Background scrub: re-hash one blob per tick, oldest-verified first, at a bounded read rate.

A blob whose bytes no longer match its digest is quarantined, its artifact rows go, and (unless
curating) it is fetched again. Each tick is wrapped so one failure is logged and the loop goes on.

Stopping interrupts a read in progress at once (issue 20: a 400 MiB blob kept a SIGTERM waiting
8.5 s, and a 4 GiB one would outlast systemd's stop timeout, whose SIGKILL skips the last
hit-count write). A blob read in part is neither verified nor quarantined; it is first in line
next time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from twisted.application.internet import TimerService
from twisted.internet import defer

from withcache import catalog as cat
from withcache._log import make_logger

log = make_logger()

# Reads at most this fast, so a scrub never competes with serving for the disk.
SCRUB_BYTES_PER_SECOND = 32 << 20


class Stopped(Exception):
    """The scrub was stopped part-way through a blob."""


class _Pace:
    """Waits (in the scrub's thread) to keep reading under a rate; raises Stopped as soon as
    stopping is set, waking a wait in progress."""

    def __init__(self, rate: float, stopping: threading.Event):
        self.rate, self.read, self.start = rate, 0, time.monotonic()
        self.stopping = stopping

    def __call__(self, n: int) -> None:
        self.read += n
        ahead = self.read / self.rate - (time.monotonic() - self.start)
        if self.stopping.wait(ahead) if ahead > 0 else self.stopping.is_set():
            raise Stopped(f"stopped after {self.read} bytes")


class ScrubTarget(Protocol):
    """What the background scrub (withcache.scrub) needs: the next blob to check, a check of
    its bytes in a thread, and what to do with the verdict."""

    async def next_to_verify(self) -> tuple[str, int] | None: ...

    def verify_blob(
        self, sha256: str, size: int, pace: Callable[[int], None]
    ) -> defer.Deferred[bool]: ...

    async def mark_verified(self, sha256: str) -> None: ...

    def quarantine(self, sha256: str, reason: str) -> Awaitable[list[cat.Artifact]]: ...


class Scrubber(TimerService):
    def __init__(self, cache: ScrubTarget, interval: float, rate: float = SCRUB_BYTES_PER_SECOND):
        super().__init__(interval, self._tick)
        self.cache = cache
        self.rate = rate
        self._stopping = threading.Event()

    def startService(self) -> None:
        self._stopping.clear()
        super().startService()

    def stopService(self) -> defer.Deferred:
        # First, so the tick in progress (which TimerService waits for) ends now.
        self._stopping.set()
        return super().stopService()

    def _tick(self) -> defer.Deferred:
        d = defer.ensureDeferred(self.verify_next())
        d.addErrback(lambda f: log.failure("scrub step failed", f))
        return d

    async def verify_next(self) -> str | None:
        """Verify the next blob; returns its digest if it was bad."""
        nxt = await self.cache.next_to_verify()
        if nxt is None:
            return None
        sha256, size = nxt
        if self._stopping.is_set():
            return None
        try:
            good = await self.cache.verify_blob(sha256, size, _Pace(self.rate, self._stopping))
        except Stopped as e:
            log.info("scrub of blob {sha256} ({size} bytes) {why}", sha256=sha256, size=size, why=e)
            return None
        if good:
            await self.cache.mark_verified(sha256)
            return None
        await self.cache.quarantine(sha256, "scrub: bytes on disk do not match the sha256")
        return sha256
