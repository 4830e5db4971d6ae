-- Task retention: ended tasks are found by when they ended.
CREATE INDEX tasks_by_finished_at ON tasks (finished_at) WHERE finished_at IS NOT NULL;
