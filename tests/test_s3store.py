"""withcache.s3store against an in-memory S3 (tests/fake_s3.py): uploads confirmed before a row
may name them, the local copies' LRU bound, deletes only of unreferenced digests, and what a
missing object or an unreachable store raises. The real thing: tests/test_s3_e2e.py."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.fake_s3 import FakeS3
from withcache import catalog as cat
from withcache import datadir
from withcache.blobstore import ObjectMissing, StoreUnavailable
from withcache.localcache import LocalCache
from withcache.s3store import (
    S3Location,
    S3Store,
    check_bucket,
    check_endpoint,
    composite_sha256,
    parse_store_url,
)
from withcache.scrub import Stopped
from withcache.store import IntegrityError

PART = 1 << 20


@pytest.fixture
def s3() -> FakeS3:
    return FakeS3()


@pytest.fixture
def store(tmp_path, s3) -> S3Store:
    return S3Store(str(tmp_path / "data"), S3Location("b", "pre/fix"), s3, 3 * PART, PART)


def put(store: S3Store, data: bytes):
    ingest = store.ingest()
    ingest.write(data)
    blob = ingest.commit()
    return ingest, blob


def test_store_urls_name_a_bucket_and_a_prefix_and_never_credentials():
    assert parse_store_url("s3://bkt/a/b/") == S3Location("bkt", "a/b")
    assert parse_store_url("s3://bkt") == S3Location("bkt", "")
    for bad in ("http://bkt/x", "s3:///x", "s3://key:secret@bkt/x", "s3://bkt/x?y=1"):
        with pytest.raises(ValueError):
            parse_store_url(bad)
    with pytest.raises(ValueError, match="credentials"):
        check_endpoint("http://AKIA:secret@10.0.0.9:8333")
    assert check_endpoint("http://10.0.0.9:8333") == "http://10.0.0.9:8333"


def test_objects_are_content_addressed_under_the_prefix(store, s3):
    ingest, blob = put(store, b"hello")
    store.publish(blob)
    ingest.close()
    assert s3.objects == {("b", f"pre/fix/{blob.sha256[:2]}/{blob.sha256[2:]}"): b"hello"}


def test_a_multipart_upload_is_confirmed_by_its_composite_checksum(store, s3, tmp_path):
    data = os.urandom(12 * PART + 7)  # parts of 5 MiB, S3's least
    ingest, blob = put(store, data)
    store.publish(blob)
    ingest.close()
    (stored,) = s3.checksums.values()
    assert stored.endswith("-3")
    assert stored == composite_sha256(store.path_for(blob.sha256), 5 * PART)


def test_an_object_the_store_holds_wrong_is_never_confirmed(store, s3):
    ingest, blob = put(store, os.urandom(2 * PART))
    s3.upload_file = lambda path, bucket, key, **kw: s3.objects.__setitem__((bucket, key), b"x")
    s3.checksums[("b", store.object_key(blob.sha256))] = "AAAA-2"
    with pytest.raises(IntegrityError, match="holds 1 bytes"):
        store.publish(blob)
    ingest.close()


def test_a_wrong_checksum_of_the_right_size_is_never_confirmed(store, s3):
    ingest, blob = put(store, os.urandom(2 * PART))
    real = s3.upload_file

    def upload(path, bucket, key, **kw):
        real(path, bucket, key, **kw)
        s3.checksums[bucket, key] = "Zm9v-2"

    s3.upload_file = upload
    with pytest.raises(IntegrityError, match="checksum"):
        store.publish(blob)
    ingest.close()


def test_a_store_keeping_no_checksums_is_confirmed_by_size(store, s3):
    s3.keep_checksums = False
    ingest, blob = put(store, os.urandom(2 * PART))
    store.publish(blob)
    ingest.close()
    assert len(s3.objects) == 1


def test_bytes_the_store_holds_already_are_not_uploaded_again(store, s3):
    ingest, blob = put(store, b"same bytes")
    store.publish(blob)
    store.publish(blob)
    ingest.close()
    assert s3.puts == 1


def test_an_upload_failing_part_way_leaves_no_row_no_local_copy_and_no_temp(tmp_path, store, s3):
    """datadir.import_file (withcache-admin import) as a fill would: nothing names the bytes."""
    s3.fail_after_parts = 1
    src = tmp_path / "big"
    src.write_bytes(os.urandom(12 * PART + 1))  # three parts; the second fails
    conn = cat.connect(":memory:")
    with pytest.raises(StoreUnavailable, match="upload of"):
        datadir.import_file(conn, store, "https://v.example/big", str(src), query="drop", now=0)
    assert cat.list_artifacts(conn) == []
    assert list(store.digests()) == [] and os.listdir(store.tmp_dir) == []
    assert s3.objects == {}


def test_missing_objects_and_an_unreachable_store_are_told_apart(store, s3):
    sha = hashlib.sha256(b"nothing").hexdigest()
    with pytest.raises(ObjectMissing):
        store.open_object(sha)
    with pytest.raises(ObjectMissing):
        store.head(sha)
    s3.down = True
    with pytest.raises(StoreUnavailable, match="Could not connect"):
        store.open_object(sha)
    with pytest.raises(StoreUnavailable):
        check_bucket(s3, S3Location("b", ""))


def test_a_missing_bucket_is_said_in_one_line(s3):
    with pytest.raises(StoreUnavailable, match=r"^s3://nope/x: no such bucket$"):
        check_bucket(s3, S3Location("nope", "x"))


def test_local_copies_over_the_limit_go_least_recently_used_first(store):
    blobs = []
    for n in range(3):
        ingest, blob = put(store, bytes([n]) * PART)
        store.publish(blob)
        ingest.close()
        store.kept_locally(blob.sha256, blob.size)
        blobs.append(blob.sha256)
    store.touch(blobs[0])  # a hit: the first is now the most recently used
    ingest, blob = put(store, b"\xff" * PART)
    store.publish(blob)
    ingest.close()
    store.kept_locally(blob.sha256, blob.size)
    assert [store.exists(s) for s in blobs] == [True, False, True]
    assert store.exists(blob.sha256) and store.local.used == 3 * PART


def test_a_copy_whose_digest_is_locked_is_left_for_the_next_trim(store):
    ingest, blob = put(store, b"a" * (4 * PART))  # holds its digest lock until closed
    store.local.added(blob.sha256, blob.size)
    assert store.trim() == []
    ingest.close()
    assert store.trim() == [blob.sha256] and not store.exists(blob.sha256)


def test_an_object_goes_only_when_no_row_names_its_digest(store, s3):
    ingest, blob = put(store, b"shared")
    store.publish(blob)
    ingest.close()
    assert not store.delete_unreferenced(blob.sha256, lambda d: True)
    assert len(s3.objects) == 1 and store.exists(blob.sha256)
    with store.lock(blob.sha256):  # a fill of the same bytes committing right now
        assert not store.delete_unreferenced(blob.sha256, lambda d: False)
    assert store.delete_unreferenced(blob.sha256, lambda d: False)
    assert s3.objects == {} and not store.exists(blob.sha256)


def test_scrub_drops_a_bad_local_copy_and_checks_the_object(store, s3):
    ingest, blob = put(store, b"good bytes")
    store.publish(blob)
    ingest.close()
    with open(store.path_for(blob.sha256), "r+b") as f:
        f.write(b"B")
    assert store.verify(blob.sha256, blob.size)  # the object is fine
    assert not store.exists(blob.sha256)  # the bad copy is gone (fetched again on a hit)
    s3.down = True
    with pytest.raises(Stopped):  # no verdict: tried again at the next pass
        store.verify(blob.sha256, blob.size)
    s3.down = False
    del s3.objects[("b", store.object_key(blob.sha256))]
    assert not store.verify(blob.sha256, blob.size)


def test_local_copies_on_disk_are_counted_at_start_and_trimmed(tmp_path, s3):
    first = S3Store(str(tmp_path / "d"), S3Location("b", ""), s3, 0, PART)
    for n in range(4):
        ingest, _ = put(first, bytes([n]) * PART)
        ingest.close()
    second = S3Store(str(tmp_path / "d"), S3Location("b", ""), s3, 2 * PART, PART)
    assert second.load_local() == 2
    assert second.local.used == 2 * PART and len(list(second.digests())) == 2


def test_local_cache_bookkeeping():
    local = LocalCache(10)
    local.load([("b", 4, 2.0), ("a", 4, 1.0)])
    local.added("c", 4)
    assert local.victims() == ["a"]
    local.touched("a")
    assert local.victims() == ["b"]
    assert local.victims(keep="b") == ["c"]
    local.removed("b")
    assert local.used == 8 and local.victims() == []
    assert LocalCache(0).victims() == []


def test_a_claimed_digest_stays_locked_until_its_object_is_deleted(store, s3):
    """The host asks the catalog on its database thread and deletes the object on another;
    a fill of the same bytes cannot commit in between."""
    ingest, blob = put(store, b"evicted")
    store.publish(blob)
    ingest.close()
    locked = store.claim_unreferenced(blob.sha256, lambda d: False)
    assert locked is not None and not store.exists(blob.sha256)
    assert store.try_lock(blob.sha256) is None  # a commit of these bytes waits
    assert len(s3.objects) == 1
    assert store.delete_claimed(blob.sha256, locked)
    assert s3.objects == {} and not locked.held
    assert store.claim_unreferenced(blob.sha256, lambda d: True) is None


def test_an_object_without_a_checksum_is_uploaded_over_not_trusted(store, s3):
    """Bytes written by something else (no ChecksumSHA256) may be wrong at the right size."""
    ingest, blob = put(store, b"right bytes")
    s3.objects["b", store.object_key(blob.sha256)] = b"wrong bytes"
    s3.keep_checksums = False
    store.publish(blob)
    ingest.close()
    assert s3.objects["b", store.object_key(blob.sha256)] == b"right bytes"
