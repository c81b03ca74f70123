"""PartsProducer: blob bodies for TLS connections and multi-range answers, disk reads off the
reactor thread, a push producer a slow client pauses."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted
from twisted.internet import defer

from withcache.web import filebody
from withcache.web.filebody import CHUNK, PartsProducer
from withcache.web.ranges import answer_ranges
from withcache.web.sendfile import BlobFile


class Transport:
    aborted = False

    def abortConnection(self):
        self.aborted = True


class Channel:
    def __init__(self):
        self.transport = Transport()


class Request:
    """What PartsProducer uses of a twisted.web request; pauses the producer once `window`
    bytes are written, as a transport with a full buffer does."""

    def __init__(self, window: int | None = None):
        self.body = bytearray()
        self.channel = Channel()
        self.producer = None
        self.finished = defer.Deferred()
        self.window = window

    def registerProducer(self, producer, streaming):
        assert streaming
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        self.body += data
        if self.window is not None and len(self.body) >= self.window:
            self.producer.pauseProducing()

    def finish(self):
        self.finished.callback(bytes(self.body))


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * (5 * CHUNK // 256 + 3))
    return path


@pytest.fixture
def f(blob):
    """The blob opened for reading, as static.File hands it to makeProducer."""
    with open(blob, "rb") as opened:
        yield opened


async def until(check):
    """Turn the reactor until check() holds (a pool thread's result arrives through it)."""
    from twisted.internet import reactor, task

    for _ in range(1000):
        if check():
            return
        await task.deferLater(reactor, 0.001, lambda: None)
    raise AssertionError("not within 1000 reactor turns")


def within(d, seconds=10):
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


@pytest_twisted.ensureDeferred
async def test_a_whole_blob_is_written_and_the_request_finished(blob, f):
    from twisted.internet import reactor

    request = Request()
    PartsProducer(request, f, [(b"", 0, blob.stat().st_size)], reactor).start()
    assert await within(request.finished) == blob.read_bytes()
    assert f.closed


@pytest_twisted.ensureDeferred
async def test_parts_come_after_their_prefixes_and_the_closing_boundary_last(blob, f):
    from twisted.internet import reactor

    data = blob.read_bytes()
    parts = [(b"--a\r\n", 10, 5), (b"--b\r\n", CHUNK * 2 - 3, CHUNK + 7), (b"--end--", 0, 0)]
    request = Request()
    PartsProducer(request, f, parts, reactor).start()
    expected = b"--a\r\n" + data[10:15] + b"--b\r\n" + data[CHUNK * 2 - 3 : CHUNK * 3 + 4]
    assert await within(request.finished) == expected + b"--end--"


@pytest_twisted.ensureDeferred
async def test_bytes_not_in_the_page_cache_are_read_on_a_pool_thread(blob, f, monkeypatch):
    from twisted.internet import reactor

    monkeypatch.setattr(filebody, "_read_nowait", lambda *_: None)  # "would block on the disk"
    readers = []
    real_read = filebody._read
    monkeypatch.setattr(
        filebody, "_read", lambda *a: readers.append(threading.current_thread()) or real_read(*a)
    )
    request = Request()
    PartsProducer(request, f, [(b"", 0, blob.stat().st_size)], reactor).start()
    assert await within(request.finished) == blob.read_bytes()
    assert len(readers) == 6 and threading.main_thread() not in readers


@pytest_twisted.ensureDeferred
async def test_a_paused_producer_reads_nothing_more_until_resumed(blob, f):
    from twisted.internet import reactor

    request = Request(window=CHUNK)
    producer = PartsProducer(request, f, [(b"", 0, blob.stat().st_size)], reactor)
    producer.start()
    assert len(request.body) == CHUNK and not request.finished.called
    request.window = None
    producer.resumeProducing()
    assert await within(request.finished) == blob.read_bytes()


@pytest_twisted.ensureDeferred
async def test_a_client_gone_during_a_thread_read_closes_the_file_and_writes_nothing(
    blob, f, monkeypatch
):
    from twisted.internet import reactor

    monkeypatch.setattr(filebody, "_read_nowait", lambda *_: None)
    gate = threading.Event()
    real_read = filebody._read
    monkeypatch.setattr(filebody, "_read", lambda *a: gate.wait(10) and real_read(*a))
    request = Request()
    producer = PartsProducer(request, f, [(b"", 0, blob.stat().st_size)], reactor)
    producer.start()
    producer.stopProducing()
    assert not f.closed  # the thread still reads from it
    gate.set()
    await until(lambda: f.closed)
    assert request.body == b"" and not request.finished.called


@pytest_twisted.ensureDeferred
async def test_a_blob_cut_short_under_a_reader_aborts_the_connection(blob, f):
    from twisted.internet import reactor

    size = blob.stat().st_size
    request = Request()
    with open(blob, "r+b") as cut:
        cut.truncate(CHUNK + 10)
    PartsProducer(request, f, [(b"", 0, size)], reactor).start()
    await until(lambda: f.closed)
    assert request.channel.transport.aborted
    assert len(request.body) == CHUNK and not request.finished.called


def test_blob_file_gives_parts_producers_where_sendfile_cannot_go(blob):
    """A TLS connection (not a plain TCP socket) and a multi-range answer: never static.File's
    own producers, which read the disk on the reactor thread."""
    from twisted.internet import reactor
    from twisted.web.test.requesthelper import DummyChannel, DummyRequest

    size = blob.stat().st_size
    for ranges in (None, b"bytes=0-9", b"bytes=0-9,20-29"):
        answer = answer_ranges(ranges, size, b"application/octet-stream")
        resource = BlobFile(str(blob), b"application/octet-stream", answer, reactor, None)
        request = DummyRequest([b""])
        request.channel = DummyChannel()  # not a plain TCP connection, as TLS is not
        with open(blob, "rb") as f:
            assert isinstance(resource.makeProducer(request, f), PartsProducer), ranges
