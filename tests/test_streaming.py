"""StreamProducer in-process: a fake request and transport, a Clock, a real temp file.

Reads that would wait for the disk run on a "thread pool" that runs them at once, so every step
is deterministic; the end-to-end behaviour is in tests/test_streaming_e2e.py.
"""

from __future__ import annotations

import os

import pytest
from twisted.internet.task import Clock

from withcache.fillstream import FillStream
from withcache.web import streaming
from withcache.web.streaming import StreamProducer


class InlinePool:
    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        try:
            result = f(*args, **kwargs)
        except BaseException as e:  # pragma: no cover - reported like a pool would
            on_result(False, e)
        else:
            on_result(True, result)


class Reactor(Clock):
    def getThreadPool(self):
        return InlinePool()

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class Transport:
    def __init__(self):
        self.aborted = False

    def abortConnection(self):
        self.aborted = True


class Channel:
    def __init__(self):
        self.transport = Transport()


class Request:
    """As much of twisted.web's Request as a body producer uses."""

    def __init__(self):
        self.channel = Channel()
        self.body = b""
        self.producer = None
        self.finished = False

    def registerProducer(self, producer, streaming):
        assert streaming
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def write(self, data):
        assert not self.finished
        self.body += data

    def finish(self):
        self.finished = True


class Fill:
    """A fill's temp file and stream, written by the test."""

    def __init__(self, path, total):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.stream = FillStream("key")
        self.stream.attach(os.open(path, os.O_RDONLY))
        self.stream.headers(total, "application/octet-stream")

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)
        self.stream.written(os.fstat(self.fd).st_size)

    def restart(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.stream.restarted()

    def close(self):
        os.close(self.fd)
        self.stream.close()


@pytest.fixture
def fill_factory(tmp_path):
    fills = []

    def make(total=None):
        fills.append(Fill(tmp_path / f"fill-{len(fills)}", total))
        return fills[-1]

    yield make
    for fill in fills:
        fill.close()


@pytest.fixture(autouse=True, params=["page-cache", "thread"])
def read_path(request, monkeypatch):
    """Every test twice: reads answered from the page cache, and reads sent to a thread."""
    if request.param == "thread":
        monkeypatch.setattr(streaming, "_read_nowait", lambda fd, offset, length: None)
    return request.param


def reader(fill, offset=0, end="total"):
    request = Request()
    done = []
    producer = StreamProducer(
        request,
        fill.stream,
        offset,
        fill.stream.total if end == "total" else end,
        Reactor(),
        done.append,
    )
    producer.start()
    return request, producer, done


def test_a_reader_gets_the_bytes_as_they_are_written_then_finishes(fill_factory):
    fill = fill_factory(total=10)
    request, _producer, done = reader(fill)
    assert request.body == b""
    fill.write(b"0123")
    assert request.body == b"0123" and not request.finished
    fill.write(b"456789")
    assert request.body == b"0123456789" and request.finished
    assert done == [10] and fill.stream.readers == 0


def test_a_late_reader_gets_what_is_written_at_once(fill_factory):
    fill = fill_factory(total=10)
    fill.write(b"01234567")
    request, _producer, _done = reader(fill)
    assert request.body == b"01234567"
    fill.write(b"89")
    assert request.finished


def test_a_paused_reader_sends_nothing_until_resumed(fill_factory):
    fill = fill_factory(total=6)
    request, producer, _done = reader(fill)
    producer.pauseProducing()
    fill.write(b"abcdef")
    assert request.body == b""
    producer.resumeProducing()
    assert request.body == b"abcdef" and request.finished


def test_a_range_ahead_of_the_writer_waits_for_its_bytes(fill_factory):
    fill = fill_factory(total=10)
    request, _producer, _done = reader(fill, offset=6, end=9)
    fill.write(b"01234")
    assert request.body == b""
    fill.write(b"5678")
    assert request.body == b"678" and request.finished


def test_a_body_of_unknown_length_ends_when_the_fill_commits(fill_factory):
    fill = fill_factory(total=None)
    request, _producer, done = reader(fill)
    fill.write(b"abc")
    assert request.body == b"abc" and not request.finished
    fill.stream.complete(3)
    assert request.finished and done == [3]


def test_a_restart_cuts_off_a_reader_that_had_bytes(fill_factory):
    fill = fill_factory(total=4)
    request, _producer, done = reader(fill)
    fill.write(b"ab")
    fill.restart()
    assert request.channel.transport.aborted and not request.finished
    assert done == [2] and fill.stream.readers == 0


def test_a_restart_before_any_byte_is_followed(fill_factory):
    fill = fill_factory(total=4)
    request, _producer, _done = reader(fill, offset=2, end=4)
    fill.write(b"x")  # of the old attempt; the range starts further on
    fill.restart()
    fill.write(b"wxyz")
    assert request.body == b"yz" and request.finished
    assert not request.channel.transport.aborted


def test_a_new_length_cuts_off_a_reader_promised_the_old_one(fill_factory):
    fill = fill_factory(total=4)
    request, _producer, _done = reader(fill)
    fill.restart()
    fill.stream.headers(5, None)
    assert request.channel.transport.aborted


def test_a_failed_fill_cuts_off_every_reader(fill_factory):
    fill = fill_factory(total=None)
    first, _p, _d = reader(fill)
    fill.write(b"abc")
    second, _p, _d = reader(fill)
    fill.stream.fail("origin answered 404 for good")
    assert first.channel.transport.aborted and second.channel.transport.aborted
    assert not first.finished and not second.finished
    assert fill.stream.readers == 0


def test_a_client_that_goes_away_stops_following(fill_factory):
    fill = fill_factory(total=10)
    request, producer, done = reader(fill)
    fill.write(b"012")
    producer.stopProducing()
    assert fill.stream.readers == 0 and done == [3]
    fill.write(b"3456789")  # the fill goes on; nothing is written to the gone request
    assert request.body == b"012"


def test_a_file_shorter_than_the_progress_cuts_off_the_reader(fill_factory):
    fill = fill_factory(total=10)
    request, _producer, _done = reader(fill)
    fill.stream.written(5)  # says 5 bytes, the file has none
    assert request.channel.transport.aborted and request.body == b""
