"""Several cache-hosts on one catalog and one blob store: `twistd -n withcache` processes on
loopback ports, each with a --host-id of its own and a short --lease (so failover tests take
seconds, not a quarter of a minute).

The catalog is a SQLite file or a PostgreSQL database (tests/engines/postgres.py). The blobs are
one shared data dir's (the local store coordinates processes with flock), or a bucket on a real
SeaweedFS (tests/engines/seaweedfs.py), each host then with a data dir (and hot local cache) of
its own. Each host advertises the 127.0.0.1 address it is bound to (the default for a --listen
naming one address), so misses of a key another host fills are relayed to that host's stream.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import Host, assert_clean_log, start_host

LEASE = 3.0


@dataclass
class Cluster:
    root: Path
    catalog: str  # --catalog: a SQLite file's path or a PostgreSQL URL
    extra: tuple[str, ...] = ()
    # The S3 store's options and environment (credentials), or none: one shared data dir.
    store: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    hosts: list[Host] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)

    def data_dir(self, index: int) -> Path:
        """Host index's data dir: the one they all share, unless the blobs are in S3."""
        return self.root / (f"data-h{index}" if self.store else "data")

    def launch(self, index: int) -> Host:
        """Start host number index (hN is its --host-id) and return it, once it listens."""
        return start_host(
            self.data_dir(index),
            *self.store,
            "--catalog",
            self.catalog,
            "--host-id",
            f"h{index}",
            "--lease",
            f"{LEASE:g}",
            "--allow-private",
            *self.extra,
            log_path=self.root / f"h{index}-twistd.log",
            env=self.env,
        )

    def restart(self, index: int) -> Host:
        """Start a stopped or killed host again, in its place."""
        self.hosts[index] = host = self.launch(index)
        self.killed.discard(index)
        return host

    def kill(self, index: int) -> float:
        """kill -9 one host; the moment it died (time.monotonic)."""
        host = self.hosts[index]
        host.proc.send_signal(signal.SIGKILL)
        host.proc.wait(timeout=15)
        self.killed.add(index)
        return time.monotonic()

    def query(self, sql: str, **params: Any) -> list[tuple]:
        """Rows of one read-only query on the shared catalog, whatever its backend."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        from withcache.catalog_db import parse_url

        engine = create_engine(parse_url(self.catalog), poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(text(sql), params)]
        finally:
            engine.dispose()

    def jobs(self) -> list[tuple]:
        """(id, state, lease_owner) of every job, oldest first."""
        return self.query("SELECT id, state, lease_owner FROM jobs ORDER BY id")

    def stop(self, clean: bool = True) -> None:
        """Stop every host; with clean, none that was not killed may have logged an error."""
        for host in self.hosts:
            host.stop()
        for index, host in enumerate(self.hosts):
            if clean and index not in self.killed:
                assert_clean_log(host)


def s3_store(server: Any, bucket: str) -> dict[str, Any]:
    """start_cluster's arguments for blobs in a bucket of a tests.engines.seaweedfs server."""
    store = ("--store", f"s3://{bucket}/cache", "--s3-endpoint", server.endpoint)
    return {"store": store, "env": server.env()}


def start_cluster(
    root: Path,
    count: int,
    catalog: str | None = None,
    *extra: str,
    store: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Cluster:
    """count hosts on one catalog (default: a SQLite file in the shared data dir) and one blob
    store (default: that data dir's; see s3_store). The first makes the catalog alone; the
    others start together."""
    cluster = Cluster(root, catalog or str(root / "data" / "cache.db"), extra, store, env)
    try:
        cluster.hosts.append(cluster.launch(0))
        if count > 1:
            with ThreadPoolExecutor(count - 1) as pool:
                starting = [pool.submit(cluster.launch, i) for i in range(1, count)]
            # Every host that did start is kept (and so stopped below) before any failure is
            # raised: a host left running would outlive the test.
            cluster.hosts.extend(f.result() for f in starting if f.exception() is None)
            for f in starting:
                error = f.exception()
                if error is not None:
                    raise error
    except BaseException:
        for host in cluster.hosts:
            host.stop(signal.SIGKILL)
        raise
    return cluster
