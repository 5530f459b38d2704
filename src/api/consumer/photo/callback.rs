//! `POST /api/callback/task-complete` and `POST /api/callback/task-failed`: the n8n workflow's
//! answer for a task of a type run on a workflow (`photo::workflow`), in the origin's payload
//! (`{task_id, images: [{url ("data:" URLs too), format, batch_index}], ai_description}`;
//! `{task_id, error}`) and answers (`{"success": true, "message": "任务状态已更新"}`, 200 for
//! an unknown task too; 400 `缺少task_id参数`).
//!
//! Differences from the origin (listed in the README): the origin took any caller; here a
//! callback proves it comes from the deployment's workflow, by `?secret=` in its URL or by
//! `X-Easel-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, both with
//! `[photo] workflow_secret` (else 401 `回调验证失败` in the envelope). The run ends once: a
//! callback that comes twice, or after the task ended (timed out, cancelled), changes
//! nothing. The callback only records the outcome; the task's jobs read it, the worker
//! stores the images in Easel's storage and settles (or releases) each image's credit, and
//! the task ends with its work as any task does.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::{done, store_failure};
use crate::api::consumer::reply::photo_error;
use crate::app::App;
use crate::base::clock::now_millis;
use crate::events::Change;
use crate::photo::workflow::{verify, SIGNATURE_HEADER};
use crate::store::photo::WorkflowEnd;

#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    secret: Option<String>,
}

pub async fn complete(
    State(app): State<App>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    called_back(&app, &q, &headers, &body, |payload| WorkflowEnd {
        outcome: "completed".into(),
        images: payload["images"].clone(),
        ai_description: payload["ai_description"].as_str().map(str::to_owned),
        error: None,
    })
    .await
}

pub async fn failed(
    State(app): State<App>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    called_back(&app, &q, &headers, &body, |payload| WorkflowEnd {
        outcome: "failed".into(),
        images: Value::Null,
        ai_description: None,
        error: Some(
            payload["error"]
                .as_str()
                .filter(|e| !e.is_empty())
                .unwrap_or("未知错误")
                .to_owned(),
        ),
    })
    .await
}

async fn called_back(
    app: &App,
    q: &CallbackQuery,
    headers: &HeaderMap,
    body: &[u8],
    end: impl FnOnce(&Value) -> WorkflowEnd,
) -> Response {
    let secret = app
        .config
        .photo
        .workflow_secret
        .as_ref()
        .map_or("", |s| s.expose());
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if !verify(secret, body, signature, q.secret.as_deref()) {
        return photo_error(StatusCode::UNAUTHORIZED, "回调验证失败");
    }
    let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(task_id) = payload["task_id"].as_str().filter(|t| !t.is_empty()) else {
        return photo_error(StatusCode::BAD_REQUEST, "缺少task_id参数");
    };
    match app
        .store
        .photo_workflow_end(task_id, end(&payload), now_millis())
        .await
    {
        Ok(true) => {
            if let Err(e) = wake_jobs(app, task_id).await {
                // The jobs' safety poll reads the outcome anyway.
                tracing::warn!(task = %task_id, error = %e, "workflow jobs not woken");
            }
        }
        Ok(false) => {}
        Err(e) => return store_failure(e),
    }
    done("任务状态已更新")
}

/// Tells the task's jobs (in whichever process runs them) that their run ended.
async fn wake_jobs(app: &App, task_id: &str) -> Result<(), crate::store::StoreError> {
    let Some(run) = app.store.photo_workflow_get(task_id).await? else {
        return Ok(());
    };
    for job in app.store.photo_task_jobs(task_id).await? {
        app.events.publish(Change::job(&run.tenant_id, &job.job_id));
    }
    Ok(())
}
