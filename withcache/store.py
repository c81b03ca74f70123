"""Content-addressed blob store: <data>/blobs/<2 hex>/<62 hex>, filled through tmp/.

Every method here blocks (file I/O, fsync, hashing); callers on the reactor run them in a
thread. Several processes share one data dir (the host, its serving workers, `withcache-admin`),
so the store coordinates with flock, which also works between threads of one process:

- An ingest holds an exclusive flock on its temp file from creation until it is committed or
  thrown away. Temp files are created under a shared flock on tmp/ and swept under an exclusive
  one, so the sweep never sees a temp file that exists but is not locked yet.
- One lock per digest (locks/<digest>, see DigestLock) is held by a commit from before its
  rename into blobs/ until the catalog row is written, and by whatever removes a blob (delete,
  the orphan sweep, quarantine) from its "does a row name it?" check through the unlink. A
  delete can then never remove a blob that another fill of the same bytes has just put in place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
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


class DigestLock:
    """An exclusive flock on locks/<digest>, shared by every process using the data dir.

    Whoever holds it removes the lock file as it lets go, so locks/ only ever holds the locks in
    use (and those of a process that died holding one). A waiter that wakes up holding a file
    that is no longer there tries again on the one that is.
    """

    def __init__(self, path: str, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: str, *, blocking: bool) -> DigestLock | None:
        """The lock, waiting for it if blocking; None if not blocking and someone holds it."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if blocking:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                elif not _try_lock(fd):
                    os.close(fd)
                    return None
                held = os.fstat(fd)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    current = None
            except BaseException:
                os.close(fd)
                raise
            if current is not None and (current.st_dev, current.st_ino) == (
                held.st_dev,
                held.st_ino,
            ):
                return cls(path, fd)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Let go (idempotent). Cheap: an unlink of an empty file and a close."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            finally:
                os.close(fd)

    def __enter__(self) -> DigestLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def keep_files_private() -> None:
    """Files and directories this process creates are never world-readable or -writable.

    The data dir holds what vendors' credentials fetched, the catalog (URLs with signatures in
    them) and the session secret; under a default umask of 022 cache.db and its WAL would be
    readable by every local user. Group bits stay as the umask has them, for an operator's group.
    """
    os.umask(os.umask(0o077) | 0o007)


class Store:
    """Blobs on disk under one data directory (withcache.blobstore.BlobStore's local kind)."""

    remote = False  # every blob the catalog names is here

    def __init__(self, data_dir: str):
        self.blobs_dir = os.path.join(data_dir, "blobs")
        self.tmp_dir = os.path.join(data_dir, "tmp")
        self.quarantine_dir = os.path.join(data_dir, "quarantine")
        self.locks_dir = os.path.join(data_dir, "locks")
        os.makedirs(self.blobs_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        os.makedirs(self.locks_dir, exist_ok=True)

    def path_for(self, sha256: str) -> str:
        if not _DIGEST_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return os.path.join(self.blobs_dir, sha256[:2], sha256[2:])

    def exists(self, sha256: str) -> bool:
        return os.path.isfile(self.path_for(sha256))

    def lock(self, sha256: str) -> DigestLock:
        """The digest's lock, waiting for whoever holds it (see the module docstring)."""
        locked = DigestLock.acquire(self._lock_path(sha256), blocking=True)
        assert locked is not None
        return locked

    def try_lock(self, sha256: str) -> DigestLock | None:
        """The digest's lock, or None at once if someone holds it."""
        return DigestLock.acquire(self._lock_path(sha256), blocking=False)

    def _lock_path(self, sha256: str) -> str:
        self.path_for(sha256)  # validates it
        return os.path.join(self.locks_dir, sha256)

    @contextlib.contextmanager
    def _tmp_dir_locked(self, operation: int) -> Iterator[None]:
        fd = os.open(self.tmp_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            os.close(fd)

    def ingest(self) -> Ingest:
        """Start writing a new blob; see Ingest."""
        return Ingest(self)

    def import_file(
        self, path: str, expected_sha256: str | None = None, lock: DigestLock | None = None
    ) -> Ingest:
        """Copy a local file into the store; the returned ingest is committed but still locked.

        Raises IntegrityError (keeping nothing) if its digest is not expected_sha256. A caller
        already holding the digest's lock passes it as lock (see Ingest.commit).
        """
        ingest = self.ingest()
        try:
            with open(path, "rb") as src:
                while chunk := src.read(CHUNK):
                    ingest.write(chunk)
            ingest.commit(expected_sha256=expected_sha256, lock=lock)
        except BaseException:
            ingest.close()
            raise
        return ingest

    def publish(self, blob: Blob) -> None:
        """Nothing to do: a committed blob is already where blobs live (see BlobStore)."""

    def kept_locally(self, sha256: str, size: int) -> None:
        """Nothing to do: the local directory is the store, bounded by --max-bytes alone."""

    def touch(self, sha256: str) -> None:
        """Nothing to do (no local cache to keep in order)."""

    def delete(self, sha256: str) -> bool:
        """Remove a blob; False if it was not there. See delete_unreferenced for the safe way."""
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
        """Move a bad blob out of blobs/ (kept for a post-mortem); None if it was not there.

        Callers hold the digest's lock across this and dropping the blob's rows.
        """
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

    def sweep_tmp(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """Delete abandoned fills in tmp/ (those no live ingest holds locked), until stopping()."""
        abandoned: list[tuple[str, int]] = []
        try:
            # No ingest is between creating its file and locking it while this is held; the
            # unlinks (gigabytes, maybe) come after, so new fills are not kept waiting for them.
            with self._tmp_dir_locked(fcntl.LOCK_EX):
                for name in os.listdir(self.tmp_dir):
                    path = os.path.join(self.tmp_dir, name)
                    try:
                        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(os.fstat(fd).st_mode) and _try_lock(fd):
                        abandoned.append((path, fd))
                    else:
                        os.close(fd)
            removed = 0
            for path, _fd in abandoned:
                if stopping():
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
            return removed
        finally:
            for _path, fd in abandoned:
                os.close(fd)

    def sweep_orphans(
        self,
        is_referenced: Callable[[str], bool],
        stopping: Callable[[], bool] = lambda: False,
        digests: Iterable[str] | None = None,
    ) -> list[str]:
        """Delete every blob (or each of digests) no catalog row names (see
        delete_unreferenced), until stopping()."""
        removed = []
        for d in list(self.digests()) if digests is None else digests:
            if stopping():
                break
            if not is_referenced(d) and self.delete_unreferenced(d, is_referenced):
                removed.append(d)
        return removed

    def delete_unreferenced(self, sha256: str, is_referenced: Callable[[str], bool]) -> bool:
        """Delete a blob unless a row names it or someone holds its digest's lock.

        is_referenced is asked only once the lock is held, so a fill that has renamed its blob
        but not yet written the row is never mistaken for an orphan, and no fill can rename its
        blob into place between the check and the unlink. Never waits: a holder either writes a
        row naming the blob or removes the blob itself.
        """
        locked = self.try_lock(sha256)
        if locked is None:
            return False
        with locked:
            return not is_referenced(sha256) and self.delete(sha256)


class Ingest:
    """One blob being written: hashed while written, committed by fsync + rename.

    Its temp file is locked from the moment it exists; once committed it holds the digest's
    lock until close(), which the caller does once the catalog row is written.
    """

    def __init__(self, store: Store):
        self._store = store
        self._digest_lock: DigestLock | None = None
        self._owns_digest_lock = False
        with store._tmp_dir_locked(fcntl.LOCK_SH):
            fd, self.tmp_path = tempfile.mkstemp(dir=store.tmp_dir, prefix="ingest-")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                os.unlink(self.tmp_path)
                raise
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

    def hexdigest(self) -> str:
        """The sha256 of the bytes written so far."""
        return self._hash.hexdigest()

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

    def commit(
        self,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        lock: DigestLock | None = None,
    ) -> Blob:
        """Make the bytes durable under their digest. Raises IntegrityError and keeps nothing.

        Takes the digest's lock before the rename (waiting for a delete of the same blob to
        finish) and keeps it until close(). A caller already holding it passes it as lock; it
        stays the caller's to release.
        """
        digest = self._hash.hexdigest()
        try:
            if expected_size is not None and self.size != expected_size:
                raise IntegrityError(f"got {self.size} bytes, expected {expected_size}")
            if expected_sha256 is not None and digest != expected_sha256.lower():
                raise IntegrityError(f"sha256 {digest} does not match expected {expected_sha256}")
            os.fsync(self._file.fileno())
            if lock is not None:
                if lock.path != self._store._lock_path(digest) or not lock.held:
                    raise ValueError(f"not a held lock of {digest}: {lock.path}")
                self._digest_lock = lock
            else:
                self._digest_lock = self._store.lock(digest)
                self._owns_digest_lock = True
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
        """Release the locks (idempotent); an uncommitted ingest is deleted, which for a big
        fill is slow: call it in a thread then. Closing a committed one is cheap."""
        if self.blob is None:
            self._discard()
        elif not self._file.closed:
            self._file.close()
        self._release_digest_lock()

    def _release_digest_lock(self) -> None:
        held, self._digest_lock = self._digest_lock, None
        if held is not None and self._owns_digest_lock:
            held.release()

    def _discard(self) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp_path)
            if not self._file.closed:
                with contextlib.suppress(OSError):
                    self._file.close()
        finally:
            self._release_digest_lock()
