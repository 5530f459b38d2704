//! Follow-ups: telling the capability that made a job for something of its own (an editor
//! message, a photo task) that the job ended, so it can record the result.
//!
//! Owns: the [`JobFollower`] seam and the [`run`] loop that works off the store's follow-up
//! outbox. The outbox row is written by the transaction that ended the job (whatever ended
//! it: a worker's finish, a cancel, the deadline), so an ended job is never forgotten, and a
//! claim that dies with its process lapses and is claimed again: each follower hears of each
//! job at least once and must be idempotent, keyed by job id. A follower may also hear its
//! jobs start and report progress ([`JobFollower::job_progressed`]): the worker running the
//! job tells it, in that process, after the change is committed (best effort, in order).
//! Must not touch: what a follower does (its module owns that; `app` registers it here).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::base::job::Job;
use crate::events::{Pace, Subscription, Wake, SAFETY_POLL};
use crate::store::followups::DueFollowup;
use crate::store::Store;

/// Follow-ups claimed per store call.
const CLAIM_BATCH: u32 = 32;
/// How long a claim holds its rows: a follower slower than this may see its job twice.
const CLAIM_HOLD: Duration = Duration::from_secs(60);
/// The longest wait before a failed follow-up is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A capability that wants to hear when the jobs it made end.
#[async_trait]
pub trait JobFollower: Send + Sync + 'static {
    /// The name its jobs carry in `NewJob::follow_up`.
    fn name(&self) -> &'static str;
    /// The job ended (its status is terminal). Called at least once per job: doing it twice
    /// must change nothing. An `Err` is retried later with backoff.
    async fn job_ended(&self, job: &Job) -> Result<(), String>;
    /// The job started an attempt, or its provider's progress rose (committed before this
    /// call, by the worker running it). Best effort: a failure is logged, never retried (the
    /// end comes through [`JobFollower::job_ended`] anyway). Nothing by default.
    async fn job_progressed(&self, _job: &Job) -> Result<(), String> {
        Ok(())
    }
}

/// The followers of this process, by name.
#[derive(Clone, Default)]
pub struct Followers {
    by_name: HashMap<&'static str, Arc<dyn JobFollower>>,
}

impl Followers {
    pub fn with(mut self, follower: Arc<dyn JobFollower>) -> Followers {
        self.by_name.insert(follower.name(), follower);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Tells the job's follower, if it has one here, that the job started or progressed.
    pub async fn progressed(&self, job: &Job) {
        let Some(follower) = job.follow_up.as_deref().and_then(|n| self.by_name.get(n)) else {
            return;
        };
        if let Err(error) = follower.job_progressed(job).await {
            tracing::warn!(job = %job.id, follower = follower.name(), %error, "progress not followed");
        }
    }
}

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s, ... up to [`MAX_BACKOFF`].
pub fn backoff(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

/// Works off due follow-ups until `stop`: at once when a job changes (a notice on the bus),
/// and every [`SAFETY_POLL`] for what other processes ended or retries that came due.
pub async fn run(
    store: Arc<dyn Store>,
    followers: Followers,
    mut notices: Subscription,
    stop: CancellationToken,
) {
    let mut pace = Pace::default();
    loop {
        notices.drain();
        while run_due(store.as_ref(), &followers).await > 0 {}
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SAFETY_POLL) => {}
            wake = next_end(&mut notices) => match wake {
                Wake::Closed => {
                    // The bus closed (shutdown): keep the safety poll alone until `stop`.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(SAFETY_POLL) => {}
                    }
                }
                _ => pace.turn().await,
            },
        }
    }
}

/// The next notice that may announce a job's end: follow-ups are written when jobs end, so
/// the notices of jobs known to be open ([`crate::events::Change::open`]) are passed over.
async fn next_end(notices: &mut Subscription) -> Wake {
    loop {
        match notices.recv().await {
            Wake::Changed(change) if change.open => continue,
            wake => return wake,
        }
    }
}

/// Claims one batch of due follow-ups and runs them; how many it claimed.
pub async fn run_due(store: &dyn Store, followers: &Followers) -> usize {
    let due = match store.followups_claim(CLAIM_BATCH, CLAIM_HOLD).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "follow-ups not claimed");
            return 0;
        }
    };
    let claimed = due.len();
    futures::future::join_all(due.iter().map(|d| run_one(store, followers, d))).await;
    claimed
}

async fn run_one(store: &dyn Store, followers: &Followers, due: &DueFollowup) {
    let outcome = match followers.by_name.get(due.follower.as_str()) {
        // A follower this process does not have (an older binary during a rollout): another
        // process may, so the row waits.
        None => Err(format!("no follower named '{}' here", due.follower)),
        Some(follower) => match store.job_get(&due.tenant_id, &due.job_id).await {
            Ok(Some(job)) => follower.job_ended(&job).await,
            // The job was deleted (tenant removed): nothing left to tell.
            Ok(None) => Ok(()),
            Err(e) => Err(format!("job not read: {e}")),
        },
    };
    let written = match outcome {
        Ok(()) => store.followup_done(&due.job_id).await,
        Err(error) => {
            tracing::warn!(job = %due.job_id, follower = %due.follower, attempts = due.attempts, %error, "follow-up failed; will retry");
            store
                .followup_retry(&due.job_id, backoff(due.attempts), &error)
                .await
        }
    };
    if let Err(e) = written {
        tracing::warn!(job = %due.job_id, error = %e, "follow-up outcome not recorded; it will run again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
