//! Webhook routes: the tenant's endpoint (`GET`/`PUT /v1/webhook`, secret rotation), the
//! delivery logs (per job and per tenant) and replay. Secrets appear in a response only when
//! they are created (shown once); otherwise only their fingerprints.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::extract::{AuthTenant, JobId, JsonObject};
use crate::app::App;
use crate::base::clock::{format_millis, now_millis};
use crate::base::job::JobStatus;
use crate::base::webhook::{
    Delivery, DeliveryListQuery, DeliveryState, ReplayOutcome, TenantWebhook, WebhookEvents,
};
use crate::error::{ApiError, ErrorCode};
use crate::webhooks::target::{redact, TargetGuard};
use crate::webhooks::{rotate_secret, set_endpoint, ManageError};

const CURSOR_PREFIX: &str = "d1:";
const MAX_OVERLAP_SECS: u64 = 7 * 24 * 3600;

fn guard(app: &App) -> Result<TargetGuard, ApiError> {
    // The allow-list was validated when the configuration was loaded.
    TargetGuard::new(&app.config.webhooks.allow_networks)
        .map_err(|_| ApiError::new(ErrorCode::UnknownError, "internal error"))
}

/// A submit's `webhookUrl`: refused now if its address is visibly forbidden, or if the tenant
/// has no signing secret to sign its deliveries with. Returns the URL to store.
pub async fn check_job_webhook_url(
    app: &App,
    tenant_id: &str,
    raw: &str,
) -> Result<String, ApiError> {
    let url = guard(app)?
        .precheck(raw)
        .map_err(|e| ApiError::invalid(format!("webhookUrl: {}", e.message)))?;
    if app.store.webhook_get(tenant_id).await?.is_none() {
        return Err(ApiError::invalid(
            "webhookUrl: deliveries are signed with the tenant's webhook secret, and this tenant \
             has none yet; create it with PUT /v1/webhook",
        ));
    }
    Ok(url.to_string())
}

/// One delivery in a log.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryView {
    /// The payload's `eventId` and the `webhook-id` header.
    id: String,
    job_id: String,
    url: String,
    /// The job status the event reports.
    job_status: JobStatus,
    /// The delivery's state: pending, delivering, succeeded, failed or disabled.
    status: DeliveryState,
    attempts: u32,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    last_latency_ms: Option<u64>,
    created_at: String,
    updated_at: String,
    last_attempt_at: Option<String>,
    next_attempt_at: Option<String>,
    delivered_at: Option<String>,
}

impl DeliveryView {
    fn of(d: &Delivery) -> DeliveryView {
        DeliveryView {
            id: d.id.clone(),
            job_id: d.job_id.clone(),
            url: redact(&d.url),
            job_status: d.status,
            status: d.state,
            attempts: d.attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            last_latency_ms: d.last_latency_ms,
            created_at: format_millis(d.created_at),
            updated_at: format_millis(d.updated_at),
            last_attempt_at: d.last_attempt_at.map(format_millis),
            next_attempt_at: (d.state == DeliveryState::Pending)
                .then(|| format_millis(d.next_attempt_at)),
            delivered_at: d.delivered_at.map(format_millis),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryPageView {
    items: Vec<DeliveryView>,
    has_more: bool,
    next_cursor: Option<String>,
}

type RawQuery = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn parse_query(
    tenant_id: &str,
    job_id: Option<String>,
    query: RawQuery,
) -> Result<DeliveryListQuery, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    let (limit, before_seq) = super::paging::page(CURSOR_PREFIX, &q)?;
    let state = match q.get("status") {
        None => None,
        Some(raw) => Some(DeliveryState::parse(raw).ok_or_else(|| {
            ApiError::invalid(format!(
                "status '{raw}' is not one of: pending, delivering, succeeded, failed, disabled"
            ))
        })?),
    };
    Ok(DeliveryListQuery {
        tenant_id: tenant_id.to_owned(),
        job_id,
        state,
        limit,
        before_seq,
    })
}

async fn page(app: &App, query: DeliveryListQuery) -> Result<Response, ApiError> {
    let page = app.store.webhook_deliveries(query).await?;
    let next_cursor = match (page.has_more, page.items.last()) {
        (true, Some(last)) => Some(super::paging::encode_cursor(CURSOR_PREFIX, last.seq)),
        _ => None,
    };
    Ok(Json(DeliveryPageView {
        items: page.items.iter().map(DeliveryView::of).collect(),
        has_more: page.has_more,
        next_cursor,
    })
    .into_response())
}

/// `GET /v1/jobs/{jobId}/webhooks`: the deliveries of one job, newest first.
pub async fn job_deliveries(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    JobId(job_id): JobId,
    query: RawQuery,
) -> Result<Response, ApiError> {
    if app.store.job_get(&tenant.id, &job_id).await?.is_none() {
        return Err(ApiError::job_not_found());
    }
    let query = parse_query(&tenant.id, Some(job_id), query)?;
    page(&app, query).await
}

/// `GET /v1/webhooks/deliveries?limit&cursor&status`: the tenant's deliveries, newest first.
pub async fn list_deliveries(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    query: RawQuery,
) -> Result<Response, ApiError> {
    let query = parse_query(&tenant.id, None, query)?;
    page(&app, query).await
}

fn delivery_not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "webhook delivery not found")
}

/// `POST /v1/webhooks/deliveries/{id}/replay`: sends the delivery again now, same eventId.
pub async fn replay(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Ok(Path(id)) = id else {
        return Err(delivery_not_found());
    };
    match app.store.webhook_replay(&tenant.id, &id).await? {
        ReplayOutcome::Queued(delivery) => {
            Ok((StatusCode::ACCEPTED, Json(DeliveryView::of(&delivery))).into_response())
        }
        ReplayOutcome::InFlight => Err(ApiError::new(
            ErrorCode::InvalidState,
            "the delivery is being sent right now; replay it when the attempt has ended",
        )),
        ReplayOutcome::NotFound => Err(delivery_not_found()),
    }
}

/// The tenant's endpoint; `secret` only when it was just created.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointView {
    url: Option<String>,
    events: WebhookEvents,
    enabled: bool,
    disabled_reason: Option<String>,
    secret_fingerprint: String,
    previous_secret_fingerprint: Option<String>,
    previous_secret_expires_at: Option<String>,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl EndpointView {
    fn of(w: &TenantWebhook, secret: Option<String>) -> EndpointView {
        let now = now_millis();
        let previous = match (&w.prev_secret, w.prev_secret_expires_at) {
            (Some(prev), Some(until)) if until > now => {
                Some((prev.fingerprint.clone(), format_millis(until)))
            }
            _ => None,
        };
        EndpointView {
            url: w.url.as_deref().map(redact),
            events: w.events,
            enabled: w.enabled,
            disabled_reason: w.disabled_reason.clone(),
            secret_fingerprint: w.secret.fingerprint.clone(),
            previous_secret_fingerprint: previous.as_ref().map(|p| p.0.clone()),
            previous_secret_expires_at: previous.map(|p| p.1),
            created_at: format_millis(w.created_at),
            updated_at: format_millis(w.updated_at),
            secret,
        }
    }
}

fn no_endpoint() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no webhook endpoint yet: create one with PUT /v1/webhook",
    )
}

fn manage_error(err: ManageError) -> ApiError {
    match err {
        ManageError::InvalidUrl(message) => ApiError::invalid(format!("url: {message}")),
        ManageError::NotFound => no_endpoint(),
        ManageError::Store(e) => e.into(),
    }
}

/// `GET /v1/webhook`.
pub async fn get_endpoint(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
) -> Result<Response, ApiError> {
    let webhook = app
        .store
        .webhook_get(&tenant.id)
        .await?
        .ok_or_else(no_endpoint)?;
    Ok(Json(EndpointView::of(&webhook, None)).into_response())
}

/// `PUT /v1/webhook {"url": "https://..." | null, "events": "terminal" | "all"}`: 201 with
/// the secret (shown once) when this creates the endpoint, 200 afterwards. Re-enables an
/// endpoint disabled by a 410.
pub async fn put_endpoint(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    set_endpoint_from_body(&app, &tenant.id, &body).await
}

/// `{"url": ..., "events": ...}` applied to a tenant's endpoint: `201` with the secret (shown
/// this once) when one was made, else `200`. Shared by the tenant's and the admin's route.
pub async fn set_endpoint_from_body(
    app: &App,
    tenant_id: &str,
    body: &serde_json::Map<String, Value>,
) -> Result<Response, ApiError> {
    let url = match body.get("url") {
        None => {
            return Err(ApiError::invalid(
                "url is required (null for no tenant-wide URL: per-job webhookUrl only)",
            ))
        }
        Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ApiError::invalid("url must be a string or null")),
    };
    let events = match body.get("events") {
        None | Some(Value::Null) => WebhookEvents::Terminal,
        Some(Value::String(s)) => WebhookEvents::parse(s).ok_or_else(|| {
            ApiError::invalid(format!("events '{s}' is not one of: terminal, all"))
        })?,
        Some(_) => return Err(ApiError::invalid("events must be a string")),
    };
    let guard = guard(app)?;
    let (webhook, secret) = set_endpoint(
        app.store.as_ref(),
        &app.sealer,
        &guard,
        tenant_id,
        url,
        events,
    )
    .await
    .map_err(manage_error)?;
    let status = if secret.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let view = EndpointView::of(&webhook, secret.map(|s| s.expose().to_owned()));
    Ok((status, Json(view)).into_response())
}

/// `POST /v1/webhook/rotate-secret`, optional body `{"overlapSeconds": N}`: a new secret
/// (shown once); the previous one keeps signing beside it for the overlap (default
/// `webhooks.rotation_overlap_secs`).
pub async fn rotate(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut overlap = app.config.webhooks.rotation_overlap();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let parsed: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("malformed JSON body: {e}")))?;
        let object = parsed
            .as_object()
            .ok_or_else(|| ApiError::invalid("request body must be a JSON object"))?;
        match object.get("overlapSeconds") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let secs = v
                    .as_u64()
                    .filter(|s| *s <= MAX_OVERLAP_SECS)
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "overlapSeconds must be an integer between 0 and {MAX_OVERLAP_SECS}"
                        ))
                    })?;
                overlap = std::time::Duration::from_secs(secs);
            }
        }
    }
    let (webhook, secret) = rotate_secret(app.store.as_ref(), &app.sealer, &tenant.id, overlap)
        .await
        .map_err(manage_error)?;
    Ok(Json(EndpointView::of(&webhook, Some(secret.expose().to_owned()))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_job_cursors() {
        assert_eq!(
            crate::api::paging::decode_cursor(
                CURSOR_PREFIX,
                &crate::api::paging::encode_cursor(CURSOR_PREFIX, 7)
            ),
            Some(7)
        );
        use base64::Engine;
        let job_cursor = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1:7");
        assert_eq!(
            crate::api::paging::decode_cursor(CURSOR_PREFIX, &job_cursor),
            None
        );
        assert_eq!(
            crate::api::paging::decode_cursor(CURSOR_PREFIX, "garbage"),
            None
        );
    }
}
