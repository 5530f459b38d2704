//! The fair claim on SQLite: round-robin over tenants with runnable work, the tenant served
//! longest ago first, skipping tenants at their concurrency limit; each claimed job goes
//! RUNNING under a new fence and lease, with its event, and the photo task it belongs to (if
//! any) goes from `pending` to `processing` in the same transaction.

use std::sync::LazyLock;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::events::{event_insert, EventRow};
use super::jobs::{job_from_row, submit, submit_as, StartNow, JOB_COLUMNS};
use super::lease_millis;
use crate::base::clock::Millis;
use crate::base::job::{ClaimedJob, Claimer, JobStatus, NewJob, SubmitOutcome};
use crate::store::StoreResult;

/// A photo task (`store::photo`) is `processing` once one of its jobs is claimed; a task that
/// is not `pending` (already processing, ended, cancelled) stays as it is.
const PHOTO_TASK_STARTED: &str = "UPDATE photo_tasks SET status = 'processing', updated_at = ?2
     WHERE status = 'pending' AND task_id = (SELECT task_id FROM photo_task_jobs WHERE job_id = ?1)";

/// Tenants considered per claim; the rest wait for the next round.
const CLAIM_TENANT_WINDOW: u32 = 256;

/// Picks up to `max` runnable jobs, one per tenant per round, tenants served longest ago
/// first, skipping tenants at their concurrency limit.
fn claim_pick(conn: &Connection, max: u32, now: Millis) -> StoreResult<Vec<(i64, String)>> {
    // Only tenants that can take a job now enter the window: tenants at their concurrency
    // limit or whose waiting jobs are all backing off would otherwise fill it and hide
    // runnable work from every claim.
    let mut tenants_stmt = conn.prepare_cached(
        "SELECT id, free FROM (
             SELECT t.id, t.last_claim, t.concurrency_limit -
                 (SELECT count(*) FROM jobs j WHERE j.tenant_id = t.id AND j.status = 'RUNNING')
                 AS free
             FROM tenants t
             WHERE t.waiting > 0 AND EXISTS (
                 SELECT 1 FROM jobs j WHERE j.tenant_id = t.id
                     AND j.status IN ('QUEUED', 'RETRYING') AND j.run_at <= ?2))
         WHERE free > 0 ORDER BY last_claim LIMIT ?1",
    )?;
    let tenants: Vec<(String, i64)> = tenants_stmt
        .query_map(params![CLAIM_TENANT_WINDOW, now], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut jobs_stmt = conn.prepare_cached(
        "SELECT seq FROM jobs WHERE tenant_id = ?1 AND status IN ('QUEUED', 'RETRYING')
             AND run_at <= ?2
         ORDER BY seq LIMIT ?3",
    )?;
    let mut per_tenant: Vec<(String, Vec<i64>)> = Vec::new();
    for (tenant_id, free) in tenants {
        let take = free.min(i64::from(max));
        if take <= 0 {
            continue;
        }
        let seqs: Vec<i64> = jobs_stmt
            .query_map(params![tenant_id, now, take], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if !seqs.is_empty() {
            per_tenant.push((tenant_id, seqs));
        }
    }
    // Round-robin: the first job of every tenant, then the second of every tenant, ...
    let mut picked = Vec::new();
    let mut round = 0;
    while picked.len() < max as usize {
        let before = picked.len();
        for (tenant_id, seqs) in &per_tenant {
            if let Some(seq) = seqs.get(round) {
                if picked.len() < max as usize {
                    picked.push((*seq, tenant_id.clone()));
                }
            }
        }
        if picked.len() == before {
            break;
        }
        round += 1;
    }
    Ok(picked)
}

pub fn claim(
    conn: &Connection,
    now: Millis,
    worker_id: &str,
    max: u32,
    lease: Duration,
) -> StoreResult<Vec<ClaimedJob>> {
    let lease_until = now.saturating_add(lease_millis(lease));
    let picked = claim_pick(conn, max, now)?;
    let mut claimed = Vec::with_capacity(picked.len());
    let mut counter = last_claim(conn)?;
    for (seq, tenant_id) in picked {
        counter += 1;
        claimed.push(claim_seq(
            conn,
            now,
            worker_id,
            lease_until,
            seq,
            &tenant_id,
            counter,
        )?);
    }
    Ok(claimed)
}

/// The submit of `job`, and the claim of its tenant's next job in the same transaction if
/// the fair claim would serve that tenant next anyway: no other tenant has a job waiting to
/// run, and it is under its concurrency limit. The next job is this one, written RUNNING at
/// once, unless an older one of the tenant's waits. `None`: its jobs wait for the claim.
pub fn submit_claimed(
    conn: &Connection,
    now: Millis,
    claimer: &Claimer,
    job: &NewJob,
) -> StoreResult<(SubmitOutcome, Option<ClaimedJob>)> {
    let lease_until = now.saturating_add(lease_millis(claimer.lease));
    let worker_id = claimer.worker_id.as_str();
    let Some(older) = tenant_turn(conn, now, &job.tenant_id)? else {
        return Ok((submit(conn, job)?, None));
    };
    let counter = last_claim(conn)? + 1;
    if let Some(seq) = older {
        let outcome = submit(conn, job)?;
        let claimed = match outcome {
            SubmitOutcome::Created { .. } => Some(claim_seq(
                conn,
                now,
                worker_id,
                lease_until,
                seq,
                &job.tenant_id,
                counter,
            )?),
            _ => None,
        };
        return Ok((outcome, claimed));
    }
    let start = StartNow {
        worker_id,
        lease_until,
        now,
    };
    let (outcome, started) = submit_as(conn, job, Some(&start))?;
    let Some((job, fence)) = started else {
        return Ok((outcome, None));
    };
    conn.prepare_cached("UPDATE tenants SET last_claim = ?2 WHERE id = ?1")?
        .execute(params![job.tenant_id, counter])?;
    let claimed = ClaimedJob {
        job,
        fence,
        lease_until,
    };
    Ok((outcome, Some(claimed)))
}

/// Whether the claim would serve `tenant_id` next: `None` when another tenant has a job
/// waiting to run or the tenant is at its concurrency limit; else its oldest waiting job, if
/// any.
fn tenant_turn(
    conn: &Connection,
    now: Millis,
    tenant_id: &str,
) -> StoreResult<Option<Option<i64>>> {
    Ok(conn
        .prepare_cached(
            "SELECT (SELECT seq FROM jobs WHERE tenant_id = ?1
                         AND status IN ('QUEUED', 'RETRYING') AND run_at <= ?2
                     ORDER BY seq LIMIT 1)
             FROM tenants t WHERE t.id = ?1
                 AND NOT EXISTS (SELECT 1 FROM jobs WHERE status IN ('QUEUED', 'RETRYING')
                     AND run_at <= ?2 AND tenant_id <> ?1)
                 AND t.concurrency_limit > (SELECT count(*) FROM jobs j
                     WHERE j.tenant_id = ?1 AND j.status = 'RUNNING')",
        )?
        .query_row(params![tenant_id, now], |r| r.get(0))
        .optional()?)
}

/// The newest claim's place in the tenants' round-robin.
fn last_claim(conn: &Connection) -> StoreResult<i64> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(last_claim), 0) FROM tenants")?
        .query_row([], |r| r.get(0))?)
}

/// Claims the job at `seq` (RUNNING under a new fence and lease, with its event), marks its
/// tenant served at `counter`, and starts the photo task it belongs to.
fn claim_seq(
    conn: &Connection,
    now: Millis,
    worker_id: &str,
    lease_until: Millis,
    seq: i64,
    tenant_id: &str,
    counter: i64,
) -> StoreResult<ClaimedJob> {
    let (job, fence) = conn
        .prepare_cached(&CLAIM_SQL)?
        .query_row(params![seq, worker_id, lease_until, now], |r| {
            Ok((job_from_row(r)?, r.get::<_, i64>(21)?))
        })?;
    event_insert(
        conn,
        &EventRow {
            job_id: &job.id,
            tenant_id,
            status: JobStatus::Running,
            attempt: job.attempts,
            error_code: None,
            error_message: None,
            at: now,
        },
    )?;
    conn.prepare_cached(
        "UPDATE tenants SET waiting = max(waiting - 1, 0), last_claim = ?2 WHERE id = ?1",
    )?
    .execute(params![tenant_id, counter])?;
    conn.prepare_cached(PHOTO_TASK_STARTED)?
        .execute(params![job.id, now])?;
    Ok(ClaimedJob {
        job,
        fence,
        lease_until,
    })
}

static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE jobs SET status = 'RUNNING', attempts = attempts + 1, fence = fence + 1,
             lease_owner = ?2, lease_until = ?3, started_at = coalesce(started_at, ?4),
             updated_at = ?4, error_code = NULL, error_message = NULL
         WHERE seq = ?1 RETURNING {JOB_COLUMNS}"
    )
});
