-- What happens when a job ends, written inside the transaction that ended it (as the webhook
-- outbox of 0003): the job's input images are let go of, and a job whose creator asked to be
-- told (an editor message, a photo task: `follow_up` names that capability) gets a row in the
-- follow-up outbox that src/jobs/followups.rs works off, at least once, across processes.

-- The capability to tell when the job ends; NULL for the job API's own jobs.
ALTER TABLE jobs ADD COLUMN follow_up TEXT;

CREATE TABLE job_followups (
    job_id      TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    follower    TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    -- When the row may next be claimed: now when written, later after a failed attempt or
    -- while a claim holds it (a claim that dies with its process lapses at this time).
    due_at      BIGINT NOT NULL,
    last_error  TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX job_followups_due ON job_followups (due_at);

-- Terminal statuses: SUCCEEDED, FAILED, CANCELED (a job reaches one of them exactly once).
CREATE FUNCTION job_events_job_ended() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE images SET ref_count = GREATEST(0, ref_count - 1)
    WHERE tenant_id = NEW.tenant_id
      AND id IN (SELECT jsonb_array_elements_text(
          coalesce((SELECT params::jsonb -> 'inputImageIds' FROM jobs WHERE id = NEW.job_id),
                   '[]'::jsonb)));
    INSERT INTO job_followups (job_id, tenant_id, follower, due_at, created_at)
    SELECT j.id, j.tenant_id, j.follow_up, NEW.at, NEW.at
    FROM jobs j
    WHERE j.id = NEW.job_id AND j.follow_up IS NOT NULL
    ON CONFLICT (job_id) DO NOTHING;
    RETURN NULL; -- an AFTER trigger's result is ignored
END;
$$;

CREATE TRIGGER job_events_job_ended AFTER INSERT ON job_events
FOR EACH ROW WHEN (NEW.status IN ('SUCCEEDED', 'FAILED', 'CANCELED'))
EXECUTE FUNCTION job_events_job_ended();
