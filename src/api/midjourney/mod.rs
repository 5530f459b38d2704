//! The Midjourney API seed's routes (`contract/midjourney-api.md`), all under
//! `/v1/api/trigger`: the trigger calls that each make a job ([`trigger`]), the task reads
//! ([`tasks`]), the image library's `/upload` and `/message` ([`upload`]), and the origin
//! bot's `/midjourney/result` and `/queue/release` ([`callback`]). Answers are the origin's
//! exactly: `{"detail": ...}` 403/429 from auth and tokens, 400 `{"code": 13, ...}` for a bad
//! body, HTTP 200 with code 14 (banned prompt) and 15 (queue full).
//!
//! Differences from the origin (also in README.md):
//! - a token is held per call and settled when the job succeeds, released when it fails or
//!   is banned (the origin never refunded), and the check and the take are one transaction;
//! - `GET /tasks` lists the caller's own tasks (the origin listed everyone's), and
//!   `GET /task/{id}` needs the app key and sees only its own tasks (the seed document lists
//!   it as authenticated; the origin's code had dropped the check);
//! - `/midjourney/result` and `/queue/release` need `midjourney.callback_secret` as
//!   `?secret=` (the origin left them open); a bot-reported ban is really recorded;
//! - an unknown parent task or message hash is 404 `{"code": 10, "message": "任务不存在"}`
//!   (the origin answered 500), and `expand`'s direction and `zoomout`'s value are checked;
//! - a task's status is its job's, so a stopped, failed or timed-out task ends as such
//!   rather than staying SUBMITTED until the 300 s rule.

mod auth;
mod callback;
mod tasks;
mod trigger;
mod upload;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::app::App;

pub use auth::AppKey;
pub use trigger::{provider_of, uuid4};

const PREFIX: &str = "/v1/api/trigger";

/// The seed's routes.
pub fn routes() -> Router<App> {
    let p = |path: &str| format!("{PREFIX}{path}");
    let mut router = Router::new();
    for name in trigger::ROUTES {
        let handler = move |State(app): State<App>, key: AppKey, body: axum::body::Bytes| {
            trigger::handle(name, app, key, body)
        };
        router = router.route(&p(&format!("/{name}")), post(handler));
    }
    router
        .route(&p("/task/{task_id}"), get(tasks::get))
        .route(&p("/tasks"), get(tasks::list))
        .route(&p("/upload"), post(upload::upload))
        .route(&p("/message"), post(upload::message))
        .route(&p("/midjourney/result"), post(callback::result))
        .route(&p("/queue/release"), post(callback::release))
}

/// An answer of these routes that is not a success: the origin's status and body.
#[derive(Debug)]
pub struct MjError {
    status: StatusCode,
    body: Value,
}

impl MjError {
    /// `403 {"detail": ...}` (auth).
    pub fn forbidden(detail: &str) -> MjError {
        MjError {
            status: StatusCode::FORBIDDEN,
            body: json!({ "detail": detail }),
        }
    }

    /// `429 {"detail": "Token limit exceeded..."}`.
    pub fn token_limit() -> MjError {
        MjError {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: json!({ "detail": crate::ledger::MJ_TOKEN_LIMIT_DETAIL }),
        }
    }

    /// `400 {"code": 13, "message": "request params error: ..."}`.
    pub fn params(what: impl std::fmt::Display) -> MjError {
        MjError {
            status: StatusCode::BAD_REQUEST,
            body: json!({"code": 13, "message": format!("request params error: {what}")}),
        }
    }

    /// `404 {"code": 10, "message": "任务不存在"}`: an unknown task (the origin: 500).
    pub fn no_task() -> MjError {
        MjError {
            status: StatusCode::NOT_FOUND,
            body: json!({"code": 10, "message": "任务不存在"}),
        }
    }

    /// HTTP 200 with an error code in the body (14 banned prompt, 15 queue full).
    pub fn in_body(code: u32, message: String) -> MjError {
        MjError {
            status: StatusCode::OK,
            body: json!({ "code": code, "message": message }),
        }
    }

    /// A failure of Easel's own (the store): 500 with the origin's `detail`.
    pub fn internal() -> MjError {
        MjError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: json!({"detail": "Internal Server Error"}),
        }
    }
}

impl From<crate::store::StoreError> for MjError {
    fn from(e: crate::store::StoreError) -> MjError {
        tracing::error!(error = %e, "midjourney route: store failed");
        MjError::internal()
    }
}

impl IntoResponse for MjError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// A JSON body as the origin's pydantic models read it: an object, or 400 code 13 naming
/// what came (`None` for no body).
pub fn json_body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, MjError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(MjError::params("None"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(MjError::params(other)),
        Err(_) => Err(MjError::params(String::from_utf8_lossy(bytes))),
    }
}

/// A string field as pydantic v1 coerces it (numbers become strings).
pub fn text_field(body: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    match body.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A required string field, or 400 code 13 naming the body.
pub fn required(body: &serde_json::Map<String, Value>, name: &str) -> Result<String, MjError> {
    text_field(body, name).ok_or_else(|| {
        MjError::params(format!(
            "{name} is required: {}",
            Value::Object(body.clone())
        ))
    })
}

/// An integer field as pydantic v1 coerces it (numeric strings become numbers).
pub fn int_field(body: &serde_json::Map<String, Value>, name: &str) -> Option<i64> {
    match body.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
