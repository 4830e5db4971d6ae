-- Backends: caches the operator already runs (and, later, CDNs), where tasks are carried out
-- besides precache's own edges. Each target of a backend is a row of `edges` with `backend_id`
-- set, so a (URL, target) pair is a task_pairs row like any other: durable, owned, retried.
CREATE TABLE backends (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    settings    TEXT    NOT NULL,
    credentials TEXT,
    created_at  BIGINT  NOT NULL
);
-- A target row keeps its backend's name after the backend is deleted: task history stays readable.
ALTER TABLE edges ADD COLUMN backend_id BIGINT;
ALTER TABLE edges ADD COLUMN backend TEXT;
-- The backends a domain's tasks run on, a JSON list of names; NULL means ["edges"].
ALTER TABLE domains ADD COLUMN backends TEXT;
-- Pairs their target cannot carry out end `unsupported`: finished, left out of success_rate.
ALTER TABLE tasks ADD COLUMN n_unsupported BIGINT NOT NULL DEFAULT 0;
