//! [`SessionHub`]: one bus subscription per process for every live editor socket, routing each
//! session's notices to that session's sockets only. (A subscription per socket would wake
//! every socket on every notice: 2,000 sockets at 200 messages/s is 400,000 wake-ups a second.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::{EventBus, Wake};

/// The sockets of each session, by bus topic.
#[derive(Default)]
pub struct SessionHub {
    watchers: Mutex<HashMap<String, Vec<Weak<Notify>>>>,
    closed: CancellationToken,
}

impl SessionHub {
    /// The hub of a process, listening on its bus until the bus closes.
    pub fn start(bus: &dyn EventBus) -> Arc<SessionHub> {
        let hub = Arc::new(SessionHub::default());
        let mut notices = bus.subscribe();
        let listening = hub.clone();
        tokio::spawn(async move {
            loop {
                match notices.recv().await {
                    Wake::Changed(change) => match change.job_id.as_deref() {
                        Some(topic) if topic.starts_with("editor:") => listening.wake(topic),
                        Some(_) => {}
                        None => listening.wake_all(),
                    },
                    Wake::Missed => listening.wake_all(),
                    Wake::Closed => {
                        listening.closed.cancel();
                        listening.wake_all();
                        return;
                    }
                }
            }
        });
        hub
    }

    /// A new watcher of `topic`: it is notified (a permit is kept if it is not waiting) on
    /// each notice of the topic. Dropping it unregisters it.
    pub fn watch(&self, topic: &str) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        if let Ok(mut watchers) = self.watchers.lock() {
            let list = watchers.entry(topic.to_owned()).or_default();
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&notify));
        }
        notify
    }

    /// Cancelled when the bus closes (shutdown).
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    fn wake(&self, topic: &str) {
        let Ok(mut watchers) = self.watchers.lock() else {
            return;
        };
        if let Some(list) = watchers.get_mut(topic) {
            list.retain(|w| match w.upgrade() {
                Some(notify) => {
                    notify.notify_one();
                    true
                }
                None => false,
            });
            if list.is_empty() {
                watchers.remove(topic);
            }
        }
    }

    fn wake_all(&self) {
        let Ok(watchers) = self.watchers.lock() else {
            return;
        };
        for notify in watchers.values().flatten().filter_map(Weak::upgrade) {
            notify.notify_one();
        }
    }
}
