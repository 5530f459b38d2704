//! Job events on PostgreSQL: a job's history and a tenant's feed after a cursor (live
//! streams), read only from transactions older than every running one. The rows themselves
//! are written by each status change's statement (`jobs.rs`, `claim.rs`).

use sqlx::{FromRow, PgPool};

use super::jobs::{corrupt, count};
use crate::base::clock::Millis;
use crate::base::job::{JobEvent, JobStatus};
use crate::store::StoreResult;

#[derive(FromRow)]
struct EventRow {
    id: i64,
    job_id: String,
    tenant_id: String,
    status: String,
    attempt: i32,
    error_code: Option<String>,
    error_message: Option<String>,
    at: Millis,
    progress: Option<i32>,
}

fn event_from_row(r: EventRow) -> StoreResult<JobEvent> {
    Ok(JobEvent {
        id: r.id,
        job_id: r.job_id,
        tenant_id: r.tenant_id,
        status: JobStatus::parse(&r.status).ok_or_else(|| corrupt("event status"))?,
        attempt: count(r.attempt, "event attempt")?,
        error_code: r.error_code,
        error_message: r.error_message,
        at: r.at,
        progress: r.progress.and_then(|p| u8::try_from(p).ok()),
    })
}

pub async fn events(pool: &PgPool, job_id: &str) -> StoreResult<Vec<JobEvent>> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, job_id, tenant_id, status, attempt, error_code, error_message, at, progress
         FROM job_events WHERE job_id = $1 ORDER BY id",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(event_from_row).collect()
}

/// Events after `after_id`, only from transactions older than every running one, so ids are
/// final: nothing can later appear below what a reader has seen (see migration 0002).
pub async fn events_after(
    pool: &PgPool,
    tenant_id: &str,
    job_id: Option<&str>,
    after_id: i64,
    limit: u32,
) -> StoreResult<Vec<JobEvent>> {
    // One statement per shape, as for job lists: index job_events_tenant (tenant_id, id) for
    // a tenant's feed, job_events_job (job_id, id) for one job's.
    macro_rules! events_where {
        ($filter:literal) => {
            concat!(
                "SELECT id, job_id, tenant_id, status, attempt, error_code, error_message, at, progress
                 FROM job_events WHERE tenant_id = $1 AND ",
                $filter,
                " AND id > $3 AND txid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY id LIMIT $4"
            )
        };
    }
    let sql = match job_id {
        Some(_) => events_where!("job_id = $2"),
        None => events_where!("$2::TEXT IS NULL"),
    };
    let rows: Vec<EventRow> = sqlx::query_as(sql)
        .bind(tenant_id)
        .bind(job_id)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(event_from_row).collect()
}

pub async fn events_last_id(pool: &PgPool, tenant_id: &str) -> StoreResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(max(id), 0) FROM job_events
         WHERE tenant_id = $1 AND txid < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .bind(tenant_id)
    .fetch_one(pool)
    .await?)
}

/// The attempt's progress, when it rose and the lease under `fence` is still the job's.
pub async fn progress(
    pool: &PgPool,
    now: Millis,
    job_id: &str,
    fence: i64,
    percent: u8,
) -> StoreResult<bool> {
    let written = sqlx::query(
        "INSERT INTO job_events (job_id, tenant_id, status, attempt, progress, at)
         SELECT j.id, j.tenant_id, 'RUNNING', j.attempts, $3, $4 FROM jobs j
         WHERE j.id = $1 AND j.fence = $2 AND j.status = 'RUNNING'
           AND $3 > COALESCE((SELECT max(e.progress) FROM job_events e
                              WHERE e.job_id = j.id AND e.attempt = j.attempts), -1)",
    )
    .bind(job_id)
    .bind(fence)
    .bind(i32::from(percent))
    .bind(now)
    .execute(pool)
    .await?;
    Ok(written.rows_affected() == 1)
}

pub async fn progress_get(pool: &PgPool, job_id: &str) -> StoreResult<Option<u8>> {
    let max: Option<i32> = sqlx::query_scalar(
        "SELECT max(e.progress) FROM jobs j JOIN job_events e
           ON e.job_id = j.id AND e.attempt = j.attempts WHERE j.id = $1",
    )
    .bind(job_id)
    .fetch_one(pool)
    .await?;
    Ok(max.and_then(|p| u8::try_from(p).ok()))
}

/// [`progress_get`] of each job among `ids` that has a progress, in one statement.
pub async fn progress_many(pool: &PgPool, ids: &[String]) -> StoreResult<Vec<(String, u8)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, Option<i32>)> = sqlx::query_as(
        "SELECT j.id, max(e.progress) FROM jobs j JOIN job_events e
           ON e.job_id = j.id AND e.attempt = j.attempts WHERE j.id = ANY($1) GROUP BY j.id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, p)| Some((id, u8::try_from(p?).ok()?)))
        .collect())
}
