"""Time and HTTP the test controls: a Clock that also takes calls from threads, and a
recording agent (the shape of treq's agent_spy) whose requests the test answers by hand.

With these the Fetcher, the download manager and the cache run in process on a
`twisted.internet.task.Clock`: the retry schedule, the Retry-After cap and the idle timeout are
asserted to the second, and nothing waits on the wall clock.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IResponse
from zope.interface import implementer

THREAD_WAIT = 30  # seconds a thread's answer may take before the test fails (not a sleep)


class ThreadClock(Clock):
    """A Clock whose callFromThread queues the call for the test to run (tahoe-lafs's habit):
    the writer and database threads hand their results back only when the test says so.

    getThreadPool gives real threads (started on first use, stopped by stop()), so blocking
    work really happens off the test's thread while time stands still.
    """

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: queue.Queue = queue.Queue()
        self._pool: ThreadPool | None = None

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.from_threads.put((f, args, kwargs))

    def getThreadPool(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=4, name="test-clock")
            self._pool.start()
        return self._pool

    def run_next(self) -> None:
        """Run the next call a thread handed back (waiting for one, up to THREAD_WAIT)."""
        f, args, kwargs = self.from_threads.get(timeout=THREAD_WAIT)
        f(*args, **kwargs)

    def run_until(self, predicate: Callable[[], bool]) -> None:
        """Run calls from threads until predicate() holds; time does not move."""
        while not predicate():
            self.run_next()

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()


@implementer(IResponse)
@dataclass
class FakeResponse:
    """An IResponse the test writes the body of: deliver(), then finish() or lose()."""

    code: int
    headers: Headers = field(default_factory=Headers)
    length: Any = UNKNOWN_LENGTH
    version: tuple = (b"HTTP", 1, 1)
    phrase: bytes = b"Whatever"
    request: Any = None
    previousResponse: Any = None
    protocol: Any = None
    transport: StringTransport = field(default_factory=StringTransport)

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)

    def setPreviousResponse(self, response: Any) -> None:
        self.previousResponse = response

    def deliver(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def finish(self) -> None:
        self.protocol.connectionLost(Failure(ResponseDone()))

    def lose(self) -> None:
        """The connection breaks mid-body."""
        self.protocol.connectionLost(Failure(ResponseFailed([Failure(ConnectionLost())])))


def response(code: int, body_length: int | None = None, **headers: str) -> FakeResponse:
    """A response with headers given as keyword arguments (retry_after="5" is Retry-After)."""
    raw = Headers({k.replace("_", "-").encode(): [v.encode()] for k, v in headers.items()})
    return FakeResponse(code, raw, UNKNOWN_LENGTH if body_length is None else body_length)


@dataclass
class Request:
    method: bytes
    uri: bytes
    headers: Headers | None
    deferred: defer.Deferred


@implementer(IAgent)
class RecordingAgent:
    """An IAgent that records each request; the test fires its deferred with a response."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def request(
        self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer: Any = None
    ) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.requests.append(Request(method, uri, headers, d))
        return d

    def answer(self, fake: FakeResponse) -> FakeResponse:
        """Answer the latest request with fake."""
        self.requests[-1].deferred.callback(fake)
        return fake

    def header(self, name: bytes, index: int = -1) -> bytes | None:
        headers = self.requests[index].headers or Headers()
        return (headers.getRawHeaders(name) or [None])[0]
