//! [`EventFeed`]: one subscriber's ordered, gap-free walk over the `job_events` table, woken
//! by the bus and by a periodic re-read.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{EventBus, Subscription, Wake, SAFETY_POLL};
use crate::base::job::JobEvent;
use crate::store::Store;

/// Events read from the store at once.
const PAGE: u32 = 500;

/// A cursor over one tenant's events (or one job's), from an event id on. It delivers every
/// event with a larger id exactly once, in id order, then waits for more. A job feed ends
/// after the job's terminal event; every feed ends when the bus closes.
pub struct EventFeed {
    store: Arc<dyn Store>,
    subscription: Subscription,
    tenant_id: String,
    job_id: Option<String>,
    /// The id of the last event delivered.
    last_id: i64,
    /// Read but not yet delivered, in id order.
    pending: VecDeque<JobEvent>,
    /// The store may hold events after `last_id` that are not in `pending`.
    stale: bool,
    /// The followed job had ended when the feed opened: end once caught up.
    job_was_terminal: bool,
    ended: bool,
    poll: Duration,
    next_poll: Instant,
}

impl EventFeed {
    /// The events of `job_id` (a job of `tenant_id`) after `after_id`. `job_is_terminal`: the
    /// job had already ended when the caller read it, so the feed ends once caught up even if
    /// `after_id` is past the terminal event.
    pub fn job(
        store: Arc<dyn Store>,
        bus: &dyn EventBus,
        tenant_id: &str,
        job_id: &str,
        after_id: i64,
        job_is_terminal: bool,
    ) -> EventFeed {
        let mut feed = EventFeed::new(store, bus, tenant_id, Some(job_id), after_id);
        feed.job_was_terminal = job_is_terminal;
        feed
    }

    /// All events of `tenant_id` after `after_id`.
    pub fn tenant(
        store: Arc<dyn Store>,
        bus: &dyn EventBus,
        tenant_id: &str,
        after_id: i64,
    ) -> EventFeed {
        EventFeed::new(store, bus, tenant_id, None, after_id)
    }

    fn new(
        store: Arc<dyn Store>,
        bus: &dyn EventBus,
        tenant_id: &str,
        job_id: Option<&str>,
        after_id: i64,
    ) -> EventFeed {
        // Subscribed before the first read, so no notice after it can be missed.
        let subscription = bus.subscribe();
        EventFeed {
            store,
            subscription,
            tenant_id: tenant_id.to_owned(),
            job_id: job_id.map(str::to_owned),
            last_id: after_id.max(0),
            pending: VecDeque::new(),
            stale: true,
            job_was_terminal: false,
            ended: false,
            poll: SAFETY_POLL,
            next_poll: Instant::now(),
        }
    }

    /// Changes the periodic re-read interval (default [`SAFETY_POLL`]).
    pub fn with_poll(mut self, poll: Duration) -> EventFeed {
        self.poll = poll;
        self
    }

    /// The id of the last event delivered (the resume point).
    pub fn last_id(&self) -> i64 {
        self.last_id
    }

    /// Whether the feed ended because the bus closed (shutdown), not because its job ended.
    pub fn shutting_down(&self) -> bool {
        self.subscription.is_closed()
    }

    /// The next event, or `None` when the feed has ended. Store errors are logged and the
    /// read retried after the poll interval; the position is never lost. Cancel-safe: a
    /// dropped call loses nothing, the next call carries on.
    pub async fn next(&mut self) -> Option<JobEvent> {
        loop {
            if self.subscription.is_closed() {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                self.last_id = event.id;
                if self.job_id.is_some() && event.status.is_terminal() {
                    // Nothing follows a terminal event.
                    self.ended = true;
                    self.pending.clear();
                }
                return Some(event);
            }
            if self.ended {
                return None;
            }
            if self.stale {
                self.read().await;
                continue;
            }
            self.wait().await;
        }
    }

    /// Reads the next page after `last_id` into `pending`.
    async fn read(&mut self) {
        // Every notice queued so far announced a change this read will see.
        self.subscription.drain();
        self.next_poll = Instant::now() + self.poll;
        let read = self
            .store
            .job_events_after(&self.tenant_id, self.job_id.as_deref(), self.last_id, PAGE)
            .await;
        match read {
            Ok(events) => {
                // A full page may have more behind it.
                self.stale = events.len() as u32 >= PAGE;
                if events.is_empty() && self.job_was_terminal {
                    self.ended = true;
                }
                self.pending.extend(events);
            }
            Err(e) => {
                tracing::warn!(tenant = %self.tenant_id, error = %e, "event feed read failed; retrying");
                self.stale = false;
                self.wait().await;
                self.stale = true;
            }
        }
    }

    /// Waits for a notice that concerns this feed, or the periodic re-read.
    async fn wait(&mut self) {
        loop {
            let heard = tokio::select! {
                heard = self.subscription.recv() => heard,
                _ = tokio::time::sleep_until(self.next_poll) => Wake::Missed,
            };
            match heard {
                Wake::Changed(change) => {
                    if change.concerns(&self.tenant_id, self.job_id.as_deref()) {
                        self.stale = true;
                        return;
                    }
                }
                Wake::Missed => {
                    self.stale = true;
                    return;
                }
                Wake::Closed => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::now_millis;
    use crate::base::job::Mode;
    use crate::base::job::{Finish, JobParams, JobStatus, NewJob, SubmitOutcome};
    use crate::events::{Change, LocalBus};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{NewApiKey, NewTenant};

    const WAIT: Duration = Duration::from_secs(10);

    struct Fixture {
        store: Arc<dyn Store>,
        _dir: tempfile::TempDir,
    }

    async fn fixture(tenants: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("e.db")).expect("open"));
        for (i, t) in tenants.iter().enumerate() {
            store
                .tenant_create(
                    NewTenant {
                        id: (*t).into(),
                        name: (*t).into(),
                        rpm_limit: 1000,
                        concurrency_limit: 1000,
                        burst: None,
                    },
                    NewApiKey {
                        id: format!("key{i}"),
                        key_hash: [i as u8; 32],
                        prefix: "x".into(),
                    },
                )
                .await
                .expect("tenant");
        }
        Fixture { store, _dir: dir }
    }

    async fn submit(store: &dyn Store, tenant: &str) -> String {
        let job = NewJob {
            id: crate::base::job::new_job_id(),
            tenant_id: tenant.into(),
            prompt: "p".into(),
            mode: Mode::Draft,
            input_image_url: None,
            params: JobParams::default(),
            provider: "local".into(),
            max_attempts: 3,
            created_at: now_millis(),
            cancel_at: None,
            deadline_at: now_millis() + 3_600_000,
            idempotency: None,
            webhook_url: None,
            charge: None,
            follow_up: None,
        };
        match store.job_submit(job).await.expect("submit") {
            SubmitOutcome::Created { job_id } => job_id,
            other => panic!("{other:?}"),
        }
    }

    async fn next(feed: &mut EventFeed) -> Option<JobEvent> {
        tokio::time::timeout(WAIT, feed.next())
            .await
            .expect("feed stalled")
    }

    #[tokio::test]
    async fn a_lagging_subscriber_still_gets_every_event_once_in_order() {
        let f = fixture(&["t1", "t2"]).await;
        // A bus that holds two notices: the feed will lag far behind.
        let bus = LocalBus::with_capacity(2);
        // No periodic re-read: only notices (and lag) can wake it.
        let mut feed =
            EventFeed::tenant(f.store.clone(), &bus, "t1", 0).with_poll(Duration::from_secs(3600));
        let mut expected = Vec::new();
        for _ in 0..60 {
            let id = submit(f.store.as_ref(), "t1").await;
            bus.publish(Change::job("t1", &id));
            expected.push(id);
            let other = submit(f.store.as_ref(), "t2").await;
            bus.publish(Change::job("t2", &other));
        }
        let mut seen = Vec::new();
        let mut last = 0;
        while seen.len() < expected.len() {
            let event = next(&mut feed).await.expect("event");
            assert!(event.id > last, "ids must grow: {} after {last}", event.id);
            assert_eq!(event.tenant_id, "t1");
            last = event.id;
            seen.push(event.job_id);
        }
        assert_eq!(seen, expected);
        // A later change still wakes it, without any periodic re-read.
        let late = submit(f.store.as_ref(), "t1").await;
        bus.publish(Change::job("t1", &late));
        assert_eq!(next(&mut feed).await.expect("late").job_id, late);
    }

    #[tokio::test]
    async fn the_periodic_reread_finds_changes_nobody_announced() {
        let f = fixture(&["t1"]).await;
        let bus = LocalBus::new();
        let mut feed =
            EventFeed::tenant(f.store.clone(), &bus, "t1", 0).with_poll(Duration::from_millis(20));
        let id = submit(f.store.as_ref(), "t1").await;
        assert_eq!(next(&mut feed).await.expect("event").job_id, id);
    }

    #[tokio::test]
    async fn a_job_feed_ends_after_the_terminal_event_and_resumes_past_it() {
        let f = fixture(&["t1"]).await;
        let bus = LocalBus::new();
        let id = submit(f.store.as_ref(), "t1").await;
        let claimed = f
            .store
            .job_claim("w", 1, Duration::from_secs(60))
            .await
            .expect("claim")
            .remove(0);
        f.store
            .job_finish(
                &id,
                claimed.fence,
                Finish::Failed {
                    error_code: "X".into(),
                    error_message: "x".into(),
                },
            )
            .await
            .expect("finish");
        let mut feed = EventFeed::job(f.store.clone(), &bus, "t1", &id, 0, true);
        let mut statuses = Vec::new();
        while let Some(event) = next(&mut feed).await {
            statuses.push(event.status);
        }
        assert_eq!(
            statuses,
            [JobStatus::Queued, JobStatus::Running, JobStatus::Failed]
        );
        // Resuming after the terminal event ends at once.
        let mut resumed = EventFeed::job(f.store.clone(), &bus, "t1", &id, feed.last_id(), true);
        assert_eq!(next(&mut resumed).await, None);
        assert!(!resumed.shutting_down());
    }

    #[tokio::test]
    async fn closing_the_bus_ends_waiting_feeds() {
        let f = fixture(&["t1"]).await;
        let bus = Arc::new(LocalBus::new());
        let mut feed = EventFeed::tenant(f.store.clone(), bus.as_ref(), "t1", 0);
        let closer = bus.clone();
        tokio::spawn(async move { closer.close() });
        assert_eq!(next(&mut feed).await, None);
        assert!(feed.shutting_down());
    }
}
