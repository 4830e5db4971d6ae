-- Refresh then warm: the URLs of a refresh with "prefetch": true appear again as phase 1; their
-- pairs wait in status 'held' until every phase-0 (purge) pair of the task has finished.
ALTER TABLE task_urls ADD COLUMN phase INTEGER NOT NULL DEFAULT 0;
