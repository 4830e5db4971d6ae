-- When the owner cancelled the task; a task that ends after it ends `cancelled`.
ALTER TABLE tasks ADD COLUMN cancelled_at BIGINT;
