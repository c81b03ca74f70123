"""Blocking operations on a data dir that touch both its blobs and its catalog.

One copy of each, for both callers: `withcache-admin` calls them directly with its own
connection; the host runs them on its database thread (`Catalog.run`), so each sees the
catalog and the blobs it names under one connection. None of them may run on the reactor.
Callers hold a digest's lock (`Store.lock`) where a function says so: taking it here, on the
database thread, would deadlock with a fill that holds it while it waits for that thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from sqlalchemy import Connection

from withcache import catalog as cat
from withcache.blobstore import BlobStore, RemoteBlobStore
from withcache.keys import cache_key
from withcache.store import DigestLock, IntegrityError, Store


def never() -> bool:
    return False


def delete_unreferenced(
    conn: Connection,
    store: BlobStore,
    digests: list[str],
    stopping: Callable[[], bool] = never,
) -> None:
    """Drop blobs that no row names any more.

    Until stopping(): each unlink of a big blob takes a while (0.2 s a GiB here), and an
    eviction can free many. Those left are orphans, swept at the next start.
    """
    for digest in digests:
        if stopping():
            break
        store.delete_unreferenced(digest, partial(cat.referenced, conn))


def claim_unreferenced(
    conn: Connection,
    store: RemoteBlobStore,
    digests: list[str],
    stopping: Callable[[], bool] = never,
) -> list[tuple[str, DigestLock]]:
    """delete_unreferenced's catalog half for a remote store: each digest no row names, its
    local copy dropped and its lock held, for RemoteBlobStore.delete_claimed (the object's
    delete, off the database thread)."""
    claimed = []
    for digest in digests:
        if stopping():
            break
        locked = store.claim_unreferenced(digest, partial(cat.referenced, conn))
        if locked is not None:
            claimed.append((digest, locked))
    return claimed


def sweep_orphans(
    conn: Connection,
    store: BlobStore,
    stopping: Callable[[], bool] = never,
    digests: list[str] | None = None,
) -> list[str]:
    """Delete every blob (or each of digests) no row names (what a crash between a blob and its
    row leaves)."""
    return store.sweep_orphans(partial(cat.referenced, conn), stopping, digests)


def quarantine(conn: Connection, store: BlobStore, sha256: str) -> tuple[str | None, list]:
    """Take a bad blob out of service: move it to quarantine/ (kept for a post-mortem) and drop
    the rows that name it. The caller holds the digest's lock across this, so a fill of the
    same bytes cannot put a good blob in place between the move and the rows going.

    Returns where the blob went (None if it was not there) and the artifacts dropped. The
    host (Cache.quarantine) takes these two steps on two threads: the move off the database
    thread, so a fill waiting for that thread is not held up by the disk.
    """
    moved = store.quarantine(sha256)
    return moved, cat.drop_blob(conn, sha256)


def import_file(
    conn: Connection,
    store: BlobStore,
    url: str,
    path: str,
    *,
    query: str,
    now: float,
    content_type: str | None = None,
) -> cat.Artifact:
    """Put a local file into the cache under an origin URL (`withcache-admin import`)."""
    key = cache_key(url, query=query)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    ingest = store.import_file(path)
    try:
        blob = ingest.blob
        assert blob is not None
        try:
            store.publish(blob)  # uploaded and confirmed (a remote store) before its row
        except BaseException:
            ingest.close()
            delete_unreferenced(conn, store, [blob.sha256])
            raise
        artifact = cat.Artifact(key, url, blob.sha256, blob.size, content_type, now)
        freed = cat.put_artifact(conn, artifact)
    finally:
        ingest.close()
    delete_unreferenced(conn, store, freed)
    return cat.get_artifact(conn, key) or artifact


def import_row(
    conn: Connection,
    store: BlobStore,
    source: Store | None,
    artifact: cat.Artifact,
    locked: DigestLock,
) -> str | None:
    """Write one imported catalog row, copying its blob from source if it is not here; why
    not, if not. The caller holds the digest's lock (locked) from the blob check to the row,
    so a host starting beside it cannot sweep the blob as an orphan in between."""
    ingest = None
    if not store.verify(artifact.sha256, artifact.size):
        if source is None or not source.exists(artifact.sha256):
            return "no blob"
        try:
            ingest = store.import_file(
                source.path_for(artifact.sha256), expected_sha256=artifact.sha256, lock=locked
            )
            assert ingest.blob is not None
            store.publish(ingest.blob)
        except IntegrityError:
            if ingest is not None:
                ingest.close()
            return "blob does not match its digest"
    try:
        cat.put_artifact(conn, artifact)
    finally:
        if ingest is not None:
            ingest.close()
    return None


def remove(conn: Connection, store: BlobStore, key: str) -> bool:
    """Delete an artifact's row, and its blob if no other row names it; whether it existed."""
    existed = cat.get_artifact(conn, key) is not None
    freed = cat.delete_artifact(conn, key)
    if freed:
        delete_unreferenced(conn, store, [freed])
    return existed
