//! Live job events over WebSocket: `GET /v1/events/ws`.
//!
//! Authentication, in this order: `Authorization: Bearer <key>` or `X-API-Key: <key>`,
//! `?apiKey=<key>`, or, when
//! the upgrade request carries neither (browsers cannot set headers on a WebSocket), a first
//! text message `{"type":"auth","apiKey":"<key>"}` within 10 s. A bad key in the header or
//! query is refused with HTTP 401 before the upgrade; a bad first message closes the socket
//! with code 4401 (4400 for a malformed message, 4404 for a `jobId` that is not the tenant's).
//!
//! Query: `jobId=<id>` follows one job (404 before the upgrade if it is not the tenant's),
//! `lastEventId=<id>` resumes after that event; without it a job stream starts at the job's
//! first event and the tenant stream starts now, exactly as the SSE routes do.
//!
//! Server → client text frames, all JSON with a `type`:
//! - `{"type":"ready","tenantId":...,"jobId":...|null,"lastEventId":N}` once, when the stream
//!   is set up (events after `lastEventId` follow);
//! - `{"type":"job.status",...}` per event, the same JSON as the SSE `data`;
//! - `{"type":"heartbeat","timestamp":...}` every 15 s, beside a ping frame.
//!
//! The server closes with 1000 after a followed job's terminal event, 1001 on shutdown or
//! when the client has not answered for 45 s, 1011 on an internal error. Client messages
//! other than the first-message auth are ignored.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use tokio::time::Instant;

use super::events::{open_feed, query_map, render, resume_cursor};
use super::extract::presented_key;
use crate::app::App;
use crate::base::clock::{format_millis, now_millis};
use crate::error::{ApiError, ErrorCode};
use crate::events::{EventFeed, Wake};
use crate::store::Tenant;

const HEARTBEAT: Duration = Duration::from_secs(15);
/// A client silent (no pong, no message) for this long is gone.
const SILENCE: Duration = Duration::from_secs(45);
const AUTH_WAIT: Duration = Duration::from_secs(10);

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_INTERNAL: u16 = 1011;
const CLOSE_BAD_MESSAGE: u16 = 4400;
const CLOSE_UNAUTHORIZED: u16 = 4401;
const CLOSE_JOB_NOT_FOUND: u16 = 4404;

/// What the stream follows, and from where.
struct Target {
    job_id: Option<String>,
    cursor: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthMessage {
    r#type: String,
    api_key: String,
}

async fn authenticate(app: &App, key: &str) -> Result<Option<Tenant>, ApiError> {
    Ok(app.auth.authenticate(key).await?)
}

/// `GET /v1/events/ws`
pub async fn socket(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let query = query_map(query)?;
    let presented = match presented_key(&headers)? {
        Some(key) => Some(key),
        None => query
            .get("apiKey")
            .map(String::as_str)
            .filter(|k| !k.is_empty()),
    };
    let tenant = match presented {
        Some(key) => Some(
            authenticate(&app, key)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidApiKey, "invalid API key"))?,
        ),
        None => None,
    };
    let target = Target {
        job_id: query.get("jobId").filter(|j| !j.is_empty()).cloned(),
        cursor: resume_cursor(&headers, &query)?,
    };
    let upgrade = upgrade.map_err(|e| {
        ApiError::invalid(format!("this route needs a WebSocket upgrade request: {e}"))
    })?;
    match tenant {
        Some(tenant) => {
            let feed = open_feed(&app, &tenant.id, target.job_id.as_deref(), target.cursor).await?;
            Ok(upgrade.on_upgrade(move |socket| async move {
                run(app, socket, tenant.id, target.job_id, feed).await
            }))
        }
        None => Ok(upgrade.on_upgrade(move |socket| first_message_auth(app, socket, target))),
    }
}

/// Waits for `{"type":"auth","apiKey":...}`, then runs the stream.
async fn first_message_auth(app: App, mut socket: WebSocket, target: Target) {
    let mut shutdown = app.events.subscribe();
    let first = tokio::select! {
        first = tokio::time::timeout(AUTH_WAIT, first_text(&mut socket)) => first,
        _ = closed(&mut shutdown) => {
            return close(socket, CLOSE_GOING_AWAY, "server shutting down").await;
        }
    };
    let text = match first {
        Ok(Some(text)) => text,
        Ok(None) => return,
        Err(_) => {
            return close(socket, CLOSE_UNAUTHORIZED, "no auth message").await;
        }
    };
    let auth = match serde_json::from_str::<AuthMessage>(&text) {
        Ok(auth) if auth.r#type == "auth" => auth,
        _ => {
            let reason = r#"expected {"type":"auth","apiKey":"..."} first"#;
            return close(socket, CLOSE_BAD_MESSAGE, reason).await;
        }
    };
    let tenant = match authenticate(&app, &auth.api_key).await {
        Ok(Some(tenant)) => tenant,
        Ok(None) => return close(socket, CLOSE_UNAUTHORIZED, "invalid API key").await,
        Err(_) => return close(socket, CLOSE_INTERNAL, "internal error").await,
    };
    match open_feed(&app, &tenant.id, target.job_id.as_deref(), target.cursor).await {
        Ok(feed) => run(app, socket, tenant.id, target.job_id, feed).await,
        Err(e) if e.code == ErrorCode::JobNotFound => {
            close(socket, CLOSE_JOB_NOT_FOUND, "job not found").await
        }
        Err(_) => close(socket, CLOSE_INTERNAL, "internal error").await,
    }
}

/// The first text message; `None` if the client went away first.
async fn first_text(socket: &mut WebSocket) -> Option<String> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(text)) => return Some(text.as_str().to_owned()),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(_) | Err(_) => return None,
        }
    }
}

/// Returns once the bus closes (shutdown).
async fn closed(subscription: &mut crate::events::Subscription) {
    while subscription.recv().await != Wake::Closed {}
}

/// Streams the feed's events as text frames beside heartbeats, until the feed ends or the
/// client goes away.
async fn run(
    app: App,
    mut socket: WebSocket,
    tenant_id: String,
    job_id: Option<String>,
    mut feed: EventFeed,
) {
    let ready = serde_json::json!({
        "type": "ready",
        "tenantId": tenant_id,
        "jobId": job_id,
        "lastEventId": feed.last_id(),
    });
    if socket.send(Message::text(ready.to_string())).await.is_err() {
        return;
    }
    let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            event = feed.next() => {
                let Some(event) = event else {
                    let (code, reason) = if feed.shutting_down() {
                        (CLOSE_GOING_AWAY, "server shutting down")
                    } else {
                        (CLOSE_NORMAL, "job finished")
                    };
                    return close(socket, code, reason).await;
                };
                let text = match render(&app, &event).await {
                    Ok(text) => text,
                    Err(e) => {
                        tracing::warn!(event = event.id, error = %e.message, "event socket ended early");
                        return close(socket, CLOSE_INTERNAL, "internal error").await;
                    }
                };
                if socket.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > SILENCE {
                    return close(socket, CLOSE_GOING_AWAY, "no answer to pings").await;
                }
                let beat = serde_json::json!({
                    "type": "heartbeat",
                    "timestamp": format_millis(now_millis()),
                });
                if socket.send(Message::Ping(Default::default())).await.is_err()
                    || socket.send(Message::text(beat.to_string())).await.is_err()
                {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return finish(socket).await,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
        }
    }
}

/// Sends a close frame and waits (briefly) for the client's.
pub(crate) async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_ok() {
        finish(socket).await;
    }
}

/// Reads until the connection is closed, so the close handshake completes.
pub(crate) async fn finish(mut socket: WebSocket) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
