-- The `/mj` facade's tasks (Easel as a midjourney-proxy): one row per submit, naming the job
-- that does its work. A task waiting for its `/mj/submit/modal` has no job yet (`phase`
-- MODAL; CANCEL once canceled); otherwise what a client sees of its status is read from the
-- job. `detail` holds the rest of the task as JSON (prompt, state, notifyHook, description,
-- parent task, speed mode); `notified` is the order of the last notifyHook call queued, so
-- a callback never regresses.
CREATE TABLE mj_proxy_tasks (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    job_id      TEXT,
    hash        TEXT NOT NULL,
    action      TEXT NOT NULL,
    phase       TEXT,
    detail      TEXT NOT NULL,
    notified    INTEGER NOT NULL DEFAULT -1,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX mj_proxy_tasks_tenant ON mj_proxy_tasks (tenant_id, created_at);
CREATE INDEX mj_proxy_tasks_job ON mj_proxy_tasks (job_id);

-- A notifyHook call is a row of the webhook outbox whose body is the task object, sent as is
-- (NULL: the contract payload built from the event's snapshot, as before).
ALTER TABLE webhook_deliveries ADD COLUMN body TEXT;
