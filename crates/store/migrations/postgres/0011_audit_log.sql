-- The audit log: who did what and when (docs/operations.md). Never a secret: the API records
-- names, addresses, request ids, actions and their targets only.
CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor_id   BIGINT,
    actor      TEXT   NOT NULL,
    client     TEXT,
    request_id TEXT,
    action     TEXT   NOT NULL,
    target     TEXT,
    detail     TEXT
);
CREATE INDEX audit_log_by_at ON audit_log (at);
