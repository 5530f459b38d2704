//! The follow-up outbox's share of the store: one row per ended job whose creator asked to be
//! told (`NewJob::follow_up`), written by a trigger inside the transaction that ended the job
//! (migration 0016), worked off by `jobs::followups`. Each method is one transaction.
//!
//! A claim pushes a row's `due_at` past the claim's hold, so a process that dies mid-way
//! leaves the row to be claimed again when the hold lapses: delivery is at least once, and a
//! follower must be idempotent (keyed by job id).

use std::time::Duration;

use async_trait::async_trait;

use super::StoreResult;

/// A follow-up to run: tell `follower` that job `job_id` ended.
#[derive(Debug, Clone, PartialEq)]
pub struct DueFollowup {
    pub job_id: String,
    pub tenant_id: String,
    pub follower: String,
    /// Claims so far, this one included.
    pub attempts: u32,
}

#[async_trait]
pub trait FollowupStore: Send + Sync + 'static {
    /// Claims up to `max` rows due by now, oldest first, holding each for `hold`.
    async fn followups_claim(&self, max: u32, hold: Duration) -> StoreResult<Vec<DueFollowup>>;
    /// The follower is done: the row goes.
    async fn followup_done(&self, job_id: &str) -> StoreResult<()>;
    /// The follower failed: the row is due again `after` from now, with the error kept.
    async fn followup_retry(&self, job_id: &str, after: Duration, error: &str) -> StoreResult<()>;
    /// Rows waiting (due or held): what the metrics and tests look at.
    async fn followups_pending(&self) -> StoreResult<u64>;
}
