-- Scale-out: pairs belong to the engine (control-plane process) that runs them, purges an edge
-- has not confirmed are owed to it, and edges join with one-time tokens.

-- Every running engine, with its last heartbeat (database clock, ms). A worker whose heartbeat is
-- older than the lease is dead; another engine takes its pairs.
CREATE TABLE engine_workers (
    id           TEXT    PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
-- Pairs accepted before this migration belong to no live engine.
INSERT INTO engine_workers (id, started_at, heartbeat_at) VALUES ('legacy', 0, 0);

ALTER TABLE task_pairs ADD COLUMN owner TEXT NOT NULL DEFAULT 'legacy';
-- 1 while the edge may still hold what this purge pair removes: set for every purge, cleared
-- when the edge confirms it (pushed by the engine or applied in the edge's catch-up).
ALTER TABLE task_pairs ADD COLUMN owed INTEGER NOT NULL DEFAULT 0;
UPDATE task_pairs SET owed = 1
 WHERE status IN ('waiting', 'running', 'failed')
   AND EXISTS (SELECT 1 FROM task_urls u
                WHERE u.task_id = task_pairs.task_id AND u.url_idx = task_pairs.url_idx AND u.phase = 0)
   AND task_id IN (SELECT id FROM tasks WHERE kind = 'refresh' AND (mode IS NULL OR mode <> 'dry_run'));

DROP INDEX task_pairs_unfinished;
CREATE INDEX task_pairs_unfinished ON task_pairs (owner, status) WHERE status IN ('waiting', 'running', 'held');
CREATE INDEX task_pairs_owed ON task_pairs (edge_id) WHERE owed = 1;

ALTER TABLE edges ADD COLUMN parent_id INTEGER;
ALTER TABLE edges ADD COLUMN data_url TEXT;
ALTER TABLE edges ADD COLUMN join_token_hash TEXT;
ALTER TABLE edges ADD COLUMN join_expires_at INTEGER;
ALTER TABLE edges ADD COLUMN revoked_at INTEGER;
