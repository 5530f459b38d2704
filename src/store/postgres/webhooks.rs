//! The webhook outbox on PostgreSQL: tenant endpoints and secrets, the dispatcher's claim and
//! results, delivery logs and replay.
//!
//! Deliveries are written by the `job_events_webhook_outbox` trigger (migration 0003), inside
//! the transaction of the status change; nothing here creates them.
//!
//! The claim keeps the per-URL cap (`per_endpoint`) exact across any number of dispatchers:
//! - The cap is a count of a URL's `delivering` rows, and no row lock can protect a count: two
//!   claimers in READ COMMITTED would each count `n` in flight (neither sees the other's
//!   uncommitted claim), each take `cap - n` different rows (SKIP LOCKED keeps them apart)
//!   and together put `2 * (cap - n)` in flight. So every claim transaction first takes one
//!   transaction-scoped advisory lock ([`CLAIM_LOCK`]): claims run one at a time, and each
//!   statement after the lock has a fresh snapshot that sees every claim committed before.
//!   Only a claim can raise a URL's in-flight count (completions, replays and expired leases
//!   lower it), so counting under the lock is exact. After the lock a claim is two
//!   statements (lapsed leases back to pending; then one that picks, locks and updates) and
//!   dispatchers claim in batches, so the lock is held briefly.
//! - The rows themselves are taken `FOR UPDATE SKIP LOCKED`: a row a completion, replay or 410
//!   sweep is changing right now is skipped (it is due again at the next claim) rather than
//!   waited on, and a row changed since the snapshot is re-checked before it is taken.
//! - `webhook_complete` is an UPDATE guarded by `id`, `claim_token` and
//!   `state = 'delivering'`; no matching row is [`StoreError::LeaseLost`] and nothing is
//!   written.

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::{FromRow, PgPool};

use super::jobs::lease_millis;
use crate::base::clock::Millis;
use crate::base::job::JobStatus;
use crate::base::webhook::{
    AttemptOutcome, AttemptReport, ClaimedDelivery, Delivery, DeliveryListQuery, DeliveryPage,
    DeliverySource, DeliveryState, ReplayOutcome, SealedSecret, TenantWebhook, WebhookEvents,
    WebhookSet,
};
use crate::store::{StoreError, StoreResult};

/// The advisory lock key that serialises webhook claims (the bytes of "easelwh1"). Advisory
/// locks are per database, not per schema: deployments sharing a database in separate schemas
/// share this lock too, which costs them only a little waiting.
const CLAIM_LOCK: i64 = 0x6561_7365_6c77_6831;

/// URLs with due work considered per claim (as on SQLite).
const CLAIM_URL_WINDOW: i64 = 256;

const WEBHOOK_COLUMNS: &str = "tenant_id, url, events, enabled, disabled_reason, secret_sealed, \
     secret_fingerprint, prev_secret_sealed, prev_secret_fingerprint, prev_secret_expires_at, \
     created_at, updated_at";

const DELIVERY_COLUMNS: &str = "seq, id, job_id, tenant_id, url, source, status, error, \
     result_keys, event_at, state, attempts, next_attempt_at, last_status_code, last_error, \
     last_latency_ms, last_attempt_at, created_at, updated_at, delivered_at, claim_token, body";

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("corrupt webhook row: bad {what}"))
}

#[derive(FromRow)]
struct WebhookRow {
    tenant_id: String,
    url: Option<String>,
    events: String,
    enabled: bool,
    disabled_reason: Option<String>,
    secret_sealed: Vec<u8>,
    secret_fingerprint: String,
    prev_secret_sealed: Option<Vec<u8>>,
    prev_secret_fingerprint: Option<String>,
    prev_secret_expires_at: Option<Millis>,
    created_at: Millis,
    updated_at: Millis,
}

impl TryFrom<WebhookRow> for TenantWebhook {
    type Error = StoreError;

    fn try_from(r: WebhookRow) -> StoreResult<TenantWebhook> {
        Ok(TenantWebhook {
            tenant_id: r.tenant_id,
            url: r.url,
            events: WebhookEvents::parse(&r.events).ok_or_else(|| corrupt("events"))?,
            enabled: r.enabled,
            disabled_reason: r.disabled_reason,
            secret: SealedSecret {
                sealed: r.secret_sealed,
                fingerprint: r.secret_fingerprint,
            },
            prev_secret: match (r.prev_secret_sealed, r.prev_secret_fingerprint) {
                (Some(sealed), Some(fingerprint)) => Some(SealedSecret {
                    sealed,
                    fingerprint,
                }),
                _ => None,
            },
            prev_secret_expires_at: r.prev_secret_expires_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
struct DeliveryRow {
    seq: i64,
    id: String,
    job_id: String,
    tenant_id: String,
    url: String,
    source: String,
    status: String,
    error: Option<String>,
    result_keys: String,
    event_at: Millis,
    state: String,
    attempts: i32,
    next_attempt_at: Millis,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    last_latency_ms: Option<i64>,
    last_attempt_at: Option<Millis>,
    created_at: Millis,
    updated_at: Millis,
    delivered_at: Option<Millis>,
    claim_token: i64,
    body: Option<String>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> StoreResult<Delivery> {
        Ok(Delivery {
            seq: r.seq,
            id: r.id,
            job_id: r.job_id,
            tenant_id: r.tenant_id,
            url: r.url,
            source: DeliverySource::parse(&r.source).ok_or_else(|| corrupt("source"))?,
            status: JobStatus::parse(&r.status).ok_or_else(|| corrupt("status"))?,
            error: r.error,
            result_keys: serde_json::from_str(&r.result_keys).map_err(|_| corrupt("keys"))?,
            event_at: r.event_at,
            state: DeliveryState::parse(&r.state).ok_or_else(|| corrupt("state"))?,
            attempts: u32::try_from(r.attempts).map_err(|_| corrupt("attempts"))?,
            next_attempt_at: r.next_attempt_at,
            last_status_code: r
                .last_status_code
                .map(|c| u16::try_from(c).map_err(|_| corrupt("status code")))
                .transpose()?,
            last_error: r.last_error,
            last_latency_ms: r.last_latency_ms.map(|l| l.max(0) as u64),
            last_attempt_at: r.last_attempt_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            delivered_at: r.delivered_at,
            body: r.body,
        })
    }
}

// ---- endpoints ----

pub async fn get(pool: &PgPool, tenant_id: &str) -> StoreResult<Option<TenantWebhook>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {WEBHOOK_COLUMNS} FROM tenant_webhooks WHERE tenant_id = $1")
    });
    let row: Option<WebhookRow> = sqlx::query_as(&SQL)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?;
    row.map(TenantWebhook::try_from).transpose()
}

#[derive(FromRow)]
struct SetRow {
    #[sqlx(flatten)]
    webhook: WebhookRow,
    created: bool,
}

pub async fn set(
    pool: &PgPool,
    now: Millis,
    tenant_id: &str,
    set: &WebhookSet,
) -> StoreResult<(TenantWebhook, bool)> {
    // One statement: inserted only if the tenant exists (no row back: NotFound); an existing
    // endpoint gets the new URL and filter and is enabled again, its secrets untouched.
    // `xmax = 0` holds for a freshly inserted row version only, not for one ON CONFLICT
    // updated, so it tells which of the two happened.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO tenant_webhooks (tenant_id, url, events, secret_sealed,
                 secret_fingerprint, created_at, updated_at)
             SELECT id, $2, $3, $4, $5, $6, $6 FROM tenants WHERE id = $1
             ON CONFLICT (tenant_id) DO UPDATE SET url = EXCLUDED.url,
                 events = EXCLUDED.events, enabled = TRUE, disabled_reason = NULL,
                 updated_at = EXCLUDED.updated_at
             RETURNING {WEBHOOK_COLUMNS}, (xmax = 0) AS created"
        )
    });
    let row: Option<SetRow> = sqlx::query_as(&SQL)
        .bind(tenant_id)
        .bind(&set.url)
        .bind(set.events.as_str())
        .bind(&set.secret_if_missing.sealed)
        .bind(&set.secret_if_missing.fingerprint)
        .bind(now)
        .fetch_optional(pool)
        .await?;
    let row = row.ok_or(StoreError::NotFound)?;
    Ok((TenantWebhook::try_from(row.webhook)?, row.created))
}

pub async fn rotate_secret(
    pool: &PgPool,
    now: Millis,
    tenant_id: &str,
    secret: &SealedSecret,
    prev_expires_at: Millis,
) -> StoreResult<TenantWebhook> {
    // The right-hand sides read the row as it was: the current secret becomes the previous.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE tenant_webhooks SET prev_secret_sealed = secret_sealed,
                 prev_secret_fingerprint = secret_fingerprint, prev_secret_expires_at = $4,
                 secret_sealed = $2, secret_fingerprint = $3, updated_at = $5
             WHERE tenant_id = $1
             RETURNING {WEBHOOK_COLUMNS}"
        )
    });
    let row: Option<WebhookRow> = sqlx::query_as(&SQL)
        .bind(tenant_id)
        .bind(&secret.sealed)
        .bind(&secret.fingerprint)
        .bind(prev_expires_at)
        .bind(now)
        .fetch_optional(pool)
        .await?;
    row.ok_or(StoreError::NotFound)?.try_into()
}

// ---- the dispatcher's claim ----

/// Attempts whose dispatcher died (lease ran out) are due again at once.
const CLAIM_REQUEUE_LAPSED: &str = "UPDATE webhook_deliveries d SET state = 'pending',
         next_attempt_at = $1, updated_at = $1, lease_owner = NULL, lease_until = NULL,
         last_error = 'the dispatcher stopped during the attempt'
     FROM (SELECT seq FROM webhook_deliveries
           WHERE state = 'delivering' AND lease_until < $1
           FOR UPDATE SKIP LOCKED) lapsed
     WHERE d.seq = lapsed.seq";

/// The claim itself, one statement (so one snapshot, taken after the lock):
/// 1. `urls`: the first `$2` URLs with due work, the URL due longest first. `pending_urls`
///    finds each URL with pending deliveries and its earliest by a skip scan of
///    `webhook_deliveries_url_due` (url, next_attempt_at): the first entry past a URL is the
///    next URL's earliest. One index probe per URL, not one row per pending delivery: claims
///    take turns on the lock, so a claim that read a whole backlog of thousands would hold
///    every dispatcher to a few hundred claims a second.
/// 2. `due`: up to `min($3 max, $4 cap - in flight)` due deliveries of each, oldest due
///    first, locked `FOR UPDATE SKIP LOCKED`, each numbered within its URL (`round`).
/// 3. `picked`: round-robin over the URLs, so one busy receiver cannot take every slot of
///    the claim: every URL's first, then every URL's second, ... at most `$3` in all.
/// 4. `claimed`: those become `delivering` under a new claim token and lease (`$5` owner,
///    `$6` lease end, `$1` now); returned in pick order with the tenant's secrets.
static CLAIM: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = DELIVERY_COLUMNS
        .split(", ")
        .map(|c| format!("c.{c}"))
        .collect();
    format!(
        "WITH RECURSIVE pending_urls (url, due) AS (
             (SELECT url, next_attempt_at FROM webhook_deliveries WHERE state = 'pending'
              ORDER BY url, next_attempt_at LIMIT 1)
             UNION ALL
             SELECT n.url, n.next_attempt_at FROM pending_urls p
             CROSS JOIN LATERAL (
                 SELECT w.url, w.next_attempt_at FROM webhook_deliveries w
                 WHERE w.state = 'pending' AND w.url > p.url
                 ORDER BY w.url, w.next_attempt_at LIMIT 1
             ) n
         ), urls AS MATERIALIZED (
             SELECT url, due FROM pending_urls WHERE due <= $1 ORDER BY due, url LIMIT $2
         ), due AS MATERIALIZED (
             SELECT d.seq, u.due, u.url,
                 row_number() OVER (PARTITION BY u.url ORDER BY d.next_attempt_at, d.seq)
                     AS round
             FROM urls u
             CROSS JOIN LATERAL (
                 SELECT w.seq, w.next_attempt_at FROM webhook_deliveries w
                 WHERE w.url = u.url AND w.state = 'pending' AND w.next_attempt_at <= $1
                 ORDER BY w.next_attempt_at, w.seq
                 LIMIT GREATEST(0, LEAST($3, $4 - (SELECT count(*) FROM webhook_deliveries f
                                                    WHERE f.url = u.url
                                                      AND f.state = 'delivering')))
                 FOR UPDATE OF w SKIP LOCKED
             ) d
         ), picked AS MATERIALIZED (
             SELECT seq, row_number() OVER (ORDER BY round, due, url) AS ord FROM due
             ORDER BY round, due, url LIMIT $3
         ), claimed AS (
             UPDATE webhook_deliveries d SET state = 'delivering',
                 attempts = d.attempts + 1, claim_token = d.claim_token + 1,
                 lease_owner = $5, lease_until = $6, updated_at = $1
             FROM picked p WHERE d.seq = p.seq AND d.state = 'pending'
             RETURNING p.ord, d.*
         )
         SELECT {}, w.secret_sealed, w.secret_fingerprint, w.prev_secret_sealed,
             w.prev_secret_fingerprint, w.prev_secret_expires_at
         FROM claimed c LEFT JOIN tenant_webhooks w ON w.tenant_id = c.tenant_id
         ORDER BY c.ord",
        columns.join(", ")
    )
});

#[derive(FromRow)]
struct ClaimRow {
    #[sqlx(flatten)]
    delivery: DeliveryRow,
    secret_sealed: Option<Vec<u8>>,
    secret_fingerprint: Option<String>,
    prev_secret_sealed: Option<Vec<u8>>,
    prev_secret_fingerprint: Option<String>,
    prev_secret_expires_at: Option<Millis>,
}

impl ClaimRow {
    /// The secrets that may sign at `now`, newest first (none without an endpoint row, which
    /// the dispatcher reports as undeliverable).
    fn live_secrets(&self, now: Millis) -> Vec<SealedSecret> {
        let mut secrets = Vec::new();
        if let (Some(sealed), Some(fingerprint)) = (&self.secret_sealed, &self.secret_fingerprint) {
            secrets.push(SealedSecret {
                sealed: sealed.clone(),
                fingerprint: fingerprint.clone(),
            });
        }
        if let (Some(sealed), Some(fingerprint), Some(until)) = (
            &self.prev_secret_sealed,
            &self.prev_secret_fingerprint,
            self.prev_secret_expires_at,
        ) {
            if until > now {
                secrets.push(SealedSecret {
                    sealed: sealed.clone(),
                    fingerprint: fingerprint.clone(),
                });
            }
        }
        secrets
    }
}

pub async fn claim(
    pool: &PgPool,
    now: Millis,
    owner: &str,
    max: u32,
    lease: Duration,
    per_endpoint: u32,
) -> StoreResult<Vec<ClaimedDelivery>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let lease_until = now.saturating_add(lease_millis(lease));
    let mut tx = pool.begin().await?;
    // Before anything is read: the claim counts in-flight deliveries, and the count is only
    // exact while no other claim runs (see the module notes). A statement of its own, so
    // that the statements after it take their snapshots once the lock is ours.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CLAIM_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(CLAIM_REQUEUE_LAPSED)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let rows: Vec<ClaimRow> = sqlx::query_as(&CLAIM)
        .bind(now)
        .bind(CLAIM_URL_WINDOW)
        .bind(i64::from(max))
        .bind(i64::from(per_endpoint))
        .bind(owner)
        .bind(lease_until)
        .fetch_all(&mut *tx)
        .await?;
    // Committed even when nothing was claimed: lapsed leases put back are worth keeping.
    tx.commit().await?;
    rows.into_iter()
        .map(|r| {
            let secrets = r.live_secrets(now);
            let claim_token = r.delivery.claim_token;
            Ok(ClaimedDelivery {
                delivery: Delivery::try_from(r.delivery)?,
                claim_token,
                secrets,
            })
        })
        .collect()
}

// ---- results ----

pub async fn complete(
    pool: &PgPool,
    delivery_id: &str,
    claim_token: i64,
    report: &AttemptReport,
) -> StoreResult<()> {
    // One statement: the guarded update and, for a 410 Gone ($10), the tenant's endpoint
    // disabled if this was its URL, and the tenant's other pending deliveries to the URL
    // disabled. The sweep reads the table as it was before this statement, when this
    // delivery was still `delivering`, so it never touches the row updated above.
    const SQL: &str = "WITH done AS (
             UPDATE webhook_deliveries SET state = $3,
                 next_attempt_at = coalesce($4, next_attempt_at),
                 delivered_at = coalesce($5, delivered_at), last_status_code = $6,
                 last_error = $7, last_latency_ms = $8, last_attempt_at = $9, updated_at = $9,
                 lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND claim_token = $2 AND state = 'delivering'
             RETURNING tenant_id, url
         ), endpoint AS (
             UPDATE tenant_webhooks w SET enabled = FALSE,
                 disabled_reason = done.url || ' answered 410 Gone', updated_at = $9
             FROM done WHERE $10 AND w.tenant_id = done.tenant_id AND w.url = done.url
         ), others AS (
             UPDATE webhook_deliveries d SET state = 'disabled', updated_at = $9,
                 last_error = 'not sent: the endpoint answered 410 Gone to another delivery'
             FROM done WHERE $10 AND d.tenant_id = done.tenant_id AND d.url = done.url
                 AND d.state = 'pending'
         )
         SELECT count(*) FROM done";
    let (state, next_attempt_at, delivered_at) = match &report.outcome {
        AttemptOutcome::Delivered => (DeliveryState::Succeeded, None, Some(report.at)),
        AttemptOutcome::Retry { next_attempt_at } => {
            (DeliveryState::Pending, Some(*next_attempt_at), None)
        }
        AttemptOutcome::Failed => (DeliveryState::Failed, None, None),
        AttemptOutcome::Gone => (DeliveryState::Disabled, None, None),
    };
    let latency = i64::try_from(report.latency_ms).unwrap_or(i64::MAX);
    let recorded: i64 = sqlx::query_scalar(SQL)
        .bind(delivery_id)
        .bind(claim_token)
        .bind(state.as_str())
        .bind(next_attempt_at)
        .bind(delivered_at)
        .bind(report.status_code.map(i32::from))
        .bind(&report.error)
        .bind(latency)
        .bind(report.at)
        .bind(report.outcome == AttemptOutcome::Gone)
        .fetch_one(pool)
        .await?;
    if recorded == 0 {
        return Err(StoreError::LeaseLost);
    }
    Ok(())
}

pub async fn next_due_at(pool: &PgPool) -> StoreResult<Option<Millis>> {
    // LEAST ignores NULLs: either kind alone decides when the other has none.
    Ok(sqlx::query_scalar(
        "SELECT LEAST(
             (SELECT min(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending'),
             (SELECT min(lease_until) FROM webhook_deliveries WHERE state = 'delivering'))",
    )
    .fetch_one(pool)
    .await?)
}

pub async fn purge(pool: &PgPool, before: Millis, limit: u32) -> StoreResult<u64> {
    // `doomed` walks the `webhook_deliveries_ended` index. It is MATERIALIZED, so it runs
    // once: as an `IN (subquery)` the planner may rescan it per outer row, and each rescan
    // skips the rows this statement already deleted and locks `limit` more. Its rows are
    // locked SKIP LOCKED (one a replay is changing right now is left for the next pass), and
    // the DELETE repeats the state and age: a row a replay committed since the snapshot is
    // re-checked against them, so a delivery that is pending again is never deleted.
    const SQL: &str = "WITH doomed AS MATERIALIZED (
             SELECT seq FROM webhook_deliveries
             WHERE state IN ('succeeded', 'failed', 'disabled') AND updated_at < $1
             ORDER BY updated_at LIMIT $2
             FOR UPDATE SKIP LOCKED)
         DELETE FROM webhook_deliveries d USING doomed
         WHERE d.seq = doomed.seq
           AND d.state IN ('succeeded', 'failed', 'disabled') AND d.updated_at < $1";
    Ok(sqlx::query(SQL)
        .bind(before)
        .bind(i64::from(limit))
        .execute(pool)
        .await?
        .rows_affected())
}

// ---- logs and replay ----

pub async fn list(pool: &PgPool, q: &DeliveryListQuery) -> StoreResult<DeliveryPage> {
    // One statement per filter shape, as for job lists: `($n IS NULL OR ...)` would leave a
    // generic plan unable to pick the index for the filter. Parameters: $1 tenant, $2 limit,
    // then the filters present, in this order.
    static SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
        (0..8u8)
            .map(|shape| {
                let mut filters = String::new();
                let mut n = 2;
                for (bit, column) in [(1, "job_id ="), (2, "state ="), (4, "seq <")] {
                    if shape & bit != 0 {
                        n += 1;
                        filters.push_str(&format!(" AND {column} ${n}"));
                    }
                }
                format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
                     WHERE tenant_id = $1{filters} ORDER BY seq DESC LIMIT $2"
                )
            })
            .collect()
    });
    let shape = usize::from(q.job_id.is_some())
        | usize::from(q.state.is_some()) << 1
        | usize::from(q.before_seq.is_some()) << 2;
    let mut query = sqlx::query_as::<_, DeliveryRow>(&SQL[shape])
        .bind(&q.tenant_id)
        .bind(i64::from(q.limit) + 1);
    if let Some(job_id) = &q.job_id {
        query = query.bind(job_id);
    }
    if let Some(state) = q.state {
        query = query.bind(state.as_str());
    }
    if let Some(before) = q.before_seq {
        query = query.bind(before);
    }
    let rows = query.fetch_all(pool).await?;
    let mut items = rows
        .into_iter()
        .map(Delivery::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
    let has_more = items.len() > q.limit as usize;
    items.truncate(q.limit as usize);
    Ok(DeliveryPage { items, has_more })
}

pub async fn replay(
    pool: &PgPool,
    now: Millis,
    tenant_id: &str,
    delivery_id: &str,
) -> StoreResult<ReplayOutcome> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $2,
                 updated_at = $2, lease_owner = NULL, lease_until = NULL
             WHERE seq = $1 RETURNING {DELIVERY_COLUMNS}"
        )
    });
    let mut tx = pool.begin().await?;
    // Locked, so an attempt cannot start (a claim skips the row) or end between the check
    // and the update.
    let found: Option<(i64, String, Option<Millis>)> = sqlx::query_as(
        "SELECT seq, state, lease_until FROM webhook_deliveries
         WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(delivery_id)
    .bind(tenant_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((seq, state, lease_until)) = found else {
        return Ok(ReplayOutcome::NotFound);
    };
    if state == DeliveryState::Delivering.as_str() && lease_until.is_some_and(|l| l >= now) {
        return Ok(ReplayOutcome::InFlight);
    }
    let row: DeliveryRow = sqlx::query_as(&SQL)
        .bind(seq)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ReplayOutcome::Queued(Box::new(row.try_into()?)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn claim_lock_key_spells_easelwh1() {
        assert_eq!(super::CLAIM_LOCK.to_be_bytes(), *b"easelwh1");
    }
}
