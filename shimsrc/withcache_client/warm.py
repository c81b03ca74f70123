"""Cache warming: queue a fill for each URL of a manifest, follow them, check their digests.

The manifest is one URL a line, optionally followed by its sha256; blank lines and `#` comments
are skipped. A URL already cached (with the digest given, if one is) is not fetched again. On a
terminal the progress is one line redrawn in place plus a line per finished URL; otherwise
plain lines only. The exit status is 0 when every URL ended cached with the right digest, 1
otherwise (each such URL named on stderr), 2 for a manifest or token file that cannot be used.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from withcache_client import APIError, Client, shown_url

POLL = 0.5
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_COMMENT = re.compile(r"(^|\s)#.*$")
FINISHED = ("completed", "failed", "cancelled", "refused")


class ManifestError(ValueError):
    """A manifest line that is neither a URL nor `URL sha256`."""


@dataclass
class Entry:
    url: str
    sha256: str | None = None
    job: int | None = None
    state: str = "pending"
    done: int = 0
    total: int | None = None
    error: str | None = None


def parse_manifest(text: str) -> list[Entry]:
    entries, seen = [], set()
    for number, line in enumerate(text.splitlines(), 1):
        # A comment is a '#' at the start or after a space: a URL's own '#fragment' stays.
        line = _COMMENT.sub("", line).strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) > 2 or not fields[0].startswith(("http://", "https://")):
            raise ManifestError(f"line {number}: expected 'URL [sha256]'")
        if len(fields) == 2 and not _SHA256.fullmatch(fields[1]):
            raise ManifestError(f"line {number}: {fields[1]!r} is not a sha256 (64 hex digits)")
        if fields[0] not in seen:
            seen.add(fields[0])
            entries.append(Entry(fields[0], fields[1].lower() if len(fields) == 2 else None))
    return entries


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


class Progress:
    """Where warm reports: a redrawn status line on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO):
        self.out = out
        self.tty = out.isatty()
        self._drawn = False

    def line(self, text: str) -> None:
        if self._drawn:
            self.out.write("\r\033[K")
            self._drawn = False
        self.out.write(text + "\n")
        self.out.flush()

    def status(self, entries: list[Entry]) -> None:
        if not self.tty:
            return
        active = [e for e in entries if e.state in ("queued", "running")]
        done = sum(1 for e in entries if e.state not in ("pending", "queued", "running"))
        running = [e for e in active if e.state == "running"]
        parts = [f"[{done}/{len(entries)} done, {len(running)} running]"]
        for e in running[:3]:
            pct = f" {e.done * 100 // e.total}%" if e.total else ""
            parts.append(f"{shown_url(e.url).rsplit('/', 1)[-1]} {_size(e.done)}{pct}")
        self.out.write("\r\033[K" + "  ".join(parts)[:200])
        self.out.flush()
        self._drawn = True


def warm(
    client: Client,
    entries: list[Entry],
    progress: Progress,
    timeout: float = 3600.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Entry]:
    """Warm the cache with entries; the entries that did not end cached as asked."""
    for entry in entries:
        if _cached_already(client, entry):
            entry.state = "cached"
            progress.line(f"cached already  {shown_url(entry.url)}")
            continue
        try:
            job = client.queue_fill(entry.url)
        except APIError as e:
            entry.state, entry.error = "failed", f"not queued: {e.detail or e.title}"
            progress.line(f"not queued      {shown_url(entry.url)}: {entry.error}")
            continue
        entry.job, entry.state = job["id"], job["state"]
        progress.line(f"queued          {shown_url(entry.url)} (fill {entry.job})")
    deadline = clock() + timeout
    while any(e.state in ("queued", "running") for e in entries):
        if clock() > deadline:
            for e in entries:
                if e.state in ("queued", "running"):
                    e.state, e.error = "failed", f"still {e.state} after {timeout:.0f} s"
            break
        for entry in entries:
            if entry.state in ("queued", "running") and entry.job is not None:
                _follow(client, entry, progress)
        progress.status(entries)
        if any(e.state in ("queued", "running") for e in entries):
            sleep(POLL)
    for entry in entries:
        if entry.state == "completed":
            _verify(client, entry)
            if entry.state == "cached":
                progress.line(f"cached          {shown_url(entry.url)} ({_size(entry.done)})")
            else:
                progress.line(f"FAILED          {shown_url(entry.url)}: {entry.error}")
    return [e for e in entries if e.state != "cached"]


def _cached_already(client: Client, entry: Entry) -> bool:
    try:
        found = client.artifact(url=entry.url)
    except APIError as e:
        if e.kind == "not-found":
            return False
        raise
    return entry.sha256 is None or found["sha256"] == entry.sha256


def _follow(client: Client, entry: Entry, progress: Progress) -> None:
    assert entry.job is not None
    try:
        job = client.fill(entry.job)
    except APIError as e:
        if e.status == 0:
            return  # a moment of unreachability: ask again at the next poll
        entry.state, entry.error = "failed", str(e)
        return
    entry.done, entry.total = job["bytes_done"], job["bytes_total"]
    if job["state"] != entry.state and job["state"] in FINISHED:
        entry.error = job.get("error") or job["state"]
        if job["state"] != "completed":
            progress.line(f"FAILED          {shown_url(entry.url)}: {entry.error}")
    entry.state = job["state"]


def _verify(client: Client, entry: Entry) -> None:
    """A completed fill: is the artifact there, with the digest the manifest gives?"""
    try:
        found = client.artifact(url=entry.url)
    except APIError as e:
        entry.state, entry.error = "failed", f"filled but not cached now ({e.kind})"
        return
    entry.done = found["size"]
    if entry.sha256 and found["sha256"] != entry.sha256:
        entry.state = "failed"
        entry.error = f"sha256 mismatch: expected {entry.sha256}, cached {found['sha256']}"
        return
    entry.state = "cached"


def main(server: str, token_file: str, manifest: str, timeout: float = 3600.0) -> int:
    """withcache-admin warm; the exit status."""
    try:
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
        with open(manifest, encoding="utf-8") as f:
            entries = parse_manifest(f.read())
    except (OSError, ManifestError, UnicodeDecodeError) as e:
        print(f"withcache-admin warm: {e}", file=sys.stderr)
        return 2
    progress = Progress(sys.stdout)
    try:
        failed = warm(Client(server, token), entries, progress, timeout)
    except APIError as e:
        print(f"withcache-admin warm: {e}", file=sys.stderr)
        return 2 if e.status in (0, 401, 403) else 1
    progress.line(f"{len(entries) - len(failed)} of {len(entries)} URLs cached")
    for entry in failed:
        print(
            f"withcache-admin warm: not cached: {shown_url(entry.url)}: {entry.error}",
            file=sys.stderr,
        )
    return 1 if failed else 0
