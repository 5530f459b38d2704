//! Live job events as server-sent events: `GET /v1/jobs/{jobId}/events` (one job) and
//! `GET /v1/events` (the tenant's whole stream), plus what the WebSocket route shares with
//! them: the resume cursor, where a stream starts, and the event JSON.
//!
//! Each SSE message is
//! ```text
//! id: 42
//! event: job.status
//! data: {"type":"job.status","eventId":42,"jobId":"...","tenantId":"...","status":"SUCCEEDED",
//!        "attempt":1,"errorCode":null,"errorMessage":null,"timestamp":"2026-01-26T09:36:16.288Z",
//!        "resultUrls":["..."]}
//! ```
//! (`data` is one line; `resultUrls` only on SUCCEEDED, signed like `GET /v1/jobs/{id}`).
//! A provider that reports progress (midjourney-proxy) adds RUNNING events with
//! `"progress": 0-99`, one per rise, between the attempt's RUNNING and its end.
//! Every message has the event name `job.status`; the status is in the data. Keep-alive
//! comments (`:`) every 15 s.
//!
//! Resume: `Last-Event-ID: <id>` (what `EventSource` sends on reconnect) or
//! `?lastEventId=<id>` replays every event after that id, in order, then goes live. Without
//! one, a job stream starts at the job's first event (the full history) and the tenant
//! stream starts now (after the tenant's newest event). A job stream closes after the job's
//! terminal event (SUCCEEDED, FAILED or CANCELED); every stream closes on server shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::extract::{AuthTenant, JobId};
use crate::app::App;
use crate::base::clock::format_millis;
use crate::base::job::{JobEvent, JobStatus};
use crate::error::ApiError;
use crate::events::EventFeed;

/// The SSE event name and the `type` of the event JSON.
pub(super) const EVENT_TYPE: &str = "job.status";
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The JSON of one event, the same in SSE `data` and WebSocket text frames.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView<'a> {
    r#type: &'static str,
    event_id: i64,
    job_id: &'a str,
    tenant_id: &'a str,
    status: JobStatus,
    attempt: u32,
    error_code: Option<&'a str>,
    error_message: Option<&'a str>,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_urls: Option<Vec<String>>,
    /// A RUNNING event that reports progress (0-99) rather than a status change.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<u8>,
}

/// The event as JSON text; a SUCCEEDED event carries the job's signed result links.
pub(super) async fn render(app: &App, event: &JobEvent) -> Result<String, ApiError> {
    let result_urls = if event.status == JobStatus::Succeeded {
        let job = app
            .store
            .job_get(&event.tenant_id, &event.job_id)
            .await?
            .ok_or_else(ApiError::job_not_found)?;
        Some(super::jobs::result_urls(app, &job).await)
    } else {
        None
    };
    let view = EventView {
        r#type: EVENT_TYPE,
        event_id: event.id,
        job_id: &event.job_id,
        tenant_id: &event.tenant_id,
        status: event.status,
        attempt: event.attempt,
        error_code: event.error_code.as_deref(),
        error_message: event.error_message.as_deref(),
        timestamp: format_millis(event.at),
        result_urls,
        progress: event.progress,
    };
    serde_json::to_string(&view).map_err(|e| {
        tracing::error!(error = %e, "event does not serialise");
        ApiError::new(crate::error::ErrorCode::UnknownError, "internal error")
    })
}

/// The query string as a map, or a contract 400.
pub(super) fn query_map(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))
}

/// The resume cursor: the `Last-Event-ID` header, else `?lastEventId=`. Empty means none.
pub(super) fn resume_cursor(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Option<i64>, ApiError> {
    let header = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID must be an event id"))?,
        ),
        None => None,
    };
    let raw = header
        .filter(|v| !v.trim().is_empty())
        .or_else(|| query.get("lastEventId").map(String::as_str))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match raw {
        None => Ok(None),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|id| *id >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Last-Event-ID / lastEventId must be a non-negative integer event id, not '{raw}'"
                ))
            }),
    }
}

/// A feed over one job of the tenant (404 if it is not theirs) or over the tenant's stream.
pub(super) async fn open_feed(
    app: &App,
    tenant_id: &str,
    job_id: Option<&str>,
    cursor: Option<i64>,
) -> Result<EventFeed, ApiError> {
    let store = app.store.clone();
    match job_id {
        Some(job_id) => {
            let job = app
                .store
                .job_get(tenant_id, job_id)
                .await?
                .ok_or_else(ApiError::job_not_found)?;
            Ok(EventFeed::job(
                store,
                app.events.as_ref(),
                tenant_id,
                job_id,
                cursor.unwrap_or(0),
                job.status.is_terminal(),
            ))
        }
        None => {
            let after = match cursor {
                Some(cursor) => cursor,
                None => app.store.job_events_last_id(tenant_id).await?,
            };
            Ok(EventFeed::tenant(
                store,
                app.events.as_ref(),
                tenant_id,
                after,
            ))
        }
    }
}

/// `GET /v1/jobs/{jobId}/events`
pub async fn job_stream(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    JobId(job_id): JobId,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let cursor = resume_cursor(&headers, &query_map(query)?)?;
    let feed = open_feed(&app, &tenant.id, Some(&job_id), cursor).await?;
    Ok(sse(app, feed))
}

/// `GET /v1/events`
pub async fn tenant_stream(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let cursor = resume_cursor(&headers, &query_map(query)?)?;
    let feed = open_feed(&app, &tenant.id, None, cursor).await?;
    Ok(sse(app, feed))
}

fn sse(app: App, feed: EventFeed) -> Response {
    let stream = futures::stream::unfold((app, feed), |(app, mut feed)| async move {
        let event = feed.next().await?;
        match render(&app, &event).await {
            Ok(json) => {
                let message = Event::default()
                    .id(event.id.to_string())
                    .event(EVENT_TYPE)
                    .data(json);
                Some((Ok::<_, Infallible>(message), (app, feed)))
            }
            // End the stream: the client resumes from the last event it got.
            Err(e) => {
                tracing::warn!(event = event.id, error = %e.message, "event stream ended early");
                None
            }
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies (nginx) must pass events through as they come.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(header: Option<&str>, query: Option<&str>) -> Result<Option<i64>, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert("last-event-id", HeaderValue::from_str(h).expect("header"));
        }
        let mut q = HashMap::new();
        if let Some(v) = query {
            q.insert("lastEventId".to_owned(), v.to_owned());
        }
        resume_cursor(&headers, &q)
    }

    #[test]
    fn the_cursor_comes_from_the_header_then_the_query() {
        assert_eq!(cursor(None, None).ok(), Some(None));
        assert_eq!(cursor(Some("7"), Some("9")).ok(), Some(Some(7)));
        assert_eq!(cursor(Some(""), Some("9")).ok(), Some(Some(9)));
        assert_eq!(cursor(None, Some(" 0 ")).ok(), Some(Some(0)));
        assert!(cursor(Some("-1"), None).is_err());
        assert!(cursor(None, Some("abc")).is_err());
    }
}
