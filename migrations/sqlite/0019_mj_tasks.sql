-- The Midjourney API seed's tasks (`midjourney_task` of the origin): one row per trigger call,
-- naming the job that does the work. What a client sees of its status is read from the job
-- (SUBMITTED while it runs, SUCCESS, BANNED for a content block, TIMEOUT, FAILURE), unless
-- the origin's Discord bot reported one through `POST /midjourney/result` (`bot_status`).
CREATE TABLE mj_tasks (
    task_id     TEXT PRIMARY KEY,
    trigger_id  TEXT NOT NULL,
    tenant_id   TEXT NOT NULL,
    -- The app key's token account (`key:<api key id>`): `GET /tasks` lists its own tasks.
    account_id  TEXT NOT NULL,
    job_id      TEXT,
    task_name   TEXT NOT NULL,
    task_type   TEXT NOT NULL,
    image_index INTEGER NOT NULL DEFAULT 0,
    -- The message id and hash a client sends back to act on this task's images.
    msg_id      INTEGER NOT NULL,
    msg_hash    TEXT NOT NULL,
    zoom_out    INTEGER NOT NULL DEFAULT 0,
    direction   TEXT NOT NULL DEFAULT '',
    ref_pic_url TEXT,
    prompts     TEXT NOT NULL DEFAULT '',
    bot_status  TEXT,
    result_url  TEXT,
    attachments TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX mj_tasks_account ON mj_tasks (account_id, created_at);
CREATE INDEX mj_tasks_trigger ON mj_tasks (trigger_id);
CREATE UNIQUE INDEX mj_tasks_msg_hash ON mj_tasks (tenant_id, msg_hash);
