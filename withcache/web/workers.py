"""The host's side of `--processes N`: N-1 serving workers (withcache.web.worker) on its socket.

The host hands each worker a duplicate of its listening socket and nothing else; the kernel
spreads connections over every process accepting on it. Requests a worker passes on arrive on a
loopback port of their own, and only there, only with the per-start secret, is the client
address a worker names believed. A worker's reports (hits, bytes served) go into the host's
index and metrics; its log events are re-published in the host's log; a worker that dies is
started again after a second. Stopping the host closes each worker's stdin, which lets it write
its last report and exit.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import eventFromJSON, globalLogPublisher
from twisted.web import server

from withcache._log import make_logger
from withcache.cache import Cache
from withcache.index import PendingHits
from withcache.twisted_compat import listening_port
from withcache.web.app import WithcacheSite
from withcache.web.forward import SECRET_HEADER

log = make_logger()

RESTART_AFTER = 1.0
STOP_TIMEOUT = 10.0


def forwarded_request(secret: bytes) -> type[server.Request]:
    """A Request class that takes the client address from X-Forwarded-For when the worker's
    secret comes with it (so logs and the login throttle see the real client)."""

    class ForwardedRequest(server.Request):
        def getClientAddress(self) -> Any:
            forwarded = self.getHeader(b"x-forwarded-for")
            if forwarded and self.getHeader(SECRET_HEADER) == secret:
                host = forwarded.decode("ascii", "replace")
                return (IPv6Address if ":" in host else IPv4Address)("TCP", host, 0)
            return super().getClientAddress()

    return ForwardedRequest


class _Lines:
    """Splits a byte stream into lines."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return [line for line in lines if line.strip()]


class WorkerProtocol(protocol.ProcessProtocol):
    transport: Any  # the worker's process, set by spawnProcess before any event

    def __init__(self, workers: ServingWorkers):
        self.workers = workers
        self._reports, self._logs = _Lines(), _Lines()
        self.ended: defer.Deferred = defer.Deferred()

    @property
    def pid(self) -> int | None:
        return getattr(self.transport, "pid", None)

    def outReceived(self, data: bytes) -> None:
        for line in self._reports.feed(data):
            try:
                report = json.loads(line)
                hits = {k: PendingHits(int(n), float(at)) for k, n, at in report["hits"]}
                served = int(report["served"])
            except (ValueError, KeyError, TypeError):
                log.warn(
                    "worker {pid} sent an unreadable report: {line!r}", pid=self.pid, line=line
                )
                continue
            self.workers.cache.record_remote_hits(hits, served)

    def errReceived(self, data: bytes) -> None:
        for line in self._logs.feed(data):
            try:
                event = eventFromJSON(line.decode("utf-8", "replace"))
            except ValueError:
                log.warn("worker {pid}: {line}", pid=self.pid, line=line.decode("utf-8", "replace"))
                continue
            event["worker"] = self.pid
            globalLogPublisher(event)

    def processEnded(self, reason: Any) -> None:
        self.workers.ended(self, reason)
        self.ended.callback(None)


def _cancel(_: object, call: Any) -> None:
    call.cancel()


class ServingWorkers(service.Service):
    """Starts count-1 workers once the host's listening port is up; keeps them running."""

    def __init__(
        self,
        count: int,
        cache: Cache,
        site: WithcacheSite,
        listening: Any,
        *,
        query: str,
        reactor: Any,
    ):
        self.count = count
        self.cache = cache
        self._site = site
        self._listening = listening
        self._query = query
        self._reactor = reactor
        self._secret = secrets.token_hex(16)
        self._port: Any = None
        self._upstream: Any = None
        self.live: list[WorkerProtocol] = []

    def startService(self) -> None:
        super().startService()
        upstream = WithcacheSite(
            self._site.resource, requestFactory=forwarded_request(self._secret.encode())
        )
        upstream.access_log = self._site.access_log
        self._upstream = self._reactor.listenTCP(0, upstream, interface="127.0.0.1")
        listening_port(self._listening).addCallback(self._start_all)

    def _start_all(self, port: Any) -> Any:
        self._port = port
        for _ in range(self.count - 1):
            self._spawn()
        log.info("started {n} serving workers", n=self.count - 1)
        return port

    def _spawn(self) -> None:
        if not self.running:
            return
        family = "6" if isinstance(self._port.getHost(), IPv6Address) else "4"
        argv = [sys.executable, "-c", "from withcache.web.worker import main; main()"]
        argv += ["--data-dir"]
        argv += [os.path.dirname(self.cache.store.blobs_dir), "--fd", "3", "--family", family]
        argv += ["--upstream", str(self._upstream.getHost().port)]
        argv += ["--query", self._query]
        argv += ["--freshness", self.cache.settings.freshness.to_json()]
        argv += [] if self._site.access_log else ["--no-access-log"]
        worker = WorkerProtocol(self)
        # The catalog goes in the environment, not argv: its URL may carry a password.
        catalog = self.cache.catalog.url.render_as_string(hide_password=False)
        env = dict(os.environ, WITHCACHE_WORKER_SECRET=self._secret, WITHCACHE_CATALOG=catalog)
        fds = {0: "w", 1: "r", 2: "r", 3: self._port.fileno()}
        self._reactor.spawnProcess(worker, sys.executable, argv, env=env, childFDs=fds)
        self.live.append(worker)

    def ended(self, worker: WorkerProtocol, reason: Any) -> None:
        self.live.remove(worker)
        if self.running:
            log.warn(
                "serving worker {pid} ended ({reason}); starting another",
                pid=worker.pid,
                reason=reason.getErrorMessage(),
            )
            self._reactor.callLater(RESTART_AFTER, self._spawn)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        stopped = []
        for worker in list(self.live):
            worker.transport.closeStdin()
            kill = self._reactor.callLater(STOP_TIMEOUT, worker.transport.signalProcess, "KILL")
            stopped.append(worker.ended.addCallback(_cancel, kill))
        d = defer.gatherResults(stopped)
        d.addBoth(lambda _: self._upstream.stopListening())
        return d
