-- Easel schema for PostgreSQL: the same tables, columns and rules as migrations/sqlite, so both
-- engines pass one conformance suite. Timestamps are BIGINT milliseconds since the Unix epoch,
-- stamped by Easel (not by the server's clock), so both engines agree to the millisecond.
-- JSON values (params, result_keys, result_meta) are TEXT as on SQLite: nothing queries inside
-- them, and JSONB would refuse the "\u0000" an upstream caption may contain.

CREATE TABLE tenants (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    rpm_limit         INTEGER NOT NULL CHECK (rpm_limit > 0),
    concurrency_limit INTEGER NOT NULL CHECK (concurrency_limit > 0),
    -- Claim round-robin: the tenant served longest ago goes first. Values come from
    -- tenant_claim_order, so concurrent claimers never hand out the same one.
    -- (SQLite also keeps a `waiting` counter here. PostgreSQL does not: every submit would
    -- update its tenant's row and queue behind that row lock. The claim asks the
    -- jobs_waiting_tenant index instead.)
    last_claim        BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL
);
-- job_claim: tenants walked longest-unserved first (ORDER BY last_claim, id).
CREATE INDEX tenants_claim ON tenants (last_claim, id);
CREATE SEQUENCE tenant_claim_order;

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- api_key_find looks keys up by this unique index.
    key_hash   BYTEA NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE provider_keys (
    id                TEXT PRIMARY KEY,
    provider          TEXT NOT NULL,
    secret_sealed     BYTEA NOT NULL,
    fingerprint       TEXT NOT NULL,
    rpm_limit         INTEGER NOT NULL CHECK (rpm_limit > 0),
    concurrency_limit INTEGER NOT NULL CHECK (concurrency_limit > 0),
    endpoint          TEXT,
    priority          INTEGER NOT NULL DEFAULT 0,
    project           TEXT,
    enabled           BOOLEAN NOT NULL DEFAULT TRUE,
    created_at        BIGINT NOT NULL,
    UNIQUE (provider, fingerprint)
);

CREATE TABLE jobs (
    -- Insertion order: pagination, queue position and the claim's FIFO within a tenant.
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('QUEUED','RUNNING','RETRYING','SUCCEEDED','FAILED','CANCELED')),
    prompt          TEXT NOT NULL,
    mode            TEXT NOT NULL CHECK (mode IN ('draft','final')),
    input_image_url TEXT,
    params          TEXT NOT NULL DEFAULT '{}',
    provider        TEXT NOT NULL,
    result_keys     TEXT NOT NULL DEFAULT '[]',
    result_meta     TEXT,
    error_code      TEXT,
    error_message   TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL CHECK (max_attempts > 0),
    -- Fencing token: bumped at every claim; only its holder may finish the attempt.
    fence           BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT,
    run_at          BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    cancel_at       BIGINT,
    deadline_at     BIGINT NOT NULL,
    CHECK (status <> 'RUNNING' OR lease_until IS NOT NULL)
);
-- job_list with a status filter (tenant_id = $1 AND status = $2 ORDER BY seq DESC), and the
-- claim's count of a tenant's RUNNING jobs (tenant_id = $1 AND status = 'RUNNING').
CREATE INDEX jobs_tenant_status ON jobs (tenant_id, status, seq);
-- job_list without a filter (tenant_id = $1 ORDER BY seq DESC).
CREATE INDEX jobs_tenant ON jobs (tenant_id, seq);
-- job_claim: a tenant's runnable jobs in submit order (tenant_id = $1 AND run_at <= $now
-- ORDER BY seq), and the EXISTS that finds tenants with runnable work (index-only via run_at).
CREATE INDEX jobs_waiting_tenant ON jobs (tenant_id, seq) INCLUDE (run_at)
    WHERE status IN ('QUEUED', 'RETRYING');
-- job_queue_position: waiting jobs submitted before this one (seq < $1).
CREATE INDEX jobs_waiting ON jobs (seq) WHERE status IN ('QUEUED', 'RETRYING');
-- job_next_run_at: min(run_at) of waiting jobs.
CREATE INDEX jobs_waiting_run_at ON jobs (run_at) WHERE status IN ('QUEUED', 'RETRYING');
-- job_maintain: running jobs whose lease expired (lease_until < $now).
CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE status = 'RUNNING';
-- job_maintain: unfinished jobs past their deadline (deadline_at <= $now).
CREATE INDEX jobs_open_deadline ON jobs (deadline_at)
    WHERE status IN ('QUEUED', 'RUNNING', 'RETRYING');
-- job_maintain: waiting jobs past their Cancel-After (cancel_at <= $now).
CREATE INDEX jobs_waiting_cancel ON jobs (cancel_at)
    WHERE cancel_at IS NOT NULL AND status IN ('QUEUED', 'RETRYING');

-- The audit trail: one row per status change. Its id is the SSE event id.
CREATE TABLE job_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id        TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    error_code    TEXT,
    error_message TEXT,
    at            BIGINT NOT NULL
);
-- job_events: a job's events in order (job_id = $1 ORDER BY id).
CREATE INDEX job_events_job ON job_events (job_id, id);
-- A tenant's event feed in order (tenant_id = $1 AND id > $last ORDER BY id), as on SQLite.
CREATE INDEX job_events_tenant ON job_events (tenant_id, id);

CREATE TABLE idempotency_keys (
    tenant_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    -- job_submit: INSERT ... ON CONFLICT (tenant_id, key) DO NOTHING, then the lookup.
    PRIMARY KEY (tenant_id, key)
);
-- idempotency_purge: records older than the TTL (created_at < $1).
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
