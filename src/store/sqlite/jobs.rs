//! The jobs table as a queue, on SQLite: submit, read, list, cancel, heartbeat, finish,
//! release and the maintenance pass (the claim is in `claim.rs`, the event rows and their
//! reads in `events.rs`). Every status change writes a job event row in the same transaction
//! (and, through the outbox trigger of migration 0003, its webhook deliveries).

use std::time::Duration;

use rusqlite::{named_params, params, Connection, OptionalExtension, Row};

use super::events::{event_insert, EventRow};
use super::{bad_column, lease_millis};
use crate::base::clock::Millis;

use super::ledger;
use crate::base::job::Mode;
use crate::base::job::{Finish, Job, JobListQuery, JobPage, JobStatus, NewJob, SubmitOutcome};
use crate::base::job_errors;
use crate::store::{CancelOutcome, IdempotencyHit, Maintenance, StoreError, StoreResult};

pub(super) const JOB_COLUMNS: &str =
    "seq, id, tenant_id, status, prompt, mode, input_image_url, params, \
     provider, result_keys, error_code, error_message, attempts, max_attempts, created_at, \
     updated_at, started_at, finished_at, cancel_at, deadline_at, result_meta, fence, lease_until, \
     follow_up";

pub(super) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let status: String = row.get(3)?;
    let mode: String = row.get(5)?;
    let params: String = row.get(7)?;
    let result_keys: String = row.get(9)?;
    let result_meta: Option<String> = row.get(20)?;
    Ok(Job {
        seq: row.get(0)?,
        id: row.get(1)?,
        tenant_id: row.get(2)?,
        status: JobStatus::parse(&status).ok_or_else(|| bad_column(3, "status"))?,
        prompt: row.get(4)?,
        mode: Mode::parse(&mode).ok_or_else(|| bad_column(5, "mode"))?,
        input_image_url: row.get(6)?,
        params: serde_json::from_str(&params).map_err(|_| bad_column(7, "params"))?,
        provider: row.get(8)?,
        result_keys: serde_json::from_str(&result_keys).map_err(|_| bad_column(9, "keys"))?,
        error_code: row.get(10)?,
        error_message: row.get(11)?,
        attempts: row.get(12)?,
        max_attempts: row.get(13)?,
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
        started_at: row.get(16)?,
        finished_at: row.get(17)?,
        cancel_at: row.get(18)?,
        deadline_at: row.get(19)?,
        result_meta: result_meta.and_then(|m| serde_json::from_str(&m).ok()),
        follow_up: row.get(23)?,
    })
}

fn tenant_waiting_add(conn: &Connection, tenant_id: &str, delta: i64) -> StoreResult<()> {
    conn.prepare_cached("UPDATE tenants SET waiting = max(waiting + ?2, 0) WHERE id = ?1")?
        .execute(params![tenant_id, delta])?;
    Ok(())
}

pub fn submit(conn: &Connection, job: &NewJob) -> StoreResult<SubmitOutcome> {
    Ok(submit_as(conn, job, None)?.0)
}

/// A job that starts at its submit: RUNNING at once, under this worker's first lease.
pub(super) struct StartNow<'a> {
    pub worker_id: &'a str,
    pub lease_until: Millis,
    pub now: Millis,
}

/// The submit; with `start`, the job is written RUNNING (its first attempt) with its QUEUED
/// and RUNNING events, and returned as written with its fence. Without, it is QUEUED and
/// waits for a claim.
pub(super) fn submit_as(
    conn: &Connection,
    job: &NewJob,
    start: Option<&StartNow<'_>>,
) -> StoreResult<(SubmitOutcome, Option<(Job, i64)>)> {
    if let Some(idem) = &job.idempotency {
        let seen: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT request_hash, job_id FROM idempotency_keys WHERE tenant_id = ?1 AND key = ?2",
            )?
            .query_row(params![job.tenant_id, idem.key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((hash, job_id)) = seen {
            if hash != idem.request_hash {
                return Ok((SubmitOutcome::KeyReused, None));
            }
            let status: String = conn
                .prepare_cached("SELECT status FROM jobs WHERE id = ?1")?
                .query_row([&job_id], |r| r.get(0))?;
            let status = JobStatus::parse(&status).unwrap_or(JobStatus::Queued);
            return Ok((SubmitOutcome::Replayed { job_id, status }, None));
        }
    }
    // The hold before anything else is written: an account that cannot pay leaves no trace.
    if let Some(charge) = job.charge.as_ref().filter(|c| c.amount > 0) {
        if let Some((required, available)) = ledger::hold(conn, charge, &job.id, job.created_at)? {
            let refused = SubmitOutcome::InsufficientCredits {
                required,
                available,
            };
            return Ok((refused, None));
        }
    }
    if let Some(idem) = &job.idempotency {
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, job_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            job.tenant_id,
            idem.key,
            idem.request_hash,
            job.id,
            job.created_at
        ])?;
    }
    let params_json =
        serde_json::to_string(&job.params).map_err(|e| StoreError::Conflict(e.to_string()))?;
    let started = insert_job(conn, job, &params_json, start)?;
    event_insert(
        conn,
        &EventRow {
            job_id: &job.id,
            tenant_id: &job.tenant_id,
            status: JobStatus::Queued,
            attempt: 0,
            error_code: None,
            error_message: None,
            at: job.created_at,
        },
    )?;
    match (&started, start) {
        (Some((running, _)), Some(start)) => event_insert(
            conn,
            &EventRow {
                job_id: &job.id,
                tenant_id: &job.tenant_id,
                status: JobStatus::Running,
                attempt: running.attempts,
                error_code: None,
                error_message: None,
                at: start.now,
            },
        )?,
        _ => tenant_waiting_add(conn, &job.tenant_id, 1)?,
    }
    let created = SubmitOutcome::Created {
        job_id: job.id.clone(),
    };
    Ok((created, started))
}

/// Writes the job's row: QUEUED, or with `start` RUNNING in its first attempt (what a claim
/// would set), then returned as written with its fence.
fn insert_job(
    conn: &Connection,
    job: &NewJob,
    params_json: &str,
    start: Option<&StartNow<'_>>,
) -> StoreResult<Option<(Job, i64)>> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO jobs (id, tenant_id, status, prompt, mode, input_image_url, params,
                 provider, max_attempts, run_at, created_at, updated_at, cancel_at, deadline_at,
                 webhook_url, follow_up, attempts, fence, lease_owner, lease_until, started_at)
             VALUES (:id, :tenant_id, :status, :prompt, :mode, :input_image_url, :params,
                 :provider, :max_attempts, :created_at, :created_at,
                 coalesce(:started_at, :created_at), :cancel_at, :deadline_at, :webhook_url,
                 :follow_up, :attempt, :attempt, :lease_owner, :lease_until, :started_at)
             RETURNING {JOB_COLUMNS}"
        )
    });
    let (status, attempt) = match start {
        None => (JobStatus::Queued, 0),
        Some(_) => (JobStatus::Running, 1),
    };
    let mut stmt = conn.prepare_cached(&SQL)?;
    let mut rows = stmt.query(named_params! {
        ":id": job.id,
        ":tenant_id": job.tenant_id,
        ":status": status.as_str(),
        ":prompt": job.prompt,
        ":mode": job.mode.as_str(),
        ":input_image_url": job.input_image_url,
        ":params": params_json,
        ":provider": job.provider,
        ":max_attempts": job.max_attempts,
        ":created_at": job.created_at,
        ":cancel_at": job.cancel_at,
        ":deadline_at": job.deadline_at,
        ":webhook_url": job.webhook_url,
        ":follow_up": job.follow_up,
        ":attempt": attempt,
        ":lease_owner": start.map(|s| s.worker_id),
        ":lease_until": start.map(|s| s.lease_until),
        ":started_at": start.map(|s| s.now),
    })?;
    let row = rows.next()?.ok_or(StoreError::NotFound)?;
    match start {
        None => Ok(None),
        Some(_) => Ok(Some((job_from_row(row)?, row.get(21)?))),
    }
}

pub fn idempotency_find(
    conn: &Connection,
    tenant_id: &str,
    key: &str,
) -> StoreResult<Option<IdempotencyHit>> {
    let found: Option<(String, String, String)> = conn
        .prepare_cached(
            "SELECT i.request_hash, i.job_id, j.status
             FROM idempotency_keys i JOIN jobs j ON j.id = i.job_id
             WHERE i.tenant_id = ?1 AND i.key = ?2",
        )?
        .query_row(params![tenant_id, key], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    found
        .map(|(request_hash, job_id, status)| {
            let status = JobStatus::parse(&status).ok_or_else(|| {
                StoreError::Unavailable(format!("corrupt job row: bad status {status}"))
            })?;
            Ok(IdempotencyHit {
                request_hash,
                job_id,
                status,
            })
        })
        .transpose()
}

pub fn get(conn: &Connection, tenant_id: &str, job_id: &str) -> StoreResult<Option<Job>> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND tenant_id = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([job_id, tenant_id], job_from_row)
        .optional()?)
}

pub fn queue_position(conn: &Connection, seq: i64) -> StoreResult<u64> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM jobs WHERE status IN ('QUEUED', 'RETRYING') AND seq < ?1",
        )?
        .query_row([seq], |r| r.get(0))?)
}

pub fn list(conn: &Connection, q: &JobListQuery) -> StoreResult<JobPage> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE tenant_id = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR seq < ?3)
         ORDER BY seq DESC LIMIT ?4"
    );
    let status = q.status.map(JobStatus::as_str);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![q.tenant_id, status, q.before_seq, i64::from(q.limit) + 1],
        job_from_row,
    )?;
    let mut items: Vec<Job> = rows.collect::<Result<_, _>>()?;
    let has_more = items.len() > q.limit as usize;
    items.truncate(q.limit as usize);
    Ok(JobPage { items, has_more })
}

pub fn cancel(
    conn: &Connection,
    now: Millis,
    tenant_id: &str,
    job_id: &str,
) -> StoreResult<CancelOutcome> {
    let found: Option<(String, u32)> = conn
        .prepare_cached("SELECT status, attempts FROM jobs WHERE id = ?1 AND tenant_id = ?2")?
        .query_row([job_id, tenant_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((status, attempts)) = found else {
        return Ok(CancelOutcome::NotFound);
    };
    let status = JobStatus::parse(&status).unwrap_or(JobStatus::Failed);
    if !status.can_cancel() {
        return Ok(CancelOutcome::InvalidState(status));
    }
    // The seam for the credits ledger: a hold on this job is released here, in this
    // transaction (the one writer's), beside the status change.
    if status == JobStatus::Running {
        cancel_running(conn, job_id, tenant_id, attempts, now)?;
    } else {
        end_waiting(
            conn,
            job_id,
            tenant_id,
            attempts,
            now,
            JobStatus::Canceled,
            None,
        )?;
    }
    Ok(CancelOutcome::Canceled)
}

/// Ends a running attempt as CANCELED: the fence moves on and the lease is dropped, so the
/// attempt's heartbeat and finish find their lease lost.
fn cancel_running(
    conn: &Connection,
    job_id: &str,
    tenant_id: &str,
    attempts: u32,
    now: Millis,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE jobs SET status = 'CANCELED', error_code = NULL, error_message = NULL,
             finished_at = ?2, updated_at = ?2, fence = fence + 1,
             lease_owner = NULL, lease_until = NULL
         WHERE id = ?1",
    )?
    .execute(params![job_id, now])?;
    event_insert(
        conn,
        &EventRow {
            job_id,
            tenant_id,
            status: JobStatus::Canceled,
            attempt: attempts,
            error_code: None,
            error_message: None,
            at: now,
        },
    )?;
    ledger::close_hold(conn, job_id, JobStatus::Canceled, now)
}

/// Moves a waiting job to a terminal status (canceled, or failed by its deadline).
fn end_waiting(
    conn: &Connection,
    job_id: &str,
    tenant_id: &str,
    attempts: u32,
    now: Millis,
    status: JobStatus,
    error: Option<(&str, &str)>,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE jobs SET status = ?2, error_code = ?3, error_message = ?4, finished_at = ?5,
             updated_at = ?5, fence = fence + 1
         WHERE id = ?1",
    )?
    .execute(params![
        job_id,
        status.as_str(),
        error.map(|e| e.0),
        error.map(|e| e.1),
        now
    ])?;
    event_insert(
        conn,
        &EventRow {
            job_id,
            tenant_id,
            status,
            attempt: attempts,
            error_code: error.map(|e| e.0),
            error_message: error.map(|e| e.1),
            at: now,
        },
    )?;
    ledger::close_hold(conn, job_id, status, now)?;
    tenant_waiting_add(conn, tenant_id, -1)
}

pub fn heartbeat(
    conn: &Connection,
    now: Millis,
    job_id: &str,
    fence: i64,
    lease: Duration,
) -> StoreResult<Millis> {
    let lease_until = now.saturating_add(lease_millis(lease));
    let updated = conn
        .prepare_cached(
            "UPDATE jobs SET lease_until = ?3
             WHERE id = ?1 AND fence = ?2 AND status = 'RUNNING'",
        )?
        .execute(params![job_id, fence, lease_until])?;
    if updated == 0 {
        return Err(StoreError::LeaseLost);
    }
    Ok(lease_until)
}

/// The running job under this fence: its tenant and attempt count, or `LeaseLost`.
fn running_under_fence(conn: &Connection, job_id: &str, fence: i64) -> StoreResult<(String, u32)> {
    conn.prepare_cached(
        "SELECT tenant_id, attempts FROM jobs WHERE id = ?1 AND fence = ?2 AND status = 'RUNNING'",
    )?
    .query_row(params![job_id, fence], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()?
    .ok_or(StoreError::LeaseLost)
}

pub fn finish(
    conn: &Connection,
    now: Millis,
    job_id: &str,
    fence: i64,
    finish: &Finish,
) -> StoreResult<()> {
    let (tenant_id, attempts) = running_under_fence(conn, job_id, fence)?;
    let (code, message) = match finish {
        Finish::Succeeded { result_keys, meta } => {
            let keys = serde_json::to_string(result_keys)
                .map_err(|e| StoreError::Conflict(e.to_string()))?;
            let meta = meta.as_ref().map(|m| m.to_string());
            conn.prepare_cached(
                "UPDATE jobs SET status = 'SUCCEEDED', result_keys = ?2, result_meta = ?3,
                     finished_at = ?4, updated_at = ?4, lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1",
            )?
            .execute(params![job_id, keys, meta, now])?;
            (None, None)
        }
        Finish::Retry {
            run_at,
            error_code,
            error_message,
        } => {
            conn.prepare_cached(
                "UPDATE jobs SET status = 'RETRYING', run_at = ?2, error_code = ?3,
                     error_message = ?4, updated_at = ?5, lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1",
            )?
            .execute(params![job_id, run_at, error_code, error_message, now])?;
            tenant_waiting_add(conn, &tenant_id, 1)?;
            (Some(error_code.as_str()), Some(error_message.as_str()))
        }
        Finish::Failed {
            error_code,
            error_message,
        } => {
            conn.prepare_cached(
                "UPDATE jobs SET status = 'FAILED', error_code = ?2, error_message = ?3,
                     finished_at = ?4, updated_at = ?4, lease_owner = NULL, lease_until = NULL
                 WHERE id = ?1",
            )?
            .execute(params![job_id, error_code, error_message, now])?;
            (Some(error_code.as_str()), Some(error_message.as_str()))
        }
    };
    event_insert(
        conn,
        &EventRow {
            job_id,
            tenant_id: &tenant_id,
            status: finish.status(),
            attempt: attempts,
            error_code: code,
            error_message: message,
            at: now,
        },
    )?;
    ledger::close_hold(conn, job_id, finish.status(), now)
}

pub fn release(conn: &Connection, now: Millis, job_id: &str, fence: i64) -> StoreResult<()> {
    let (tenant_id, attempts) = running_under_fence(conn, job_id, fence)?;
    requeue_running(
        conn,
        now,
        job_id,
        &tenant_id,
        attempts.saturating_sub(1),
        (
            job_errors::WORKER_SHUTDOWN,
            "the worker stopped; the job was put back in the queue",
        ),
    )
}

/// Puts a running job back in the queue as RETRYING, runnable at once.
fn requeue_running(
    conn: &Connection,
    now: Millis,
    job_id: &str,
    tenant_id: &str,
    attempts: u32,
    (code, message): (&str, &str),
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE jobs SET status = 'RETRYING', attempts = ?2, run_at = ?3, updated_at = ?3,
             error_code = ?4, error_message = ?5, fence = fence + 1,
             lease_owner = NULL, lease_until = NULL
         WHERE id = ?1",
    )?
    .execute(params![job_id, attempts, now, code, message])?;
    event_insert(
        conn,
        &EventRow {
            job_id,
            tenant_id,
            status: JobStatus::Retrying,
            attempt: attempts,
            error_code: Some(code),
            error_message: Some(message),
            at: now,
        },
    )?;
    tenant_waiting_add(conn, tenant_id, 1)
}

/// Fails a running job outright (its lease can no longer be honoured).
fn fail_running(
    conn: &Connection,
    job_id: &str,
    tenant_id: &str,
    attempts: u32,
    now: Millis,
    (code, message): (&str, &str),
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE jobs SET status = 'FAILED', error_code = ?2, error_message = ?3,
             finished_at = ?4, updated_at = ?4, fence = fence + 1,
             lease_owner = NULL, lease_until = NULL
         WHERE id = ?1",
    )?
    .execute(params![job_id, code, message, now])?;
    event_insert(
        conn,
        &EventRow {
            job_id,
            tenant_id,
            status: JobStatus::Failed,
            attempt: attempts,
            error_code: Some(code),
            error_message: Some(message),
            at: now,
        },
    )?;
    ledger::close_hold(conn, job_id, JobStatus::Failed, now)
}

type OpenJob = (String, String, String, u32, u32);

fn open_jobs(conn: &Connection, sql: &str, now: Millis) -> StoreResult<Vec<OpenJob>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([now], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `now` is the pass's time (deadlines, `Cancel-After`, expired leases, failures); a rescued
/// job is runnable again from `clock_now`, the store clock's time.
pub fn maintain(conn: &Connection, now: Millis, clock_now: Millis) -> StoreResult<Maintenance> {
    let mut done = Maintenance::default();
    // Deadlines first: a job past its deadline fails whatever else is true of it.
    let overdue = open_jobs(
        conn,
        "SELECT id, tenant_id, status, attempts, max_attempts FROM jobs
         WHERE status IN ('QUEUED', 'RUNNING', 'RETRYING') AND deadline_at <= ?1 LIMIT 1000",
        now,
    )?;
    let timeout = (
        job_errors::JOB_TIMEOUT,
        "the job did not finish before its deadline",
    );
    for (id, tenant, status, attempts, _) in overdue {
        if status == JobStatus::Running.as_str() {
            fail_running(conn, &id, &tenant, attempts, now, timeout)?;
        } else {
            end_waiting(
                conn,
                &id,
                &tenant,
                attempts,
                now,
                JobStatus::Failed,
                Some(timeout),
            )?;
        }
        done.expired += 1;
    }
    let cancel_due = open_jobs(
        conn,
        "SELECT id, tenant_id, status, attempts, max_attempts FROM jobs
         WHERE cancel_at IS NOT NULL AND status IN ('QUEUED', 'RETRYING') AND cancel_at <= ?1
         LIMIT 1000",
        now,
    )?;
    for (id, tenant, _, attempts, _) in cancel_due {
        let why = (
            job_errors::CANCEL_AFTER_ELAPSED,
            "the job did not start before its Cancel-After",
        );
        end_waiting(
            conn,
            &id,
            &tenant,
            attempts,
            now,
            JobStatus::Canceled,
            Some(why),
        )?;
        done.canceled += 1;
    }
    let lost = open_jobs(
        conn,
        "SELECT id, tenant_id, status, attempts, max_attempts FROM jobs
         WHERE status = 'RUNNING' AND lease_until < ?1 LIMIT 1000",
        now,
    )?;
    for (id, tenant, _, attempts, max_attempts) in lost {
        let why = (
            job_errors::WORKER_LOST,
            "the worker running this job stopped responding",
        );
        if attempts >= max_attempts {
            fail_running(conn, &id, &tenant, attempts, now, why)?;
        } else {
            requeue_running(conn, clock_now, &id, &tenant, attempts, why)?;
        }
        done.rescued += 1;
    }
    Ok(done)
}

pub fn next_run_at(conn: &Connection) -> StoreResult<Option<Millis>> {
    Ok(conn
        .prepare_cached("SELECT min(run_at) FROM jobs WHERE status IN ('QUEUED', 'RETRYING')")?
        .query_row([], |r| r.get(0))?)
}

pub fn open_counts(conn: &Connection) -> StoreResult<crate::store::OpenJobs> {
    let mut stmt = conn.prepare_cached(crate::store::OPEN_JOBS_SQL)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::store::OpenJobs::from_rows(rows))
}

pub fn idempotency_purge(conn: &Connection, before: Millis) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM idempotency_keys WHERE created_at < ?1")?
        .execute([before])?;
    Ok(deleted as u64)
}
