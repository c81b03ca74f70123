-- Artifacts the cache holds, and origin URLs that were asked for but not (yet) held.
CREATE TABLE artifacts (
    key          TEXT PRIMARY KEY,
    url          TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT,
    fetched_at   REAL NOT NULL,
    hits         INTEGER NOT NULL DEFAULT 0,
    misses       INTEGER NOT NULL DEFAULT 0,
    last_hit_at  REAL,
    pinned       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX artifacts_sha256 ON artifacts (sha256);
CREATE INDEX artifacts_fetched_at ON artifacts (fetched_at);

CREATE TABLE misses (
    key        TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    count      INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL
);
CREATE INDEX misses_last_seen ON misses (last_seen);
