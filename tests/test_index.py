"""The hit path's memory (withcache.index) and the page-cache probes of the sendfile path."""

from __future__ import annotations

import os

from withcache.catalog import Artifact
from withcache.index import HitIndex, PendingHits
from withcache.web.sendfile import _read_in, _resident, usable

A = Artifact("https://v.example/a", "https://v.example/a", "ab" * 32, 3, None, 0.0)
B = Artifact("https://v.example/b", "https://v.example/b", "cd" * 32, 4, None, 0.0)


def test_an_entry_read_before_a_change_is_not_remembered_after_it():
    index = HitIndex()
    generation = index.generation
    index.invalidate()  # a delete committed while the read was on its way
    index.remember(A, generation)
    assert index.get(A.key) is None
    index.remember(A, index.generation)
    assert index.get(A.key) is A


def test_invalidate_forgets_every_entry_but_no_hit():
    index = HitIndex()
    index.remember(A, index.generation)
    index.count_hit(A.key, 10.0)
    index.invalidate()
    assert (index.get(A.key), len(index)) == (None, 0)
    assert index.take_hits() == {A.key: PendingHits(1, 10.0)}


def test_hits_add_up_until_taken_and_come_back_if_the_write_failed():
    index = HitIndex()
    for now in (1.0, 2.0, 3.0):
        index.count_hit(A.key, now)
    index.count_hit(B.key, 2.5)
    taken = index.take_hits()
    assert taken == {A.key: PendingHits(3, 3.0), B.key: PendingHits(1, 2.5)}
    assert index.take_hits() == {}
    index.count_hit(A.key, 4.0)
    index.merge_hits(taken)
    assert index.take_hits() == {A.key: PendingHits(4, 4.0), B.key: PendingHits(1, 2.5)}


def test_the_index_never_grows_past_its_bound():
    index = HitIndex(max_entries=2)
    for i in range(5):
        index.remember(Artifact(f"k{i}", f"k{i}", "ab" * 32, 1, None, 0.0), index.generation)
        assert len(index) <= 2
    assert index.get("k4") is not None


def test_a_file_dropped_from_the_page_cache_is_not_resident_until_read_in(tmp_path):
    path = tmp_path / "cold.bin"
    path.write_bytes(os.urandom(4 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        probe = bytearray(1)
        assert not _resident(fd, 1 << 20, 1 << 20, probe)
        _read_in(fd, 1 << 20, 1 << 20)
        assert _resident(fd, 1 << 20, 1 << 20, probe)
    finally:
        os.close(fd)


def test_sendfile_is_only_used_on_plain_tcp_connections():
    from twisted.internet.testing import StringTransport

    class Channel:
        transport = StringTransport()

    class Request:
        channel = Channel()

    assert not usable(Request())
    assert not usable(object())
