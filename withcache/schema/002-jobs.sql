-- Background fills; queued and running ones are re-queued when the host restarts.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT NOT NULL,
    url         TEXT NOT NULL,
    source      TEXT NOT NULL,
    state       TEXT NOT NULL,
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    bytes_total INTEGER,
    error       TEXT,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL
);
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_key ON jobs (key);
