-- The control plane's durable state on PostgreSQL: the same tables as migrations/sqlite/0001-0007,
-- with every integer a BIGINT (the code reads i64 throughout). Timestamps are milliseconds since
-- the Unix epoch; task ids are UUID text.

CREATE TABLE accounts (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT   NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    role          TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE tokens (
    hash        TEXT   PRIMARY KEY,
    account_id  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX tokens_by_account ON tokens (account_id);

CREATE TABLE domains (
    name         TEXT   PRIMARY KEY,
    account_id   BIGINT NOT NULL,
    origin       TEXT   NOT NULL,
    origin_host  TEXT,
    created_at   BIGINT NOT NULL,
    cache_policy TEXT
);
CREATE INDEX domains_by_account ON domains (account_id);

CREATE TABLE revisions (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO revisions (name, value) VALUES ('domains', 1);

CREATE TABLE edges (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT   NOT NULL UNIQUE,
    admin_url    TEXT,
    admin_secret TEXT,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT
);

CREATE TABLE tasks (
    id           TEXT   PRIMARY KEY,
    account_id   BIGINT NOT NULL,
    kind         TEXT   NOT NULL,
    domain       TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    n_urls       BIGINT NOT NULL,
    n_pairs      BIGINT NOT NULL,
    n_finished   BIGINT NOT NULL DEFAULT 0,
    n_success    BIGINT NOT NULL DEFAULT 0,
    mode         TEXT,
    cancelled_at BIGINT
);
CREATE INDEX tasks_by_account ON tasks (account_id, kind, created_at, id);
CREATE INDEX tasks_by_account_time ON tasks (account_id, created_at, id);

CREATE TABLE task_urls (
    task_id TEXT   NOT NULL,
    url_idx BIGINT NOT NULL,
    url     TEXT   NOT NULL,
    is_dir  BIGINT NOT NULL DEFAULT 0,
    phase   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, url_idx)
);

CREATE TABLE task_pairs (
    task_id     TEXT   NOT NULL,
    url_idx     BIGINT NOT NULL,
    edge_id     BIGINT NOT NULL,
    status      TEXT   NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    http_status BIGINT,
    bytes       BIGINT,
    error       TEXT,
    started_at  BIGINT,
    finished_at BIGINT,
    objects     BIGINT,
    PRIMARY KEY (task_id, url_idx, edge_id)
);
CREATE INDEX task_pairs_unfinished ON task_pairs (status) WHERE status IN ('waiting', 'running');

CREATE TABLE quota_limits (
    account_id  BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    daily_limit BIGINT NOT NULL,
    PRIMARY KEY (account_id, kind)
);

CREATE TABLE quota_usage (
    account_id BIGINT NOT NULL,
    day        TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    used       BIGINT NOT NULL,
    PRIMARY KEY (account_id, day, kind)
);

CREATE TABLE idempotency_keys (
    account_id BIGINT NOT NULL,
    key        TEXT   NOT NULL,
    body_hash  TEXT   NOT NULL,
    task_id    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
