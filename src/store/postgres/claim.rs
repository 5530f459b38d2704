//! The fair claim on PostgreSQL: round-robin over tenants with runnable work and a free slot,
//! the tenant served longest ago first, up to `max` jobs, in one transaction.
//!
//! 1. Lock up to `max` such tenants (`FOR NO KEY UPDATE SKIP LOCKED`); if every one is locked
//!    by another claimer, wait up to 2 s for the longest unserved one instead of answering
//!    "no work" while there is some.
//! 2. In a new statement (so a fresh snapshot that sees every claim committed before our
//!    lock), take up to `min(max, free slots)` runnable jobs of each, `FOR UPDATE SKIP LOCKED`.
//! 3. Round-robin in Rust, then one statement: jobs RUNNING under a new fence and lease,
//!    their RUNNING events, and the served tenants' `last_claim` from a sequence.
//!
//! The tenant lock is what keeps the concurrency limit exact across processes: the RUNNING
//! count of a tenant only grows through a claim, and only the holder of its lock can claim.

use std::time::Duration;

use sqlx::{FromRow, PgPool};

use super::jobs::{corrupt, lease_millis, JobRow};
use crate::jobs::model::{now_millis, ClaimedJob, Job};
use crate::store::StoreResult;

/// Tenants with runnable work and a free slot, longest unserved first; locked so that no
/// other claimer serves them (or counts their running jobs) until this claim commits. Locked
/// rows are skipped: another claimer is serving that tenant right now.
const CLAIM_TENANTS: &str = "SELECT t.id FROM tenants t
     WHERE EXISTS (SELECT 1 FROM jobs w WHERE w.tenant_id = t.id
                       AND w.status IN ('QUEUED', 'RETRYING') AND w.run_at <= $1)
       AND t.concurrency_limit >
           (SELECT count(*) FROM jobs r WHERE r.tenant_id = t.id AND r.status = 'RUNNING')
     ORDER BY t.last_claim, t.id
     LIMIT $2
     FOR NO KEY UPDATE OF t SKIP LOCKED";

/// When every tenant with work was locked by other claimers: wait (briefly) for the longest
/// unserved one rather than answer "no work" while there is some.
const CLAIM_TENANT_WAIT: &str = "SELECT t.id FROM tenants t
     WHERE EXISTS (SELECT 1 FROM jobs w WHERE w.tenant_id = t.id
                       AND w.status IN ('QUEUED', 'RETRYING') AND w.run_at <= $1)
       AND t.concurrency_limit >
           (SELECT count(*) FROM jobs r WHERE r.tenant_id = t.id AND r.status = 'RUNNING')
     ORDER BY t.last_claim, t.id
     LIMIT 1
     FOR NO KEY UPDATE OF t";

/// How long the fallback above waits for a tenant's lock.
const CLAIM_LOCK_WAIT: &str = "SELECT set_config('lock_timeout', '2s', true)";

/// Up to `min(max, free slots)` runnable jobs of each locked tenant, in submit order. A new
/// statement, so a new snapshot: the RUNNING count includes every claim that committed
/// before we took the tenant's lock.
const CLAIM_JOBS: &str = "SELECT t.ord, j.seq
     FROM unnest($1::text[]) WITH ORDINALITY AS t(id, ord)
     JOIN tenants tn ON tn.id = t.id
     CROSS JOIN LATERAL (
         SELECT w.seq FROM jobs w
         WHERE w.tenant_id = t.id AND w.status IN ('QUEUED', 'RETRYING') AND w.run_at <= $2
         ORDER BY w.seq
         LIMIT GREATEST(0, LEAST($3, tn.concurrency_limit -
             (SELECT count(*) FROM jobs r WHERE r.tenant_id = t.id AND r.status = 'RUNNING')))
         FOR UPDATE OF w SKIP LOCKED
     ) j
     ORDER BY t.ord, j.seq";

/// The picked jobs become RUNNING under a new fence and lease, each with its event; the
/// served tenants get new `last_claim` stamps in the order they were last served.
const CLAIM_UPDATE: &str = "WITH picked AS (
         SELECT seq, ord FROM unnest($1::bigint[]) WITH ORDINALITY AS p(seq, ord)
     ), claimed AS (
         UPDATE jobs j SET status = 'RUNNING', attempts = j.attempts + 1, fence = j.fence + 1,
             lease_owner = $2, lease_until = $3, started_at = coalesce(j.started_at, $4),
             updated_at = $4, error_code = NULL, error_message = NULL
         FROM picked p WHERE j.seq = p.seq AND j.status IN ('QUEUED', 'RETRYING')
         RETURNING p.ord, j.*
     ), events AS (
         INSERT INTO job_events (job_id, tenant_id, status, attempt, at)
         SELECT id, tenant_id, 'RUNNING', attempts, $4 FROM claimed ORDER BY ord
     ), served AS MATERIALIZED (
         SELECT id, nextval('tenant_claim_order') AS stamp
         FROM (SELECT id, ord FROM unnest($5::text[]) WITH ORDINALITY AS s(id, ord)
               ORDER BY ord) s
     ), stamped AS (
         UPDATE tenants t SET last_claim = served.stamp FROM served WHERE t.id = served.id
     )
     SELECT * FROM claimed ORDER BY ord";

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

/// Round-robin over the tenants in order: the first job of every tenant, then the second of
/// every tenant, ... at most `max` in all. Returns the picked seqs and the tenants (by their
/// index) in the order they were last served.
fn round_robin(per_tenant: &[Vec<i64>], max: usize) -> (Vec<i64>, Vec<usize>) {
    let mut picked = Vec::new();
    let mut last_served: Vec<(usize, usize)> = Vec::new(); // (tenant, position of its last pick)
    let mut round = 0;
    while picked.len() < max {
        let before = picked.len();
        for (tenant, seqs) in per_tenant.iter().enumerate() {
            if picked.len() == max {
                break;
            }
            if let Some(seq) = seqs.get(round) {
                picked.push(*seq);
                match last_served.iter_mut().find(|(t, _)| *t == tenant) {
                    Some(entry) => entry.1 = picked.len(),
                    None => last_served.push((tenant, picked.len())),
                }
            }
        }
        if picked.len() == before {
            break;
        }
        round += 1;
    }
    last_served.sort_by_key(|(_, at)| *at);
    (picked, last_served.into_iter().map(|(t, _)| t).collect())
}

pub async fn claim(
    pool: &PgPool,
    worker_id: &str,
    max: u32,
    lease: Duration,
) -> StoreResult<Vec<ClaimedJob>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let now = now_millis();
    let lease_until = now.saturating_add(lease_millis(lease));
    let mut tx = pool.begin().await?;
    let mut tenants: Vec<String> = sqlx::query_scalar(CLAIM_TENANTS)
        .bind(now)
        .bind(i64::from(max))
        .fetch_all(&mut *tx)
        .await?;
    if tenants.is_empty() {
        sqlx::query(CLAIM_LOCK_WAIT).execute(&mut *tx).await?;
        match sqlx::query_scalar(CLAIM_TENANT_WAIT)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
        {
            Ok(Some(tenant)) => tenants.push(tenant),
            Ok(None) => return Ok(Vec::new()),
            // Still busy after the wait: report no work; the caller polls again.
            Err(e) if is_lock_timeout(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
    let rows: Vec<(i64, i64)> = sqlx::query_as(CLAIM_JOBS)
        .bind(&tenants)
        .bind(now)
        .bind(i64::from(max))
        .fetch_all(&mut *tx)
        .await?;
    let mut per_tenant: Vec<Vec<i64>> = vec![Vec::new(); tenants.len()];
    for (ord, seq) in rows {
        let index = usize::try_from(ord - 1).map_err(|_| corrupt("claim order"))?;
        if let Some(seqs) = per_tenant.get_mut(index) {
            seqs.push(seq);
        }
    }
    let (picked, served) = round_robin(&per_tenant, max as usize);
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let served: Vec<&str> = served.iter().map(|&i| tenants[i].as_str()).collect();
    let rows: Vec<ClaimedRow> = sqlx::query_as(CLAIM_UPDATE)
        .bind(&picked)
        .bind(worker_id)
        .bind(lease_until)
        .bind(now)
        .bind(&served)
        .fetch_all(&mut *tx)
        .await?;
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

#[cfg(test)]
mod tests {
    use super::round_robin;

    #[test]
    fn round_robin_serves_every_tenant_before_anyone_twice() {
        let per_tenant = vec![vec![1, 2, 3], vec![10], vec![20, 21]];
        assert_eq!(
            round_robin(&per_tenant, 10),
            (vec![1, 10, 20, 2, 21, 3], vec![1, 2, 0])
        );
        assert_eq!(round_robin(&per_tenant, 2), (vec![1, 10], vec![0, 1]));
        assert_eq!(
            round_robin(&per_tenant, 4),
            (vec![1, 10, 20, 2], vec![1, 2, 0])
        );
        assert_eq!(round_robin(&[vec![], vec![5]], 3), (vec![5], vec![1]));
        assert_eq!(round_robin(&[], 3), (vec![], vec![]));
    }
}
