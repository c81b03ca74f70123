-- The catalog at scale (issue 17): with a million artifacts, no page, start-up, eviction or scrub
-- may read the whole catalog. Measured before this version with 1,000,000 artifacts: the
-- dashboard 359 ms (its totals were COUNT/SUM over every row), a search 1.1 s, the last page
-- 990 ms, an eviction 928 ms, the scrub's next pick 188 ms (docs/benchmarks.md).

-- What the dashboard, /api/v1/stats and the gauges show, kept by triggers in the transaction of
-- each write (whoever writes: the host, withcache-admin, a re-key), so no reader sums the catalog.
CREATE TABLE catalog_totals (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    artifacts   INTEGER NOT NULL,  -- artifact rows
    bytes       INTEGER NOT NULL,  -- SUM(artifacts.size)
    hits        INTEGER NOT NULL,  -- SUM(artifacts.hits)
    bytes_saved INTEGER NOT NULL,  -- SUM(artifacts.size * artifacts.hits)
    absorbed    INTEGER NOT NULL,  -- SUM(artifacts.misses): misses counted before a fill
    pending     INTEGER NOT NULL   -- SUM(misses.count): misses not (yet) filled
);
INSERT INTO catalog_totals (id, artifacts, bytes, hits, bytes_saved, absorbed, pending)
SELECT 1, COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(hits), 0),
       COALESCE(SUM(size * hits), 0), COALESCE(SUM(misses), 0),
       (SELECT COALESCE(SUM(count), 0) FROM misses)
FROM artifacts;

CREATE TRIGGER artifacts_totals_added AFTER INSERT ON artifacts
BEGIN
    UPDATE catalog_totals SET artifacts = artifacts + 1, bytes = bytes + new.size,
        hits = hits + new.hits, bytes_saved = bytes_saved + new.size * new.hits,
        absorbed = absorbed + new.misses;
END;

CREATE TRIGGER artifacts_totals_removed AFTER DELETE ON artifacts
BEGIN
    UPDATE catalog_totals SET artifacts = artifacts - 1, bytes = bytes - old.size,
        hits = hits - old.hits, bytes_saved = bytes_saved - old.size * old.hits,
        absorbed = absorbed - old.misses;
END;

CREATE TRIGGER artifacts_totals_changed AFTER UPDATE OF size, hits, misses ON artifacts
BEGIN
    UPDATE catalog_totals SET bytes = bytes + new.size - old.size,
        hits = hits + new.hits - old.hits,
        bytes_saved = bytes_saved + new.size * new.hits - old.size * old.hits,
        absorbed = absorbed + new.misses - old.misses;
END;

CREATE TRIGGER misses_totals_added AFTER INSERT ON misses
BEGIN
    UPDATE catalog_totals SET pending = pending + new.count;
END;

CREATE TRIGGER misses_totals_removed AFTER DELETE ON misses
BEGIN
    UPDATE catalog_totals SET pending = pending - old.count;
END;

CREATE TRIGGER misses_totals_changed AFTER UPDATE OF count ON misses
BEGIN
    UPDATE catalog_totals SET pending = pending + new.count - old.count;
END;

-- Indexes in the order the pages and the background work read: the artifact and miss lists
-- (newest first, ties by key; a covering walk for an offset), the eviction order (least
-- recently hit unpinned first), the scrub order (never verified first, then oldest verified).
DROP INDEX artifacts_fetched_at;
CREATE INDEX artifacts_listed ON artifacts (fetched_at DESC, key);
DROP INDEX misses_last_seen;
CREATE INDEX misses_listed ON misses (last_seen DESC, key);
CREATE INDEX artifacts_eviction ON artifacts (COALESCE(last_hit_at, fetched_at), fetched_at, key)
    WHERE pinned = 0;
DROP INDEX artifacts_verified_at;
CREATE INDEX artifacts_scrub ON artifacts (verified_at IS NOT NULL, verified_at, fetched_at);

-- Substring search over URLs: an FTS5 trigram index (SQLite >= 3.34; it answers LIKE
-- '%needle%' for needles of 3 characters or more). Its rows live in artifact_urls, whose ids
-- are an INTEGER PRIMARY KEY: the artifacts table has an implicit rowid, which VACUUM may
-- renumber under an external-content index. Triggers keep both in step with artifacts.
CREATE TABLE artifact_urls (
    id  INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL
);
CREATE VIRTUAL TABLE artifact_urls_search USING fts5(
    url, content='artifact_urls', content_rowid='id', tokenize='trigram', detail='none'
);

CREATE TRIGGER artifact_urls_added AFTER INSERT ON artifact_urls
BEGIN
    INSERT INTO artifact_urls_search (rowid, url) VALUES (new.id, new.url);
END;

CREATE TRIGGER artifact_urls_removed AFTER DELETE ON artifact_urls
BEGIN
    INSERT INTO artifact_urls_search (artifact_urls_search, rowid, url)
    VALUES ('delete', old.id, old.url);
END;

CREATE TRIGGER artifact_urls_changed AFTER UPDATE OF url ON artifact_urls
BEGIN
    INSERT INTO artifact_urls_search (artifact_urls_search, rowid, url)
    VALUES ('delete', old.id, old.url);
    INSERT INTO artifact_urls_search (rowid, url) VALUES (new.id, new.url);
END;

INSERT INTO artifact_urls (key, url) SELECT key, url FROM artifacts;

CREATE TRIGGER artifacts_search_added AFTER INSERT ON artifacts
BEGIN
    INSERT INTO artifact_urls (key, url) VALUES (new.key, new.url);
END;

CREATE TRIGGER artifacts_search_removed AFTER DELETE ON artifacts
BEGIN
    DELETE FROM artifact_urls WHERE key = old.key;
END;

CREATE TRIGGER artifacts_search_changed AFTER UPDATE OF key, url ON artifacts
BEGIN
    UPDATE artifact_urls SET key = new.key, url = new.url WHERE key = old.key;
END;
