-- Failed logins (issue 13): one row per account name and per client address, so every API
-- process on the database throttles with the same counts. `subject` is `account:<name>` or
-- `address:<ip>`; `failures` counts failures no more than the window apart, the last at
-- `last_failure_at` (unix ms). Rows older than the window are deleted as new failures arrive.
CREATE TABLE login_failures (
    subject         TEXT PRIMARY KEY,
    failures        BIGINT NOT NULL,
    last_failure_at BIGINT NOT NULL
);
CREATE INDEX login_failures_by_age ON login_failures (last_failure_at);
