//! The follow-up outbox on PostgreSQL (see [`FollowupStore`]): a claim takes due rows with
//! `FOR UPDATE SKIP LOCKED`, so processes claiming at once never share a row.

use std::time::Duration;

use async_trait::async_trait;

use super::PgStore;
use crate::base::clock::millis_after;
use crate::store::followups::{DueFollowup, FollowupStore};
use crate::store::StoreResult;

#[async_trait]
impl FollowupStore for PgStore {
    async fn followups_claim(&self, max: u32, hold: Duration) -> StoreResult<Vec<DueFollowup>> {
        let now = self.now();
        let until = millis_after(now, hold);
        let rows: Vec<(String, String, String, i32)> = sqlx::query_as(
            "UPDATE job_followups f SET due_at = $3, attempts = f.attempts + 1
             FROM (SELECT job_id FROM job_followups WHERE due_at <= $1
                   ORDER BY due_at, job_id LIMIT $2 FOR UPDATE SKIP LOCKED) due
             WHERE f.job_id = due.job_id
             RETURNING f.job_id, f.tenant_id, f.follower, f.attempts",
        )
        .bind(now)
        .bind(i64::from(max))
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(job_id, tenant_id, follower, attempts)| DueFollowup {
                job_id,
                tenant_id,
                follower,
                attempts: u32::try_from(attempts).unwrap_or(0),
            })
            .collect())
    }

    async fn followup_done(&self, job_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM job_followups WHERE job_id = $1")
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn followup_retry(&self, job_id: &str, after: Duration, error: &str) -> StoreResult<()> {
        let due_at = millis_after(self.now(), after);
        sqlx::query("UPDATE job_followups SET due_at = $2, last_error = $3 WHERE job_id = $1")
            .bind(job_id)
            .bind(due_at)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn followups_pending(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM job_followups")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
