"""withcache.storefill: a non-local hit's object copied in from the store while clients follow
its FillStream. In process, on the real reactor and a real data dir, with the in-memory S3 of
tests/fake_s3.py: one GET for concurrent hits, and a short or wrong object never looks whole."""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted

from tests.fake_s3 import FakeS3
from withcache import catalog as cat
from withcache.blobstore import ObjectMissing
from withcache.s3store import S3Location, S3Store
from withcache.store import IntegrityError
from withcache.storefill import StoreFills

SIZE = 3 * (1 << 20) + 11


class Seen:
    """A follower that remembers the most bytes it was told were readable."""

    def __init__(self, stream):
        self.stream, self.most = stream, 0

    def changed(self) -> None:
        self.most = max(self.most, self.stream.readable)


@pytest.fixture
def s3() -> FakeS3:
    return FakeS3()


@pytest.fixture
def fills(tmp_path, s3):
    from twisted.internet import reactor

    store = S3Store(str(tmp_path / "data"), S3Location("b", "p"), s3, 0)
    service = StoreFills(store, reactor)
    service.startService()
    yield service
    pytest_twisted.blockon(service.stopService())


def stored(store: S3Store, s3: FakeS3, data: bytes) -> cat.Artifact:
    sha = hashlib.sha256(data).hexdigest()
    s3.objects["b", store.object_key(sha)] = data
    return cat.Artifact("k", "https://v.example/x", sha, len(data), "application/x-tar", 0.0)


@pytest_twisted.ensureDeferred
async def test_concurrent_hits_share_one_get_and_the_copy_is_committed(fills, s3):
    from twisted.internet import reactor

    data = os.urandom(SIZE)
    artifact = stored(fills.store, s3, data)
    first = fills.start(artifact)
    assert all(fills.start(artifact) is first for _ in range(5))
    assert await first.servable(reactor, 10)
    assert (first.stream.total, first.stream.content_type) == (SIZE, "application/x-tar")
    await first.when_done()
    assert s3.gets == 1 and first.failure is None and first.stream.size == SIZE
    with open(fills.store.path_for(artifact.sha256), "rb") as f:
        assert f.read() == data
    assert artifact.sha256 in fills.store.local and fills.active(artifact.sha256) is None


@pytest.mark.parametrize("damage", ["short", "wrong"])
@pytest_twisted.ensureDeferred
async def test_a_short_or_wrong_object_fails_its_readers_and_leaves_nothing(fills, s3, damage):
    data = os.urandom(SIZE)
    artifact = stored(fills.store, s3, data)
    if damage == "short":
        s3.serve_short = 1000
    else:
        s3.objects["b", fills.store.object_key(artifact.sha256)] = data[:-1] + b"!"
    fill = fills.start(artifact)
    seen = Seen(fill.stream)
    fill.stream._followers.add(seen)  # a reader, as withcache.web.streaming's would be
    await fill.when_done()
    assert isinstance(fill.failure, IntegrityError) and fill.stream.error
    # The last byte is held back until the digest is checked: no reader ever had it all.
    assert seen.most < SIZE
    assert not fills.store.exists(artifact.sha256)
    assert os.listdir(fills.store.tmp_dir) == []


@pytest_twisted.ensureDeferred
async def test_a_missing_object_says_so_and_is_never_servable(fills, s3):
    from twisted.internet import reactor

    artifact = cat.Artifact("k", "u", "ab" * 32, 10, None, 0.0)
    fill = fills.start(artifact)
    assert not await fill.servable(reactor, 10)
    assert isinstance(fill.failure, ObjectMissing)
