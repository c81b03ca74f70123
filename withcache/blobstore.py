"""BlobStore: what the domain core needs of wherever blobs live, named once.

Two implementations: withcache.store.Store (the data dir's `blobs/`, the embedded default) and
withcache.s3store.S3Store (an S3-compatible object store holding every blob, with the data
dir's `blobs/` as a bounded cache of local copies, withcache.localcache). The core (Cache, its
fills, scrub, datadir) talks to this interface; only withcache.tap chooses from `--store`.

Every method blocks (file I/O, fsync, hashing, network): callers on the reactor run them in a
thread. A blob is always written locally first (`ingest()`: hashed as written, fsync, rename)
and, once committed, made durable where it lives by `publish` before any catalog row names it.
A hit is served from the local copy at `path_for`; with a remote store that copy may be absent
(`remote` is True), and withcache.storefill streams the object in while it makes one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from withcache.store import Blob, DigestLock, Ingest


class ObjectMissing(Exception):
    """The store has no object for a digest the catalog names (deleted behind its back)."""


class StoreUnavailable(Exception):
    """The object store could not be reached or answered with an error (nothing was changed)."""


class BlobStore(Protocol):
    blobs_dir: str  # local copies: <blobs_dir>/<2 hex>/<62 hex>
    tmp_dir: str
    remote: bool  # True when a blob's home is elsewhere and a local copy may be missing

    def path_for(self, sha256: str) -> str: ...

    def exists(self, sha256: str) -> bool: ...

    def lock(self, sha256: str) -> DigestLock: ...

    def try_lock(self, sha256: str) -> DigestLock | None: ...

    def ingest(self) -> Ingest: ...

    def import_file(
        self, path: str, expected_sha256: str | None = None, lock: DigestLock | None = None
    ) -> Ingest: ...

    def publish(self, blob: Blob) -> None:
        """Make a committed local blob durable where blobs live (upload and confirm it);
        raises StoreUnavailable or IntegrityError, and then no row may name it."""

    def kept_locally(self, sha256: str, size: int) -> None:
        """A local copy was made: account for it, dropping least recently used ones."""

    def touch(self, sha256: str) -> None:
        """A hit served the local copy (cheap: on the reactor thread)."""

    def delete(self, sha256: str) -> bool: ...

    def delete_unreferenced(self, sha256: str, is_referenced: Callable[[str], bool]) -> bool: ...

    def verify(
        self, sha256: str, size: int | None = None, pace: Callable[[int], None] | None = None
    ) -> bool: ...

    def quarantine(self, sha256: str) -> str | None: ...

    def digests(self) -> Iterator[str]: ...

    def sweep_tmp(self, stopping: Callable[[], bool] = ...) -> int: ...

    def sweep_orphans(
        self,
        is_referenced: Callable[[str], bool],
        stopping: Callable[[], bool] = ...,
        digests: Iterable[str] | None = ...,
    ) -> list[str]: ...


class RemoteBlobStore(BlobStore, Protocol):
    """A BlobStore whose blobs live elsewhere (remote is True): what withcache.storefill reads."""

    def head(self, sha256: str) -> int:
        """The object's size; raises ObjectMissing or StoreUnavailable."""

    def claim_unreferenced(
        self, sha256: str, is_referenced: Callable[[str], bool]
    ) -> DigestLock | None:
        """delete_unreferenced's catalog half: the local copy dropped and the digest's lock,
        held, for delete_claimed; None if a row names it or the lock is taken."""

    def delete_claimed(self, sha256: str, locked: DigestLock) -> bool:
        """delete_unreferenced's store half: delete the object, let go of the lock."""

    def open_object(self, sha256: str, first: int = 0, last: int | None = None) -> tuple[Any, int]:
        """A GET (of bytes first..last when given): a body with read(n) and close(), and its
        length; raises ObjectMissing or StoreUnavailable."""
