//! The consumer routes (`/api/*`): what the editor web app and the photo mini-program speak.
//! Each file is one resource, grouped by contract; [`extract`] holds what they share (the
//! client address, the tenant, the signed-in user) and [`reply`] the contracts' bodies.
//!
//! A consumer request's tenant comes from its token, or before sign-in from its host name
//! (a claimed host), else the default tenant. Every `/api/*` route shares one request limit
//! per client address (`users.requests_per_window` per `users.request_window_ms`; the photo
//! origin's 1,000 per 15 minutes), answered with 429 and `Retry-After`.

mod admin_login;
mod auth;
pub mod editor;
pub mod extract;
mod joi;
mod photo;
pub mod reply;
mod wechat;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;

use self::extract::ClientAddr;
use crate::app::App;
use crate::limits::RateQuota;

/// The `/api/*` routes, behind the per-address request limit.
pub fn router(app: App) -> Router<App> {
    Router::new()
        .route("/api/auth/register", post(auth::register))
        .route("/api/auth/login", post(auth::login))
        .route(
            "/api/auth/me",
            get(auth::me).put(auth::update_me).delete(auth::delete_me),
        )
        .route("/api/auth/password", put(auth::change_password))
        .route("/api/auth/refresh", post(auth::refresh))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/wechat/login", post(wechat::login))
        .route("/api/auth/admin/login", post(admin_login::login))
        .merge(editor::router(&app))
        .merge(photo::router())
        .merge(crate::api::credits::router::<
            extract::SignedIn,
            extract::HostTenant,
        >())
        .layer(axum::middleware::from_fn_with_state(app, limit_requests))
}

/// The per-address quota: `n` per window, all of them at once if the client likes.
fn request_quota(app: &App) -> RateQuota {
    let users = &app.config.users;
    let per_minute = u64::from(users.requests_per_window) * 60_000 / users.request_window_ms;
    RateQuota::with_burst(
        u32::try_from(per_minute.max(1)).unwrap_or(u32::MAX),
        users.requests_per_window,
    )
}

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Takes one request from the client address' quota; 429 when it is spent. The editor
/// origin's `RateLimit-Limit` / `-Remaining` / `-Reset` headers are on every answer. A limiter
/// that does not answer lets the request through (logged).
async fn limit_requests(State(app): State<App>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let ClientAddr(addr) =
        match <ClientAddr as axum::extract::FromRequestParts<App>>::from_request_parts(
            &mut parts, &app,
        )
        .await
        {
            Ok(addr) => addr,
            Err(never) => match never {},
        };
    let request = Request::from_parts(parts, body);
    let limit = app.config.users.requests_per_window;
    let decision = match app
        .limiter
        .rate_acquire(&format!("rate:consumer:{addr}"), request_quota(&app), 1)
        .await
    {
        Ok(decision) => decision,
        Err(e) => {
            tracing::warn!(error = %e, "limiter unavailable; consumer request allowed");
            return next.run(request).await;
        }
    };
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        reply::with_retry_after(
            reply::union_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests from this IP, please try again later.",
                "请求过于频繁，请稍后再试",
            ),
            decision.retry_after.unwrap_or(Duration::from_secs(1)),
        )
    };
    let reset = decision.reset_after.as_secs_f64().ceil() as u64;
    for (name, value) in [
        (&RATELIMIT_LIMIT, u64::from(limit)),
        (&RATELIMIT_REMAINING, u64::from(decision.remaining)),
        (&RATELIMIT_RESET, reset),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
            response.headers_mut().insert(name.clone(), value);
        }
    }
    response
}
