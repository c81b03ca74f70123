"""A hit whose local copy is missing: the object streams in from the store while clients follow.

With a remote blob store (withcache.s3store) a hit may find no local copy (dropped from the
bounded local cache, or never made on this host). StoreFills makes one: a GET of the object in
a thread of its own bounded pool, written through an Ingest into tmp/ (hashed as written) and
committed into blobs/ only if its length and sha256 are the catalog's. The fill is published as
a withcache.fillstream.FillStream, the same stream an origin fill publishes, so its clients are
served by withcache.web.streaming (sendfile from the temp file as it grows) and concurrent hits
of one digest share one GET.

Never whole unless right: the stream withholds the last byte until the digest has been checked,
so a short or wrong object cuts every client off (FillStream.fail) one byte short at least, and
the partial copy is deleted. A GET is a pull (unlike an origin response, which treq pushes on
the reactor, hence withcache.writer.ThreadedWriter there): one pool thread reads the body and
hands chunks through a small bounded queue to a writer thread that hashes and writes them, so
the network and the disk overlap and a slow disk simply reads the store more slowly.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.python.threadpool import ThreadPool

from withcache import catalog as cat
from withcache._log import make_logger
from withcache.blobstore import ObjectMissing, RemoteBlobStore
from withcache.fillstream import FillStream
from withcache.metrics import Metrics
from withcache.store import CHUNK, IntegrityError

log = make_logger()

# Object GETs at once; more wait in the pool's queue (their clients fall through meanwhile).
MAX_GETS = 8
# Threads for ranged reads (withcache.web.storerange), one chunk per task.
RANGE_THREADS = 4


class Stopped(Exception):
    """The host is stopping: the fill was abandoned part-way (its temp file is deleted)."""


class StoreFill:
    """One object being copied in: its stream, and why it failed (once it has)."""

    def __init__(self, sha256: str):
        self.stream = FillStream(sha256)
        self.failure: BaseException | None = None
        self._ended: list[defer.Deferred[None]] = []

    def when_done(self) -> defer.Deferred[None]:
        """A Deferred of the caller's own, fired once the copy is committed or has failed."""
        d: defer.Deferred[None] = defer.Deferred()
        if self.stream.ended:
            d.callback(None)
        else:
            self._ended.append(d)
        return d

    def ended(self) -> None:
        ended, self._ended = self._ended, []
        for d in ended:
            d.callback(None)

    async def servable(self, reactor: Any, wait: float) -> bool:
        """True once clients can follow it; False if it fails or wait seconds pass first."""
        timer = task.deferLater(reactor, wait, lambda: False)
        _which, ok = await defer.race([self.stream.when_servable(), timer])
        return bool(ok) and not self.stream.ended


class StoreFills(service.Service):
    """Single flight per digest of object store -> local copy (see the module docstring)."""

    def __init__(
        self,
        store: RemoteBlobStore,
        reactor: Any,
        on_bad_object: Callable[[str, str], object] | None = None,
        max_gets: int = MAX_GETS,
        metrics: Metrics | None = None,
    ):
        self.store = store
        self._reactor = reactor
        self._metrics = metrics or Metrics()
        # Told (digest, why) when the store has no object for a digest or the wrong bytes: the
        # catalog's rows must go (Cache.quarantine), or every hit would GET them again.
        self._on_bad_object = on_bad_object
        self._pool = ThreadPool(0, max_gets, name="withcache-store")
        # Ranged reads on a pool of their own: short tasks, never queued behind whole copies.
        self._range_pool = ThreadPool(0, RANGE_THREADS, name="withcache-store-range")
        self._active: dict[str, StoreFill] = {}
        self._stopping = threading.Event()

    def startService(self) -> None:
        super().startService()
        self._stopping.clear()
        self._pool.start()
        self._range_pool.start()

    def stopService(self) -> Any:
        super().stopService()
        self._stopping.set()  # fills in progress stop at their next chunk

        def stop_pools() -> None:
            self._range_pool.stop()
            self._pool.stop()

        return threads.deferToThread(stop_pools)

    def active(self, sha256: str) -> StoreFill | None:
        return self._active.get(sha256)

    def start(self, artifact: cat.Artifact) -> StoreFill:
        """The fill of artifact's blob: the one under way, or a new one."""
        fill = self._active.get(artifact.sha256)
        if fill is not None and not fill.stream.ended:
            return fill
        fill = self._active[artifact.sha256] = StoreFill(artifact.sha256)
        d = threads.deferToThreadPool(
            self._reactor,
            self._pool,
            self._copy,
            fill.stream,
            artifact.sha256,
            artifact.size,
            artifact.content_type,
        )
        d.addCallbacks(self._done, self._failed, (fill, artifact.size), errbackArgs=(fill,))
        return fill

    # -- ranged reads (withcache.web.storerange), each call a short task on the pool --

    def open_range(self, sha256: str, first: int, last: int) -> defer.Deferred[tuple[Any, int]]:
        """A GET of bytes first..last of the object: its body and length."""
        return threads.deferToThreadPool(
            self._reactor, self._range_pool, self.store.open_object, sha256, first, last
        )

    def read(self, body: Any, n: int) -> defer.Deferred[bytes]:
        return threads.deferToThreadPool(self._reactor, self._range_pool, body.read, n)

    def close(self, body: Any) -> None:
        closed = threads.deferToThreadPool(self._reactor, self._range_pool, body.close)
        closed.addErrback(lambda f: None)  # a connection that broke: nothing to keep

    def readers(self) -> int:
        """Clients streaming a copy in progress."""
        return sum(fill.stream.readers for fill in self._active.values())

    def _done(self, _: None, fill: StoreFill, size: int) -> None:
        self._metrics.store_copies.labels("ok").inc()
        self._metrics.store_copy_bytes.inc(size)
        self._forget(fill)
        fill.stream.complete(size)
        fill.stream.close()
        fill.ended()

    def _failed(self, failure: Any, fill: StoreFill) -> None:
        self._forget(fill)
        fill.failure = failure.value
        log.warn(
            "could not copy {sha256} from the object store: {why}",
            sha256=fill.stream.key,
            why=str(failure.value) or failure.type.__name__,
        )
        fill.stream.fail(str(failure.value) or failure.type.__name__)
        fill.stream.close()
        fill.ended()
        bad = None
        if failure.check(ObjectMissing):
            outcome, bad = "missing", "its object is missing from the store"
        elif failure.check(IntegrityError):
            outcome, bad = "wrong", f"its object is wrong: {failure.value}"
        else:
            outcome = "failed"
        self._metrics.store_copies.labels(outcome).inc()
        if bad is not None and self._on_bad_object is not None:
            self._on_bad_object(fill.stream.key, bad)

    def _forget(self, fill: StoreFill) -> None:
        if self._active.get(fill.stream.key) is fill:
            del self._active[fill.stream.key]

    def _read_into(self, body: Any, writer: _Writer, size: int) -> None:
        """Read the body into the writer (which hashes and writes in its own thread, so the
        network and the disk overlap); raise what either side hit."""
        read = 0
        try:
            while chunk := body.read(CHUNK):
                if self._stopping.is_set():
                    raise Stopped("the host is stopping")
                read += len(chunk)
                if read > size:
                    raise IntegrityError(f"the object is longer than {size} bytes")
                if not writer.put(chunk):
                    break  # it failed: raised below
        finally:
            writer.close()

    def _copy(self, stream: FillStream, sha256: str, size: int, content_type: str | None) -> None:
        """Blocking, in the pool: GET the object into an ingest, telling the stream (on the
        reactor) what is readable, and commit it if its bytes are the catalog's."""
        call: Callable[..., None] = self._reactor.callFromThread
        ingest = self.store.ingest()
        try:
            call(stream.attach, os.open(ingest.tmp_path, os.O_RDONLY | os.O_CLOEXEC))
            body, length = self.store.open_object(sha256)
            try:
                if length != size:
                    raise IntegrityError(f"the store holds {length} bytes, the catalog {size}")
                call(stream.headers, size, content_type)
                self._read_into(body, _Writer(ingest, stream, size, call), size)
            finally:
                body.close()
            if ingest.size != size or ingest.hexdigest() != sha256:
                raise IntegrityError(f"the object's {ingest.size} bytes are not {sha256}")
            # Right: readers may have the last byte now, before the fsync (they read the
            # temp file through the page cache; durability is for the local copy's future).
            call(stream.written, size)
            ingest.commit(expected_size=size, expected_sha256=sha256)
        finally:
            ingest.close()
        self.store.kept_locally(sha256, size)


class _Writer:
    """An ingest's writes on a thread of its own behind a bounded queue (QUEUED chunks): the
    reader blocks when the disk is behind. Each write is reported to the stream on the reactor,
    all but the last byte (the module docstring)."""

    QUEUED = 8

    def __init__(self, ingest: Any, stream: FillStream, size: int, call: Callable[..., None]):
        self._ingest, self._stream, self._size, self._call = ingest, stream, size, call
        self._queue: queue.Queue[bytes | None] = queue.Queue(self.QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="withcache-store-writer")
        self._thread.start()

    def put(self, chunk: bytes) -> bool:
        """Queue a chunk; False once the writer has failed."""
        if self._error is not None:
            return False
        self._queue.put(chunk)
        return True

    def close(self) -> None:
        """Wait for the queued writes; raise what the writer hit."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drained, so a reader blocked on put() gets to close()
            try:
                self._ingest.write(chunk)
            except BaseException as e:
                self._error = e
                continue
            self._call(self._stream.written, min(self._ingest.size, self._size - 1))
