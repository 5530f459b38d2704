//! The proxy's notifyHook calls, as the route at `server.public_url` hears them and the
//! provider's polls wait on them: a board of this process keyed by the proxy's task id. A
//! call wakes the poll of its task at once (which then fetches the task: the call's body is
//! only a hint); a call that never comes, arrives before the poll is watching, or reaches
//! another process costs only the wait until the next `poll_ms` fetch, the safety net.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::Notify;

static BOARD: LazyLock<Mutex<HashMap<String, Arc<Notify>>>> = LazyLock::new(Default::default);

fn board() -> std::sync::MutexGuard<'static, HashMap<String, Arc<Notify>>> {
    BOARD.lock().unwrap_or_else(|p| p.into_inner())
}

/// A call for the proxy's task `task_id` arrived: wakes its poll, if one is watching.
pub fn arrived(task_id: &str) -> bool {
    match board().get(task_id) {
        Some(notify) => {
            // A permit is kept if the poll is between waits, so no call is lost.
            notify.notify_one();
            true
        }
        None => false,
    }
}

/// A poll watching its task's calls until dropped.
pub struct Watch {
    task_id: String,
    notify: Arc<Notify>,
}

impl Watch {
    pub fn new(task_id: &str) -> Watch {
        let notify = Arc::new(Notify::new());
        board().insert(task_id.to_owned(), notify.clone());
        Watch {
            task_id: task_id.to_owned(),
            notify,
        }
    }

    /// Waits for the next call.
    pub async fn called(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        board().remove(&self.task_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_wakes_its_watch_even_between_waits() {
        assert!(!arrived("t-none"));
        let watch = Watch::new("t-1");
        assert!(arrived("t-1"));
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.called())
            .await
            .expect("woken");
        drop(watch);
        assert!(!arrived("t-1"));
    }
}
