-- Cache keys keep the query's parameters except the signatures of presigned URLs, and URLs with
-- credential-like parameters are not cached (issue 13, finding 6). This table records the query
-- mode (signed, keep or drop) the keys of this catalog were made with. The Python step of this
-- version (withcache/catalog.py) re-keys every artifact, miss and job from its stored URL, in this
-- transaction; a host started later with another mode re-keys them again.
CREATE TABLE key_rules (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    query TEXT NOT NULL
);
INSERT INTO key_rules (id, query) VALUES (1, 'legacy');
