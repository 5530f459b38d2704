-- Webhooks (see migrations/sqlite/0003_webhooks.sql): the tenant's endpoint and signing
-- secrets, a per-job target, and the outbox of deliveries that the dispatcher (src/webhooks)
-- sends. The same tables, columns and rules as on SQLite; timestamps are BIGINT milliseconds
-- stamped by Easel, as everywhere.

-- A job may name its own receiver (`webhookUrl` at submit); it wins over the tenant's URL.
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;

-- One webhook endpoint per tenant. Kept out of `tenants` so that the tenant row (read on every
-- authenticated request and cached) never carries secrets. Secrets are sealed with the app's
-- AES-256-GCM master key (they are needed in clear to sign, so they cannot be hashed).
CREATE TABLE tenant_webhooks (
    -- webhook_get, webhook_set (ON CONFLICT), the trigger's join and the claim's secrets
    -- look endpoints up by this key.
    tenant_id               TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    -- NULL: no tenant-wide receiver; only jobs with their own webhookUrl get deliveries.
    url                     TEXT,
    -- 'terminal': SUCCEEDED, FAILED, CANCELED; 'all': every status change.
    events                  TEXT NOT NULL DEFAULT 'terminal' CHECK (events IN ('terminal', 'all')),
    -- Cleared when the receiver answers 410 Gone; set again by the next PUT /v1/webhook.
    enabled                 BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason         TEXT,
    secret_sealed           BYTEA NOT NULL,
    secret_fingerprint      TEXT NOT NULL,
    -- The secret before the last rotation; it keeps signing until prev_secret_expires_at.
    prev_secret_sealed      BYTEA,
    prev_secret_fingerprint TEXT,
    prev_secret_expires_at  BIGINT,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);

-- The outbox: one row per (status change, receiver), written by the trigger below inside the
-- transaction that changed the job's status, so a committed status change always has its
-- delivery and a rolled-back one never does.
CREATE TABLE webhook_deliveries (
    -- Insertion order: delivery logs page by it (seq < $before ORDER BY seq DESC).
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- 'evt_' + lowercase ULID: the payload's eventId and the Standard Webhooks webhook-id,
    -- the same on every attempt and replay. webhook_complete and webhook_replay find rows
    -- by this unique index.
    id               TEXT NOT NULL UNIQUE,
    job_id           TEXT NOT NULL,
    tenant_id        TEXT NOT NULL,
    -- The job_events row this delivery reports.
    job_event_id     BIGINT NOT NULL,
    url              TEXT NOT NULL,
    -- Whose URL: the job's own webhookUrl ('job') or the tenant's ('tenant').
    source           TEXT NOT NULL CHECK (source IN ('job', 'tenant')),
    -- Snapshot of the event: the payload is built from these, never from the job's current row.
    status           TEXT NOT NULL,
    error            TEXT,
    result_keys      TEXT NOT NULL DEFAULT '[]',
    event_at         BIGINT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivering', 'succeeded', 'failed', 'disabled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    -- Fencing token of the claim: bumped at every claim; only its holder may record the result.
    claim_token      BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until      BIGINT,
    last_status_code INTEGER,
    last_error       TEXT,
    last_latency_ms  BIGINT,
    last_attempt_at  BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    CHECK (state <> 'delivering' OR lease_until IS NOT NULL)
);
-- webhook_claim: the URLs with due work (state = 'pending' AND next_attempt_at <= $now,
-- GROUP BY url ORDER BY min(next_attempt_at)) and webhook_next_due_at's min(next_attempt_at).
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';
-- webhook_claim: one URL's due deliveries, oldest due first (url = $1 AND state = 'pending'
-- AND next_attempt_at <= $now ORDER BY next_attempt_at, seq); also the 410 sweep of pending
-- deliveries to one URL.
CREATE INDEX webhook_deliveries_url_due ON webhook_deliveries (url, next_attempt_at, seq)
    WHERE state = 'pending';
-- webhook_claim: attempts whose lease ran out (state = 'delivering' AND lease_until < $now);
-- webhook_next_due_at's min(lease_until).
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (lease_until)
    WHERE state = 'delivering';
-- webhook_claim: the per-endpoint cap counts live claims per URL (url = $1 AND
-- state = 'delivering').
CREATE INDEX webhook_deliveries_in_flight ON webhook_deliveries (url)
    WHERE state = 'delivering';
-- webhook_deliveries: one job's log (tenant_id = $1 AND job_id = $2 ORDER BY seq DESC).
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, seq);
-- webhook_deliveries: the tenant's log (tenant_id = $1 ORDER BY seq DESC).
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, seq);
-- webhook_deliveries with a state filter (tenant_id = $1 AND state = $2 ORDER BY seq DESC).
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
-- SUCCEEDED, the job's result_keys. The store writes most status changes as one statement
-- whose data-modifying WITH updates the job and inserts its event; AFTER ROW triggers fire
-- at the end of that whole statement and (the function being VOLATILE) see everything it
-- wrote, so the job row read here already carries the new status and result keys.
--
-- The id is a ULID made in SQL: 10 Crockford base32 characters of the event's millisecond
-- time, then 16 random ones (80 bits). random() is PostgreSQL's per-session PRNG: enough
-- for uniqueness (the UNIQUE index has the last word), not for secrecy, which an id needs
-- none of.
--
-- search_path is pinned to the one the migration ran with, so the tables resolve to this
-- schema even when a session with another search_path inserts an event.
CREATE FUNCTION job_events_webhook_outbox() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path FROM CURRENT
AS $$
DECLARE
    alphabet CONSTANT TEXT := '0123456789abcdefghjkmnpqrstvwxyz';
BEGIN
    INSERT INTO webhook_deliveries (
        id, job_id, tenant_id, job_event_id, url, source, status, error, result_keys,
        event_at, next_attempt_at, created_at, updated_at)
    SELECT
        'evt_' ||
            substr(alphabet, ((NEW.at >> 45) & 31)::int + 1, 1) ||
            substr(alphabet, ((NEW.at >> 40) & 31)::int + 1, 1) ||
            substr(alphabet, ((NEW.at >> 35) & 31)::int + 1, 1) ||
            substr(alphabet, ((NEW.at >> 30) & 31)::int + 1, 1) ||
            substr(alphabet, ((NEW.at >> 25) & 31)::int + 1, 1) ||
            substr(alphabet, ((NEW.at >> 20) & 31)::int + 1, 1) ||
            substr(alphabet, ((NEW.at >> 15) & 31)::int + 1, 1) ||
            substr(alphabet, ((NEW.at >> 10) & 31)::int + 1, 1) ||
            substr(alphabet, ((NEW.at >> 5) & 31)::int + 1, 1) ||
            substr(alphabet, ((NEW.at >> 0) & 31)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1) ||
            substr(alphabet, floor(random() * 32)::int + 1, 1),
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
      AND (j.webhook_url IS NOT NULL OR (w.url IS NOT NULL AND w.enabled));
    RETURN NULL; -- an AFTER trigger's result is ignored
END;
$$;

CREATE TRIGGER job_events_webhook_outbox AFTER INSERT ON job_events
FOR EACH ROW EXECUTE FUNCTION job_events_webhook_outbox();
