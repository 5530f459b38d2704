//! The in-process bus: one `tokio::sync::broadcast` channel per process.

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Change, EventBus, Subscription};

/// Notices queued per subscriber before the oldest are dropped (the subscriber then
/// re-reads the store, so nothing is lost but a few redundant wake-ups).
const CAPACITY: usize = 1024;

/// The bus of one process.
pub struct LocalBus {
    sender: broadcast::Sender<Change>,
    closed: CancellationToken,
}

impl LocalBus {
    pub fn new() -> LocalBus {
        LocalBus::with_capacity(CAPACITY)
    }

    /// A bus whose subscribers hold at most `capacity` notices (tests use tiny ones to lag).
    pub fn with_capacity(capacity: usize) -> LocalBus {
        let (sender, _) = broadcast::channel(capacity.max(1));
        LocalBus {
            sender,
            closed: CancellationToken::new(),
        }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus::new()
    }
}

impl EventBus for LocalBus {
    fn publish(&self, change: Change) {
        // An error only means nobody is subscribed right now.
        let _ = self.sender.send(change);
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.sender.subscribe(), self.closed.clone())
    }

    fn close(&self) {
        self.closed.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Wake;

    #[tokio::test]
    async fn subscribers_hear_notices_and_lag_without_blocking() {
        let bus = LocalBus::with_capacity(2);
        let mut sub = bus.subscribe();
        bus.publish(Change::job("t", "a"));
        assert_eq!(sub.recv().await, Wake::Changed(Change::job("t", "a")));
        // Publishing far past the capacity never waits; the subscriber hears it missed some.
        for i in 0..100 {
            bus.publish(Change::job("t", &i.to_string()));
        }
        assert_eq!(sub.recv().await, Wake::Missed);
        sub.drain();
        bus.close();
        assert_eq!(sub.recv().await, Wake::Closed);
        assert!(bus.subscribe().is_closed());
    }
}
