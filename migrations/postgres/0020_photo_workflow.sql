-- The photo app, continued (src/photo): a task is 'processing' from the claim of its first job
-- (tasks started before this migration are moved now), and the n8n workflow runs: one row per
-- task of a type configured to run on a workflow, written when a job posts the task to the
-- webhook and ended once by the workflow's callback.

UPDATE photo_tasks SET status = 'processing'
WHERE status = 'pending' AND EXISTS (
    SELECT 1 FROM photo_task_jobs tj JOIN jobs j ON j.id = tj.job_id
    WHERE tj.task_id = photo_tasks.task_id AND j.status <> 'QUEUED');

CREATE TABLE photo_workflow_runs (
    task_id        TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    -- When the webhook took the task (NULL while it is being posted).
    posted_at      BIGINT,
    -- NULL while waiting for the callback, then 'completed' or 'failed' (once).
    outcome        TEXT,
    -- The callback's images as it sent them (JSON: [{url, format, batch_index}]).
    images         TEXT,
    ai_description TEXT,
    error          TEXT,
    created_at     BIGINT NOT NULL,
    ended_at       BIGINT
);
