"""What the reliability tests share: /proc figures, polling with a deadline, catalog checks."""

from __future__ import annotations

import functools
import hashlib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.support import Host, admin_json, db, eventually, payload_sha256, token

T = TypeVar("T")


# The digest of a test payload, computed once per (size, seed).
expected_sha256 = functools.lru_cache(maxsize=None)(payload_sha256)


def wait_until(check: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """check()'s first truthy value, polling until the deadline; fails naming `what`."""
    return eventually(check, bool, timeout, what=what, every=every)


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
    """Every artifact `withcache-admin ls` lists has a blob of the listed size and digest, and
    cache.db passes PRAGMA integrity_check. Returns the listed rows."""
    rows = admin_json(data_dir, "ls")
    for row in rows:
        blob = data_dir / "blobs" / row["sha256"][:2] / row["sha256"][2:]
        assert blob.stat().st_size == row["size"], (row, blob.stat().st_size)
        assert file_sha256(blob) == row["sha256"], row
    assert db(data_dir, "PRAGMA integrity_check") == [("ok",)]
    return rows


def jobs_by_url(data_dir: Path) -> dict[str, tuple[str, str | None]]:
    """(state, error) of the latest job of each URL."""
    found: dict[str, tuple[str, str | None]] = {}
    for url, state, error in db(data_dir, "SELECT url, state, error FROM jobs ORDER BY id"):
        found[url] = (state, error)
    return found


def serves(host: Host, origin_url: str, size: int, seed: int) -> bool:
    """Whether the host answers a GET of origin_url with the whole, right body, from the cache
    (not streamed from a fill in progress, which may yet fail to commit)."""
    try:
        with urllib.request.urlopen(f"{host.url}/b/{token(origin_url)}/x", timeout=60) as r:
            status, body, streamed = r.status, r.read(), r.headers["X-Withcache-Streaming"]
    except urllib.error.HTTPError:
        return False
    right = hashlib.sha256(body).hexdigest() == expected_sha256(size, seed)
    return status == 200 and right and streamed is None
