//! The jobs table as a queue, on PostgreSQL: submit, read, list, cancel, heartbeat, finish,
//! release and the maintenance pass (the reads of job events are in `events.rs`). Every status change writes its job event row in
//! the same transaction, mostly in the same statement (a data-modifying `WITH`), so a write
//! is one round trip wherever the behaviour allows it. The event row's insert trigger
//! (migration 0003) writes the webhook deliveries in that same transaction. The claim has a
//! file of its own (`claim.rs`).

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::{Acquire, FromRow, PgConnection, PgPool};

use crate::base::clock::Millis;

use crate::base::job::Mode;
use crate::base::job::{Finish, Job, JobListQuery, JobPage, JobStatus, NewJob, SubmitOutcome};
use crate::base::job_errors;
use crate::store::{CancelOutcome, IdempotencyHit, Maintenance, StoreError, StoreResult};

pub(super) const JOB_COLUMNS: &str =
    "seq, id, tenant_id, status, prompt, mode, input_image_url, params, \
     provider, result_keys, error_code, error_message, attempts, max_attempts, created_at, \
     updated_at, started_at, finished_at, cancel_at, deadline_at, result_meta, follow_up";

/// The wake-up hint, sent from inside a transaction (delivered at commit) or after one.
const NOTIFY: &str = "SELECT pg_notify('easel_jobs', current_schema())";

/// What a status change hands to its event row: `RETURNING` of the updated job.
const EVENT_SOURCE: &str = "RETURNING id, tenant_id, status, attempts, error_code, error_message";

/// The event row of every job a `done` CTE changed, stamped `at`.
fn event_insert(at: &str) -> String {
    format!(
        "INSERT INTO job_events (job_id, tenant_id, status, attempt, error_code, error_message, at)
         SELECT id, tenant_id, status, attempts, error_code, error_message, {at} FROM done"
    )
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("corrupt job row: bad {what}"))
}

pub(super) fn count(n: i32, what: &str) -> StoreResult<u32> {
    u32::try_from(n).map_err(|_| corrupt(what))
}

#[derive(FromRow)]
pub(super) struct JobRow {
    seq: i64,
    id: String,
    tenant_id: String,
    status: String,
    prompt: String,
    mode: String,
    input_image_url: Option<String>,
    params: String,
    provider: String,
    result_keys: String,
    error_code: Option<String>,
    error_message: Option<String>,
    attempts: i32,
    max_attempts: i32,
    created_at: Millis,
    updated_at: Millis,
    started_at: Option<Millis>,
    finished_at: Option<Millis>,
    cancel_at: Option<Millis>,
    deadline_at: Millis,
    result_meta: Option<String>,
    follow_up: Option<String>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(r: JobRow) -> StoreResult<Job> {
        Ok(Job {
            seq: r.seq,
            id: r.id,
            tenant_id: r.tenant_id,
            status: JobStatus::parse(&r.status).ok_or_else(|| corrupt("status"))?,
            prompt: r.prompt,
            mode: Mode::parse(&r.mode).ok_or_else(|| corrupt("mode"))?,
            input_image_url: r.input_image_url,
            params: serde_json::from_str(&r.params).map_err(|_| corrupt("params"))?,
            provider: r.provider,
            result_keys: serde_json::from_str(&r.result_keys).map_err(|_| corrupt("keys"))?,
            error_code: r.error_code,
            error_message: r.error_message,
            attempts: count(r.attempts, "attempts")?,
            max_attempts: count(r.max_attempts, "max_attempts")?,
            created_at: r.created_at,
            updated_at: r.updated_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            cancel_at: r.cancel_at,
            deadline_at: r.deadline_at,
            result_meta: r.result_meta.and_then(|m| serde_json::from_str(&m).ok()),
            follow_up: r.follow_up,
        })
    }
}

// ---- submit ----

/// The job, its QUEUED event and the wake-up hint: one statement.
static JOB_INSERT: LazyLock<String> = LazyLock::new(|| job_insert_sql(None, "$13"));
/// The same behind the hold of its price (`$13` from account `$14`): nothing is written when
/// the account cannot pay. (`follow_up` is bound after the hold's two parameters.)
static JOB_INSERT_PAID: LazyLock<String> =
    LazyLock::new(|| job_insert_sql(Some(&super::ledger::HOLD_CTE), "$15"));

fn job_insert_sql(hold: Option<&str>, follow_up: &str) -> String {
    let values =
        format!("$1, $2, 'QUEUED', $3, $4, $5, $6, $7, $8, $9, $9, $9, $10, $11, $12, {follow_up}");
    let (hold, source) = match hold {
        Some(cte) => (format!("{cte}, "), format!("SELECT {values} FROM acct")),
        None => (String::new(), format!("VALUES ({values})")),
    };
    format!(
        "WITH {hold}done AS (
             INSERT INTO jobs (id, tenant_id, status, prompt, mode, input_image_url, params,
                 provider, max_attempts, run_at, created_at, updated_at, cancel_at, deadline_at,
                 webhook_url, follow_up)
             {source}
             {EVENT_SOURCE}
         ), event AS ({})
         SELECT pg_notify('easel_jobs', current_schema()) FROM done",
        event_insert("$9")
    )
}

/// Inserts the job and holds its charge, in the caller's transaction, refilling the hold's
/// stripe when it alone cannot pay; `false` when the whole account cannot (nothing written).
pub(super) async fn job_insert(
    conn: &mut PgConnection,
    job: &NewJob,
    params: &str,
) -> StoreResult<bool> {
    if job_insert_once(conn, job, params).await? {
        return Ok(true);
    }
    let Some(charge) = job.charge.as_ref().filter(|c| c.amount > 0) else {
        return Ok(false);
    };
    if !super::stripes::refill(conn, &charge.account.id, charge.amount).await? {
        return Ok(false);
    }
    job_insert_once(conn, job, params).await
}

/// One statement: the job, and its hold when the hold's stripe can pay; `false` otherwise.
async fn job_insert_once(conn: &mut PgConnection, job: &NewJob, params: &str) -> StoreResult<bool> {
    let charge = job.charge.as_ref().filter(|c| c.amount > 0);
    let max_attempts =
        i32::try_from(job.max_attempts).map_err(|_| StoreError::Conflict("max_attempts".into()))?;
    let sql: &str = if charge.is_some() {
        &JOB_INSERT_PAID
    } else {
        &JOB_INSERT
    };
    let query = sqlx::query(sql)
        .bind(&job.id)
        .bind(&job.tenant_id)
        .bind(&job.prompt)
        .bind(job.mode.as_str())
        .bind(&job.input_image_url)
        .bind(params)
        .bind(&job.provider)
        .bind(max_attempts)
        .bind(job.created_at)
        .bind(job.cancel_at)
        .bind(job.deadline_at)
        .bind(&job.webhook_url);
    let query = match charge {
        Some(c) => query.bind(c.amount).bind(&c.account.id),
        None => query,
    };
    let query = query.bind(&job.follow_up);
    Ok(query.fetch_optional(conn).await?.is_some())
}

/// The refusal of a charge the account could not pay.
pub(super) async fn insufficient(
    conn: &mut PgConnection,
    job: &NewJob,
) -> StoreResult<SubmitOutcome> {
    let (required, account) = match &job.charge {
        Some(c) => (c.amount, c.account.id.as_str()),
        None => return Err(StoreError::Conflict("job insert wrote nothing".into())),
    };
    Ok(SubmitOutcome::InsufficientCredits {
        required,
        available: super::ledger::balance_of(conn, account).await?,
    })
}

pub async fn submit(pool: &PgPool, job: &NewJob) -> StoreResult<SubmitOutcome> {
    let params =
        serde_json::to_string(&job.params).map_err(|e| StoreError::Conflict(e.to_string()))?;
    let created = SubmitOutcome::Created {
        job_id: job.id.clone(),
    };
    let Some(idem) = &job.idempotency else {
        // One statement is one transaction, unless the hold's stripe needs a refill.
        let mut conn = pool.acquire().await?;
        if job_insert_once(&mut conn, job, &params).await? {
            return Ok(created);
        }
        let mut tx = conn.begin().await?;
        if !job_insert(&mut tx, job, &params).await? {
            return insufficient(&mut tx, job).await;
        }
        tx.commit().await?;
        return Ok(created);
    };
    let mut tx = pool.begin().await?;
    // Taking the key first makes concurrent submits with it queue here: ON CONFLICT waits for
    // the transaction that holds the key and, once it commits, does nothing.
    for _ in 0..3 {
        let taken = sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, job_id, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, key) DO NOTHING",
        )
        .bind(&job.tenant_id)
        .bind(&idem.key)
        .bind(&idem.request_hash)
        .bind(&job.id)
        .bind(job.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 1 {
            if !job_insert(&mut tx, job, &params).await? {
                // Rolled back with the key: a refused submit leaves nothing behind.
                return insufficient(&mut tx, job).await;
            }
            tx.commit().await?;
            return Ok(created);
        }
        let seen: Option<(String, String)> = sqlx::query_as(
            "SELECT request_hash, job_id FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
        )
        .bind(&job.tenant_id)
        .bind(&idem.key)
        .fetch_optional(&mut *tx)
        .await?;
        // None: purged between the two statements; try to take the key again.
        let Some((hash, job_id)) = seen else { continue };
        if hash != idem.request_hash {
            return Ok(SubmitOutcome::KeyReused);
        }
        let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
            .bind(&job_id)
            .fetch_one(&mut *tx)
            .await?;
        let status = JobStatus::parse(&status).unwrap_or(JobStatus::Queued);
        return Ok(SubmitOutcome::Replayed { job_id, status });
    }
    Err(StoreError::Conflict(
        "the idempotency key kept changing under this submit".into(),
    ))
}

// ---- read ----

pub async fn idempotency_find(
    pool: &PgPool,
    tenant_id: &str,
    key: &str,
) -> StoreResult<Option<IdempotencyHit>> {
    let found: Option<(String, String, String)> = sqlx::query_as(
        "SELECT i.request_hash, i.job_id, j.status
         FROM idempotency_keys i JOIN jobs j ON j.id = i.job_id
         WHERE i.tenant_id = $1 AND i.key = $2",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    found
        .map(|(request_hash, job_id, status)| {
            Ok(IdempotencyHit {
                request_hash,
                job_id,
                status: JobStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            })
        })
        .transpose()
}

pub async fn get(pool: &PgPool, tenant_id: &str, job_id: &str) -> StoreResult<Option<Job>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2")
    });
    let row: Option<JobRow> = sqlx::query_as(&SQL)
        .bind(job_id)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?;
    row.map(Job::try_from).transpose()
}

/// The tenant's jobs among `ids` (in no particular order), in one statement.
pub async fn get_many(pool: &PgPool, tenant_id: &str, ids: &[String]) -> StoreResult<Vec<Job>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1) AND tenant_id = $2")
    });
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<JobRow> = sqlx::query_as(&SQL)
        .bind(ids)
        .bind(tenant_id)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(Job::try_from).collect()
}

pub async fn queue_position(pool: &PgPool, seq: i64) -> StoreResult<u64> {
    let ahead: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE status IN ('QUEUED', 'RETRYING') AND seq < $1",
    )
    .bind(seq)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(ahead).unwrap_or(0))
}

pub async fn list(pool: &PgPool, q: &JobListQuery) -> StoreResult<JobPage> {
    // One statement per filter shape: `($2 IS NULL OR status = $2)` would leave a generic
    // plan unable to pick the index for the filter.
    static SQL: LazyLock<[String; 4]> = LazyLock::new(|| {
        let shape = |status: &str, before: &str| {
            format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant_id = $1 {status} {before}
                 ORDER BY seq DESC LIMIT $2"
            )
        };
        [
            shape("", ""),
            shape("AND status = $3", ""),
            shape("", "AND seq < $3"),
            shape("AND status = $3", "AND seq < $4"),
        ]
    });
    let limit = i64::from(q.limit) + 1;
    let query = match (q.status, q.before_seq) {
        (None, None) => sqlx::query_as(&SQL[0]).bind(&q.tenant_id).bind(limit),
        (Some(st), None) => sqlx::query_as(&SQL[1])
            .bind(&q.tenant_id)
            .bind(limit)
            .bind(st.as_str()),
        (None, Some(before)) => sqlx::query_as(&SQL[2])
            .bind(&q.tenant_id)
            .bind(limit)
            .bind(before),
        (Some(st), Some(before)) => sqlx::query_as(&SQL[3])
            .bind(&q.tenant_id)
            .bind(limit)
            .bind(st.as_str())
            .bind(before),
    };
    let rows: Vec<JobRow> = query.fetch_all(pool).await?;
    let mut items = rows
        .into_iter()
        .map(Job::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
    let has_more = items.len() > q.limit as usize;
    items.truncate(q.limit as usize);
    Ok(JobPage { items, has_more })
}

pub async fn next_run_at(pool: &PgPool) -> StoreResult<Option<Millis>> {
    Ok(
        sqlx::query_scalar("SELECT min(run_at) FROM jobs WHERE status IN ('QUEUED', 'RETRYING')")
            .fetch_one(pool)
            .await?,
    )
}

// ---- cancel ----

/// One statement (so one transaction): the guarded update and its event; when the job was
/// running, the wake-up hint follows (its tenant's slot is free). The seam for the credits ledger: a
/// hold on the job is released in this statement too. A RUNNING job's fence moves on, so its
/// attempt's heartbeat and finish find the lease lost; a finish that commits first leaves a
/// finished job, which the row lock makes this UPDATE see and skip.
pub async fn cancel(
    pool: &PgPool,
    now: Millis,
    tenant_id: &str,
    job_id: &str,
) -> StoreResult<CancelOutcome> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH before AS (
                 SELECT status FROM jobs WHERE id = $1 AND tenant_id = $2
             ), done AS (
                 UPDATE jobs SET status = 'CANCELED', error_code = NULL, error_message = NULL,
                     finished_at = $3, updated_at = $3, fence = fence + 1,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND tenant_id = $2
                     AND status IN ('QUEUED', 'RETRYING', 'RUNNING')
                 {EVENT_SOURCE}
             ){}, event AS ({})
             SELECT d.id, coalesce((SELECT b.status = 'RUNNING' FROM before b), false)
             FROM done d",
            super::ledger::close_holds_cte("$3"),
            event_insert("$3")
        )
    });
    // A job may change status under us (claimed, retried, finished): the guarded UPDATE
    // decides, and the status read after it only explains a refusal.
    for _ in 0..3 {
        let canceled: Option<(String, bool)> = sqlx::query_as(&SQL)
            .bind(job_id)
            .bind(tenant_id)
            .bind(now)
            .fetch_optional(pool)
            .await?;
        if let Some((_, was_running)) = canceled {
            if was_running {
                notify_after_commit(pool).await;
            }
            return Ok(CancelOutcome::Canceled);
        }
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1 AND tenant_id = $2")
                .bind(job_id)
                .bind(tenant_id)
                .fetch_optional(pool)
                .await?;
        let Some(status) = status else {
            return Ok(CancelOutcome::NotFound);
        };
        let status = JobStatus::parse(&status).ok_or_else(|| corrupt("status"))?;
        if !status.can_cancel() {
            return Ok(CancelOutcome::InvalidState(status));
        }
    }
    Err(StoreError::Conflict(
        "the job kept changing status under the cancel".into(),
    ))
}

// ---- heartbeat, finish, release ----

pub(super) fn lease_millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4)
}

pub async fn heartbeat(
    pool: &PgPool,
    now: Millis,
    job_id: &str,
    fence: i64,
    lease: Duration,
) -> StoreResult<Millis> {
    let lease_until = now.saturating_add(lease_millis(lease));
    let updated = sqlx::query(
        "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND fence = $2 AND status = 'RUNNING'",
    )
    .bind(job_id)
    .bind(fence)
    .bind(lease_until)
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(StoreError::LeaseLost);
    }
    Ok(lease_until)
}

/// One statement: the guarded update (`$1` id, `$2` fence, `$3` now), its event, and whether
/// other workers should be woken: the job is runnable again, or it held the last free slot of
/// a tenant that has runnable work waiting (workers may have gone to sleep on that limit).
/// A running bound under the limit (migration 0007) says it was not full without counting.
fn finish_sql(set: &str) -> String {
    format!(
        "WITH done AS (
             UPDATE jobs SET {set}, lease_owner = NULL, lease_until = NULL
             WHERE id = $1 AND fence = $2 AND status = 'RUNNING'
             {EVENT_SOURCE}, run_at
         ), event AS ({}){}
         SELECT CASE WHEN d.status = 'RETRYING' THEN d.run_at <= $3
             ELSE (SELECT CASE WHEN tn.running_bound < tn.concurrency_limit THEN false
                       ELSE (SELECT count(*) FROM jobs r
                             WHERE r.tenant_id = d.tenant_id AND r.status = 'RUNNING')
                            >= tn.concurrency_limit END
                   FROM tenants tn WHERE tn.id = d.tenant_id)
              AND EXISTS (SELECT 1 FROM jobs w WHERE w.tenant_id = d.tenant_id
                  AND w.status IN ('QUEUED', 'RETRYING') AND w.run_at <= $3)
             END AS wake
         FROM done d",
        event_insert("$3"),
        super::ledger::close_holds_cte("$3")
    )
}

static FINISH_SUCCEEDED: LazyLock<String> = LazyLock::new(|| {
    finish_sql(
        "status = 'SUCCEEDED', result_keys = $4, result_meta = $5, finished_at = $3, \
         updated_at = $3",
    )
});
static FINISH_RETRY: LazyLock<String> = LazyLock::new(|| {
    finish_sql(
        "status = 'RETRYING', run_at = $4, error_code = $5, error_message = $6, updated_at = $3",
    )
});
static FINISH_FAILED: LazyLock<String> = LazyLock::new(|| {
    finish_sql(
        "status = 'FAILED', error_code = $4, error_message = $5, finished_at = $3, \
         updated_at = $3",
    )
});

pub async fn finish(
    pool: &PgPool,
    now: Millis,
    job_id: &str,
    fence: i64,
    finish: &Finish,
) -> StoreResult<()> {
    let query = match finish {
        Finish::Succeeded { result_keys, meta } => {
            let keys = serde_json::to_string(result_keys)
                .map_err(|e| StoreError::Conflict(e.to_string()))?;
            sqlx::query_scalar(&FINISH_SUCCEEDED)
                .bind(job_id)
                .bind(fence)
                .bind(now)
                .bind(keys)
                .bind(meta.as_ref().map(|m| m.to_string()))
        }
        Finish::Retry {
            run_at,
            error_code,
            error_message,
        } => sqlx::query_scalar(&FINISH_RETRY)
            .bind(job_id)
            .bind(fence)
            .bind(now)
            .bind(*run_at)
            .bind(error_code.as_str())
            .bind(error_message.as_str()),
        Finish::Failed {
            error_code,
            error_message,
        } => sqlx::query_scalar(&FINISH_FAILED)
            .bind(job_id)
            .bind(fence)
            .bind(now)
            .bind(error_code.as_str())
            .bind(error_message.as_str()),
    };
    let wake: Option<Option<bool>> = query.fetch_optional(pool).await?;
    let Some(wake) = wake else {
        return Err(StoreError::LeaseLost);
    };
    if wake == Some(true) {
        notify_after_commit(pool).await;
    }
    Ok(())
}

/// A hint sent after the change committed. Failing to send it loses nothing but latency.
async fn notify_after_commit(pool: &PgPool) {
    if let Err(e) = sqlx::query(NOTIFY).execute(pool).await {
        tracing::debug!(error = %e, "wake-up notification not sent");
    }
}

pub async fn release(pool: &PgPool, now: Millis, job_id: &str, fence: i64) -> StoreResult<()> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH done AS (
                 UPDATE jobs SET status = 'RETRYING', attempts = GREATEST(attempts - 1, 0),
                     run_at = $3, updated_at = $3, error_code = '{WORKER_SHUTDOWN}',
                     error_message = 'the worker stopped; the job was put back in the queue',
                     fence = fence + 1, lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND fence = $2 AND status = 'RUNNING'
                 {EVENT_SOURCE}
             ), event AS ({})
             SELECT pg_notify('easel_jobs', current_schema()) FROM done",
            event_insert("$3"),
            WORKER_SHUTDOWN = job_errors::WORKER_SHUTDOWN,
        )
    });
    let released = sqlx::query(&SQL)
        .bind(job_id)
        .bind(fence)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected();
    if released == 0 {
        return Err(StoreError::LeaseLost);
    }
    Ok(())
}

// ---- maintenance ----

/// Rows picked `FOR UPDATE SKIP LOCKED`, so passes running at once in several processes
/// share the work instead of queueing on each other; the UPDATE re-checks the status.
static MAINTAIN_DEADLINES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH due AS MATERIALIZED (
         SELECT seq FROM jobs WHERE status IN ('QUEUED', 'RUNNING', 'RETRYING')
             AND deadline_at <= $1
         ORDER BY deadline_at LIMIT 1000 FOR UPDATE SKIP LOCKED
     ), done AS (
         UPDATE jobs j SET status = 'FAILED', error_code = '{JOB_TIMEOUT}',
             error_message = 'the job did not finish before its deadline',
             finished_at = $1, updated_at = $1, fence = j.fence + 1,
             lease_owner = NULL, lease_until = NULL
         FROM due WHERE j.seq = due.seq AND j.status IN ('QUEUED', 'RUNNING', 'RETRYING')
         RETURNING j.id, j.tenant_id, j.status, j.attempts, j.error_code, j.error_message
     )
     INSERT INTO job_events (job_id, tenant_id, status, attempt, error_code, error_message, at)
     SELECT id, tenant_id, status, attempts, error_code, error_message, $1 FROM done",
        JOB_TIMEOUT = job_errors::JOB_TIMEOUT,
    )
});

static MAINTAIN_CANCEL_AFTER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH due AS MATERIALIZED (
         SELECT seq FROM jobs WHERE cancel_at IS NOT NULL
             AND status IN ('QUEUED', 'RETRYING') AND cancel_at <= $1
         ORDER BY cancel_at LIMIT 1000 FOR UPDATE SKIP LOCKED
     ), done AS (
         UPDATE jobs j SET status = 'CANCELED', error_code = '{CANCEL_AFTER_ELAPSED}',
             error_message = 'the job did not start before its Cancel-After',
             finished_at = $1, updated_at = $1, fence = j.fence + 1
         FROM due WHERE j.seq = due.seq AND j.status IN ('QUEUED', 'RETRYING')
         RETURNING j.id, j.tenant_id, j.status, j.attempts, j.error_code, j.error_message
     )
     INSERT INTO job_events (job_id, tenant_id, status, attempt, error_code, error_message, at)
     SELECT id, tenant_id, status, attempts, error_code, error_message, $1 FROM done",
        CANCEL_AFTER_ELAPSED = job_errors::CANCEL_AFTER_ELAPSED,
    )
});

/// Expired leases: failed (at the pass's `$1`) when out of attempts, else back in the queue
/// runnable at once (at the store clock's time `$2`, as on SQLite).
static MAINTAIN_LOST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH lost AS MATERIALIZED (
         SELECT seq FROM jobs WHERE status = 'RUNNING' AND lease_until < $1
         ORDER BY lease_until LIMIT 1000 FOR UPDATE SKIP LOCKED
     ), done AS (
         UPDATE jobs j SET
             status = CASE WHEN j.attempts >= j.max_attempts THEN 'FAILED' ELSE 'RETRYING' END,
             finished_at = CASE WHEN j.attempts >= j.max_attempts THEN $1 ELSE j.finished_at END,
             run_at = CASE WHEN j.attempts >= j.max_attempts THEN j.run_at ELSE $2 END,
             updated_at = CASE WHEN j.attempts >= j.max_attempts THEN $1 ELSE $2 END,
             error_code = '{WORKER_LOST}',
             error_message = 'the worker running this job stopped responding',
             fence = j.fence + 1, lease_owner = NULL, lease_until = NULL
         FROM lost WHERE j.seq = lost.seq AND j.status = 'RUNNING'
         RETURNING j.id, j.tenant_id, j.status, j.attempts, j.error_code, j.error_message,
             j.updated_at
     ), events AS (
         INSERT INTO job_events (job_id, tenant_id, status, attempt, error_code, error_message, at)
         SELECT id, tenant_id, status, attempts, error_code, error_message, updated_at FROM done
     )
     SELECT count(*), count(*) FILTER (WHERE status = 'RETRYING') FROM done",
        WORKER_LOST = job_errors::WORKER_LOST,
    )
});

/// `sql` with the ledger's close CTEs (stamped `$1`) inserted before its last `marker`.
fn with_close_holds(sql: &str, marker: &str) -> String {
    let at = sql.rfind(marker).unwrap_or(sql.len());
    let (head, tail) = sql.split_at(at);
    format!(
        "{head}{}\n     {tail}",
        super::ledger::close_holds_cte("$1")
    )
}

static MAINTAIN_DEADLINES_SQL: LazyLock<String> =
    LazyLock::new(|| with_close_holds(&MAINTAIN_DEADLINES, "INSERT INTO job_events"));
static MAINTAIN_CANCEL_AFTER_SQL: LazyLock<String> =
    LazyLock::new(|| with_close_holds(&MAINTAIN_CANCEL_AFTER, "INSERT INTO job_events"));
static MAINTAIN_LOST_SQL: LazyLock<String> =
    LazyLock::new(|| with_close_holds(&MAINTAIN_LOST, "SELECT count(*)"));

/// `now` is the pass's time; a rescued job is runnable again from `clock_now`, the store
/// clock's time.
pub async fn maintain(pool: &PgPool, now: Millis, clock_now: Millis) -> StoreResult<Maintenance> {
    let mut tx = pool.begin().await?;
    // Deadlines first: a job past its deadline fails whatever else is true of it.
    let expired = sqlx::query(&MAINTAIN_DEADLINES_SQL)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let canceled = sqlx::query(&MAINTAIN_CANCEL_AFTER_SQL)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let (rescued, requeued): (i64, i64) = sqlx::query_as(&MAINTAIN_LOST_SQL)
        .bind(now)
        .bind(clock_now)
        .fetch_one(&mut *tx)
        .await?;
    if requeued > 0 {
        sqlx::query(NOTIFY).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Maintenance {
        rescued: u64::try_from(rescued).unwrap_or(0),
        canceled,
        expired,
    })
}

pub async fn idempotency_purge(pool: &PgPool, before: Millis) -> StoreResult<u64> {
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
