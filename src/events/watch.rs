//! [`JobWatch`]: one bus subscription per process for every caller waiting on a job (the
//! OpenAI facade's synchronous calls), handing each job's notices to its own waiters only.
//! A subscription per waiter would wake every waiter on every notice: 64 calls in flight at
//! 1,000 jobs/s (three notices each) is 192,000 wake-ups a second, each followed by a check
//! that the notice was someone else's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{EventBus, Wake};

/// Waiters by job id.
type Waiters = Mutex<HashMap<Arc<str>, Vec<Arc<Notify>>>>;

/// The process's waiters on single jobs, listening on its bus until the bus closes.
#[derive(Clone)]
pub struct JobWatch {
    waiters: Arc<Waiters>,
}

/// One waiter's place: [`Watched::notified`] wakes on each notice of its job (a notice heard
/// while the waiter was busy is kept, so none falls between a read and the next wait), on
/// a lag of the bus and when the bus closes. Dropping it stops the watching.
pub struct Watched {
    job_id: Arc<str>,
    notify: Arc<Notify>,
    waiters: Arc<Waiters>,
}

impl JobWatch {
    /// Starts routing `bus`'s notices (needs a Tokio runtime).
    pub fn start(bus: &dyn EventBus) -> JobWatch {
        let watch = JobWatch {
            waiters: Arc::new(Mutex::new(HashMap::new())),
        };
        let mut notices = bus.subscribe();
        let waiters = watch.waiters.clone();
        tokio::spawn(async move {
            loop {
                match notices.recv().await {
                    // Waiters wait for an end: a job known to be open has none to show.
                    Wake::Changed(change) if change.open => {}
                    Wake::Changed(change) => wake(&waiters, change.job_id.as_deref()),
                    Wake::Missed => wake(&waiters, None),
                    // Shutdown: waiters go on with their own periodic re-read.
                    Wake::Closed => return wake(&waiters, None),
                }
            }
        });
        watch
    }

    /// Watches `job_id` from now on: every notice of it published after this call is heard.
    pub fn watch(&self, job_id: &str) -> Watched {
        let job_id: Arc<str> = job_id.into();
        let notify = Arc::new(Notify::new());
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters
                .entry(job_id.clone())
                .or_default()
                .push(notify.clone());
        }
        Watched {
            job_id,
            notify,
            waiters: self.waiters.clone(),
        }
    }

    /// Jobs watched now (tests).
    pub fn watched(&self) -> usize {
        self.waiters.lock().map(|w| w.len()).unwrap_or(0)
    }
}

/// Wakes the waiters of `job_id`, or every waiter (`None`: a notice that names no job, a lag).
fn wake(waiters: &Waiters, job_id: Option<&str>) {
    let Ok(waiters) = waiters.lock() else {
        return;
    };
    let woken: Box<dyn Iterator<Item = &Arc<Notify>>> = match job_id {
        Some(job_id) => Box::new(waiters.get(job_id).into_iter().flatten()),
        None => Box::new(waiters.values().flatten()),
    };
    woken.for_each(|notify| {
        notify.notify_one();
    });
}

impl Watched {
    /// The job it watches.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Waits for the next notice of the job (at once if one came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let Ok(mut waiters) = self.waiters.lock() else {
            return;
        };
        if let Some(list) = waiters.get_mut(&self.job_id) {
            list.retain(|h| !Arc::ptr_eq(h, &self.notify));
            if list.is_empty() {
                waiters.remove(&self.job_id);
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
        let watch = JobWatch::start(&bus);
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
        let watch = JobWatch::start(&bus);
        let watched = watch.watch("job_1");
        bus.close();
        assert!(heard(&watched).await);
    }
}
