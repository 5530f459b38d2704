//! `POST /internal/mj-proxy/notify/{secret}`: a midjourney-proxy's notifyHook call for a task
//! the `midjourney` provider submitted (`providers.midjourney.notify_secret`). The secret in
//! the path authenticates it (a wrong one is 404, as an unknown route); the body is the
//! proxy's task object, of which only `id` is read: the call wakes the provider's poll of that
//! task, which fetches it (the body is never trusted as the result). Always 200 otherwise, so
//! the proxy never retries a call Easel could not use.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::providers::midjourney::hooks;

pub async fn notify(State(app): State<App>, Path(secret): Path<String>, body: Bytes) -> Response {
    let expected = app.config.providers.midjourney.notify_secret.as_ref();
    let matches =
        expected.is_some_and(|e| bool::from(e.expose().as_bytes().ct_eq(secret.as_bytes())));
    if !matches {
        return super::not_found().await.into_response();
    }
    let task_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|task| match &task["id"] {
            serde_json::Value::String(id) => Some(id.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    if let Some(id) = task_id {
        hooks::arrived(&id);
    }
    StatusCode::OK.into_response()
}
