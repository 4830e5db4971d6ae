-- Refresh tasks: a target is a URL or a directory (a URL prefix); a task has a purge mode; a
-- pair reports how many cached objects it affected.
ALTER TABLE task_urls ADD COLUMN is_dir INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN mode TEXT;
ALTER TABLE task_pairs ADD COLUMN objects BIGINT;
