-- Idempotency keys of task submissions: a retry with the same key and body gets the task the
-- first attempt created. Kept for 24 h.
CREATE TABLE idempotency_keys (
    account_id BIGINT NOT NULL,
    key        TEXT   NOT NULL,
    body_hash  TEXT   NOT NULL,
    task_id    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
