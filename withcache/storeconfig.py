"""Which blob store a data dir's blobs live in: `--store` and its options, parsed and opened.

The host leaves its choice in the data dir (STORE_FILE: the store URL, endpoint and region,
never credentials) so that `withcache-admin` (import, rm, verify, import-catalog) works on the
same store without being told again; its own `--store` options win. Blocking (files, and a
HEAD of the bucket when a remote store is opened).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from withcache.atomicfile import replace_text
from withcache.blobstore import BlobStore
from withcache.store import Store

STORE_FILE = "store.json"
LOCAL = "local"
# Local copies of a remote store's blobs may use this share of the data dir's filesystem.
DEFAULT_LOCAL_SHARE = 0.10


@dataclass(frozen=True)
class StoreConfig:
    url: str = LOCAL  # "local" (the data dir's blobs/) or s3://bucket/prefix
    endpoint: str | None = None
    region: str | None = None
    local_cache_bytes: int | None = None  # None: DEFAULT_LOCAL_SHARE of the filesystem

    @property
    def remote(self) -> bool:
        return self.url != LOCAL and "://" in self.url

    def check(self) -> None:
        """Raise ValueError for a store URL or endpoint that cannot work (no I/O)."""
        from withcache.s3store import check_endpoint, parse_store_url

        if self.remote:
            parse_store_url(self.url)
        elif self.url != LOCAL and "://" not in self.url:
            raise ValueError(f"local or s3://bucket/prefix, not {self.url!r}")
        else:
            for name, value in (
                ("--s3-endpoint", self.endpoint),
                ("--s3-region", self.region),
                ("--local-cache-bytes", self.local_cache_bytes),
            ):
                if value is not None:
                    raise ValueError(f"{name} needs --store s3://bucket/prefix")
        if self.endpoint is not None:
            check_endpoint(self.endpoint)

    def save(self, data_dir: str) -> None:
        path = os.path.join(data_dir, STORE_FILE)
        saved = {k: v for k, v in asdict(self).items() if k != "local_cache_bytes"}
        replace_text(path, json.dumps(saved))

    @classmethod
    def saved(cls, data_dir: str) -> StoreConfig:
        """What the host last ran with; the local store if it never said."""
        try:
            with open(os.path.join(data_dir, STORE_FILE), encoding="utf-8") as f:
                found = json.load(f)
            return cls(str(found["url"]), found.get("endpoint"), found.get("region"))
        except (OSError, ValueError, TypeError, KeyError):
            return cls()

    def check_reachable(self) -> None:
        """Raise withcache.blobstore.StoreUnavailable with one line when a remote store's
        bucket is missing, refused or unreachable (a HEAD of the bucket)."""
        if self.remote:
            from withcache.s3store import check_bucket, make_client, parse_store_url

            check_bucket(make_client(self.endpoint, self.region), parse_store_url(self.url))

    def open(self, data_dir: str, checked: bool = False) -> BlobStore:
        """The store (checked as check_reachable does, unless the caller has); a remote
        store's local copies are counted and trimmed to their limit."""
        if not self.remote:
            return Store(data_dir)
        from withcache.localcache import default_limit
        from withcache.s3store import S3Store, check_bucket, make_client, parse_store_url

        client, location = make_client(self.endpoint, self.region), parse_store_url(self.url)
        if not checked:
            check_bucket(client, location)
        limit = self.local_cache_bytes
        if limit is None:
            os.makedirs(data_dir, exist_ok=True)
            limit = default_limit(data_dir, DEFAULT_LOCAL_SHARE)
        store = S3Store(data_dir, location, client, limit)
        store.load_local()
        return store
