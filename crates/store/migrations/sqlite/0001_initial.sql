-- The control plane's durable state. Timestamps are milliseconds since the Unix epoch (BIGINT),
-- ids of tasks are UUID text: both portable to the PostgreSQL schema.

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);

-- Only a SHA-256 of each token is stored: a database leak does not leak usable tokens.
CREATE TABLE tokens (
    hash        TEXT   PRIMARY KEY,
    account_id  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX tokens_by_account ON tokens (account_id);

CREATE TABLE domains (
    name        TEXT   PRIMARY KEY,
    account_id  BIGINT NOT NULL,
    origin      TEXT   NOT NULL,
    origin_host TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX domains_by_account ON domains (account_id);

-- Monotonic counters, e.g. the revision of the domain registry that edges compare against.
CREATE TABLE revisions (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO revisions (name, value) VALUES ('domains', 1);

CREATE TABLE edges (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT   NOT NULL UNIQUE,
    admin_url    TEXT,
    admin_secret TEXT,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT
);

CREATE TABLE tasks (
    id          TEXT    PRIMARY KEY,
    account_id  BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    domain      TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    n_urls      INTEGER NOT NULL,
    n_pairs     INTEGER NOT NULL,
    n_finished  INTEGER NOT NULL DEFAULT 0,
    n_success   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_by_account ON tasks (account_id, kind, created_at, id);

CREATE TABLE task_urls (
    task_id TEXT    NOT NULL,
    url_idx INTEGER NOT NULL,
    url     TEXT    NOT NULL,
    PRIMARY KEY (task_id, url_idx)
);

-- One row per (URL, edge): the unit of work of the task engine.
CREATE TABLE task_pairs (
    task_id     TEXT    NOT NULL,
    url_idx     INTEGER NOT NULL,
    edge_id     BIGINT  NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    bytes       BIGINT,
    error       TEXT,
    started_at  BIGINT,
    finished_at BIGINT,
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
