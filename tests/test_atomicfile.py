"""withcache.atomicfile: small data-dir files replaced whole, by processes that start together."""

from __future__ import annotations

import os
import threading

from withcache.atomicfile import replace_text


def test_writes_the_text_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "store.json"
    replace_text(str(path), '{"url": "local"}')
    replace_text(str(path), '{"url": "s3://b/p"}')
    assert path.read_text() == '{"url": "s3://b/p"}'
    assert os.listdir(tmp_path) == ["store.json"]


def test_the_same_text_is_not_written_again(tmp_path):
    path = tmp_path / "policy.json"
    replace_text(str(path), "rules")
    before = path.stat().st_ino
    replace_text(str(path), "rules")
    assert path.stat().st_ino == before
    replace_text(str(path), "other rules")
    assert path.stat().st_ino != before


def test_writers_starting_together_all_succeed(tmp_path):
    """Hosts sharing a data dir start together and each saves its settings: with one fixed
    temporary name, one writer's rename took the file from under another's (FileNotFoundError)."""
    path = str(tmp_path / "store.json")
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def write(i: int) -> None:
        start.wait()
        try:
            for n in range(50):
                replace_text(path, f"writer {i} round {n}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open(path) as f:
        assert f.read().startswith("writer ")
    assert os.listdir(tmp_path) == ["store.json"]


def test_a_failed_write_leaves_the_old_text_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "host-id"
    replace_text(str(path), "h1\n")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    try:
        replace_text(str(path), "h2\n")
    except OSError as e:
        assert e.errno == 28
    else:
        raise AssertionError("the failed replace was not raised")
    assert path.read_text() == "h1\n"
    assert os.listdir(tmp_path) == ["host-id"]
