"""What the reliability tests share: /proc figures, polling with a deadline, catalog checks."""

from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.support import Host, admin_json, payload_sha256, token

T = TypeVar("T")


# The digest of a test payload, computed once per (size, seed).
expected_sha256 = functools.lru_cache(maxsize=None)(payload_sha256)


def fd_count(pid: int) -> int:
    """Open file descriptors of a process (/proc/<pid>/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(check: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """check()'s first truthy value, polling until the deadline; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {value!r})")
        time.sleep(every)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_only(data_dir: Path, sql: str) -> list[tuple]:
    """One query on cache.db opened read-only (safe while the host runs, or after it died)."""
    conn = sqlite3.connect(f"file:{data_dir / 'cache.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def check_data_dir(data_dir: Path) -> list[dict]:
    """Every artifact `withcache-admin ls` lists has a blob of the listed size and digest, and
    cache.db passes PRAGMA integrity_check. Returns the listed rows."""
    rows = admin_json(data_dir, "ls")
    for row in rows:
        blob = data_dir / "blobs" / row["sha256"][:2] / row["sha256"][2:]
        assert blob.stat().st_size == row["size"], (row, blob.stat().st_size)
        assert file_sha256(blob) == row["sha256"], row
    assert read_only(data_dir, "PRAGMA integrity_check") == [("ok",)]
    return rows


def jobs_by_url(data_dir: Path) -> dict[str, tuple[str, str | None]]:
    """(state, error) of the latest job of each URL."""
    found: dict[str, tuple[str, str | None]] = {}
    for url, state, error in read_only(data_dir, "SELECT url, state, error FROM jobs ORDER BY id"):
        found[url] = (state, error)
    return found


def serves(host: Host, origin_url: str, size: int, seed: int) -> bool:
    """Whether the host answers a GET of origin_url with the whole, right body."""
    status, body = host.get(f"/b/{token(origin_url)}/x", timeout=60)
    return status == 200 and hashlib.sha256(body).hexdigest() == expected_sha256(size, seed)
