"""A serving worker process (`--processes N`): hits from the shared listening socket.

One reactor thread tops out at a few thousand small hits a second, so with --processes N the
host starts N-1 of these beside itself. Each accepts connections on the host's own listening
socket (inherited as a file descriptor) and answers hits straight from the blob files, exactly
as the host does, asking the catalog (read only) about keys its index does not know yet. Every
other request (a miss, /healthz, /metrics, the operator UI, anything malformed) it passes to the
host over loopback (withcache.web.forward), marked with a shared secret and the client's
address. It counts hits in memory and reports them, with the bytes it served, to the host on
stdout once a second; the host writes them with its own. It logs through the host (events as
JSON lines on stderr) and exits when its stdin closes, i.e. when the host stops or dies. The
host starts it as

    python -c 'from withcache.web.worker import main; main()' --data-dir D --upstream PORT
        --fd 3 [--family 6] [--query signed|keep|drop] [--no-access-log]
        (secret: $WITHCACHE_WORKER_SECRET; the host's catalog: $WITHCACHE_CATALOG)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
from typing import Any

from twisted.internet import defer, protocol, stdio, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import eventAsJSON, globalLogBeginner
from twisted.web import resource, server
from zope.interface import implementer

from withcache import catalog as cat
from withcache import freshness
from withcache._log import make_logger
from withcache.catalog_db import ENV as CATALOG_ENV
from withcache.catalog_db import catalog_of
from withcache.hits import Hit, KnownHits
from withcache.index import PendingHits
from withcache.keys import DEFAULT_QUERY, QUERY_MODES
from withcache.store import Store
from withcache.web.app import WithcacheSite
from withcache.web.blob_request import known_url
from withcache.web.blobs import HitServer, secure_read_path
from withcache.web.forward import Forward

log = make_logger()

SYNC_INTERVAL = 1.0


class _Counter:
    """The one metric a worker keeps: bytes served, reported to the host and reset."""

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: float = 1) -> None:
        self.value += int(amount)


class WorkerCache(KnownHits):
    """The read path's HitSource in a serving worker: the index, learnt from the catalog
    (read only); hits and bytes served are reported to the host, which writes them."""

    def __init__(
        self,
        store: Store,
        catalog: cat.Catalog,
        query: str,
        reactor: Any,
        policy: freshness.Policy | None = None,
    ):
        super().__init__()
        self.store = store
        # A stale artifact is the host's to revalidate: this worker forwards its requests.
        self.freshness_policy = policy or freshness.Policy()
        self.catalog = catalog
        self.query = query
        self.reactor = reactor
        self._now = reactor.seconds
        self.served_bytes = _Counter()

    async def learn(self, url: str) -> Hit | None:
        """Ask the catalog about url (on the database thread) and remember the answer."""
        key = self.key_for(url)
        generation = self.index.generation
        found = await self.catalog.run(cat.get_artifact, key)
        if found is None:
            return None
        self.index.remember(found, generation)
        return self.hit_of(found) if self.fresh(found) else None

    async def sync(self, report: Any) -> None:
        """Report hits and bytes served to the host; forget the index if the catalog changed."""

        async def send(hits: dict[str, PendingHits]) -> int:
            # Asked first: if the catalog cannot answer, the hits wait for the next sync.
            generation = await self.catalog.run(cat.artifacts_generation)
            served, self.served_bytes.value = self.served_bytes.value, 0
            if hits or served:
                batch = [[key, p.count, p.last_at] for key, p in hits.items()]
                report.write(json.dumps({"hits": batch, "served": served}).encode() + b"\n")
            return generation

        await self.sync_hits(send)


class WorkerRoot(resource.Resource):
    """Hits this worker can find are answered here; everything else goes to the host."""

    isLeaf = True

    def __init__(self, cache: WorkerCache, read_path: HitServer, forward: Forward):
        super().__init__()
        self._cache, self._read_path, self._forward = cache, read_path, forward

    def render(self, request: Any) -> Any:
        # Replaced by the host's own headers on an answer it gives (see _HostAnswer).
        secure_read_path(request)
        served = self._read_path.serve_known_hit(request)
        if served is not None:
            return served
        url = known_url(request)
        if url is None:
            return self._forward.render(request)
        # A key this worker has not learnt yet: ask the catalog rather than pass the body
        # through the host.
        gone: list[bool] = []
        request.notifyFinish().addErrback(gone.append)
        learnt = defer.ensureDeferred(self._cache.learn(url))
        learnt.addErrback(lambda f: None)
        learnt.addCallback(lambda hit: gone or request.render(_Answer(self, hit)))
        return server.NOT_DONE_YET

    def answer(self, request: Any, hit: Hit | None) -> Any:
        served = None if hit is None else self._read_path.serve_hit(request, hit)
        return self._forward.render(request) if served is None else served


class _Answer(resource.Resource):
    """Renders a learnt answer through Request.render, which finishes the response."""

    isLeaf = True

    def __init__(self, root: WorkerRoot, hit: Hit | None):
        super().__init__()
        self._root, self._hit = root, hit

    def render(self, request: Any) -> Any:
        return self._root.answer(request, self._hit)


class WorkerSite(WithcacheSite):
    def log(self, request: Any) -> None:
        # A forwarded request is logged by the host that answered it.
        if not getattr(request, "forwarded", False):
            super().log(request)


@implementer(IHalfCloseableProtocol)
class _HostLink(protocol.Protocol):
    """stdin/stdout to the host: reports go out on stdout; the end of stdin means stop, after a
    last report; the end of both (the host is gone) means stop now."""

    transport: Any  # StandardIO's, set when it connects

    def __init__(self, on_stdin_closed: Any, on_lost: Any):
        self._on_stdin_closed, self._on_lost = on_stdin_closed, on_lost

    def readConnectionLost(self) -> None:
        self._on_stdin_closed()

    def writeConnectionLost(self) -> None:
        # Nobody reads reports any more: the host is gone.
        self._on_lost()

    def connectionLost(self, reason: Any = None) -> None:
        self._on_lost()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="withcache serving worker (started by the host)")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--upstream", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--family", type=int, choices=(4, 6), default=4)
    parser.add_argument("--query", choices=QUERY_MODES, default=DEFAULT_QUERY)
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--freshness", type=freshness.Policy.from_json, default=freshness.Policy())
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import reactor as installed

    reactor: Any = installed  # the module stands in for the reactor: type it as one

    args = parse_args(sys.argv[1:] if argv is None else argv)
    secret = os.environ.pop("WITHCACHE_WORKER_SECRET").encode()

    def to_stderr(event: Any) -> None:
        sys.stderr.write(eventAsJSON(event) + "\n")

    observers: list[Any] = [to_stderr]
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)
    # Read only, a call at a time mostly: two threads are plenty for a worker.
    where = catalog_of(os.environ.pop(CATALOG_ENV, None), args.data_dir)
    catalog = cat.Catalog(where, reactor, query=args.query, threads=2)
    catalog.startService()
    cache = WorkerCache(Store(args.data_dir), catalog, args.query, reactor, args.freshness)
    read_path = HitServer(cache)
    site = WorkerSite(WorkerRoot(cache, read_path, Forward(reactor, args.upstream, secret)))
    site.access_log = not args.no_access_log
    family = socket.AF_INET6 if args.family == 6 else socket.AF_INET
    port = reactor.adoptStreamPort(args.fd, family, site)
    os.close(args.fd)  # adoptStreamPort keeps a duplicate

    def sync() -> defer.Deferred:
        d = defer.ensureDeferred(cache.sync(link.transport))
        return d.addErrback(lambda f: log.failure("worker sync failed", f))

    def last_report() -> None:
        port.stopListening()
        syncing.stop()
        sync().addBoth(lambda _: link.transport.loseConnection())

    def stop() -> None:
        if catalog.running:
            catalog.stopService().addBoth(lambda _: reactor.running and reactor.stop())

    link = _HostLink(last_report, stop)
    stdio.StandardIO(link, reactor=reactor)
    syncing = task.LoopingCall(sync)
    syncing.clock = reactor
    syncing.start(SYNC_INTERVAL, now=False)
    # The host decides when a worker stops (it closes stdin): a Ctrl-C in the terminal reaches
    # the whole process group, and the worker must still get its last report out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
