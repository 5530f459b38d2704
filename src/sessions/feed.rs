//! [`SessionFeed`]: one socket's ordered walk over a session's event log, woken by the bus
//! (the session's notices, from any process when the bus is Redis) and by a periodic re-read
//! (five times [`SAFETY_POLL`]: thousands of idle sockets must not each read the store every
//! second), so a lost notice costs a delay, never an event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::topic;
use crate::events::{Topics, Watched, SAFETY_POLL};
use crate::store::sessions::{SessionEvent, SessionOwner};
use crate::store::Store;

/// Events read at once.
const PAGE: u32 = 200;

pub struct SessionFeed {
    store: Arc<dyn Store>,
    notices: Watched,
    closed: CancellationToken,
    owner: SessionOwner,
    session_id: String,
    last_id: i64,
    pending: VecDeque<SessionEvent>,
    stale: bool,
    poll: Duration,
}

impl SessionFeed {
    /// The session's events after `after_id` (watched before the first read, so nothing
    /// committed after it is missed).
    pub fn open(
        store: Arc<dyn Store>,
        hub: &Topics,
        owner: SessionOwner,
        session_id: &str,
        after_id: i64,
    ) -> SessionFeed {
        SessionFeed {
            store,
            notices: hub.watch(&topic(session_id)),
            closed: hub.closed(),
            owner,
            session_id: session_id.to_owned(),
            last_id: after_id.max(0),
            pending: VecDeque::new(),
            stale: true,
            poll: SAFETY_POLL * 5,
        }
    }

    /// The id of the last event delivered (where a device resumes).
    pub fn last_id(&self) -> i64 {
        self.last_id
    }

    /// The next event, in order, once; `None` when the bus closes (shutdown). Cancel-safe.
    pub async fn next(&mut self) -> Option<SessionEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last_id = event.id;
                return Some(event);
            }
            if self.closed.is_cancelled() {
                return None;
            }
            if self.stale {
                match self
                    .store
                    .editor_events_after(&self.owner, &self.session_id, self.last_id, PAGE)
                    .await
                {
                    Ok(events) => {
                        // A full page may have more behind it.
                        self.stale = events.len() == PAGE as usize;
                        self.pending.extend(events);
                        continue;
                    }
                    Err(e) => tracing::warn!(error = %e, "session events not read; retrying"),
                }
            }
            tokio::select! {
                _ = self.closed.cancelled() => return None,
                _ = self.notices.notified() => self.stale = true,
                _ = tokio::time::sleep(self.poll) => self.stale = true,
            }
        }
    }
}
