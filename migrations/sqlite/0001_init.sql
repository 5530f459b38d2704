-- Easel schema for SQLite. Timestamps are milliseconds since the Unix epoch.

CREATE TABLE tenants (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    rpm_limit         INTEGER NOT NULL CHECK (rpm_limit > 0),
    concurrency_limit INTEGER NOT NULL CHECK (concurrency_limit > 0),
    -- Jobs QUEUED or RETRYING; lets the fair claim find tenants with work without a scan.
    waiting           INTEGER NOT NULL DEFAULT 0 CHECK (waiting >= 0),
    -- Claim round-robin: the tenant served longest ago goes first.
    last_claim        INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL
);
-- Serves the fair claim: tenants with work, longest unserved first.
CREATE INDEX tenants_claim ON tenants (last_claim) WHERE waiting > 0;

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash   BLOB NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE provider_keys (
    id                TEXT PRIMARY KEY,
    provider          TEXT NOT NULL,
    secret_sealed     BLOB NOT NULL,
    fingerprint       TEXT NOT NULL,
    rpm_limit         INTEGER NOT NULL CHECK (rpm_limit > 0),
    concurrency_limit INTEGER NOT NULL CHECK (concurrency_limit > 0),
    endpoint          TEXT,
    priority          INTEGER NOT NULL DEFAULT 0,
    project           TEXT,
    enabled           INTEGER NOT NULL DEFAULT 1,
    created_at        INTEGER NOT NULL,
    UNIQUE (provider, fingerprint)
);

CREATE TABLE jobs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
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
    fence           INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     INTEGER,
    run_at          INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    cancel_at       INTEGER,
    deadline_at     INTEGER NOT NULL,
    CHECK (status <> 'RUNNING' OR lease_until IS NOT NULL)
);
-- GET /v1/jobs (newest first), with or without a status filter; per-tenant claim and
-- running count.
CREATE INDEX jobs_tenant_status ON jobs (tenant_id, status, seq);
CREATE INDEX jobs_tenant ON jobs (tenant_id, seq);
-- Queue position and the earliest runnable time.
CREATE INDEX jobs_waiting ON jobs (seq) WHERE status IN ('QUEUED', 'RETRYING');
CREATE INDEX jobs_waiting_run_at ON jobs (run_at) WHERE status IN ('QUEUED', 'RETRYING');
-- The rescuer: running jobs by lease expiry.
CREATE INDEX jobs_running_lease ON jobs (lease_until) WHERE status = 'RUNNING';
-- Deadlines and Cancel-After of unfinished jobs.
CREATE INDEX jobs_open_deadline ON jobs (deadline_at) WHERE status IN ('QUEUED', 'RUNNING', 'RETRYING');
CREATE INDEX jobs_waiting_cancel ON jobs (cancel_at) WHERE cancel_at IS NOT NULL AND status IN ('QUEUED', 'RETRYING');

-- The audit trail: one row per status change. Its id is the SSE event id.
CREATE TABLE job_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL,
    tenant_id     TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    error_code    TEXT,
    error_message TEXT,
    at            INTEGER NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);
CREATE INDEX job_events_tenant ON job_events (tenant_id, id);

CREATE TABLE idempotency_keys (
    tenant_id    TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
) WITHOUT ROWID;
-- The purge of expired records.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
