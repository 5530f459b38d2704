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
use serde::{Deserialize, Deserializer};
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

/// The allowed origins, as `server.cors_origins` gives them: `"*"`, one origin, a
/// comma-separated string of origins (how `CORS_ORIGIN` is usually written) or a list.
pub fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect())
}

/// Checks every configured origin: `*`, or `scheme://host[:port]` with nothing after it (what
/// a browser sends in `Origin`). The problem names the first bad entry.
pub fn check_origins(origins: &[String]) -> Result<(), String> {
    if origins.is_empty() {
        return Err("list no origin; use \"*\" to allow every origin".into());
    }
    for origin in origins {
        if origin == "*" {
            continue;
        }
        let parsed = url::Url::parse(origin).map_err(|e| format!("'{origin}': {e}"))?;
        let bare = parsed.origin().ascii_serialization();
        if !matches!(parsed.scheme(), "http" | "https") || bare != *origin {
            return Err(format!(
                "'{origin}' is not an origin like https://app.example.com or http://localhost:5173"
            ));
        }
    }
    Ok(())
}

/// The CORS layer for the API router. Origins are checked at config load ([`check_origins`]);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Vec<String> {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(deserialize_with = "one_or_many")]
            origins: Vec<String>,
        }
        let holder: Holder = serde_json::from_str(toml).expect("parse");
        holder.origins
    }

    #[test]
    fn origins_come_as_one_a_comma_list_or_a_list() {
        assert_eq!(parse(r#"{"origins": "*"}"#), ["*"]);
        assert_eq!(
            parse(r#"{"origins": "http://localhost:5173, https://a.example/"}"#),
            ["http://localhost:5173", "https://a.example"]
        );
        assert_eq!(
            parse(r#"{"origins": ["https://a.example", " "]}"#),
            ["https://a.example"]
        );
    }

    #[test]
    fn only_bare_origins_pass_the_check() {
        let ok = |o: &str| check_origins(&[o.to_owned()]).is_ok();
        assert!(ok("*"));
        assert!(ok("http://localhost:5173"));
        assert!(ok("https://app.example.com"));
        assert!(!ok("https://app.example.com/path"));
        assert!(!ok("app.example.com"));
        assert!(!ok("ftp://app.example.com"));
        assert!(check_origins(&[]).is_err());
    }
}
