"""What the reliability tests share: /proc figures, polling with a deadline, catalog checks."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.support import Host, admin_json, payload_sha256, token

T = TypeVar("T")


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


def check_data_dir(data_dir: Path) -> list[dict]:
    """Every listed artifact's blob has the listed size and digest, and cache.db is sound.

    Works whether the host runs or not (the catalog is opened read-only). Returns the rows.
    """
    rows = admin_json(data_dir, "ls")
    for row in rows:
        blob = data_dir / "blobs" / row["sha256"][:2] / row["sha256"][2:]
        assert blob.stat().st_size == row["size"], (row, blob.stat().st_size)
        assert file_sha256(blob) == row["sha256"], row
    conn = sqlite3.connect(f"file:{data_dir / 'cache.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    return rows


def jobs_by_url(data_dir: Path) -> dict[str, dict]:
    """The latest job of each URL (withcache-admin jobs --json, newest first)."""
    found: dict[str, dict] = {}
    for job in admin_json(data_dir, "jobs"):
        found.setdefault(job["url"], job)
    return found


def serves(host: Host, origin_url: str, size: int, seed: int) -> bool:
    """Whether the host answers a GET of origin_url with the whole, right body."""
    status, body = host.get(f"/b/{token(origin_url)}/x", timeout=60)
    return status == 200 and hashlib.sha256(body).hexdigest() == payload_sha256(size, seed)
