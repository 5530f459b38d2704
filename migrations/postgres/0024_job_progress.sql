-- How far a running job has come, as its provider reports it (midjourney-proxy's "45%"): a
-- RUNNING event of the attempt with `progress` 0-99. Status changes leave it NULL.
ALTER TABLE job_events ADD COLUMN progress INTEGER;
