-- What an origin said about each artifact (issue 14): the headers freshness is computed from and
-- those served back (a JSON object, withcache.freshness.KEPT; NULL for artifacts stored before),
-- when it was last validated with the origin (NULL: at fetched_at), and an operator's request to
-- revalidate it on its next request (`withcache-admin refresh`).
ALTER TABLE artifacts ADD COLUMN origin_headers TEXT;
ALTER TABLE artifacts ADD COLUMN validated_at REAL;
ALTER TABLE artifacts ADD COLUMN refresh INTEGER NOT NULL DEFAULT 0;

-- A revalidation changes what the hit path decides: serving processes must see it.
DROP TRIGGER artifacts_changed;
CREATE TRIGGER artifacts_changed
AFTER UPDATE OF key, url, sha256, size, content_type, fetched_at, pinned, origin_headers,
    validated_at, refresh ON artifacts
BEGIN
    UPDATE catalog_generation SET artifacts = artifacts + 1;
END;
