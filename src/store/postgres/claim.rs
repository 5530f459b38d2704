//! The fair claim on PostgreSQL: round-robin over tenants with runnable work, the tenant
//! served longest ago first, up to `max` jobs, in one transaction of two statements.
//!
//! 1. Lock up to `max` tenants with runnable work and a free slot (`FOR NO KEY UPDATE SKIP
//!    LOCKED`), longest unserved first (the first `max` with work, and only when all of those
//!    are full, a walk of every tenant); if every one is locked by another claimer, wait up to
//!    2 s for the longest unserved one instead of answering "no work" while there is some.
//! 2. One statement, so a fresh snapshot that sees every claim committed before our locks:
//!    each locked tenant's share (its free slots, and at most `max` over the number of locked
//!    tenants, rounded up: locking `max` job rows per tenant only to keep `max` of them in all
//!    costs a WAL record per lock), up to that many of its runnable jobs (`FOR UPDATE SKIP
//!    LOCKED`), round-robin over the tenants (every tenant's first job, then every tenant's
//!    second...), the jobs RUNNING under a new fence and lease with their events, and new
//!    `last_claim` stamps and running bounds for every locked tenant.
//!
//! The tenant lock is what keeps the concurrency limit exact across processes: the RUNNING
//! count of a tenant only grows through a claim, and only the holder of its lock can claim.
//! Free slots come from the tenant's `running_bound` (migration 0007), an upper bound of its
//! RUNNING jobs kept under that lock; only a tenant whose bound leaves no room for its share
//! has its RUNNING jobs counted (one probe of the `jobs_running` index, tenant first, and a
//! heap fetch for each).

use std::time::Duration;

use sqlx::{FromRow, PgPool};

use super::jobs::{lease_millis, JobRow};
use crate::base::clock::Millis;
use crate::base::job::{ClaimedJob, Claimer, Job};
use crate::store::StoreResult;

// The three tenant picks share their text: `concat!` only joins literals, hence the macros.
macro_rules! tenants_with_work {
    () => {
        "SELECT t.id FROM tenants t
     WHERE EXISTS (SELECT 1 FROM jobs w WHERE w.tenant_id = t.id
                       AND w.status IN ('QUEUED', 'RETRYING') AND w.run_at <= $1)"
    };
}
// A bound under the limit answers without counting (see migration 0007).
macro_rules! with_free_slot {
    () => {
        "
       AND CASE WHEN t.running_bound < t.concurrency_limit THEN true
           ELSE t.concurrency_limit >
               (SELECT count(*) FROM jobs r WHERE r.tenant_id = t.id AND r.status = 'RUNNING')
           END"
    };
}
macro_rules! longest_unserved_first {
    () => {
        "
     ORDER BY t.last_claim, t.id"
    };
}

/// The first `max` unlocked tenants with runnable work, longest unserved first, locked so
/// that no other claimer serves them (or counts their running jobs) until this claim commits.
/// Locked rows are skipped: another claimer is serving that tenant. The limit stops the walk
/// early, so this costs a few index probes however many tenants have work; free slots are
/// counted once, under the lock, by step 2.
const CLAIM_TENANTS_FIRST: &str = concat!(
    tenants_with_work!(),
    longest_unserved_first!(),
    " LIMIT $2 FOR NO KEY UPDATE OF t SKIP LOCKED"
);

/// When those were all at their concurrency limit (step 2 took nothing from them, and stamped
/// them as served): every tenant with runnable work and a free slot, in the same order (a
/// walk of them all, so only when the short one found nothing).
const CLAIM_TENANTS: &str = concat!(
    tenants_with_work!(),
    with_free_slot!(),
    longest_unserved_first!(),
    " LIMIT $2 FOR NO KEY UPDATE OF t SKIP LOCKED"
);

/// When every tenant with work was locked by other claimers: wait (briefly) for the longest
/// unserved one rather than answer "no work" while there is some.
const CLAIM_TENANT_WAIT: &str = concat!(
    tenants_with_work!(),
    with_free_slot!(),
    longest_unserved_first!(),
    " LIMIT 1 FOR NO KEY UPDATE OF t"
);

/// How long the fallback above waits for a tenant's lock.
const CLAIM_LOCK_WAIT: &str = "SELECT set_config('lock_timeout', '2s', true)";

/// Step 2 (see the module docs). `$1` the locked tenants in order, `$2` now, `$3` max,
/// `$4` the worker, `$5` the lease end. Served tenants are stamped in the order of their last
/// pick, after those that got nothing.
const CLAIM_JOBS: &str = "WITH locked AS MATERIALIZED (
         SELECT t.id, t.ord, c.running,
             GREATEST(0, LEAST(s.share, tn.concurrency_limit - c.running)) AS free
         FROM unnest($1::text[]) WITH ORDINALITY AS t(id, ord)
         JOIN tenants tn ON tn.id = t.id
         CROSS JOIN (SELECT ($3 + cardinality($1::text[]) - 1) / cardinality($1::text[])
             AS share) s
         CROSS JOIN LATERAL (SELECT CASE
             WHEN tn.running_bound + s.share <= tn.concurrency_limit THEN tn.running_bound
             ELSE (SELECT count(*) FROM jobs r WHERE r.tenant_id = t.id AND r.status = 'RUNNING')
             END AS running) c
     ), candidates AS (
         SELECT l.ord, j.seq, row_number() OVER (PARTITION BY l.ord ORDER BY j.seq) AS round
         FROM locked l CROSS JOIN LATERAL (
             SELECT w.seq FROM jobs w
             WHERE w.tenant_id = l.id AND w.status IN ('QUEUED', 'RETRYING') AND w.run_at <= $2
             ORDER BY w.seq
             LIMIT l.free
             FOR UPDATE OF w SKIP LOCKED
         ) j
     ), picked AS MATERIALIZED (
         SELECT ord, seq, row_number() OVER (ORDER BY round, ord) AS pos
         FROM candidates ORDER BY round, ord LIMIT $3
     ), claimed AS (
         UPDATE jobs j SET status = 'RUNNING', attempts = j.attempts + 1, fence = j.fence + 1,
             lease_owner = $4, lease_until = $5, started_at = coalesce(j.started_at, $2),
             updated_at = $2, error_code = NULL, error_message = NULL
         FROM picked p WHERE j.seq = p.seq AND j.status IN ('QUEUED', 'RETRYING')
         RETURNING p.pos, j.*
     ), events AS (
         INSERT INTO job_events (job_id, tenant_id, status, attempt, at)
         SELECT id, tenant_id, 'RUNNING', attempts, $2 FROM claimed ORDER BY pos
     ), started AS (
         UPDATE photo_tasks t SET status = 'processing', updated_at = $2
         FROM photo_task_jobs tj, claimed c
         WHERE tj.job_id = c.id AND t.task_id = tj.task_id AND t.status = 'pending'
     ), served AS MATERIALIZED (
         SELECT id, running + taken AS bound, nextval('tenant_claim_order') AS stamp
         FROM (SELECT l.id, l.ord, l.running,
                   (SELECT count(*) FROM picked p WHERE p.ord = l.ord) AS taken,
                   (SELECT max(p.pos) FROM picked p WHERE p.ord = l.ord) AS last
               FROM locked l ORDER BY last NULLS FIRST, l.ord) s
     ), stamped AS (
         UPDATE tenants t SET last_claim = served.stamp, running_bound = served.bound
         FROM served WHERE t.id = served.id
     )
     SELECT * FROM claimed ORDER BY pos";

/// After a submit of `$1`'s: that tenant, locked, if the fair claim would serve it next anyway
/// (no other tenant has a job waiting to run); step 2 then checks its free slots.
const CLAIM_SUBMITTED_TENANT: &str = "SELECT t.id FROM tenants t WHERE t.id = $1
     AND NOT EXISTS (SELECT 1 FROM jobs w WHERE w.status IN ('QUEUED', 'RETRYING')
         AND w.run_at <= $2 AND w.tenant_id <> $1)
     FOR NO KEY UPDATE OF t SKIP LOCKED";

/// Step 2 for the locked `tenants`.
async fn claim_jobs(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenants: &[String],
    now: i64,
    max: u32,
    worker_id: &str,
    lease_until: i64,
) -> StoreResult<Vec<ClaimedRow>> {
    Ok(sqlx::query_as(CLAIM_JOBS)
        .bind(tenants)
        .bind(now)
        .bind(i64::from(max))
        .bind(worker_id)
        .bind(lease_until)
        .fetch_all(&mut **tx)
        .await?)
}

/// Step 1 the long way: every tenant with work and a free slot, or when all of those are
/// locked by other claimers, a short wait for the longest unserved one. `None`: no work.
async fn tenants_with_free_slots(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    now: i64,
    max: u32,
) -> StoreResult<Option<Vec<String>>> {
    let tenants: Vec<String> = sqlx::query_scalar(CLAIM_TENANTS)
        .bind(now)
        .bind(i64::from(max))
        .fetch_all(&mut **tx)
        .await?;
    if !tenants.is_empty() {
        return Ok(Some(tenants));
    }
    sqlx::query(CLAIM_LOCK_WAIT).execute(&mut **tx).await?;
    match sqlx::query_scalar(CLAIM_TENANT_WAIT)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await
    {
        Ok(Some(tenant)) => Ok(Some(vec![tenant])),
        Ok(None) => Ok(None),
        // Still busy after the wait: report no work; the caller polls again.
        Err(e) if is_lock_timeout(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[derive(FromRow)]
struct ClaimedRow {
    #[sqlx(flatten)]
    job: JobRow,
    fence: i64,
}

/// The error PostgreSQL raises when `lock_timeout` passes.
fn is_lock_timeout(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// After a submit of `tenant_id`'s: claims that tenant's next job (the one just submitted,
/// unless an older one waits) if no other tenant has a job waiting to run and it has a free
/// slot. `None` when another claimer holds the tenant, or its jobs must wait their turn.
pub async fn claim_submitted(
    pool: &PgPool,
    now: Millis,
    claimer: &Claimer,
    tenant_id: &str,
) -> StoreResult<Option<ClaimedJob>> {
    let lease_until = now.saturating_add(lease_millis(claimer.lease));
    let mut tx = pool.begin().await?;
    let locked: Option<String> = sqlx::query_scalar(CLAIM_SUBMITTED_TENANT)
        .bind(tenant_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(tenant) = locked else {
        return Ok(None);
    };
    let rows = claim_jobs(&mut tx, &[tenant], now, 1, &claimer.worker_id, lease_until).await?;
    tx.commit().await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(ClaimedJob {
        job: Job::try_from(row.job)?,
        fence: row.fence,
        lease_until,
    }))
}

pub async fn claim(
    pool: &PgPool,
    now: Millis,
    worker_id: &str,
    max: u32,
    lease: Duration,
) -> StoreResult<Vec<ClaimedJob>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let lease_until = now.saturating_add(lease_millis(lease));
    let mut tx = pool.begin().await?;
    let first: Vec<String> = sqlx::query_scalar(CLAIM_TENANTS_FIRST)
        .bind(now)
        .bind(i64::from(max))
        .fetch_all(&mut *tx)
        .await?;
    let mut rows = Vec::new();
    if !first.is_empty() {
        rows = claim_jobs(&mut tx, &first, now, max, worker_id, lease_until).await?;
    }
    if rows.is_empty() {
        let Some(tenants) = tenants_with_free_slots(&mut tx, now, max).await? else {
            return Ok(Vec::new());
        };
        rows = claim_jobs(&mut tx, &tenants, now, max, worker_id, lease_until).await?;
    }
    tx.commit().await?;
    rows.into_iter()
        .map(|r| {
            Ok(ClaimedJob {
                job: Job::try_from(r.job)?,
                fence: r.fence,
                lease_until,
            })
        })
        .collect()
}
