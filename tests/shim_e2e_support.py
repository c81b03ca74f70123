"""What the Python and the native shim's end-to-end tests share: the two payloads that tell a
cached download from an origin one, a seeded artifact, the host's recorded misses, fake tools."""

from __future__ import annotations

import sqlite3
from pathlib import Path

CACHED = b"cached bytes " * 80  # ~1 KiB, what the cache-host holds
FRESH = b"origin bytes " * 80  # what the origin serves for the same URL


def make_tool(directory: Path, name: str, body: str = "exit 0") -> Path:
    """An executable shell script `name` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def seeded(host, origin, name: str) -> str:
    """An origin URL whose artifact the cache already has (with the CACHED bytes)."""
    url = origin.put(name, FRESH)
    blob = host.data_dir.parent / "seed.bin"
    blob.write_bytes(CACHED)
    host.seed(url, blob)
    return url


def misses(host) -> dict[str, int]:
    """URL -> count of the misses the host has recorded."""
    db = sqlite3.connect(f"file:{host.data_dir / 'cache.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT url, count FROM misses"))
    finally:
        db.close()
