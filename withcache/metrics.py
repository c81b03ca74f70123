"""Prometheus metrics of one cache-host, on a registry of its own (so tests can run several).

Counters move where the events happen (lookups, served bodies, fills); the gauges for what the
cache holds are refreshed from the catalog after every change and at start.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FILL_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, float("inf"))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.hits = Counter("withcache_hits", "GET requests answered from the cache", registry=r)
        self.misses = Counter(
            "withcache_misses", "Requests (GET or HEAD) for artifacts not cached", registry=r
        )
        self.served_bytes = Counter(
            "withcache_served_bytes", "Body bytes sent to clients from the cache", registry=r
        )
        self.fetched_bytes = Counter(
            "withcache_origin_fetched_bytes", "Body bytes received from origins", registry=r
        )
        self.fills = Counter(
            "withcache_fills", "Finished fills by outcome", ["outcome"], registry=r
        )
        self.fill_seconds = Histogram(
            "withcache_fill_duration_seconds",
            "Time from a fill starting to it finishing",
            ["outcome"],
            buckets=FILL_BUCKETS,
            registry=r,
        )
        self.jobs = Gauge("withcache_fill_jobs", "Fill jobs by state", ["state"], registry=r)
        self.cache_bytes = Gauge("withcache_cache_bytes", "Bytes of artifacts held", registry=r)
        self.capacity = Gauge(
            "withcache_cache_capacity_bytes", "--max-bytes (0: unlimited)", registry=r
        )
        self.artifacts = Gauge("withcache_artifacts", "Artifacts held", registry=r)
        self.revalidations = Counter(
            "withcache_revalidations",
            "Revalidations of stale artifacts by outcome (not_modified, changed, failed)",
            ["outcome"],
            registry=r,
        )
        self.uncacheable = Counter(
            "withcache_uncacheable",
            "Fills refused because the origin's answer may not be stored, by reason",
            ["reason"],
            registry=r,
        )
        self.streaming = Gauge(
            "withcache_streaming_clients", "Clients streaming a fill in progress", registry=r
        )
        # With an object store (--store s3://): copies of blobs into the local cache.
        self.store_copies = Counter(
            "withcache_store_copies",
            "Blobs copied in from the object store by outcome (ok, missing, wrong, failed)",
            ["outcome"],
            registry=r,
        )
        self.store_copy_bytes = Counter(
            "withcache_store_copy_bytes", "Bytes copied in from the object store", registry=r
        )
        self.local_copy_bytes = Gauge(
            "withcache_local_copy_bytes",
            "Bytes of local copies of an object store's blobs (0 with a local store)",
            registry=r,
        )

    def count_jobs(self, state: str, count: Callable[[], float]) -> None:
        """Report the number of jobs in a state by asking, at scrape time."""
        self.jobs.labels(state).set_function(count)
