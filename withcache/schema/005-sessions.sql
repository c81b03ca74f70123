-- Operator sessions that are live: a login adds one, a logout deletes it, expired ones are
-- pruned. id is the SHA-256 of the session id a cookie carries, never the id itself.
CREATE TABLE sessions (
    id      TEXT PRIMARY KEY,
    expires REAL NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires);
