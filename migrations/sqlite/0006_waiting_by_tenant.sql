-- The claim takes a tenant's runnable jobs in submit order (tenant_id = ? AND status IN
-- ('QUEUED','RETRYING') AND run_at <= ? ORDER BY seq). Through jobs_tenant (tenant_id, seq)
-- that walked every finished job of the tenant first, so each claim slowed down as history
-- grew; this index holds only the waiting jobs, already in order.
CREATE INDEX jobs_waiting_tenant ON jobs (tenant_id, seq) WHERE status IN ('QUEUED', 'RETRYING');
