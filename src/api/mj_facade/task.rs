//! The task reads and acts: `GET /mj/task/{id}/fetch` (the bare task object),
//! `POST /mj/task/list-by-condition {ids}`, `GET /mj/task/list` (the newest 100),
//! `GET /mj/task/queue` (tasks whose jobs wait, oldest first), `GET /mj/task/{id}/image-seed`
//! and `POST /mj/task/{id}/cancel`. All of them see the caller's own tasks only.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::{object_body, MjTenant, Reply};
use crate::app::App;
use crate::base::clock::now_millis;
use crate::mj_tasks::view::{job_of, render};
use crate::store::mj_proxy::{ProxyFilter, ProxyTask, ProxyView, PHASE_MODAL};
use crate::store::{CancelOutcome, Tenant};

/// Tasks a list answers at most (the C# edition's `list`).
const LIST_LIMIT: u32 = 100;

async fn own(app: &App, tenant: &Tenant, id: &str) -> Result<ProxyTask, Reply> {
    app.store
        .mj_proxy_get(&tenant.id, id)
        .await?
        .ok_or_else(Reply::no_task)
}

async fn array(app: &App, views: &[ProxyView]) -> Response {
    let tasks = app.mj_tasks();
    let mut all = Vec::with_capacity(views.len());
    for view in views {
        all.push(render(&tasks, view).await);
    }
    Json(all).into_response()
}

fn either(answer: Result<Response, Reply>) -> Response {
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /mj/task/{id}/fetch`.
pub async fn fetch(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    Path(id): Path<String>,
) -> Response {
    let run = async {
        let view = app
            .store
            .mj_proxy_view(&tenant.id, &id)
            .await?
            .ok_or_else(Reply::no_task)?;
        Ok(Json(render(&app.mj_tasks(), &view).await).into_response())
    };
    either(run.await)
}

/// `POST /mj/task/list-by-condition {"ids": [...]}` (`[]` without ids; unknown ids skipped).
pub async fn by_condition(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    body: Bytes,
) -> Response {
    let run = async {
        let body = object_body(&body)?;
        let ids: Vec<String> = match body.get("ids") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) => ids
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(_) => return Err(Reply::invalid("ids 必须是数组")),
        };
        if ids.len() > LIST_LIMIT as usize {
            return Err(Reply::invalid(format!("ids 最多 {LIST_LIMIT} 个")));
        }
        let views = app.store.mj_proxy_views(&tenant.id, &ids).await?;
        Ok(array(&app, &views).await)
    };
    either(run.await)
}

/// `GET /mj/task/list`: the newest tasks.
pub async fn list(State(app): State<App>, MjTenant(tenant): MjTenant) -> Response {
    listed(&app, &tenant, ProxyFilter::All).await
}

/// `GET /mj/task/queue`: tasks whose jobs wait to run, oldest first.
pub async fn queue(State(app): State<App>, MjTenant(tenant): MjTenant) -> Response {
    listed(&app, &tenant, ProxyFilter::Queued).await
}

async fn listed(app: &App, tenant: &Tenant, filter: ProxyFilter) -> Response {
    let run = async {
        let views = app
            .store
            .mj_proxy_list(&tenant.id, filter, LIST_LIMIT)
            .await?;
        Ok(array(app, &views).await)
    };
    either(run.await)
}

/// `GET /mj/task/{id}/image-seed`: the seed the task's images were made with (code 4 when it
/// has none: a task that is not an imagine, blend or grid action, or not finished).
pub async fn image_seed(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    Path(id): Path<String>,
) -> Reply {
    let run = async {
        let task = own(&app, &tenant, &id).await?;
        let seed = job_of(&app.mj_tasks(), &task)
            .await?
            .filter(|job| job.status == crate::base::job::JobStatus::Succeeded)
            .and_then(|job| job.params.seed);
        match seed {
            Some(seed) => Ok(Reply::new(1, "成功", Some(seed.to_string()))),
            None => Err(Reply::invalid("该任务没有种子 (the task has no seed)")),
        }
    };
    run.await.unwrap_or_else(|reply| reply)
}

/// `POST /mj/task/{id}/cancel`: 200 with an empty body when canceled (a running job's attempt
/// is aborted); code 4 when the task has ended.
pub async fn cancel(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    Path(id): Path<String>,
) -> Response {
    let run = async {
        let task = own(&app, &tenant, &id).await?;
        let canceled = match &task.job_id {
            None if task.phase.as_deref() == Some(PHASE_MODAL) => {
                app.store
                    .mj_proxy_cancel_modal(&tenant.id, &task.id, now_millis())
                    .await?
            }
            None => false,
            Some(job_id) => matches!(
                app.store.job_cancel(&tenant.id, job_id).await?,
                CancelOutcome::Canceled
            ),
        };
        if !canceled {
            return Err(Reply::invalid("任务状态不允许取消 (the task has ended)"));
        }
        super::notify(&app, &tenant.id, &task.id).await;
        if let Some(job_id) = &task.job_id {
            // A running attempt hears this and stops; its tenant slot is free again.
            app.events
                .publish(crate::events::Change::job(&tenant.id, job_id));
            app.wake.notify_one();
        }
        Ok(StatusCode::OK.into_response())
    };
    either(run.await)
}
