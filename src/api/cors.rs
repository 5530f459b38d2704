//! CORS for browser clients on other origins (the SaaS origin's API page, the editor and photo
//! web apps, Easel's own console), with tower-http's [`CorsLayer`] on every route.
//!
//! Every credential Easel reads travels in a header (`Authorization`, `X-API-Key`), never in a
//! cookie, so the default `server.cors_origins = "*"` lets any page call the API without
//! letting it borrow a visitor's session: there is none. A list of origins answers each with
//! its own origin when it is on the list (and `Vary: Origin`, so caches keep them apart).
//!
//! Owns: the allowed origins' parsing and the CORS policy (methods, request headers read,
//! response headers exposed, preflight max age). Must not touch: authentication or routing.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};

use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may reuse a preflight's answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Request headers Easel reads, which a page on another origin may therefore send.
const REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "idempotency-key",
    "cancel-after",
    "last-event-id",
    "x-api-key",
    "mj-api-secret",
    "prefer",
    "if-none-match",
];

/// Response headers a browser client must be able to read (beyond the CORS-safelisted ones).
const EXPOSED_HEADERS: &[&str] = &[
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "idempotent-replayed",
    "etag",
    "location",
];

/// The CORS layer for the API router. Origins are checked at config load ([`crate::config::origins::check_origins`]);
/// one that still does not fit a header value is left out.
pub fn layer(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(names(REQUEST_HEADERS))
        .expose_headers(names(EXPOSED_HEADERS))
        .max_age(PREFLIGHT_MAX_AGE)
        .vary([header::ORIGIN])
}

fn names(list: &[&'static str]) -> Vec<HeaderName> {
    list.iter().map(|n| HeaderName::from_static(n)).collect()
}
