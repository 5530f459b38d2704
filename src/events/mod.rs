//! Live job events: the event bus that says "something changed", and the job-event feed that
//! turns it into an ordered, resumable stream for SSE and WebSocket clients.
//!
//! Owns: publish/subscribe of change notices ([`EventBus`]: in process, [`LocalBus`]; across
//! nodes, [`RedisBus`]) and [`EventFeed`], one subscriber's cursor over the `job_events`
//! table; [`Topics`], which hands each topic's notices (a job's, an editor session's) to the
//! callers waiting on that topic.
//! Must not touch: HTTP (the API renders feeds as SSE or WebSocket) or SQL (the feed reads
//! through the `Store`).
//!
//! The events table is the source of truth (DESIGN.md decision 8). A notice on the bus
//! carries no event, only which tenant (and job) changed; a feed that hears one re-reads the
//! store from the last event id it delivered. So a notice that is lost, late, duplicated or
//! dropped because a slow subscriber lagged costs at most a delay, never an event, and no
//! event is delivered twice. Notices are published after the status change committed, by the
//! code that committed it (`api::jobs`, `jobs::worker`, `jobs::maintenance`).
//!
//! Across nodes (`REDIS_URL` set), [`RedisBus`] delivers each notice to this process's
//! subscribers at once and sends it on a Redis pub/sub channel; a subscriber task feeds the
//! notices of other nodes into the same local broadcast. Without Redis, [`LocalBus`] serves
//! one process, and changes committed by other processes are found by each feed's periodic
//! re-read ([`SAFETY_POLL`]), which also stays on with Redis as the safety net. (A PostgreSQL
//! `NOTIFY` bus would implement the same trait; nothing above it would change.)

mod feed;
mod local;
pub mod redis_bus;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

pub use feed::EventFeed;
pub use local::LocalBus;
pub use redis_bus::RedisBus;
pub use watch::{JobWatch, Route, Topics, Watched};

/// How often a feed re-reads the store without a notice: the safety net for changes made by
/// other processes and for notices that never came.
pub const SAFETY_POLL: Duration = Duration::from_secs(1);

/// A notice: events were committed for this tenant (and job, when known). `tenant_id: None`
/// means "any tenant may have changed" (the maintenance pass does not say which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub tenant_id: Option<Arc<str>>,
    pub job_id: Option<Arc<str>>,
    /// The publisher knows the job is still open (just claimed, or reporting progress): a
    /// caller waiting only for its end has nothing to read. `false` says nothing either way.
    pub open: bool,
}

impl Change {
    /// One job of one tenant changed.
    pub fn job(tenant_id: &str, job_id: &str) -> Change {
        Change {
            tenant_id: Some(tenant_id.into()),
            job_id: Some(job_id.into()),
            open: false,
        }
    }

    /// One job changed and has not ended (see [`Change::open`]).
    pub fn job_open(tenant_id: &str, job_id: &str) -> Change {
        Change {
            open: true,
            ..Change::job(tenant_id, job_id)
        }
    }

    /// Jobs of unknown tenants changed: every feed re-reads.
    pub fn anyone() -> Change {
        Change {
            tenant_id: None,
            job_id: None,
            open: false,
        }
    }

    /// Whether a feed over this tenant (and job, if it follows one) should re-read.
    pub fn concerns(&self, tenant_id: &str, job_id: Option<&str>) -> bool {
        let tenant_matches = self.tenant_id.as_deref().is_none_or(|t| t == tenant_id);
        let job_matches = match (job_id, self.job_id.as_deref()) {
            (Some(wanted), Some(changed)) => wanted == changed,
            _ => true,
        };
        tenant_matches && job_matches
    }
}

/// Publish/subscribe of [`Change`] notices.
pub trait EventBus: Send + Sync + 'static {
    /// Announces committed changes. Never blocks and never fails: a notice is a wake-up hint,
    /// so publishers (the submit path, workers) are never held up by subscribers.
    fn publish(&self, change: Change);
    /// A new subscription; it hears notices published from now on.
    fn subscribe(&self) -> Subscription;
    /// Ends every subscription, present and future (shutdown): feeds end, streams close.
    fn close(&self);
}

/// Spaces the store reads of a loop that looks again on every notice (the webhook outbox, the
/// job follow-ups): at most one per [`Pace::EVERY`], so a storm of notices (thousands a second
/// under load) costs a hundred reads, not thousands, while the first notice after a quiet
/// spell is read at once.
#[derive(Default)]
pub struct Pace {
    last: Option<tokio::time::Instant>,
}

impl Pace {
    pub const EVERY: Duration = Duration::from_millis(10);

    /// Waits until the next read may start, and counts it as started.
    pub async fn turn(&mut self) {
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + Pace::EVERY).await;
        }
        self.last = Some(tokio::time::Instant::now());
    }
}

/// What a subscription heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    Changed(Change),
    /// The subscriber fell behind and notices were dropped: re-read to be safe.
    Missed,
    /// The bus closed (shutdown).
    Closed,
}

/// One subscriber's end of the bus: a bounded queue of notices. A subscriber that does not
/// keep up loses the oldest notices (and hears [`Wake::Missed`]); publishers never wait.
pub struct Subscription {
    notices: broadcast::Receiver<Change>,
    closed: CancellationToken,
}

impl Subscription {
    /// Made by bus implementations from their local broadcast sender.
    pub fn new(notices: broadcast::Receiver<Change>, closed: CancellationToken) -> Subscription {
        Subscription { notices, closed }
    }

    /// Waits for the next notice. Cancel-safe.
    pub async fn recv(&mut self) -> Wake {
        if self.closed.is_cancelled() {
            return Wake::Closed;
        }
        tokio::select! {
            biased;
            _ = self.closed.cancelled() => Wake::Closed,
            heard = self.notices.recv() => match heard {
                Ok(change) => Wake::Changed(change),
                Err(RecvError::Lagged(_)) => Wake::Missed,
                Err(RecvError::Closed) => Wake::Closed,
            },
        }
    }

    /// Throws away the notices already queued. A read of the store that starts after this
    /// sees every change they announced, since notices are published after the commit.
    pub fn drain(&mut self) {
        loop {
            match self.notices.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return,
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concerns_matches_tenant_and_job() {
        let change = Change::job("t1", "j1");
        assert!(change.concerns("t1", None));
        assert!(change.concerns("t1", Some("j1")));
        assert!(!change.concerns("t1", Some("j2")));
        assert!(!change.concerns("t2", None));
        assert!(Change::anyone().concerns("t2", Some("j9")));
        let tenant_only = Change {
            tenant_id: Some("t1".into()),
            job_id: None,
            open: false,
        };
        assert!(tenant_only.concerns("t1", Some("j2")));
        assert!(!tenant_only.concerns("t2", Some("j2")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pace_reads_at_once_after_quiet_and_spaces_a_storm() {
        let mut pace = Pace::default();
        let start = tokio::time::Instant::now();
        pace.turn().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        pace.turn().await;
        assert_eq!(start.elapsed(), Pace::EVERY);
        tokio::time::sleep(Pace::EVERY * 5).await;
        let quiet = tokio::time::Instant::now();
        pace.turn().await;
        assert_eq!(quiet.elapsed(), Duration::ZERO);
    }
}
