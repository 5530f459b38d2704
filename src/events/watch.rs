//! [`Topics`]: one bus subscription per process for every caller waiting on one topic (a
//! job, for the OpenAI facade's synchronous calls; an editor session, for its live sockets),
//! handing each topic's notices to its own waiters only. A subscription per waiter would wake
//! every waiter on every notice: 64 calls in flight at 1,000 jobs/s (three notices each) is
//! 192,000 wake-ups a second, each followed by a check that the notice was someone else's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Change, EventBus, Wake};

/// Waiters by topic.
type Waiters = Mutex<HashMap<Arc<str>, Vec<Arc<Notify>>>>;

/// Whom a notice wakes.
pub enum Route<'a> {
    Nobody,
    Topic(&'a str),
    Everyone,
}

/// What a router makes of a notice.
pub type RouteFn = fn(&Change) -> Route<'_>;

/// The process's waiters on topics, listening on its bus until the bus closes.
#[derive(Clone)]
pub struct Topics {
    waiters: Arc<Waiters>,
    closed: CancellationToken,
}

/// The OpenAI facade's waiters, on single jobs. Waiters wait for an end: a job known to be
/// open has none to show; a notice that names no job may concern any.
pub type JobWatch = Topics;

/// One waiter's place: [`Watched::notified`] wakes on each notice of its topic (a notice
/// heard while the waiter was busy is kept, so none falls between a read and the next wait),
/// on a lag of the bus and when the bus closes. Dropping it stops the watching.
pub struct Watched {
    topic: Arc<str>,
    notify: Arc<Notify>,
    waiters: Arc<Waiters>,
}

impl Topics {
    /// Starts routing `bus`'s notices by `route` (needs a Tokio runtime).
    pub fn start(bus: &dyn EventBus, route: RouteFn) -> Topics {
        let topics = Topics {
            waiters: Arc::new(Mutex::new(HashMap::new())),
            closed: CancellationToken::new(),
        };
        let mut notices = bus.subscribe();
        let (waiters, closed) = (topics.waiters.clone(), topics.closed.clone());
        tokio::spawn(async move {
            loop {
                match notices.recv().await {
                    Wake::Changed(change) => wake(&waiters, route(&change)),
                    Wake::Missed => wake(&waiters, Route::Everyone),
                    // Shutdown: waiters go on with their own periodic re-read, or stop.
                    Wake::Closed => {
                        closed.cancel();
                        return wake(&waiters, Route::Everyone);
                    }
                }
            }
        });
        topics
    }

    /// The waiters on single jobs (see [`JobWatch`]).
    pub fn jobs(bus: &dyn EventBus) -> JobWatch {
        Topics::start(bus, |change| match change.job_id.as_deref() {
            _ if change.open => Route::Nobody,
            Some(job_id) => Route::Topic(job_id),
            None => Route::Everyone,
        })
    }

    /// Watches `topic` from now on: every notice of it published after this call is heard.
    pub fn watch(&self, topic: &str) -> Watched {
        let topic: Arc<str> = topic.into();
        let notify = Arc::new(Notify::new());
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters
                .entry(topic.clone())
                .or_default()
                .push(notify.clone());
        }
        Watched {
            topic,
            notify,
            waiters: self.waiters.clone(),
        }
    }

    /// Cancelled when the bus closes (shutdown).
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Topics watched now (tests).
    pub fn watched(&self) -> usize {
        self.waiters.lock().map(|w| w.len()).unwrap_or(0)
    }
}

fn wake(waiters: &Waiters, route: Route<'_>) {
    let Ok(waiters) = waiters.lock() else {
        return;
    };
    let woken: Box<dyn Iterator<Item = &Arc<Notify>>> = match route {
        Route::Nobody => return,
        Route::Topic(topic) => Box::new(waiters.get(topic).into_iter().flatten()),
        Route::Everyone => Box::new(waiters.values().flatten()),
    };
    woken.for_each(|notify| {
        notify.notify_one();
    });
}

impl Watched {
    /// The topic it watches (a job's id).
    pub fn job_id(&self) -> &str {
        &self.topic
    }

    /// Waits for the next notice of the topic (at once if one came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let Ok(mut waiters) = self.waiters.lock() else {
            return;
        };
        if let Some(list) = waiters.get_mut(&self.topic) {
            list.retain(|h| !Arc::ptr_eq(h, &self.notify));
            if list.is_empty() {
                waiters.remove(&self.topic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Change, LocalBus};
    use futures::FutureExt;

    /// Whether a notice is waiting for `watched`, once the routing task has run (the test
    /// runtime has one thread: a yield lets it take what was published).
    async fn heard(watched: &Watched) -> bool {
        tokio::task::yield_now().await;
        watched.notified().now_or_never().is_some()
    }

    #[tokio::test]
    async fn a_waiter_hears_its_job_only_and_leaves_no_entry() {
        let bus = LocalBus::new();
        let watch = Topics::jobs(&bus);
        let mine = watch.watch("job_1");
        let twin = watch.watch("job_1");
        let other = watch.watch("job_2");
        bus.publish(Change::job("t", "job_1"));
        assert!(heard(&mine).await);
        assert!(heard(&twin).await);
        assert!(!heard(&other).await);
        // Heard once per notice.
        assert!(!heard(&mine).await);
        // A notice of a job known to be still open wakes no one.
        bus.publish(Change::job_open("t", "job_1"));
        assert!(!heard(&mine).await);
        // A notice that names no job wakes everyone.
        bus.publish(Change::anyone());
        assert!(heard(&other).await);
        drop((mine, twin, other));
        assert_eq!(watch.watched(), 0);
    }

    #[tokio::test]
    async fn closing_the_bus_wakes_every_waiter() {
        let bus = LocalBus::new();
        let watch = Topics::jobs(&bus);
        let watched = watch.watch("job_1");
        let closed = watch.closed();
        bus.close();
        assert!(heard(&watched).await);
        assert!(closed.is_cancelled());
    }
}
