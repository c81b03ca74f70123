"""Content-addressed blob store: <data>/blobs/<2 hex>/<62 hex>, filled through tmp/.

Every method here blocks (file I/O, fsync, hashing); callers on the reactor run them in a
thread. An ingest holds an exclusive flock on its file from creation until its catalog row is
written, so a sweep running in another process (the host starting while `withcache-admin
import` runs) never deletes a fill in progress.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_DIGEST_RE = re.compile(r"\A[0-9a-f]{64}\Z")
CHUNK = 1 << 20


class IntegrityError(Exception):
    """Bytes that do not match what was expected of them; nothing was committed."""


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


class Store:
    """Blobs on disk under one data directory."""

    def __init__(self, data_dir: str):
        self.blobs_dir = os.path.join(data_dir, "blobs")
        self.tmp_dir = os.path.join(data_dir, "tmp")
        self.quarantine_dir = os.path.join(data_dir, "quarantine")
        os.makedirs(self.blobs_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)

    def path_for(self, sha256: str) -> str:
        if not _DIGEST_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return os.path.join(self.blobs_dir, sha256[:2], sha256[2:])

    def exists(self, sha256: str) -> bool:
        return os.path.isfile(self.path_for(sha256))

    def ingest(self) -> Ingest:
        """Start writing a new blob; see Ingest."""
        return Ingest(self)

    def import_file(self, path: str) -> Ingest:
        """Copy a local file into the store; the returned ingest is committed but still locked."""
        ingest = self.ingest()
        try:
            with open(path, "rb") as src:
                while chunk := src.read(CHUNK):
                    ingest.write(chunk)
            ingest.commit()
        except BaseException:
            ingest.close()
            raise
        return ingest

    def delete(self, sha256: str) -> bool:
        """Remove a blob; False if it was not there."""
        try:
            os.unlink(self.path_for(sha256))
        except FileNotFoundError:
            return False
        return True

    def verify(
        self, sha256: str, size: int | None = None, pace: Callable[[int], None] | None = None
    ) -> bool:
        """Re-hash a blob; True when its bytes (and size, if given) still match.

        pace(n) is called after each chunk read, so a background scrub can slow itself down.
        """
        h = hashlib.sha256()
        try:
            with open(self.path_for(sha256), "rb") as f:
                if size is not None and os.fstat(f.fileno()).st_size != size:
                    return False
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    if pace is not None:
                        pace(len(chunk))
        except FileNotFoundError:
            return False
        return h.hexdigest() == sha256

    def quarantine(self, sha256: str) -> str | None:
        """Move a bad blob out of blobs/ (kept for a post-mortem); None if it was not there."""
        os.makedirs(self.quarantine_dir, exist_ok=True)
        target = os.path.join(self.quarantine_dir, f"{sha256}-{time.time_ns()}")
        try:
            os.rename(self.path_for(sha256), target)
        except FileNotFoundError:
            return None
        return target

    def digests(self) -> Iterator[str]:
        """Every blob digest on disk."""
        for fan in sorted(os.listdir(self.blobs_dir)):
            fan_dir = os.path.join(self.blobs_dir, fan)
            if len(fan) != 2 or not os.path.isdir(fan_dir):
                continue
            for rest in sorted(os.listdir(fan_dir)):
                if _DIGEST_RE.match(fan + rest):
                    yield fan + rest

    def sweep_tmp(self) -> int:
        """Delete abandoned fills in tmp/ (those no live ingest holds locked)."""
        removed = 0
        for name in os.listdir(self.tmp_dir):
            if self._unlink_unlocked(os.path.join(self.tmp_dir, name)):
                removed += 1
        return removed

    def sweep_orphans(self, is_referenced: Callable[[str], bool]) -> list[str]:
        """Delete every blob no catalog row names; see delete_unreferenced."""
        return [d for d in list(self.digests()) if self.delete_unreferenced(d, is_referenced)]

    def delete_unreferenced(self, sha256: str, is_referenced: Callable[[str], bool]) -> bool:
        """Delete a blob unless a row names it or an ingest still holds it.

        is_referenced is asked only once the blob's lock is held, so an ingest that has renamed
        its blob but not yet written the row is never mistaken for an orphan.
        """
        return self._unlink_unlocked(self.path_for(sha256), lambda: not is_referenced(sha256))

    @staticmethod
    def _unlink_unlocked(path: str, still_wanted_gone: Callable[[], bool] = lambda: True) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError):
            return False
        try:
            if not _try_lock(fd) or not still_wanted_gone():
                return False
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(fd)


class Ingest:
    """One blob being written: hashed while written, committed by fsync + rename.

    Stays flock()ed until close(), which the caller does after the catalog row exists.
    """

    def __init__(self, store: Store):
        self._store = store
        fd, self.tmp_path = tempfile.mkstemp(dir=store.tmp_dir, prefix="ingest-")
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Unbuffered: a fill's chunks are already large, and a buffer would copy every byte again.
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._hash = hashlib.sha256()
        self.size = 0
        self.blob: Blob | None = None
        self.path: str | None = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]
        self._hash.update(data)
        self.size += len(data)

    def sync(self) -> None:
        """Flush what is written so far to disk, so commit's fsync has little left to do.

        Not after commit or close.
        """
        os.fdatasync(self._file.fileno())

    def truncate(self) -> None:
        """Throw away what was written (an origin that ignored Range must restart from 0)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self.size = 0

    def commit(self, expected_size: int | None = None, expected_sha256: str | None = None) -> Blob:
        """Make the bytes durable under their digest. Raises IntegrityError and keeps nothing."""
        digest = self._hash.hexdigest()
        try:
            if expected_size is not None and self.size != expected_size:
                raise IntegrityError(f"got {self.size} bytes, expected {expected_size}")
            if expected_sha256 is not None and digest != expected_sha256.lower():
                raise IntegrityError(f"sha256 {digest} does not match expected {expected_sha256}")
            os.fsync(self._file.fileno())
            final = self._store.path_for(digest)
            fan_dir = os.path.dirname(final)
            new_fan = not os.path.isdir(fan_dir)
            os.makedirs(fan_dir, exist_ok=True)
            if new_fan:
                _fsync_dir(self._store.blobs_dir)
            os.rename(self.tmp_path, final)
            _fsync_dir(fan_dir)
        except BaseException:
            self._discard()
            raise
        self.path = final
        self.blob = Blob(digest, self.size)
        return self.blob

    def close(self) -> None:
        """Release the lock; an uncommitted ingest is deleted."""
        if self.blob is None:
            self._discard()
        elif not self._file.closed:
            self._file.close()

    def _discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)
        if not self._file.closed:
            with contextlib.suppress(OSError):
                self._file.close()
