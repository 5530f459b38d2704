-- Webhooks: the tenant's endpoint and signing secrets, a per-job target, and the outbox of
-- deliveries that the dispatcher (src/webhooks) sends. Timestamps are milliseconds since the
-- Unix epoch, as everywhere.

-- A job may name its own receiver (`webhookUrl` at submit); it wins over the tenant's URL.
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;

-- One webhook endpoint per tenant. Kept out of `tenants` so that the tenant row (read on every
-- authenticated request and cached) never carries secrets. Secrets are sealed with the app's
-- AES-256-GCM master key (they are needed in clear to sign, so they cannot be hashed).
CREATE TABLE tenant_webhooks (
    tenant_id               TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    -- NULL: no tenant-wide receiver; only jobs with their own webhookUrl get deliveries.
    url                     TEXT,
    -- 'terminal': SUCCEEDED, FAILED, CANCELED; 'all': every status change.
    events                  TEXT NOT NULL DEFAULT 'terminal' CHECK (events IN ('terminal', 'all')),
    -- Cleared when the receiver answers 410 Gone; set again by the next PUT /v1/webhook.
    enabled                 INTEGER NOT NULL DEFAULT 1,
    disabled_reason         TEXT,
    secret_sealed           BLOB NOT NULL,
    secret_fingerprint      TEXT NOT NULL,
    -- The secret before the last rotation; it keeps signing until prev_secret_expires_at.
    prev_secret_sealed      BLOB,
    prev_secret_fingerprint TEXT,
    prev_secret_expires_at  INTEGER,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);

-- The outbox: one row per (status change, receiver), written by the trigger below inside the
-- transaction that changed the job's status, so a committed status change always has its
-- delivery and a rolled-back one never does.
CREATE TABLE webhook_deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- 'evt_' + lowercase ULID: the payload's eventId and the Standard Webhooks webhook-id,
    -- the same on every attempt and replay.
    id               TEXT NOT NULL UNIQUE,
    job_id           TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    -- The job_events row this delivery reports.
    job_event_id     INTEGER NOT NULL,
    url              TEXT NOT NULL,
    -- Whose URL: the job's own webhookUrl ('job') or the tenant's ('tenant').
    source           TEXT NOT NULL CHECK (source IN ('job', 'tenant')),
    -- Snapshot of the event: the payload is built from these, never from the job's current row.
    status           TEXT NOT NULL,
    error            TEXT,
    result_keys      TEXT NOT NULL DEFAULT '[]',
    event_at         INTEGER NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivering', 'succeeded', 'failed', 'disabled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    -- Fencing token of the claim: bumped at every claim; only its holder may record the result.
    claim_token      INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until      INTEGER,
    last_status_code INTEGER,
    last_error       TEXT,
    last_latency_ms  INTEGER,
    last_attempt_at  INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    CHECK (state <> 'delivering' OR lease_until IS NOT NULL)
);
-- The dispatcher's claim: due pending rows per URL, and delivering rows whose lease ran out.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_url_due ON webhook_deliveries (url, next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (lease_until) WHERE state = 'delivering';
-- The per-endpoint concurrency cap counts live claims per URL.
CREATE INDEX webhook_deliveries_in_flight ON webhook_deliveries (url, lease_until) WHERE state = 'delivering';
-- Delivery logs: per job, per tenant (with or without a state filter), newest first; and the
-- 410 sweep of a tenant's pending deliveries to one URL.
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, seq);
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, seq);
CREATE INDEX webhook_deliveries_tenant_state ON webhook_deliveries (tenant_id, state, seq);

-- The outbox writer. Every status change of a job inserts a job_events row inside its own
-- transaction (submit, claim, finish, cancel, release, maintenance), so a trigger on that
-- insert puts the delivery in the same transaction without any store code knowing about it.
--
-- A delivery is written when the event is terminal (or the tenant subscribed to 'all') and
-- there is a receiver: the job's webhook_url, else the tenant's url while enabled. A tenant
-- without a tenant_webhooks row has no signing secret, so it gets no deliveries (the API
-- refuses a per-job webhookUrl from such a tenant).
--
-- The payload is snapshotted from the event row (status, error message, time) and, for
-- SUCCEEDED, the job's result_keys: every status change updates the jobs row before it
-- inserts its event, so the keys are in place when the trigger runs.
--
-- The id is a ULID made in SQL: 10 Crockford base32 characters of the event's millisecond
-- time, then 16 random ones (80 bits).
--
-- Porting to PostgreSQL: an AFTER INSERT ... FOR EACH ROW trigger on job_events calling a
-- plpgsql function with the same INSERT ... SELECT; `NEW.at >> n & 31` works on bigint, and
-- `(random() & 31)` becomes `floor(random() * 32)::int`.
CREATE TRIGGER job_events_webhook_outbox AFTER INSERT ON job_events
FOR EACH ROW
BEGIN
    INSERT INTO webhook_deliveries (
        id, job_id, tenant_id, job_event_id, url, source, status, error, result_keys,
        event_at, next_attempt_at, created_at, updated_at)
    SELECT
        'evt_' ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 45) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 40) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 35) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 30) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 25) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 20) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 15) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 10) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 5) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', ((NEW.at >> 0) & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1) ||
            substr('0123456789abcdefghjkmnpqrstvwxyz', (random() & 31) + 1, 1),
        NEW.job_id,
        NEW.tenant_id,
        NEW.id,
        coalesce(j.webhook_url, w.url),
        CASE WHEN j.webhook_url IS NOT NULL THEN 'job' ELSE 'tenant' END,
        NEW.status,
        NEW.error_message,
        CASE WHEN NEW.status = 'SUCCEEDED' THEN j.result_keys ELSE '[]' END,
        NEW.at,
        NEW.at,
        NEW.at,
        NEW.at
    FROM jobs j
    JOIN tenant_webhooks w ON w.tenant_id = j.tenant_id
    WHERE j.id = NEW.job_id
      AND (NEW.status IN ('SUCCEEDED', 'FAILED', 'CANCELED') OR w.events = 'all')
      AND (j.webhook_url IS NOT NULL OR (w.url IS NOT NULL AND w.enabled = 1));
END;
