-- An upper bound on each tenant's RUNNING jobs, kept by the claim, so that it need not count
-- them while the tenant is far from its concurrency limit (a count walks every running job of
-- the tenant, and fetches each from the heap: fresh rows are never all-visible).
--
-- Only a claim makes a job RUNNING, and a claim holds the tenant's row lock and adds what it
-- claims to the bound in the same transaction; everything else only ends RUNNING jobs. So
-- running <= running_bound always, and while running_bound + share <= concurrency_limit the
-- claim can take its share without counting. Otherwise it counts, and the bound becomes the
-- exact count plus what it claims. NULL: unknown, count (every tenant after this migration).
-- Every claimer must run code that knows this column: a claim from an older binary would
-- make jobs RUNNING without raising the bound.
ALTER TABLE tenants ADD COLUMN running_bound BIGINT;

-- The claim takes a tenant's runnable jobs in submit order (tenant_id = $1 AND status IN
-- ('QUEUED','RETRYING') ORDER BY seq). The INCLUDE (run_at) of the first version made this
-- index wider than jobs_tenant (tenant_id, seq), and while the statistics say most jobs are
-- waiting (after a big backlog was submitted) the planner chose jobs_tenant, which walks past
-- every running and finished job of the tenant. Without it, the partial index is never the
-- bigger one. The probe for runnable work uses jobs_waiting_tenant_run (migration 0005).
DROP INDEX jobs_waiting_tenant;
CREATE INDEX jobs_waiting_tenant ON jobs (tenant_id, seq) WHERE status IN ('QUEUED', 'RETRYING');
