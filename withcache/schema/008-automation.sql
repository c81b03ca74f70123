-- Automation (issue 16): API bearer tokens, the audit log of state changes, per-day traffic.

-- A token's secret is never stored: `hash` is the SHA-256 of the whole bearer string, which is
-- `wct_<id>_<secret>`; the id finds the row and the hash is compared in constant time.
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    hash         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    last_used_at REAL,
    revoked_at   REAL
);

-- One row per state change: who (actor, client address), what (action, subject), how it ended.
-- Append-only: rows are never changed (the trigger refuses it); retention deletes the oldest.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,
    client  TEXT,
    action  TEXT NOT NULL,
    subject TEXT,
    outcome TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_action ON events (action, id);
CREATE INDEX events_actor ON events (actor, id);

CREATE TRIGGER events_append_only BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

-- Body bytes served from the cache and fetched from origins, per UTC day (the dashboard chart).
CREATE TABLE daily_traffic (
    day     TEXT PRIMARY KEY,
    served  INTEGER NOT NULL DEFAULT 0,
    fetched INTEGER NOT NULL DEFAULT 0
);
