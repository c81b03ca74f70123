"""Bytes served from the cache and fetched from origins, per UTC day, kept in the catalog.

The metrics counters already count both as they happen (serving workers' bytes included);
every few seconds the growth since the last look is added to today's row, so the dashboard's
30-day chart outlasts restarts. A crash loses at most one interval of counting.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer

from withcache._log import make_logger
from withcache.catalog import Catalog, transaction
from withcache.metrics import Metrics

log = make_logger()

FLUSH_EVERY = 10.0


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def add_traffic(conn: sqlite3.Connection, day: str, served: int, fetched: int) -> None:
    if not (served or fetched):
        return
    with transaction(conn):
        conn.execute(
            "INSERT INTO daily_traffic (day, served, fetched) VALUES (?, ?, ?)"
            " ON CONFLICT (day) DO UPDATE SET served = served + excluded.served,"
            " fetched = fetched + excluded.fetched",
            (day, served, fetched),
        )


def last_days(conn: sqlite3.Connection, now: float, days: int = 30) -> list[tuple[str, int, int]]:
    """(day, served, fetched) for each of the `days` UTC days up to today, oldest first; days
    with no row are zeros."""
    wanted = [day_of(now - 86400 * n) for n in range(days - 1, -1, -1)]
    rows = dict(
        (day, (served, fetched))
        for day, served, fetched in conn.execute(
            "SELECT day, served, fetched FROM daily_traffic WHERE day >= ?", (wanted[0],)
        )
    )
    return [(day, *rows.get(day, (0, 0))) for day in wanted]


class DailyTraffic(TimerService):
    """Adds the growth of the served and fetched byte counters to today's row."""

    def __init__(self, catalog: Catalog, metrics: Metrics, now: Callable[[], float]):
        super().__init__(FLUSH_EVERY, self.flush)
        self._catalog, self._metrics, self._now = catalog, metrics, now
        self._seen = (0, 0)

    def _totals(self) -> tuple[int, int]:
        get = self._metrics.registry.get_sample_value
        served = get("withcache_served_bytes_total") or 0
        fetched = get("withcache_origin_fetched_bytes_total") or 0
        return int(served), int(fetched)

    def flush(self) -> defer.Deferred:
        totals = self._totals()
        served, fetched = totals[0] - self._seen[0], totals[1] - self._seen[1]
        self._seen = totals
        d = self._catalog.run(add_traffic, day_of(self._now()), served, fetched)
        d.addErrback(self._not_written, served, fetched)
        return d

    def _not_written(self, failure: Any, served: int, fetched: int) -> None:
        # Counted again at the next flush.
        self._seen = (self._seen[0] - served, self._seen[1] - fetched)
        log.warn("could not write daily traffic: {error}", error=failure.getErrorMessage())

    def stopService(self) -> Any:
        d = defer.maybeDeferred(super().stopService)
        d.addCallback(lambda _: self.flush())
        return d
