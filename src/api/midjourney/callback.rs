//! The origin bot's calls: `POST /midjourney/result` (its Discord messages: `end` records the
//! result of the newest unfinished task of the trigger id, `banned` bans it and lets its
//! token go; the other types are heard and ignored, as the origin does) and
//! `POST /queue/release` (a no-op answered as the origin does: Easel's queue frees itself).
//! Both need `?secret=<midjourney.callback_secret>` (the origin left them open).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::{json_body, required, MjError};
use crate::app::App;
use crate::base::clock::now_millis;
use crate::store::midjourney::MjBotResult;

fn check_secret(app: &App, query: &HashMap<String, String>) -> Result<(), MjError> {
    let given = query
        .get("secret")
        .map(String::as_bytes)
        .unwrap_or_default();
    match &app.config.midjourney.callback_secret {
        Some(secret) if bool::from(secret.expose().as_bytes().ct_eq(given)) => Ok(()),
        _ => Err(MjError::forbidden("Not authenticated")),
    }
}

/// The origin's six keys, each of its type, or 400 code 13.
fn check_payload(body: &Map<String, Value>) -> Result<(), MjError> {
    let ok = body.get("type").is_some_and(Value::is_string)
        && body.get("id").is_some_and(|v| v.is_i64() || v.is_u64())
        && body.get("content").is_some_and(Value::is_string)
        && body.get("attachments").is_some_and(Value::is_array)
        && body.get("embeds").is_some_and(Value::is_array)
        && body
            .get("trigger_id")
            .is_some_and(|v| v.is_string() || v.is_number());
    if ok {
        Ok(())
    } else {
        Err(MjError::params(Value::Object(body.clone())))
    }
}

/// The message hash in an attachment's file name: `..._<hash>.png`.
fn hash_of(filename: &str) -> String {
    let last = filename.rsplit('_').next().unwrap_or(filename);
    last.split('.').next().unwrap_or(last).to_owned()
}

/// `POST /midjourney/result`.
pub async fn result(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Response, MjError> {
    check_secret(&app, &query)?;
    let body = json_body(&body)?;
    check_payload(&body)?;
    let trigger_id = required(&body, "trigger_id")?;
    let first = body["attachments"].get(0);
    let result = match body["type"].as_str() {
        Some("end") => MjBotResult {
            trigger_id,
            status: "SUCCESS".into(),
            result_url: first.and_then(|a| a["url"].as_str()).map(str::to_owned),
            attachments: Some(body["attachments"].to_string()),
            msg_id: body["id"].as_i64(),
            msg_hash: first.and_then(|a| a["filename"].as_str()).map(hash_of),
            at: now_millis(),
        },
        Some("banned") => MjBotResult {
            trigger_id,
            status: "BANNED".into(),
            result_url: None,
            attachments: None,
            msg_id: None,
            msg_hash: None,
            at: now_millis(),
        },
        _ => return Ok(Json(json!({"message": "success"})).into_response()),
    };
    let banned = result.status == "BANNED";
    let Some(hit) = app.store.mj_task_bot_result(result).await? else {
        return Ok(Json(json!({"message": "任务不存在"})).into_response());
    };
    if let (true, Some(job_id)) = (banned, &hit.job_id) {
        // A banned task's job is canceled, which releases its token.
        app.store.job_cancel(&hit.tenant_id, job_id).await?;
        app.events
            .publish(crate::events::Change::job(&hit.tenant_id, job_id));
    }
    Ok(Json(json!({"message": "success"})).into_response())
}

/// `POST /queue/release` `{"trigger_id"}`.
pub async fn release(
    State(app): State<App>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Response, MjError> {
    check_secret(&app, &query)?;
    let body = json_body(&body)?;
    let trigger_id = required(&body, "trigger_id")?;
    Ok(Json(json!({
        "code": 1,
        "message": "success",
        "trigger_id": trigger_id,
        "trigger_type": "queue_release",
        "result": "success",
    }))
    .into_response())
}
