//! `GET /task/{task_id}` (always HTTP 200, the origin's status mapping, `buttons` with the
//! message id and hash to act on the images) and `GET /tasks` (the caller's own tasks,
//! newest first, as the origin's rows).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::auth::AppKey;
use super::MjError;
use crate::app::App;
use crate::base::clock::{now_millis, Millis};
use crate::jobs::operations::image_count;
use crate::store::midjourney::MjTaskRow;

/// The task's images joined by `||` (an imagine's or variation's four), or the one image.
async fn image_url(app: &App, row: &MjTaskRow) -> Result<String, MjError> {
    if let Some(url) = &row.task.result_url {
        return Ok(url.clone());
    }
    let Some(job_id) = &row.task.job_id else {
        return Ok(String::new());
    };
    let Some(job) = app.store.job_get(&row.task.tenant_id, job_id).await? else {
        return Ok(String::new());
    };
    let keys = &job.result_keys[..image_count(&job)];
    Ok(app.urls.urls(keys, now_millis() / 1000).await.join("||"))
}

/// A describe's text (Easel's addition to a SUCCESS answer).
async fn description(app: &App, row: &MjTaskRow) -> Result<Option<String>, MjError> {
    let Some(job_id) = &row.task.job_id else {
        return Ok(None);
    };
    Ok(app
        .store
        .job_get(&row.task.tenant_id, job_id)
        .await?
        .as_ref()
        .and_then(crate::api::jobs::result_text))
}

/// `GET /task/{task_id}`: the caller's own task (another key's is `任务不存在`).
pub async fn get(State(app): State<App>, key: AppKey, Path(task_id): Path<String>) -> Response {
    let answer = match app.store.mj_task_get(&key.0.tenant_id, &task_id).await {
        Ok(Some(row)) if row.task.account_id == key.0.account_id => status_answer(&app, &row).await,
        Ok(_) => Ok(json!({"status": "FAILURE", "message": "任务不存在"})),
        Err(e) => Err(e.into()),
    };
    // The origin answers an exception with a bare FAILURE, still HTTP 200.
    Json(answer.unwrap_or_else(|_: MjError| json!({"status": "FAILURE"}))).into_response()
}

async fn status_answer(app: &App, row: &MjTaskRow) -> Result<Value, MjError> {
    Ok(match row.status.as_str() {
        "SUCCESS" => {
            let mut answer = json!({
                "status": "SUCCESS",
                "imageUrl": image_url(app, row).await?,
                "buttons": {"msg_id": row.task.msg_id, "msg_hash": row.task.msg_hash},
            });
            if let Some(text) = description(app, row).await? {
                answer["description"] = Value::String(text);
            }
            answer
        }
        "TIMEOUT" => json!({"status": "FAILURE", "message": "任务超时，已自动清理"}),
        "BANNED" => json!({"status": "FAILURE", "message": "任务被封禁"}),
        "FAILURE" => json!({"status": "FAILURE", "message": "任务失败"}),
        _ => json!({"status": "SUBMITTED", "message": "任务未完成"}),
    })
}

/// The origin's naive local time: `2025-06-22T23:21:24` (UTC here).
fn naive(at: Millis) -> String {
    let text = crate::base::clock::format_millis(at);
    text.get(..19).unwrap_or(&text).to_owned()
}

/// A task as the origin's `midjourney_task` row.
async fn row_view(app: &App, id: usize, row: &MjTaskRow) -> Result<Value, MjError> {
    let t = &row.task;
    let result_url = if row.status == "SUCCESS" {
        Some(image_url(app, row).await?)
    } else {
        None
    };
    Ok(json!({
        "id": id,
        "task_name": t.task_name,
        "task_id": t.task_id,
        "trigger_id": t.trigger_id,
        "ref_pic_url": t.ref_pic_url,
        "image_index": t.image_index,
        "msg_id": if row.status == "SUCCESS" { t.msg_id } else { 0 },
        "msg_hash": if row.status == "SUCCESS" { t.msg_hash.as_str() } else { "" },
        "zoom_out": t.zoom_out,
        "direction": t.direction,
        "task_type": t.task_type,
        "task_status": row.status,
        "result_url": result_url,
        "attachments": t.attachments,
        "prompts": t.prompts,
        "created_at": naive(t.created_at),
        "updated_at": naive(t.updated_at),
    }))
}

/// `GET /tasks?status=&limit=100&offset=0`: the caller's tasks (the origin listed every
/// user's).
pub async fn list(
    State(app): State<App>,
    key: AppKey,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let failed = || Json(json!({"success": false, "message": "查询失败"})).into_response();
    let number = |name: &str, default: u32| match query.get(name) {
        None => Some(default),
        Some(v) => v.trim().parse::<u32>().ok(),
    };
    let (Some(limit), Some(offset)) = (number("limit", 100), number("offset", 0)) else {
        return MjError::params(format!("limit and offset must be integers: {query:?}"))
            .into_response();
    };
    let status = query.get("status").filter(|s| !s.is_empty());
    let rows = match app
        .store
        .mj_task_list(
            &key.0.account_id,
            status.map(String::as_str),
            limit.min(1000),
            offset,
        )
        .await
    {
        Ok(rows) => rows,
        Err(_) => return failed(),
    };
    let mut data = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        match row_view(&app, offset as usize + i + 1, row).await {
            Ok(view) => data.push(view),
            Err(_) => return failed(),
        }
    }
    let total = data.len();
    Json(json!({"success": true, "data": data, "total": total})).into_response()
}
