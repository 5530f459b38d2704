//! The HTTP API (axum): the origin's routes, kept exactly, and Easel's additions.
//!
//! Owns: routing, extraction, validation of client input and response shapes. Must not
//! touch: SQL or upstream wire formats; handlers speak to the store and object store through
//! their traits and report errors as [`crate::error::ApiError`].

mod admin;
pub mod consumer;
pub mod cors;
pub mod credits;
pub mod editor_images;
mod events;
mod events_ws;
mod extract;
mod files;
mod jobs;
mod ledger_admin;
pub mod midjourney;
pub mod mj_facade;
mod mj_proxy_hook;
mod multipart;
pub mod openai;
pub(crate) mod paging;
pub mod photo_uploads;
pub mod ratelimit;
pub mod submit_request;
mod tenant_apps;
mod uploads;
mod webhooks;

use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::header::{ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tower_http::catch_panic::CatchPanicLayer;

use crate::app::App;
use crate::base::clock::{format_millis, now_millis};
use crate::error::{ApiError, ErrorCode};
use crate::telemetry;

/// The body limit of an upload route taking up to `files` files: theirs plus room for the
/// multipart framing and text fields (each file is also held to the limit on its own).
pub(crate) fn upload_body_limit(app: &App, files: u64) -> DefaultBodyLimit {
    let bytes = app.images.config().max_bytes.saturating_mul(files) + 64 * 1024;
    DefaultBodyLimit::max(usize::try_from(bytes).unwrap_or(usize::MAX))
}

pub fn router(app: App) -> Router {
    telemetry::install();
    let body_limit = app.config.server.max_body_bytes;
    let cors_origins = app.config.server.cors_origins.clone();
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/images/generate", axum::routing::post(jobs::submit))
        .merge(openai::routes())
        .merge(midjourney::routes())
        .merge(mj_facade::routes(&app))
        .route(
            &format!("{}/{{secret}}", crate::providers::midjourney::NOTIFY_PATH),
            axum::routing::post(mj_proxy_hook::notify),
        )
        .route("/v1/jobs", get(jobs::list))
        .route("/v1/jobs/{job_id}", get(jobs::get).delete(jobs::cancel))
        .route("/v1/jobs/{job_id}/events", get(events::job_stream))
        .route("/v1/events", get(events::tenant_stream))
        .route("/v1/events/ws", get(events_ws::socket))
        .route("/v1/jobs/{job_id}/webhooks", get(webhooks::job_deliveries))
        .route("/v1/webhooks/deliveries", get(webhooks::list_deliveries))
        .route(
            "/v1/webhooks/deliveries/{id}/replay",
            axum::routing::post(webhooks::replay),
        )
        .route(
            "/v1/webhook",
            get(webhooks::get_endpoint).put(webhooks::put_endpoint),
        )
        .route(
            "/v1/webhook/rotate-secret",
            axum::routing::post(webhooks::rotate),
        )
        .route("/v1/files/{*key}", get(files::get))
        .route(
            "/v1/uploads",
            axum::routing::post(uploads::create).layer(upload_body_limit(&app, 1)),
        )
        .route(
            "/v1/uploads/{id}",
            get(uploads::get).delete(uploads::delete),
        )
        .route(
            "/admin/v1/tenants",
            get(admin::list_tenants).post(admin::create),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}",
            axum::routing::patch(admin::update),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/webhook",
            axum::routing::put(admin::put_webhook),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/hosts",
            get(tenant_apps::get_hosts).put(tenant_apps::put_hosts),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/wechat",
            axum::routing::put(tenant_apps::put_wechat),
        )
        .merge(ledger_admin_routes())
        // Signed: needs no end user (the routes that do come with the consumer routes).
        .route(
            "/api/credits/payment/callback",
            axum::routing::post(credits::payment_callback),
        )
        .route("/admin/v1/provider-keys", get(admin::list_keys))
        .route(
            "/admin/v1/provider-keys/{key_id}/{action}",
            axum::routing::post(admin::key_action),
        )
        .merge(consumer::router(app.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(count_request))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(ErrorCode::UnknownError, "internal error").into_response()
        }))
        // Outermost, so every answer (errors, 413s, panics) carries the CORS headers a
        // browser needs to read it, and preflights never reach a route.
        .layer(cors::layer(&cors_origins))
        .with_state(app)
}

/// The ledger's admin routes (see [`ledger_admin`]).
fn ledger_admin_routes() -> Router<App> {
    use axum::routing::{post, put};
    const TENANT: &str = "/admin/v1/tenants/{tenant_id}";
    Router::new()
        .route(
            &format!("{TENANT}/billing"),
            get(ledger_admin::get_billing).put(ledger_admin::put_billing),
        )
        .route(
            &format!("{TENANT}/payment-secret"),
            post(ledger_admin::new_payment_secret),
        )
        .route(
            &format!("{TENANT}/prices"),
            get(ledger_admin::list_prices)
                .put(ledger_admin::put_price)
                .delete(ledger_admin::delete_price),
        )
        .route(
            &format!("{TENANT}/packages"),
            get(ledger_admin::list_packages),
        )
        .route(
            &format!("{TENANT}/packages/{{package_id}}"),
            put(ledger_admin::put_package).delete(ledger_admin::delete_package),
        )
        .route(
            &format!("{TENANT}/credits"),
            get(ledger_admin::get_credits).post(ledger_admin::post_credits),
        )
        .route(
            &format!("{TENANT}/orders/{{order_no}}/confirm"),
            post(ledger_admin::confirm_order),
        )
        .route("/admin/v1/ledger/check", get(ledger_admin::check))
}

/// `GET /health` and `GET /metrics` alone, for `server.ops_port`.
pub fn ops_router(app: App) -> Router {
    telemetry::install();
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(app)
}

/// Counts every request by its route template (never its path: paths carry job ids).
async fn count_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    telemetry::http_request(method, route, response.status().as_u16(), started.elapsed());
    response
}

/// Prometheus text. Key and limiter gauges are read now; counters and histograms are kept
/// as things happen. Behind `auth.metrics_token` when it is set.
async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(expected) = &app.config.auth.metrics_token {
        if !admin::bearer_matches(&headers, expected.expose()) {
            return ApiError::new(ErrorCode::InvalidApiKey, "invalid metrics token")
                .into_response();
        }
    }
    telemetry::limiter_degraded(app.limiter.degraded().is_some());
    match app.store.job_open_counts().await {
        Ok(open) => telemetry::open_jobs([
            ("queued", open.queued),
            ("retrying", open.retrying),
            ("running", open.running),
        ]),
        Err(e) => tracing::warn!(error = %e, "open job counts for /metrics failed"),
    }
    match app.keys.snapshot().await {
        Ok(keys) => crate::keypool::status::record_metrics(&keys, now_millis()),
        Err(e) => tracing::warn!(error = %e, "key pool snapshot for /metrics failed"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        telemetry::render(),
    )
        .into_response()
}

/// `200 {"status": "ok", "timestamp": ...}` (the contract's shape) while every part works.
/// While the limiter runs on its per-node fallback (Redis unreachable), still 200 (the node
/// serves) but `"status": "degraded"`, with what decides instead and counters:
/// `{"status": "degraded", "limiter": "memory-fallback", "timestamp", "degradedSince",
/// "liveNodes", "limiterFallbacks", "limiterFallbackDecisions"}`.
async fn health(State(app): State<App>) -> Json<serde_json::Value> {
    let timestamp = format_millis(now_millis());
    let Some(degraded) = app.limiter.degraded() else {
        return Json(serde_json::json!({"status": "ok", "timestamp": timestamp}));
    };
    let since = degraded
        .since
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Json(serde_json::json!({
        "status": "degraded",
        "limiter": degraded.mode,
        "timestamp": timestamp,
        "degradedSince": format_millis(since),
        "liveNodes": degraded.live_nodes,
        "limiterFallbacks": degraded.fallbacks,
        "limiterFallbackDecisions": degraded.fallback_decisions,
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// Serialises `body` with a strong ETag and answers 304 when the client already has it.
pub(crate) fn with_etag<T: Serialize>(headers: &HeaderMap, body: &T) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::new(ErrorCode::UnknownError, "internal error").into_response(),
    };
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&bytes))[..32]);
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let etag_value = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(ETAG, etag_value)]).into_response();
    }
    (
        [
            (ETAG, etag_value),
            (
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        bytes,
    )
        .into_response()
}
