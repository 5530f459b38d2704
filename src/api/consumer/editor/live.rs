//! `GET /ws/{sessionId}?userId=<id>&token=<jwt>[&lastEventId=<n>]`: the editor's live socket
//! (`editor-api.md` §2.3), its messages exactly, and beyond the origin every change of the
//! session for every device of its user.
//!
//! Authentication: a missing `userId` or `token` closes with 1008 `Missing authentication`
//! (as the origin); then, unlike the origin (which never verified the token), the token must
//! be a valid access token whose user is `userId` (else 1008 `Invalid token`) and the session
//! must be that user's (else 1008 `Session not found`).
//!
//! Server → client: `{"type":"connected","sessionId","userId","timestamp","lastEventId"}`,
//! `{"type":"ping","timestamp"}` every 30 s, `joined_session`/`left_session` answers,
//! `user_typing` from the user's other connections to the session, `{"type":"error","message":
//! "Invalid message format"}` for invalid JSON or a missing payload (unknown types and `pong`
//! are ignored). Added: each change of the session, in order and once, with its `eventId`:
//! `message_created` / `message_updated` (`message`, `null` if since deleted),
//! `message_deleted` (`messageId`), `session_updated` (`session`), `session_deleted` (then a
//! 1000 close), `job_status` (`jobId`, `status`, `errorCode`, `errorMessage`). A device that
//! reconnects with `lastEventId` gets what it missed; without it, it starts now.
//!
//! Differences from the origin, listed: several tabs of one user coexist (the origin's second
//! tab replaced the first); connections are not closed after 5-6 minutes; typing reaches the
//! user's other connections in this process only (as the origin's did), while session changes
//! reach every process through the event bus.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{images_of, message_json, session_json};
use crate::api::events_ws::{close, finish};
use crate::app::App;
use crate::base::clock::{format_millis, now_millis};
use crate::base::image::ImageOwner;
use crate::sessions::feed::SessionFeed;
use crate::store::sessions::{SessionEvent, SessionOwner};
use crate::store::Store;
use crate::uploads::Library;

const PING_EVERY: Duration = Duration::from_secs(30);
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const READ_BUFFER: usize = 1024;
/// A client message larger than this ends the connection.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketQuery {
    user_id: Option<String>,
    token: Option<String>,
    last_event_id: Option<String>,
}

/// A typing notice between the connections of this process.
#[derive(Debug, Clone)]
struct Typing {
    session_id: String,
    user_id: String,
    is_typing: bool,
    from: u64,
}

static TYPING: LazyLock<broadcast::Sender<Typing>> = LazyLock::new(|| broadcast::channel(1024).0);
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// `GET /ws/{sessionId}`: the socket is admitted (or refused) before the upgrade, so the
/// long-lived task of an open socket holds only its [`Connection`] and [`SessionFeed`], never
/// the whole [`App`] nor the sign-in check's future.
pub async fn socket(
    State(app): State<App>,
    Path(session_id): Path<String>,
    query: Result<Query<SocketQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let query = query.map(|q| q.0).unwrap_or_default();
    let admission = admit(&app, session_id, query).await;
    // Clients send small JSON: small buffers keep an idle connection cheap (tungstenite's
    // default is 128 KiB each way).
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| admission.serve(socket))
        .into_response()
}

fn nonempty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// What the socket does once open: run, or close at once with a code and reason.
enum Admission {
    Open(Box<(Connection, SessionFeed)>),
    Refused(u16, &'static str),
}

impl Admission {
    /// Not an `async fn`: that would keep the socket both in its own state and in the
    /// connection's future.
    fn serve(self, socket: WebSocket) -> impl Future<Output = ()> + Send {
        match self {
            Admission::Open(open) => {
                let (connection, feed) = *open;
                Either::Left(connection.run(socket, feed))
            }
            Admission::Refused(code, reason) => {
                Either::Right(Box::pin(close(socket, code, reason)))
            }
        }
    }
}

async fn admit(app: &App, session_id: String, query: SocketQuery) -> Admission {
    let (Some(user_id), Some(token)) = (nonempty(query.user_id), nonempty(query.token)) else {
        return Admission::Refused(CLOSE_POLICY, "Missing authentication");
    };
    let authed = match app.accounts.authenticate(&token).await {
        Ok(authed) if authed.user.id == user_id => authed,
        _ => return Admission::Refused(CLOSE_POLICY, "Invalid token"),
    };
    let owner = SessionOwner::new(authed.user.tenant_id, authed.user.id);
    let last = match app.store.editor_events_last_id(&owner, &session_id).await {
        Ok(Some(last)) => last,
        Ok(None) => return Admission::Refused(CLOSE_POLICY, "Session not found"),
        Err(e) => {
            tracing::warn!(error = %e, "editor socket: session not read");
            return Admission::Refused(1011, "internal error");
        }
    };
    let after = query
        .last_event_id
        .and_then(|id| id.trim().parse::<i64>().ok())
        .map_or(last, |id| id.clamp(0, last));
    let feed = SessionFeed::open(
        app.store.clone(),
        &app.session_hub,
        owner.clone(),
        &session_id,
        after,
    );
    let connection = Connection {
        store: app.store.clone(),
        images: app.images.clone(),
        owner,
        session_id,
        id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
    };
    Admission::Open(Box::new((connection, feed)))
}

/// An open socket's own state: what rendering an event needs, not the whole [`App`].
struct Connection {
    store: Arc<dyn Store>,
    images: Library,
    owner: SessionOwner,
    session_id: String,
    id: u64,
}

fn now() -> String {
    format_millis(now_millis())
}

async fn send(socket: &mut WebSocket, body: Value) -> bool {
    socket.send(Message::text(body.to_string())).await.is_ok()
}

/// What woke an open socket.
enum Wake {
    Event(Option<SessionEvent>),
    Typing(Result<Typing, broadcast::error::RecvError>),
    Ping,
    Incoming(Option<Result<Message, axum::Error>>),
}

/// What the socket does after a wake-up.
enum Step {
    Continue,
    Stop,
    Close(u16, &'static str),
    Finish,
}

impl Connection {
    async fn run(self, mut socket: WebSocket, mut feed: SessionFeed) {
        let mut typing = TYPING.subscribe();
        let connected = json!({
            "type": "connected",
            "sessionId": self.session_id,
            "userId": self.owner.user_id,
            "timestamp": now(),
            "lastEventId": feed.last_id(),
        });
        if !send(&mut socket, connected).await {
            return;
        }
        let start = tokio::time::Instant::now() + PING_EVERY;
        let mut ping = tokio::time::interval_at(start, PING_EVERY);
        loop {
            let wake = tokio::select! {
                event = feed.next() => Wake::Event(event),
                note = typing.recv() => Wake::Typing(note),
                _ = ping.tick() => Wake::Ping,
                incoming = socket.recv() => Wake::Incoming(incoming),
            };
            // Boxed, as every rare step here: an idle socket's task is only as large as the
            // futures it holds inline while it waits.
            match Box::pin(self.handle(&mut socket, wake)).await {
                Step::Continue => {}
                Step::Stop => return,
                Step::Close(code, reason) => return Box::pin(close(socket, code, reason)).await,
                Step::Finish => return Box::pin(finish(socket)).await,
            }
        }
    }

    async fn handle(&self, socket: &mut WebSocket, wake: Wake) -> Step {
        let reply = match wake {
            Wake::Event(None) => return Step::Close(CLOSE_GOING_AWAY, "server shutting down"),
            Wake::Event(Some(event)) => {
                if !send(socket, self.render(&event).await).await {
                    return Step::Stop;
                }
                if event.kind == "session_deleted" {
                    return Step::Close(CLOSE_NORMAL, "Session deleted");
                }
                None
            }
            Wake::Typing(Ok(note))
                if note.session_id == self.session_id
                    && note.from != self.id
                    && note.user_id == self.owner.user_id =>
            {
                Some(json!({"type": "user_typing", "userId": note.user_id,
                            "isTyping": note.is_typing, "timestamp": now()}))
            }
            Wake::Typing(Err(broadcast::error::RecvError::Closed)) => return Step::Stop,
            Wake::Typing(_) => None,
            Wake::Ping => Some(json!({"type": "ping", "timestamp": now()})),
            Wake::Incoming(Some(Ok(Message::Text(text)))) => self.answer(text.as_str()),
            Wake::Incoming(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => {
                return Step::Finish
            }
            Wake::Incoming(Some(Ok(_))) => None,
        };
        match reply {
            Some(body) => match send(socket, body).await {
                true => Step::Continue,
                false => Step::Stop,
            },
            None => Step::Continue,
        }
    }

    /// The answer to a client message, if it has one.
    fn answer(&self, text: &str) -> Option<Value> {
        let invalid = || Some(json!({"type": "error", "message": "Invalid message format"}));
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            return invalid();
        };
        let kind = message["type"].as_str().unwrap_or_default();
        if kind == "pong" {
            return None;
        }
        let payload = match message.get("payload") {
            Some(payload) if payload.is_object() => payload,
            _ => return invalid(),
        };
        let session = payload["sessionId"].as_str().unwrap_or(&self.session_id);
        match kind {
            "join_session" => Some(json!({"type": "joined_session", "sessionId": session,
                                          "timestamp": now()})),
            "leave_session" => Some(json!({"type": "left_session", "sessionId": session,
                                          "timestamp": now()})),
            "typing" => {
                let _ = TYPING.send(Typing {
                    session_id: session.to_owned(),
                    user_id: self.owner.user_id.clone(),
                    is_typing: payload["isTyping"].as_bool().unwrap_or(false),
                    from: self.id,
                });
                None
            }
            _ => None,
        }
    }

    /// An event as the client sees it.
    async fn render(&self, event: &SessionEvent) -> Value {
        let mut body = json!({
            "type": event.kind,
            "eventId": event.id,
            "sessionId": event.session_id,
            "timestamp": format_millis(event.at),
        });
        let subject = event.subject.as_deref().unwrap_or_default();
        match event.kind.as_str() {
            "message_created" | "message_updated" => {
                body["messageId"] = json!(subject);
                body["message"] = self.message(subject).await;
            }
            "message_deleted" => body["messageId"] = json!(subject),
            "session_updated" => {
                let session = self
                    .store
                    .editor_session_get(&self.owner, &self.session_id)
                    .await;
                body["session"] = match session {
                    Ok(Some(session)) => session_json(&session),
                    _ => Value::Null,
                };
            }
            "job_status" => {
                if let Some(Value::Object(detail)) = &event.detail {
                    for (k, v) in detail {
                        body[k] = v.clone();
                    }
                }
            }
            _ => {}
        }
        body
    }

    /// The message now, with its images; `null` if it is gone.
    async fn message(&self, id: &str) -> Value {
        match self.store.editor_message_get(&self.owner, id).await {
            Ok(Some(message)) => {
                let owner = ImageOwner::user(&self.owner.tenant_id, &self.owner.user_id);
                let mut body = message_json(&message);
                body["images"] =
                    Value::Array(images_of(&self.images, &owner, &message.image_ids).await);
                body
            }
            _ => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F: FnOnce(A, B) -> R, A, B, R>(_: &F) -> usize {
        std::mem::size_of::<R>()
    }

    /// Each open socket's task holds this future for its whole life: the rare steps
    /// (rendering an event, closing) are boxed so they do not weigh on every idle socket.
    #[test]
    fn an_open_socket_task_stays_small() {
        let size = future_size(&Admission::serve);
        assert!(size <= 4096, "an open socket's future is {size} bytes");
    }
}
