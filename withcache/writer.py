"""A fill's disk side on a thread of its own: hash, write and periodically flush each chunk.

The reactor thread only receives and parses; sha256 and file writes release the GIL, so on a
multi-core host the two halves of a fill run side by side instead of taking turns. The queue
between them is bounded: past HIGH_WATER bytes in flight the fill pauses its connection until
the writer catches up (throttle()).

A listener (withcache.fillstream.FillStream) may follow what is written: it hears, on the
reactor, how many bytes of the current attempt a reader of the file can see, and each restart
from byte 0 as it is asked for. Reports coalesce (at most one call from the thread pending) and
a report of bytes from before a restart is dropped, so a reader never counts old bytes as new.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Protocol

from twisted.internet import defer

from withcache.store import Ingest

HIGH_WATER = 32 << 20
SYNC_EVERY = 64 << 20
_TRUNCATE = object()
_STOP = object()


class Listener(Protocol):
    def written(self, readable: int) -> None: ...

    def restarted(self) -> None: ...


class ThreadedWriter:
    """Ingest-like (write, truncate, size) for the reactor; the work happens in a thread."""

    def __init__(
        self,
        ingest: Ingest,
        reactor: Any,
        sync_every: int | None = None,
        listener: Listener | None = None,
    ):
        self.ingest = ingest
        self.size = 0
        self._listener = listener
        # Restarts asked for (reactor side) and done (writer side): a report names the latter.
        self._restarts = 0
        self._written: tuple[int, int] | None = None  # (restarts done, bytes in the file)
        self._reactor = reactor
        self._sync_every = sync_every or SYNC_EVERY
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._drained: defer.Deferred | None = None
        self._error: BaseException | None = None
        self._done: defer.Deferred = defer.Deferred()
        self._thread = threading.Thread(target=self._run, name="withcache-writer", daemon=True)
        self._thread.start()

    # -- reactor side --

    def write(self, data: bytes) -> None:
        self._raise_if_failed()
        with self._lock:
            self._in_flight += len(data)
        self.size += len(data)
        self._queue.put(data)

    def truncate(self) -> None:
        """Start over from byte 0 (the origin ignored Range or its file changed)."""
        self._raise_if_failed()
        self.size = 0
        self._restarts += 1
        self._queue.put(_TRUNCATE)
        if self._listener is not None:
            self._listener.restarted()

    def throttle(self) -> defer.Deferred | None:
        """None while the writer keeps up; else a Deferred that fires once it has caught up."""
        with self._lock:
            if self._in_flight < HIGH_WATER:
                return None
            if self._drained is None:
                self._drained = defer.Deferred()
            return self._drained

    async def finish(self) -> None:
        """Stop the writer once everything queued is written; raise what it hit, if any."""
        self._queue.put(_STOP)
        # A Deferred of our own: cancelling this wait (a cancelled fill) must not fire the
        # shared one, which the thread fires when it really stops.
        stopped: defer.Deferred = defer.Deferred()
        self._done.addBoth(lambda _: stopped.callback(None))
        await stopped
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    # -- writer thread --

    def _report(self) -> None:
        with self._lock:
            written, self._written = self._written, None
        if written is not None and written[0] == self._restarts and self._listener is not None:
            self._listener.written(written[1])

    def _run(self) -> None:
        unsynced = 0
        restarts = 0
        try:
            while (item := self._queue.get()) is not _STOP:
                if item is _TRUNCATE:
                    self.ingest.truncate()
                    unsynced = 0
                    restarts += 1
                    continue
                self.ingest.write(item)
                unsynced += len(item)
                if unsynced >= self._sync_every:
                    # Flushed as it goes, so the commit's fsync has only the tail to write.
                    self.ingest.sync()
                    unsynced = 0
                self._wrote(len(item), restarts)
        except BaseException as e:
            # Reported by the next write() or by finish(); a paused fill is let go to see it.
            self._error = e
        self._reactor.callFromThread(self._done.callback, None)
        self._reactor.callFromThread(self._release)

    def _wrote(self, n: int, restarts: int) -> None:
        with self._lock:
            self._in_flight -= n
            release = self._drained is not None and self._in_flight < HIGH_WATER // 2
            report = self._listener is not None and self._written is None
            self._written = (restarts, self.ingest.size)
        if report:
            self._reactor.callFromThread(self._report)
        if release:
            self._reactor.callFromThread(self._release)

    def _release(self) -> None:
        with self._lock:
            drained, self._drained = self._drained, None
        if drained is not None:
            drained.callback(None)
