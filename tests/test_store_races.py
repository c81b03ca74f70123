"""The store's windows between two processes (or threads) working on one data dir, each forced
open with events: one side is paused inside its window while the other runs.

flock locks belong to an open file, not to a process, so two threads here contend exactly as the
host and `withcache-admin` do.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from withcache import catalog as cat
from withcache.cli import admin_main
from withcache.store import Store

WAIT = 30  # seconds; only ever reached when a test is about to fail


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "data"))


@pytest.fixture
def threads():
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture
def waiting_for_a_lock(monkeypatch):
    """An event set when some thread is about to wait for a flock somebody else holds."""
    event = threading.Event()
    real_flock = fcntl.flock

    def flock(fd, operation):
        if operation & (fcntl.LOCK_EX | fcntl.LOCK_SH) and not operation & fcntl.LOCK_NB:
            try:
                return real_flock(fd, operation | fcntl.LOCK_NB)
            except BlockingIOError:
                event.set()
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    return event


def also_when_done(future: Future, event: threading.Event) -> None:
    future.add_done_callback(lambda _: event.set())


def test_a_delete_never_removes_the_blob_a_fill_of_the_same_bytes_just_renamed_into_place(
    store, threads, waiting_for_a_lock
):
    data = b"the same bytes, fetched again under another URL"
    first = store.ingest()
    first.write(data)
    digest = first.commit().sha256
    first.close()
    # Its last row is gone; the delete that follows checks that no row names the blob ...
    checked, go_on = threading.Event(), threading.Event()

    def no_rows(sha256):
        checked.set()
        assert go_on.wait(WAIT)
        return False

    deleting = threads.submit(store.delete_unreferenced, digest, no_rows)
    assert checked.wait(WAIT)
    # ... and, before it unlinks, a fill of the same bytes commits.
    second = store.ingest()
    second.write(data)
    committing = threads.submit(second.commit)
    also_when_done(committing, waiting_for_a_lock)
    assert waiting_for_a_lock.wait(WAIT)  # committed, or waiting for the delete to finish
    go_on.set()
    deleting.result(WAIT)
    assert committing.result(WAIT).sha256 == digest
    # The fill writes its row now: the blob it names must be on disk.
    assert store.verify(digest, len(data))
    second.close()


def test_the_tmp_sweep_never_removes_a_fill_that_is_created_but_not_yet_locked(
    store, threads, monkeypatch, waiting_for_a_lock
):
    created, go_on = threading.Event(), threading.Event()
    real_mkstemp = tempfile.mkstemp

    def mkstemp_then_pause(*args, **kwargs):
        made = real_mkstemp(*args, **kwargs)
        created.set()
        assert go_on.wait(WAIT)
        return made

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_pause)
    starting = threads.submit(store.ingest)
    assert created.wait(WAIT)  # its temp file has a name in tmp/, and no lock yet
    sweeping = threads.submit(store.sweep_tmp)
    also_when_done(sweeping, waiting_for_a_lock)
    assert waiting_for_a_lock.wait(WAIT)  # swept, or waiting for the new fill to lock its file
    go_on.set()
    ingest = starting.result(WAIT)
    assert sweeping.result(WAIT) == 0
    ingest.write(b"a fill that goes on")
    ingest.commit()
    ingest.close()
    assert list(store.digests()) and os.listdir(store.tmp_dir) == []


def test_import_catalog_keeps_its_blob_from_the_orphan_sweep_of_a_host_starting_beside_it(
    tmp_path, store, threads, monkeypatch, capsys
):
    data = b"a blob copied into blobs/ (rsync) before its row is imported"
    ingest = store.ingest()
    ingest.write(data)
    digest = ingest.commit().sha256
    ingest.close()
    url = "https://e.example.com/a"
    artifact = cat.Artifact(url, url, digest, len(data), None, 0)
    export = tmp_path / "catalog.jsonl"
    export.write_text(json.dumps(artifact.__dict__) + "\n")
    data_dir = os.path.dirname(store.blobs_dir)
    # import-catalog has found the blob and is about to write its row ...
    checked, go_on = threading.Event(), threading.Event()
    real_put = cat.put_artifact

    def pause_then_put(*args, **kwargs):
        checked.set()
        assert go_on.wait(WAIT)
        return real_put(*args, **kwargs)

    monkeypatch.setattr(cat, "put_artifact", pause_then_put)
    importing = threads.submit(admin_main, ["import-catalog", "-d", data_dir, str(export)])
    assert checked.wait(WAIT)
    # ... when the host starts and sweeps blobs no row names.
    host_conn = cat.connect(os.path.join(data_dir, "cache.db"))
    try:
        swept = store.sweep_orphans(lambda sha256: cat.referenced(host_conn, sha256))
        go_on.set()
        assert importing.result(WAIT) == 0
        assert swept == []
        assert cat.get_artifact(host_conn, artifact.key) is not None
        assert store.verify(digest, artifact.size)
        # Once the row is there, later sweeps keep the blob too.
        assert store.sweep_orphans(lambda sha256: cat.referenced(host_conn, sha256)) == []
    finally:
        go_on.set()
        host_conn.close()
    assert "imported 1 artifacts" in capsys.readouterr().out


def test_import_catalog_copies_a_blob_and_keeps_nothing_when_its_bytes_do_not_match(
    tmp_path, store, capsys
):
    """A source blob whose bytes are not its name is skipped, leaving no blob under either
    digest (it used to be committed under its real digest and left there, unnamed)."""
    source = Store(str(tmp_path / "old"))
    claimed = "ab" * 32
    bad = source.path_for(claimed)
    os.makedirs(os.path.dirname(bad))
    with open(bad, "wb") as f:
        f.write(b"not what the digest says")
    url = "https://e.example.com/b"
    artifact = cat.Artifact(url, url, claimed, 24, None, 0)
    export = tmp_path / "catalog.jsonl"
    export.write_text(json.dumps(artifact.__dict__) + "\n")
    data_dir = os.path.dirname(store.blobs_dir)
    from_old = ["--blobs-from", str(tmp_path / "old")]
    assert admin_main(["import-catalog", "-d", data_dir, str(export), *from_old]) == 1
    assert "skipped (blob does not match its digest)" in capsys.readouterr().out
    assert list(store.digests()) == []
