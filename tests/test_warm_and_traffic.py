"""In process: the warm manifest and follow loop (a fake client, no sleeping), and the daily
traffic counter's accounting (a catalog that runs on the calling thread)."""

from __future__ import annotations

import io

import pytest
from twisted.internet import defer
from withcache_client import APIError
from withcache_client.warm import Entry, ManifestError, Progress, parse_manifest, warm

from withcache import catalog as cat
from withcache.metrics import Metrics
from withcache.traffic import DailyTraffic, day_of, last_days

SHA = "ab" * 32


def test_a_manifest_has_urls_optional_digests_and_comments():
    text = (
        "# a comment\n\n"
        "https://v.example/a.iso  " + SHA.upper() + "\n"
        "https://v.example/b.run   # trailing comment\n"
        "https://v.example/c#frag\n"
        "https://v.example/a.iso\n"  # a repeat is warmed once
    )
    entries = parse_manifest(text)
    assert [(e.url, e.sha256) for e in entries] == [
        ("https://v.example/a.iso", SHA),
        ("https://v.example/b.run", None),
        ("https://v.example/c#frag", None),
    ]


@pytest.mark.parametrize(
    "line", ["ftp://v.example/a", "https://v.example/a 1234", "https://v.example/a x y"]
)
def test_a_bad_manifest_line_is_named(line):
    with pytest.raises(ManifestError, match="line 2"):
        parse_manifest("# header\n" + line + "\n")


class FakeClient:
    """Fills that go queued -> running -> their end over polls; artifacts by URL."""

    def __init__(
        self, ends: dict[str, str], digests: dict[str, str], cached: set[str] = frozenset()
    ):
        self.ends, self.digests, self.cached = ends, digests, set(cached)
        self.polls: dict[int, int] = {}
        self.urls: list[str] = []

    def artifact(self, url):
        if url in self.cached:
            return {"sha256": self.digests[url], "size": 10}
        raise APIError(404, {"type": "urn:withcache:problem:not-found"})

    def queue_fill(self, url):
        if self.ends[url] == "unqueueable":
            raise APIError(422, {"type": "urn:withcache:problem:refused-origin", "detail": "no"})
        self.urls.append(url)
        return {"id": len(self.urls), "state": "queued"}

    def fill(self, job_id):
        n = self.polls[job_id] = self.polls.get(job_id, 0) + 1
        url = self.urls[job_id - 1]
        state = "running" if n < 3 else self.ends[url]
        if state == "completed":
            self.cached.add(url)
        return {"state": state, "bytes_done": n, "bytes_total": 3, "error": None}


def test_warm_follows_fills_to_their_end_and_reports_what_did_not_end_cached():
    ends = {
        "https://v.example/ok": "completed",
        "https://v.example/bad-digest": "completed",
        "https://v.example/fails": "failed",
        "https://v.example/refused": "unqueueable",
        "https://v.example/there": "completed",
    }
    digests = {u: SHA for u in ends} | {"https://v.example/bad-digest": "cd" * 32}
    client = FakeClient(ends, digests, cached={"https://v.example/there"})
    entries = [Entry(u, SHA if "digest" in u or u.endswith("ok") else None) for u in ends]
    out = io.StringIO()
    slept = []
    failed = warm(client, entries, Progress(out), sleep=slept.append, clock=lambda: 0.0)
    assert {e.url: e.error for e in failed} == {
        "https://v.example/bad-digest": f"sha256 mismatch: expected {SHA}, cached {'cd' * 32}",
        "https://v.example/fails": "failed",
        "https://v.example/refused": "not queued: no",
    }
    assert "https://v.example/there" not in client.urls  # cached already: not fetched again
    assert slept and set(slept) == {0.5}
    text = out.getvalue()
    assert "cached already  https://v.example/there" in text and "\r" not in text


def test_warm_gives_up_on_fills_still_running_at_the_timeout():
    client = FakeClient({"https://v.example/slow": "running"}, {})
    ticks = iter(range(100))
    failed = warm(
        client,
        [Entry("https://v.example/slow")],
        Progress(io.StringIO()),
        timeout=5,
        clock=lambda: float(next(ticks)),
        sleep=lambda s: None,
    )
    assert [e.error for e in failed] == ["still running after 5 s"]


class SyncCatalog:
    """Runs a catalog function at once on an in-memory database; can be made to fail."""

    def __init__(self):
        self.conn = cat.connect(":memory:")
        self.fail = False

    def run(self, fn, *args):
        if self.fail:
            return defer.fail(OSError("disk full"))
        return defer.succeed(fn(self.conn, *args))


def test_daily_traffic_adds_each_growth_once_and_retries_what_could_not_be_written():
    catalog, metrics, now = SyncCatalog(), Metrics(), 1_790_000_000.0
    traffic = DailyTraffic(catalog, metrics, lambda: now)
    metrics.served_bytes.inc(1000)
    metrics.fetched_bytes.inc(10)
    traffic.flush()
    traffic.flush()  # nothing new
    assert last_days(catalog.conn, now, 1) == [(day_of(now), 1000, 10)]
    catalog.fail = True
    metrics.served_bytes.inc(500)
    traffic.flush()
    catalog.fail = False
    metrics.served_bytes.inc(1)
    now += 86400  # the next day gets what was not written yesterday, and today's
    traffic.flush()
    assert last_days(catalog.conn, now, 2) == [
        (day_of(now - 86400), 1000, 10),
        (day_of(now), 501, 0),
    ]
