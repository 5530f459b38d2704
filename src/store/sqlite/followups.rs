//! The follow-up outbox on SQLite (see [`FollowupStore`]); the single writer makes a claim's
//! select-then-update safe.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::SqliteStore;
use crate::base::clock::{millis_after, Millis};
use crate::store::followups::{DueFollowup, FollowupStore};
use crate::store::StoreResult;

fn claim(
    conn: &Connection,
    now: Millis,
    max: u32,
    hold: Duration,
) -> StoreResult<Vec<DueFollowup>> {
    let until = millis_after(now, hold);
    let due = conn
        .prepare_cached(
            "UPDATE job_followups SET due_at = ?3, attempts = attempts + 1
             WHERE job_id IN (SELECT job_id FROM job_followups WHERE due_at <= ?1
                              ORDER BY due_at, job_id LIMIT ?2)
             RETURNING job_id, tenant_id, follower, attempts",
        )?
        .query_map(params![now, max, until], |row| {
            Ok(DueFollowup {
                job_id: row.get(0)?,
                tenant_id: row.get(1)?,
                follower: row.get(2)?,
                attempts: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(due)
}

#[async_trait]
impl FollowupStore for SqliteStore {
    async fn followups_claim(&self, max: u32, hold: Duration) -> StoreResult<Vec<DueFollowup>> {
        self.write_at(move |c, now| claim(c, now, max, hold)).await
    }

    async fn followup_done(&self, job_id: &str) -> StoreResult<()> {
        let job_id = job_id.to_owned();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM job_followups WHERE job_id = ?1")?
                .execute(params![job_id])?;
            Ok(())
        })
        .await
    }

    async fn followup_retry(&self, job_id: &str, after: Duration, error: &str) -> StoreResult<()> {
        let (job_id, error) = (job_id.to_owned(), error.to_owned());
        self.write_at(move |c, now| {
            let due_at = millis_after(now, after);
            c.prepare_cached(
                "UPDATE job_followups SET due_at = ?2, last_error = ?3 WHERE job_id = ?1",
            )?
            .execute(params![job_id, due_at, error])?;
            Ok(())
        })
        .await
    }

    async fn followups_pending(&self) -> StoreResult<u64> {
        self.read(|c| {
            let n: i64 = c.query_row("SELECT count(*) FROM job_followups", [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }
}
