//! The webhook outbox on SQLite: tenant endpoints and secrets, the dispatcher's claim and
//! results, delivery logs and replay.
//!
//! Deliveries are written by the `job_events_webhook_outbox` trigger (migration 0003), inside
//! the transaction of the status change; nothing here creates them.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{bad_column, lease_millis};
use crate::base::clock::Millis;

use crate::base::job::JobStatus;
use crate::base::webhook::{
    AttemptOutcome, AttemptReport, ClaimedDelivery, Delivery, DeliveryListQuery, DeliveryPage,
    DeliverySource, DeliveryState, ReplayOutcome, SealedSecret, TenantWebhook, WebhookEvents,
    WebhookSet,
};
use crate::store::{StoreError, StoreResult};

const WEBHOOK_COLUMNS: &str = "tenant_id, url, events, enabled, disabled_reason, secret_sealed, \
     secret_fingerprint, prev_secret_sealed, prev_secret_fingerprint, prev_secret_expires_at, \
     created_at, updated_at";

const DELIVERY_COLUMNS: &str = "seq, id, job_id, tenant_id, url, source, status, error, \
     result_keys, event_at, state, attempts, next_attempt_at, last_status_code, last_error, \
     last_latency_ms, last_attempt_at, created_at, updated_at, delivered_at, claim_token, body";

/// URLs with due work considered per claim.
const CLAIM_URL_WINDOW: usize = 256;

fn webhook_from_row(row: &Row<'_>) -> rusqlite::Result<TenantWebhook> {
    let events: String = row.get(2)?;
    let prev_sealed: Option<Vec<u8>> = row.get(7)?;
    let prev_fingerprint: Option<String> = row.get(8)?;
    Ok(TenantWebhook {
        tenant_id: row.get(0)?,
        url: row.get(1)?,
        events: WebhookEvents::parse(&events).ok_or_else(|| bad_column(2, "events"))?,
        enabled: row.get(3)?,
        disabled_reason: row.get(4)?,
        secret: SealedSecret {
            sealed: row.get(5)?,
            fingerprint: row.get(6)?,
        },
        prev_secret: match (prev_sealed, prev_fingerprint) {
            (Some(sealed), Some(fingerprint)) => Some(SealedSecret {
                sealed,
                fingerprint,
            }),
            _ => None,
        },
        prev_secret_expires_at: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let source: String = row.get(5)?;
    let status: String = row.get(6)?;
    let result_keys: String = row.get(8)?;
    let state: String = row.get(10)?;
    let latency: Option<i64> = row.get(15)?;
    Ok(Delivery {
        seq: row.get(0)?,
        id: row.get(1)?,
        job_id: row.get(2)?,
        tenant_id: row.get(3)?,
        url: row.get(4)?,
        source: DeliverySource::parse(&source).ok_or_else(|| bad_column(5, "source"))?,
        status: JobStatus::parse(&status).ok_or_else(|| bad_column(6, "status"))?,
        error: row.get(7)?,
        result_keys: serde_json::from_str(&result_keys).map_err(|_| bad_column(8, "keys"))?,
        event_at: row.get(9)?,
        state: DeliveryState::parse(&state).ok_or_else(|| bad_column(10, "state"))?,
        attempts: row.get(11)?,
        next_attempt_at: row.get(12)?,
        last_status_code: row.get(13)?,
        last_error: row.get(14)?,
        last_latency_ms: latency.map(|l| l.max(0) as u64),
        last_attempt_at: row.get(16)?,
        created_at: row.get(17)?,
        updated_at: row.get(18)?,
        delivered_at: row.get(19)?,
        body: row.get(21)?,
    })
}

pub fn get(conn: &Connection, tenant_id: &str) -> StoreResult<Option<TenantWebhook>> {
    let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM tenant_webhooks WHERE tenant_id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([tenant_id], webhook_from_row)
        .optional()?)
}

pub fn set(
    conn: &Connection,
    now: Millis,
    tenant_id: &str,
    set: &WebhookSet,
) -> StoreResult<(TenantWebhook, bool)> {
    let tenant_exists: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM tenants WHERE id = ?1)")?
        .query_row([tenant_id], |r| r.get(0))?;
    if !tenant_exists {
        return Err(StoreError::NotFound);
    }
    let created = conn
        .prepare_cached(
            "UPDATE tenant_webhooks SET url = ?2, events = ?3, enabled = 1, disabled_reason = NULL,
                 updated_at = ?4
             WHERE tenant_id = ?1",
        )?
        .execute(params![tenant_id, set.url, set.events.as_str(), now])?
        == 0;
    if created {
        conn.prepare_cached(
            "INSERT INTO tenant_webhooks (tenant_id, url, events, secret_sealed,
                 secret_fingerprint, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        )?
        .execute(params![
            tenant_id,
            set.url,
            set.events.as_str(),
            set.secret_if_missing.sealed,
            set.secret_if_missing.fingerprint,
            now
        ])?;
    }
    let webhook = get(conn, tenant_id)?.ok_or(StoreError::NotFound)?;
    Ok((webhook, created))
}

pub fn rotate_secret(
    conn: &Connection,
    now: Millis,
    tenant_id: &str,
    secret: &SealedSecret,
    prev_expires_at: Millis,
) -> StoreResult<TenantWebhook> {
    let updated = conn
        .prepare_cached(
            "UPDATE tenant_webhooks SET prev_secret_sealed = secret_sealed,
                 prev_secret_fingerprint = secret_fingerprint, prev_secret_expires_at = ?4,
                 secret_sealed = ?2, secret_fingerprint = ?3, updated_at = ?5
             WHERE tenant_id = ?1",
        )?
        .execute(params![
            tenant_id,
            secret.sealed,
            secret.fingerprint,
            prev_expires_at,
            now
        ])?;
    if updated == 0 {
        return Err(StoreError::NotFound);
    }
    get(conn, tenant_id)?.ok_or(StoreError::NotFound)
}

/// The tenant's secrets that may sign now, newest first.
fn live_secrets(conn: &Connection, tenant_id: &str, now: Millis) -> StoreResult<Vec<SealedSecret>> {
    let Some(webhook) = get(conn, tenant_id)? else {
        return Ok(Vec::new());
    };
    let mut secrets = vec![webhook.secret];
    if let (Some(prev), Some(until)) = (webhook.prev_secret, webhook.prev_secret_expires_at) {
        if until > now {
            secrets.push(prev);
        }
    }
    Ok(secrets)
}

/// The URLs with due deliveries, the one due longest first, at most [`CLAIM_URL_WINDOW`].
/// A skip scan of `webhook_deliveries_url_due` (url, next_attempt_at): the first entry past a
/// URL is the next URL's earliest delivery, so this costs one index probe per URL with pending
/// deliveries, not one step per pending delivery (a backlog of thousands to one receiver is
/// one probe, and the claim runs in the single writer, for every delivery sent).
fn due_urls(conn: &Connection, now: Millis) -> StoreResult<Vec<String>> {
    let mut next = conn.prepare_cached(
        "SELECT url, next_attempt_at FROM webhook_deliveries
         WHERE state = 'pending' AND url > ?1 ORDER BY url, next_attempt_at LIMIT 1",
    )?;
    let mut due: Vec<(Millis, String)> = Vec::new();
    let mut after = String::new();
    while let Some((url, earliest)) = next
        .query_row([&after], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))
        .optional()?
    {
        if earliest <= now {
            due.push((earliest, url.clone()));
        }
        after = url;
    }
    due.sort_unstable();
    due.truncate(CLAIM_URL_WINDOW);
    Ok(due.into_iter().map(|(_, url)| url).collect())
}

pub fn claim(
    conn: &Connection,
    now: Millis,
    owner: &str,
    max: u32,
    lease: Duration,
    per_endpoint: u32,
) -> StoreResult<Vec<ClaimedDelivery>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    // Attempts whose dispatcher died (lease ran out) are due again at once.
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = ?1, updated_at = ?1,
             lease_owner = NULL, lease_until = NULL,
             last_error = 'the dispatcher stopped during the attempt'
         WHERE state = 'delivering' AND lease_until < ?1",
    )?
    .execute([now])?;
    let urls = due_urls(conn, now)?;
    let mut in_flight_stmt = conn.prepare_cached(
        "SELECT count(*) FROM webhook_deliveries WHERE url = ?1 AND state = 'delivering'",
    )?;
    let mut due_stmt = conn.prepare_cached(
        "SELECT seq FROM webhook_deliveries
         WHERE url = ?1 AND state = 'pending' AND next_attempt_at <= ?2
         ORDER BY next_attempt_at, seq LIMIT ?3",
    )?;
    // Round-robin over URLs so one busy receiver cannot take every slot of the claim.
    let mut per_url: Vec<Vec<i64>> = Vec::new();
    for url in &urls {
        let in_flight: i64 = in_flight_stmt.query_row([url], |r| r.get(0))?;
        let free = (i64::from(per_endpoint) - in_flight).min(i64::from(max));
        if free <= 0 {
            continue;
        }
        let seqs: Vec<i64> = due_stmt
            .query_map(params![url, now, free], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if !seqs.is_empty() {
            per_url.push(seqs);
        }
    }
    let mut picked = Vec::new();
    let mut round = 0;
    while picked.len() < max as usize {
        let before = picked.len();
        for seqs in &per_url {
            if let Some(seq) = seqs.get(round) {
                if picked.len() < max as usize {
                    picked.push(*seq);
                }
            }
        }
        if picked.len() == before {
            break;
        }
        round += 1;
    }
    let lease_until = now.saturating_add(lease_millis(lease));
    let sql = format!(
        "UPDATE webhook_deliveries SET state = 'delivering', attempts = attempts + 1,
             claim_token = claim_token + 1, lease_owner = ?2, lease_until = ?3, updated_at = ?4
         WHERE seq = ?1 RETURNING {DELIVERY_COLUMNS}"
    );
    let mut claimed = Vec::with_capacity(picked.len());
    for seq in picked {
        let (delivery, claim_token) = conn
            .prepare_cached(&sql)?
            .query_row(params![seq, owner, lease_until, now], |r| {
                Ok((delivery_from_row(r)?, r.get::<_, i64>(20)?))
            })?;
        let secrets = live_secrets(conn, &delivery.tenant_id, now)?;
        claimed.push(ClaimedDelivery {
            delivery,
            claim_token,
            secrets,
        });
    }
    Ok(claimed)
}

pub fn complete(
    conn: &Connection,
    delivery_id: &str,
    claim_token: i64,
    report: &AttemptReport,
) -> StoreResult<()> {
    let (tenant_id, url): (String, String) = conn
        .prepare_cached(
            "SELECT tenant_id, url FROM webhook_deliveries
             WHERE id = ?1 AND claim_token = ?2 AND state = 'delivering'",
        )?
        .query_row(params![delivery_id, claim_token], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
        .ok_or(StoreError::LeaseLost)?;
    let (state, next_attempt_at, delivered_at) = match &report.outcome {
        AttemptOutcome::Delivered => (DeliveryState::Succeeded, None, Some(report.at)),
        AttemptOutcome::Retry { next_attempt_at } => {
            (DeliveryState::Pending, Some(*next_attempt_at), None)
        }
        AttemptOutcome::Failed => (DeliveryState::Failed, None, None),
        AttemptOutcome::Gone => (DeliveryState::Disabled, None, None),
    };
    let latency = i64::try_from(report.latency_ms).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "UPDATE webhook_deliveries SET state = ?2, next_attempt_at = coalesce(?3, next_attempt_at),
             delivered_at = coalesce(?4, delivered_at), last_status_code = ?5, last_error = ?6,
             last_latency_ms = ?7, last_attempt_at = ?8, updated_at = ?8,
             lease_owner = NULL, lease_until = NULL
         WHERE id = ?1",
    )?
    .execute(params![
        delivery_id,
        state.as_str(),
        next_attempt_at,
        delivered_at,
        report.status_code,
        report.error,
        latency,
        report.at
    ])?;
    if report.outcome == AttemptOutcome::Gone {
        let reason = format!("{url} answered 410 Gone");
        conn.prepare_cached(
            "UPDATE tenant_webhooks SET enabled = 0, disabled_reason = ?3, updated_at = ?4
             WHERE tenant_id = ?1 AND url = ?2",
        )?
        .execute(params![tenant_id, url, reason, report.at])?;
        conn.prepare_cached(
            "UPDATE webhook_deliveries SET state = 'disabled', updated_at = ?3,
                 last_error = 'not sent: the endpoint answered 410 Gone to another delivery'
             WHERE tenant_id = ?1 AND url = ?2 AND state = 'pending'",
        )?
        .execute(params![tenant_id, url, report.at])?;
    }
    Ok(())
}

pub fn next_due_at(conn: &Connection) -> StoreResult<Option<Millis>> {
    Ok(conn
        .prepare_cached(
            "SELECT min(due) FROM (
                 SELECT min(next_attempt_at) AS due FROM webhook_deliveries WHERE state = 'pending'
                 UNION ALL
                 SELECT min(lease_until) FROM webhook_deliveries WHERE state = 'delivering')",
        )?
        .query_row([], |r| r.get(0))?)
}

pub fn purge(conn: &Connection, before: Millis, limit: u32) -> StoreResult<u64> {
    // The inner query walks the `webhook_deliveries_ended` index (its WHERE is the index's).
    let deleted = conn
        .prepare_cached(
            "DELETE FROM webhook_deliveries WHERE seq IN (
                 SELECT seq FROM webhook_deliveries
                 WHERE state IN ('succeeded', 'failed', 'disabled') AND updated_at < ?1
                 ORDER BY updated_at LIMIT ?2)",
        )?
        .execute(params![before, limit])?;
    Ok(deleted as u64)
}

pub fn list(conn: &Connection, q: &DeliveryListQuery) -> StoreResult<DeliveryPage> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
         WHERE tenant_id = ?1 AND (?2 IS NULL OR job_id = ?2) AND (?3 IS NULL OR state = ?3)
             AND (?4 IS NULL OR seq < ?4)
         ORDER BY seq DESC LIMIT ?5"
    );
    let state = q.state.map(DeliveryState::as_str);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            q.tenant_id,
            q.job_id,
            state,
            q.before_seq,
            i64::from(q.limit) + 1
        ],
        delivery_from_row,
    )?;
    let mut items: Vec<Delivery> = rows.collect::<Result<_, _>>()?;
    let has_more = items.len() > q.limit as usize;
    items.truncate(q.limit as usize);
    Ok(DeliveryPage { items, has_more })
}

pub fn replay(
    conn: &Connection,
    now: Millis,
    tenant_id: &str,
    delivery_id: &str,
) -> StoreResult<ReplayOutcome> {
    let found: Option<(String, Option<Millis>)> = conn
        .prepare_cached(
            "SELECT state, lease_until FROM webhook_deliveries WHERE id = ?1 AND tenant_id = ?2",
        )?
        .query_row([delivery_id, tenant_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((state, lease_until)) = found else {
        return Ok(ReplayOutcome::NotFound);
    };
    if state == DeliveryState::Delivering.as_str() && lease_until.is_some_and(|l| l >= now) {
        return Ok(ReplayOutcome::InFlight);
    }
    let sql = format!(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?2,
             updated_at = ?2, lease_owner = NULL, lease_until = NULL
         WHERE id = ?1 RETURNING {DELIVERY_COLUMNS}"
    );
    let delivery = conn
        .prepare_cached(&sql)?
        .query_row(params![delivery_id, now], delivery_from_row)?;
    Ok(ReplayOutcome::Queued(Box::new(delivery)))
}
