//! The `/mj` facade: Easel as a midjourney-proxy (`contract/midjourney-proxy.md` §1), so
//! midjourney-proxy clients (and New API's MJ relay) use Easel unchanged apart from the base
//! URL. Every submit is an Easel job underneath (an imagine is a four-image job with its grid;
//! U, V, zoom and pan are jobs on a parent job's image), on the provider the seed's routes use
//! (`midjourney.provider`, else `providers.default`), priced and charged as any job of the
//! tenant.
//!
//! Owns: the routes ([`submit`]: imagine, describe, blend; [`action`]: change, simple-change,
//! action, modal; [`task`]: fetch, list-by-condition, list, queue, image-seed, cancel) and the
//! auth ([`MjTenant`]). Must not: talk to an upstream or write SQL; tasks are rows of
//! [`crate::store::mj_proxy`] naming their jobs, and what they look like, their buttons and
//! their notifyHook calls are [`crate::mj_tasks`]'.
//!
//! Served under `/mj`, and with a speed mode (recorded as the task's `mode`) under
//! `/mj-fast`, `/mj-turbo` and `/mj-relax`, each both as `/mj-fast/mj/...` (the C# edition)
//! and `/mj-fast/...`. Submit answers are HTTP 200 with `{code, description, result,
//! properties}`: 1 submitted, 22 queued behind others (`numberOfQueues`), 21 waiting for the
//! modal, 23 queue full or rate limited, 24 banned prompt, 4 bad input, 3 unknown task, 9
//! Easel failed.
//!
//! Differences from midjourney-proxy (also in README.md):
//! - `fetch` of an unknown task, and `action`/`modal` naming one, answer HTTP 404 with
//!   `{code: 3}` in the envelope (the Java edition answered 200 with an empty body, the C#
//!   edition 204, and its `action` 404);
//! - a customId is accepted only if it is one of the named task's buttons (its hash included);
//! - every task belongs to the tenant whose key made it: another tenant's id is unknown;
//! - a refused submit (23, 24, 4) makes no task and costs nothing, so `result` is null;
//! - `cancel` answers 200 with an empty body as the C# edition (for the task's owner; there is
//!   no admin), and a task that has ended answers code 4;
//! - an auth failure is 401 with a plain-text body (the C# edition's), whichever header was
//!   sent.

mod action;
mod submit;
mod task;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use crate::app::App;
use crate::store::Tenant;

/// The speed mode a route prefix sets (`None` under plain `/mj`).
#[derive(Debug, Clone, Copy)]
pub struct Speed(pub Option<&'static str>);

/// Where the facade is served, with the mode each prefix sets.
const MOUNTS: [(&str, Option<&str>); 7] = [
    ("/mj", None),
    ("/mj-fast/mj", Some("FAST")),
    ("/mj-turbo/mj", Some("TURBO")),
    ("/mj-relax/mj", Some("RELAX")),
    ("/mj-fast", Some("FAST")),
    ("/mj-turbo", Some("TURBO")),
    ("/mj-relax", Some("RELAX")),
];

/// The facade's routes, merged into the API router.
pub fn routes(app: &App) -> Router<App> {
    let mut router = Router::new();
    for (prefix, mode) in MOUNTS {
        router = router.nest(prefix, facade(app).layer(Extension(Speed(mode))));
    }
    router
}

/// One copy of the facade's routes.
fn facade(app: &App) -> Router<App> {
    // Describe and blend carry images in the body.
    let images = crate::api::upload_body_limit(app, 5);
    Router::new()
        .route("/submit/imagine", post(submit::imagine))
        .route("/submit/describe", post(submit::describe))
        .route("/submit/blend", post(submit::blend))
        .route("/submit/change", post(action::change))
        .route("/submit/simple-change", post(action::simple_change))
        .route("/submit/action", post(action::action))
        .route("/submit/modal", post(action::modal))
        .route("/task/list-by-condition", post(task::by_condition))
        .route("/task/list", get(task::list))
        .route("/task/queue", get(task::queue))
        .route("/task/{id}/fetch", get(task::fetch))
        .route("/task/{id}/image-seed", get(task::image_seed))
        .route("/task/{id}/cancel", post(task::cancel))
        .layer(images)
}

/// A submit answer: HTTP 200 `{code, description, result, properties}`.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub code: u32,
    pub description: String,
    pub result: Option<String>,
    pub properties: Value,
}

impl Reply {
    pub fn new(code: u32, description: impl Into<String>, result: Option<String>) -> Reply {
        Reply {
            status: StatusCode::OK,
            code,
            description: description.into(),
            result,
            properties: json!({}),
        }
    }

    /// Code 4: bad input.
    pub fn invalid(description: impl Into<String>) -> Reply {
        Reply::new(4, description, None)
    }

    /// Code 3 with HTTP 404: an unknown task.
    pub fn no_task() -> Reply {
        let mut reply = Reply::new(3, "关联任务不存在或已失效", None);
        reply.status = StatusCode::NOT_FOUND;
        reply
    }

    /// Code 9: Easel itself failed (logged, never shown).
    pub fn failed(what: &str, error: impl std::fmt::Display) -> Reply {
        tracing::error!(error = %error, "mj facade: {what} failed");
        Reply::new(9, "提交失败，系统异常", None)
    }

    pub fn with(mut self, properties: Value) -> Reply {
        self.properties = properties;
        self
    }
}

impl From<crate::store::StoreError> for Reply {
    fn from(e: crate::store::StoreError) -> Reply {
        Reply::failed("the store", e)
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "description": self.description,
            "result": self.result,
            "properties": self.properties,
        });
        (self.status, Json(body)).into_response()
    }
}

/// The tenant whose key the request presents: `Authorization` (`Bearer <key>` or the raw
/// key; New API sends `midjourney-proxy` there and the key in `mj-api-secret`), else
/// `mj-api-secret`. Refused with 401 and a plain-text body.
pub struct MjTenant(pub Tenant);

/// The key a request presents, as [`MjTenant`] reads it.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let authorization = header("authorization")
        .map(|v| match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => v,
        })
        .filter(|v| !v.is_empty() && *v != "midjourney-proxy");
    authorization.or_else(|| header(crate::providers::midjourney::SECRET_HEADER))
}

impl FromRequestParts<App> for MjTenant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<MjTenant, Response> {
        let refuse = |text: &'static str| (StatusCode::UNAUTHORIZED, text).into_response();
        let Some(key) = presented(&parts.headers) else {
            return Err(refuse("Authorization header missing."));
        };
        match app.auth.authenticate(key).await {
            Ok(Some(tenant)) => Ok(MjTenant(tenant)),
            Ok(None) => Err(refuse("Invalid api secret.")),
            Err(e) => {
                tracing::error!(error = %e, "mj facade: key look-up failed");
                Err((StatusCode::SERVICE_UNAVAILABLE, "Service unavailable.").into_response())
            }
        }
    }
}

/// Queues the notifyHook call of the caller's task `id` for its new state (a failure is
/// logged: the follower and the bus listener notice later changes anyway).
pub async fn notify(app: &App, tenant_id: &str, id: &str) {
    if let Err(e) = app.mj_tasks().task_changed(tenant_id, id).await {
        tracing::warn!(task = %id, error = %e, "mj notifyHook not queued");
    }
}

/// A JSON object body, or code 4.
pub fn object_body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, Reply> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Reply::invalid(
            "请求体必须是 JSON 对象 (the body must be a JSON object)",
        )),
    }
}

/// A string field (absent, null and empty are `None`); code 4 when it is not a string.
pub fn text(body: &serde_json::Map<String, Value>, name: &str) -> Result<Option<String>, Reply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(Reply::invalid(format!("{name} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().expect("header"));
        }
        map
    }

    #[test]
    fn keys_come_from_either_header() {
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer k1")])),
            Some("k1")
        );
        assert_eq!(presented(&headers(&[("authorization", "k2")])), Some("k2"));
        assert_eq!(presented(&headers(&[("mj-api-secret", "k3")])), Some("k3"));
        let relay = headers(&[
            ("authorization", "midjourney-proxy"),
            ("mj-api-secret", "k4"),
        ]);
        assert_eq!(presented(&relay), Some("k4"));
        assert_eq!(presented(&headers(&[])), None);
    }
}
