//! Job events on SQLite: the row every status change writes, and the reads of a job's history
//! and of a tenant's feed after a cursor (live streams).

use rusqlite::{params, Connection, Row};

use super::bad_column;
use crate::base::clock::Millis;
use crate::base::job::{JobEvent, JobStatus};
use crate::store::StoreResult;

/// The event row a status change writes, in the transaction of that change.
pub(super) struct EventRow<'a> {
    pub job_id: &'a str,
    pub tenant_id: &'a str,
    pub status: JobStatus,
    pub attempt: u32,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub at: Millis,
}

pub(super) fn event_insert(conn: &Connection, e: &EventRow<'_>) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO job_events (job_id, tenant_id, status, attempt, error_code, error_message, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        e.job_id,
        e.tenant_id,
        e.status.as_str(),
        e.attempt,
        e.error_code,
        e.error_message,
        e.at
    ])?;
    Ok(())
}

const EVENT_COLUMNS: &str =
    "id, job_id, tenant_id, status, attempt, error_code, error_message, at, progress";

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<JobEvent> {
    let status: String = r.get(3)?;
    Ok(JobEvent {
        id: r.get(0)?,
        job_id: r.get(1)?,
        tenant_id: r.get(2)?,
        status: JobStatus::parse(&status).ok_or_else(|| bad_column(3, "status"))?,
        attempt: r.get(4)?,
        error_code: r.get(5)?,
        error_message: r.get(6)?,
        at: r.get(7)?,
        progress: r.get(8)?,
    })
}

pub fn events(conn: &Connection, job_id: &str) -> StoreResult<Vec<JobEvent>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM job_events WHERE job_id = ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([job_id], event_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Events after `after_id` in id order. Ids are assigned by the one writer and whole groups
/// commit at once, so a reader never sees an id while a smaller one is still uncommitted.
pub fn events_after(
    conn: &Connection,
    tenant_id: &str,
    job_id: Option<&str>,
    after_id: i64,
    limit: u32,
) -> StoreResult<Vec<JobEvent>> {
    let rows = match job_id {
        // Index job_events_job (job_id, id).
        Some(job_id) => {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM job_events
                 WHERE job_id = ?1 AND tenant_id = ?2 AND id > ?3 ORDER BY id LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows =
                stmt.query_map(params![job_id, tenant_id, after_id, limit], event_from_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        }
        // Index job_events_tenant (tenant_id, id).
        None => {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM job_events
                 WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![tenant_id, after_id, limit], event_from_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(rows)
}

pub fn events_last_id(conn: &Connection, tenant_id: &str) -> StoreResult<i64> {
    // Index job_events_tenant (tenant_id, id): one seek to the end.
    Ok(conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM job_events WHERE tenant_id = ?1")?
        .query_row([tenant_id], |r| r.get(0))?)
}

/// The attempt's progress, when it rose and the lease under `fence` is still the job's.
pub fn progress(
    conn: &Connection,
    now: Millis,
    job_id: &str,
    fence: i64,
    percent: u8,
) -> StoreResult<bool> {
    let written = conn
        .prepare_cached(
            "INSERT INTO job_events (job_id, tenant_id, status, attempt, progress, at)
             SELECT j.id, j.tenant_id, 'RUNNING', j.attempts, ?3, ?4 FROM jobs j
             WHERE j.id = ?1 AND j.fence = ?2 AND j.status = 'RUNNING'
               AND ?3 > COALESCE((SELECT max(e.progress) FROM job_events e
                                  WHERE e.job_id = j.id AND e.attempt = j.attempts), -1)",
        )?
        .execute(params![job_id, fence, percent, now])?;
    Ok(written == 1)
}

pub fn progress_get(conn: &Connection, job_id: &str) -> StoreResult<Option<u8>> {
    Ok(conn
        .prepare_cached(
            "SELECT max(e.progress) FROM jobs j JOIN job_events e
               ON e.job_id = j.id AND e.attempt = j.attempts WHERE j.id = ?1",
        )?
        .query_row([job_id], |r| r.get(0))?)
}
