-- Completion callbacks (webhooks): one per task that asked for it, delivered once the task ended,
-- signed with the account's secret, retried with backoff; every attempt is kept.
ALTER TABLE accounts ADD COLUMN webhook_secret TEXT;

CREATE TABLE callbacks (
    task_id          TEXT    PRIMARY KEY,
    url              TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL DEFAULT 0,
    first_attempt_at INTEGER,
    delivered_at     INTEGER,
    gave_up_at       INTEGER,
    lease_until      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX callbacks_pending ON callbacks (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;

CREATE TABLE callback_attempts (
    task_id     TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    http_status INTEGER,
    error       TEXT,
    PRIMARY KEY (task_id, n)
);
