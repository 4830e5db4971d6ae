-- The task list across kinds (GET /cdn_api/tasks), newest first.
CREATE INDEX tasks_by_account_time ON tasks (account_id, created_at, id);
