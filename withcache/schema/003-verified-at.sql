-- When a blob's bytes were last re-hashed (the scrub visits the oldest first).
ALTER TABLE artifacts ADD COLUMN verified_at REAL;
CREATE INDEX artifacts_verified_at ON artifacts (verified_at);
