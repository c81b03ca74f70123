"""Bytes served from the cache and fetched from origins, per UTC day, kept in the catalog.

The metrics counters already count both as they happen (serving workers' bytes included);
every few seconds the growth since the last look is added to today's row, so the dashboard's
30-day chart outlasts restarts. A crash loses at most one interval of counting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, select
from twisted.application.internet import TimerService
from twisted.internet import defer

from withcache._log import make_logger
from withcache.catalog import Catalog
from withcache.catalog_db import insert, transaction
from withcache.metrics import Metrics
from withcache.tables import daily_traffic

log = make_logger()

FLUSH_EVERY = 10.0


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def add_traffic(conn: Connection, day: str, served: int, fetched: int) -> None:
    if not (served or fetched):
        return
    t = daily_traffic.c
    row = insert(conn, daily_traffic).values(day=day, served=served, fetched=fetched)
    with transaction(conn):
        conn.execute(
            row.on_conflict_do_update(
                index_elements=[t.day],
                set_={
                    "served": t.served + row.excluded.served,
                    "fetched": t.fetched + row.excluded.fetched,
                },
            )
        )


def last_days(conn: Connection, now: float, days: int = 30) -> list[tuple[str, int, int]]:
    """(day, served, fetched) for each of the `days` UTC days up to today, oldest first; days
    with no row are zeros."""
    wanted = [day_of(now - 86400 * n) for n in range(days - 1, -1, -1)]
    t = daily_traffic.c
    rows = {
        day: (served, fetched)
        for day, served, fetched in conn.execute(
            select(t.day, t.served, t.fetched).where(t.day >= wanted[0])
        )
    }
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
