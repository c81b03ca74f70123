-- A counter that moves when artifact rows change in a way the hit path cares about (a row added,
-- removed or re-pointed), and not for bookkeeping (hit counts, scrub stamps, misses, jobs).
-- Serving processes compare it once a second to know their hit index is stale; PRAGMA
-- data_version, which moves on every commit by another connection, emptied every serving
-- worker's index each second while the host wrote hit counts (issue 20).
CREATE TABLE catalog_generation (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    artifacts INTEGER NOT NULL
);
INSERT INTO catalog_generation (id, artifacts) VALUES (1, 0);

CREATE TRIGGER artifacts_added AFTER INSERT ON artifacts
BEGIN
    UPDATE catalog_generation SET artifacts = artifacts + 1;
END;

CREATE TRIGGER artifacts_removed AFTER DELETE ON artifacts
BEGIN
    UPDATE catalog_generation SET artifacts = artifacts + 1;
END;

CREATE TRIGGER artifacts_changed
AFTER UPDATE OF key, url, sha256, size, content_type, fetched_at, pinned ON artifacts
BEGIN
    UPDATE catalog_generation SET artifacts = artifacts + 1;
END;
