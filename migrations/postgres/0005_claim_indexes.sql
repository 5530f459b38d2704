-- The claim counts each locked tenant's RUNNING jobs (tenant_id = $1 AND status = 'RUNNING').
-- With only jobs_running_lease (lease_until) to choose from, the planner often counted through
-- it and filtered by tenant, a scan of every running job for each tenant. One index of the
-- running jobs, by tenant first, serves that count and still the lease sweep of
-- job_maintain (status = 'RUNNING' AND lease_until < $now), whose rows are few.
CREATE INDEX jobs_running ON jobs (tenant_id, lease_until) WHERE status = 'RUNNING';
DROP INDEX jobs_running_lease;

-- The claim's first step asks, for each tenant in turn, whether it has runnable work
-- (tenant_id = $1 AND status IN ('QUEUED','RETRYING') AND run_at <= $now). Through
-- jobs_tenant (tenant_id, seq) the planner walked past every running and finished job of the
-- tenant; with run_at in the key, this index answers with one probe and is the one chosen.
CREATE INDEX jobs_waiting_tenant_run ON jobs (tenant_id, run_at)
    WHERE status IN ('QUEUED', 'RETRYING');
