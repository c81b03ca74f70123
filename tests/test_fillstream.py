"""FillStream (a fill's published progress) and the ThreadedWriter reports that feed it."""

from __future__ import annotations

import os

import pytest
from twisted.internet import defer

from tests.clocked import ThreadClock
from withcache.fillstream import FillStream
from withcache.store import Store
from withcache.writer import ThreadedWriter


class Recorder:
    """A follower that records what it saw each time it was told of a change."""

    def __init__(self, stream: FillStream):
        self.stream = stream
        self.seen: list[tuple[int, int, int | None, str | None]] = []

    def changed(self) -> None:
        s = self.stream
        self.seen.append((s.attempt, s.readable, s.size, s.error))


@pytest.fixture
def stream(tmp_path):
    s = FillStream("http://vendor.example/a.run")
    path = tmp_path / "fill"
    path.write_bytes(b"0123456789")
    s.attach(os.open(path, os.O_RDONLY))
    yield s
    s.close()


def test_a_wait_for_headers_fires_true_when_they_come():
    s = FillStream("k")
    waiting = s.when_servable()
    assert not waiting.called
    s.headers(100, "application/x-tar")
    assert waiting.result is True
    assert (s.servable, s.total, s.content_type) == (True, 100, "application/x-tar")


def test_a_wait_for_headers_fires_false_when_the_fill_fails_first():
    s = FillStream("k")
    waiting = s.when_servable()
    s.fail("origin answered 404")
    assert waiting.result is False
    assert s.when_servable().result is False


def test_a_cancelled_wait_is_forgotten_and_the_others_still_fire():
    s = FillStream("k")
    gone, kept = s.when_servable(), s.when_servable()
    gone.cancel()
    gone.addErrback(lambda f: f.trap(defer.CancelledError))
    s.headers(None, None)
    assert kept.result is True


def test_a_resumed_attempt_with_the_same_length_tells_nobody(stream):
    stream.headers(10, None)
    seen = Recorder(stream)
    os.close(stream.follow(seen))
    stream.headers(10, None)  # a 206 resuming the fill
    assert seen.seen == []


def test_followers_hear_bytes_restarts_and_the_end(stream):
    stream.headers(10, None)
    seen = Recorder(stream)
    os.close(stream.follow(seen))
    stream.written(4)
    stream.written(3)  # a late report of fewer bytes changes nothing
    stream.restarted()
    stream.written(2)
    stream.complete(10)
    assert seen.seen == [(0, 4, None, None), (1, 0, None, None), (1, 2, None, None),
                         (1, 10, 10, None)]  # fmt: skip


def test_a_failure_is_told_once_and_ends_following(stream):
    stream.headers(10, None)
    seen = Recorder(stream)
    os.close(stream.follow(seen))
    stream.fail("gave up")
    stream.fail("again")
    stream.complete(10)
    assert seen.seen == [(0, 0, None, "gave up")]
    with pytest.raises(ValueError):
        stream.follow(Recorder(stream))


def test_a_followers_descriptor_outlives_the_stream(stream):
    with pytest.raises(ValueError):
        stream.follow(Recorder(stream))  # not servable yet
    stream.headers(10, None)
    reader = Recorder(stream)
    fd = stream.follow(reader)
    assert stream.readers == 1
    stream.complete(10)
    stream.close()
    try:
        assert os.pread(fd, 10, 0) == b"0123456789"
    finally:
        os.close(fd)
    stream.unfollow(reader)
    assert stream.readers == 0


class Heard:
    def __init__(self):
        self.events: list[object] = []

    def written(self, readable: int) -> None:
        self.events.append(readable)

    def restarted(self) -> None:
        self.events.append("restart")


def test_the_writer_reports_bytes_readable_back_from_the_file(tmp_path):
    reactor, heard = ThreadClock(), Heard()
    ingest = Store(str(tmp_path)).ingest()
    writer = ThreadedWriter(ingest, reactor, listener=heard)
    try:
        writer.write(b"a" * 1000)
        reactor.run_until(lambda: heard.events)
        assert heard.events == [1000]
        with open(ingest.tmp_path, "rb") as f:
            assert f.read() == b"a" * 1000
    finally:
        finish = defer.ensureDeferred(writer.finish())
        reactor.run_until(lambda: finish.called)
        ingest.close()


def test_a_report_from_before_a_restart_is_dropped(tmp_path):
    reactor, heard = ThreadClock(), Heard()
    ingest = Store(str(tmp_path)).ingest()
    writer = ThreadedWriter(ingest, reactor, listener=heard)
    try:
        writer.write(b"old" * 100)
        f, args, kwargs = reactor.from_threads.get(timeout=10)  # the report, not yet run
        writer.truncate()
        f(*args, **kwargs)
        assert heard.events == ["restart"]  # the 300 old bytes never count
        writer.write(b"new!")
        reactor.run_until(lambda: len(heard.events) == 2)
        assert heard.events == ["restart", 4]
    finally:
        finish = defer.ensureDeferred(writer.finish())
        reactor.run_until(lambda: finish.called)
        ingest.close()
