"""A fill as a stream with readers: what a fill in progress tells the clients that follow it.

The fill publishes, as calls on the reactor thread, when the origin's response headers are in
(the stream becomes servable: length and type known), how many bytes of the current attempt
are readable back from the temp file, a restart from byte 0 (the bytes sent so far are void),
and its outcome (committed with a final size, or failed). A reader follows it: it is told
"something changed" and looks at the state (no polling, no copy of the body here). The temp file
is held open by a read-only descriptor each reader duplicates, so the commit's rename and a
failed fill's unlink never pull the bytes from under a reader.

No Klein, no twistd: withcache.web.streaming is the HTTP side of a follower.
"""

from __future__ import annotations

import os
from typing import Protocol

from twisted.internet import defer


class Follower(Protocol):
    def changed(self) -> None:
        """More bytes are readable, the attempt or length changed, or the fill ended."""


class FillStream:
    """The published progress of one fill (one job): servable once its headers are in."""

    def __init__(self, key: str):
        self.key = key
        self.servable = False
        self.total: int | None = None  # the origin's length, None for a body of unknown length
        self.content_type: str | None = None
        self.attempt = 0  # bumped by every restart from byte 0
        self.readable = 0  # bytes of this attempt readable back from the temp file
        self.size: int | None = None  # the committed size, once complete
        self.error: str | None = None  # why the fill failed, once it has
        self.hits = 0  # GETs streamed, counted on the artifact once its row exists
        self._fd: int | None = None
        self._followers: set[Follower] = set()
        self._waiting: list[defer.Deferred[bool]] = []

    @property
    def readers(self) -> int:
        """Clients streaming this fill now."""
        return len(self._followers)

    @property
    def ended(self) -> bool:
        return self.size is not None or self.error is not None

    # -- the fill's side --

    def attach(self, fd: int) -> None:
        """The temp file, opened for reading; the stream owns fd from now on."""
        self._fd = fd

    def headers(self, total: int | None, content_type: str | None) -> None:
        """An attempt's usable response headers are in; the first makes the stream servable.
        A resumed attempt (206) gives the same length; a changed one is a restart for readers
        that promised the old length."""
        if self.ended:
            return
        first = not self.servable
        self.servable = True
        if first:
            self.total, self.content_type = total, content_type
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(True)
        elif total != self.total:
            self.total = total
            self._tell()

    def restarted(self) -> None:
        """The fill threw its bytes away and starts again from byte 0."""
        self.attempt += 1
        self.readable = 0
        self._tell()

    def written(self, readable: int) -> None:
        """Bytes [0, readable) of the current attempt can be read back from the file."""
        if readable > self.readable:
            self.readable = readable
            self._tell()

    def complete(self, size: int) -> None:
        """Committed: readers of a body of unknown length may end it at size."""
        if not self.ended:
            self.size = size
            self.readable = max(self.readable, size)
            self._tell()
            self._end_waits(False)

    def fail(self, error: str) -> None:
        """Failed for good (or cancelled): every reader is cut off."""
        if not self.ended:
            self.error = error
            self._tell()
            self._end_waits(False)

    def close(self) -> None:
        """The fill is over: let go of the stream's own descriptor (readers hold their own)."""
        if not self.ended:
            self.fail("the fill ended")
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # -- the readers' side --

    def when_servable(self) -> defer.Deferred[bool]:
        """A Deferred of the caller's own: True once servable, False if the fill ends first."""
        if self.servable and self._fd is not None and not self.ended:
            return defer.succeed(True)
        if self.ended:
            return defer.succeed(False)
        waiting = self._waiting
        d: defer.Deferred[bool] = defer.Deferred(
            canceller=lambda d: waiting.remove(d) if d in waiting else None
        )
        waiting.append(d)
        return d

    def follow(self, follower: Follower) -> int:
        """Start following; returns a descriptor of the temp file that is the follower's to
        close. Raises ValueError when the stream cannot be followed (any more)."""
        if not self.servable or self.error is not None or self._fd is None:
            raise ValueError("not a servable fill")
        fd = os.dup(self._fd)
        self._followers.add(follower)
        return fd

    def unfollow(self, follower: Follower) -> None:
        self._followers.discard(follower)

    def _tell(self) -> None:
        for follower in list(self._followers):
            follower.changed()

    def _end_waits(self, result: bool) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)
