"""The content-addressed blob store."""

import hashlib
import os
from pathlib import Path

import pytest

from withcache.store import IntegrityError, Store


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "data"))


def test_ingest_commits_under_its_sha256_with_fan_out(store):
    ingest = store.ingest()
    ingest.write(b"hello ")
    ingest.write(b"world")
    blob = ingest.commit(expected_size=11)
    ingest.close()
    digest = hashlib.sha256(b"hello world").hexdigest()
    assert blob.sha256 == digest and blob.size == 11
    path = store.path_for(digest)
    assert path.endswith(f"blobs/{digest[:2]}/{digest[2:]}")
    assert Path(path).read_bytes() == b"hello world"
    assert os.listdir(store.tmp_dir) == []


def test_wrong_length_is_never_committed(store):
    ingest = store.ingest()
    ingest.write(b"short")
    with pytest.raises(IntegrityError, match="got 5 bytes, expected 10"):
        ingest.commit(expected_size=10)
    ingest.close()
    assert list(store.digests()) == []
    assert os.listdir(store.tmp_dir) == []


def test_wrong_digest_is_never_committed(store):
    ingest = store.ingest()
    ingest.write(b"data")
    with pytest.raises(IntegrityError, match="does not match"):
        ingest.commit(expected_sha256="0" * 64)
    ingest.close()
    assert list(store.digests()) == []


def test_truncate_restarts_the_hash(store):
    ingest = store.ingest()
    ingest.write(b"garbage")
    ingest.truncate()
    ingest.write(b"good")
    assert ingest.commit().sha256 == hashlib.sha256(b"good").hexdigest()
    ingest.close()


def test_verify_detects_a_flipped_byte(store, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"x" * 1000)
    ingest = store.import_file(str(src))
    ingest.close()
    digest = ingest.blob.sha256
    assert store.verify(digest)
    path = store.path_for(digest)
    data = bytearray(Path(path).read_bytes())
    data[500] ^= 1
    Path(path).write_bytes(data)
    assert not store.verify(digest)
    assert store.delete(digest)
    assert not store.verify(digest)
    assert not store.delete(digest)


def test_sweep_tmp_removes_abandoned_fills_but_not_live_ones(store):
    abandoned = os.path.join(store.tmp_dir, "ingest-dead")
    Path(abandoned).write_bytes(b"partial")
    live = store.ingest()
    live.write(b"in progress")
    assert store.sweep_tmp() == 1
    assert os.listdir(store.tmp_dir) == [os.path.basename(live.tmp_path)]
    live.close()
    assert os.listdir(store.tmp_dir) == []


def test_sweep_orphans_spares_referenced_and_locked_blobs(store):
    def commit(data):
        ingest = store.ingest()
        ingest.write(data)
        ingest.commit()
        return ingest

    kept, orphan, locked = commit(b"kept"), commit(b"orphan"), commit(b"locked")
    kept.close()
    orphan.close()
    # `locked` is still open: an import that renamed its blob but has not written its row.
    removed = store.sweep_orphans(lambda digest: digest == kept.blob.sha256)
    assert removed == [orphan.blob.sha256]
    assert set(store.digests()) == {kept.blob.sha256, locked.blob.sha256}
    locked.close()


def test_path_for_refuses_what_is_not_a_digest(store):
    with pytest.raises(ValueError):
        store.path_for("../../etc/passwd")
