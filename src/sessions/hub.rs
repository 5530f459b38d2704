//! The editor's live sockets on the process's bus: one [`Topics`] router for every socket,
//! routing each session's notices to that session's sockets only. (A subscription per socket
//! would wake every socket on every notice: 2,000 sockets at 200 messages/s is 400,000
//! wake-ups a second.)

use crate::events::{Change, EventBus, Route, Topics};

/// The session sockets' router of a process, listening on its bus until the bus closes.
pub fn start(bus: &dyn EventBus) -> Topics {
    Topics::start(bus, route)
}

/// A session's notices go to its sockets; job notices concern no socket; a notice that names
/// nothing may concern any.
fn route(change: &Change) -> Route<'_> {
    match change.job_id.as_deref() {
        Some(topic) if topic.starts_with(super::TOPIC_PREFIX) => Route::Topic(topic),
        Some(_) => Route::Nobody,
        None => Route::Everyone,
    }
}
