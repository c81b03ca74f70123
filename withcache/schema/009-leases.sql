-- Fills leased across hosts sharing one catalog (issue 17): one active job per key, and who
-- holds it. lease_owner is the holding host's --host-id; lease_token names one claim (a
-- restarted host, or a second process under the same id, claims anew); lease_url is where other
-- hosts relay clients to the fill's stream (the owner's --advertise-url, NULL: none); lease_until
-- is the expiry in seconds since the epoch (NULL: free, released by a host that stopped).
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_token TEXT;
ALTER TABLE jobs ADD COLUMN lease_url TEXT;
ALTER TABLE jobs ADD COLUMN lease_until REAL;

-- A catalog from before could hold two active jobs of one key (one host resumed them as
-- duplicates); the newest stays.
UPDATE jobs SET state = 'cancelled', error = 'duplicate of a newer job of this key',
    finished_at = created_at
WHERE state IN ('queued', 'running')
  AND id NOT IN (SELECT MAX(id) FROM jobs WHERE state IN ('queued', 'running') GROUP BY key);

-- What makes a claim safe between hosts: a second active job of a key cannot be inserted.
CREATE UNIQUE INDEX jobs_one_active_per_key ON jobs (key) WHERE state IN ('queued', 'running');
