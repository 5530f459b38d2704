//! `POST /mj/submit/action` (a button's customId on a task), `/change` and `/simple-change`
//! (the Java edition's U, V and reroll) and `/modal` (the second step of a button that asks
//! for a prompt or mask first: Custom Zoom, Vary (Region), or any remix with `enableRemix`).
//! Each one is a job on the named task's job and image; the task must be the caller's, have
//! succeeded, and offer the button.

use axum::body::Bytes;
use axum::extract::State;
use axum::Extension;
use serde_json::{json, Map, Value};

use super::submit::{common, record, seed_of, start, store_image, Plan};
use super::{object_body, text, MjTenant, Reply, Speed};
use crate::app::App;
use crate::base::job::{Job, JobStatus};
use crate::base::operation::Operation;
use crate::mj_tasks::buttons::{self, Button};
use crate::mj_tasks::view::Detail;
use crate::store::mj_proxy::{ProxyTask, PHASE_MODAL};
use crate::store::Tenant;

/// `POST /mj/submit/action {taskId, customId, enableRemix?, state?, notifyHook?}`.
pub async fn action(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    Extension(speed): Extension<Speed>,
    body: Bytes,
) -> Reply {
    let run = async {
        let body = object_body(&body)?;
        let task_id = text(&body, "taskId")?.ok_or_else(|| Reply::invalid("taskId不能为空"))?;
        let custom_id =
            text(&body, "customId")?.ok_or_else(|| Reply::invalid("customId不能为空"))?;
        let (button, hash) = buttons::parse(&custom_id)
            .ok_or_else(|| Reply::invalid(format!("unknown_action:{custom_id}")))?;
        let remix = body.get("enableRemix").and_then(Value::as_bool) == Some(true);
        let asked = Asked {
            task_id: &task_id,
            button,
            hash: Some(hash),
            remix,
        };
        perform(&app, &tenant, speed, &body, asked).await
    };
    run.await.unwrap_or_else(|reply| reply)
}

/// `POST /mj/submit/change {taskId, action: UPSCALE|VARIATION|REROLL, index}`.
pub async fn change(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    Extension(speed): Extension<Speed>,
    body: Bytes,
) -> Reply {
    let run = async {
        let body = object_body(&body)?;
        let task_id = text(&body, "taskId")?.ok_or_else(|| Reply::invalid("taskId不能为空"))?;
        let action = text(&body, "action")?.ok_or_else(|| Reply::invalid("action不能为空"))?;
        let index = body.get("index").and_then(Value::as_u64).unwrap_or(0);
        let button = change_button(&action, index)?;
        let asked = Asked {
            task_id: &task_id,
            button,
            hash: None,
            remix: false,
        };
        perform(&app, &tenant, speed, &body, asked).await
    };
    run.await.unwrap_or_else(|reply| reply)
}

/// `POST /mj/submit/simple-change {content: "<taskId> U1..U4|V1..V4|R"}`.
pub async fn simple_change(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    Extension(speed): Extension<Speed>,
    body: Bytes,
) -> Reply {
    let run = async {
        let body = object_body(&body)?;
        let content = text(&body, "content")?.ok_or_else(|| Reply::invalid("content不能为空"))?;
        let bad = || Reply::invalid("content参数错误");
        let (task_id, what) = content.trim().split_once(' ').ok_or_else(bad)?;
        let what = what.trim().to_ascii_uppercase();
        let button = match what.split_at(1) {
            ("R", "") => Button::Reroll,
            ("U", i) => change_button("UPSCALE", i.parse().map_err(|_| bad())?)?,
            ("V", i) => change_button("VARIATION", i.parse().map_err(|_| bad())?)?,
            _ => return Err(bad()),
        };
        let asked = Asked {
            task_id,
            button,
            hash: None,
            remix: false,
        };
        perform(&app, &tenant, speed, &body, asked).await
    };
    run.await.unwrap_or_else(|reply| reply)
}

fn change_button(action: &str, index: u64) -> Result<Button, Reply> {
    let index = u32::try_from(index)
        .ok()
        .filter(|i| (1..=4).contains(i))
        .ok_or_else(|| Reply::invalid("index 须为 1-4"));
    match action {
        "UPSCALE" => Ok(Button::Upscale(index?)),
        "VARIATION" => Ok(Button::Variation(index?)),
        "REROLL" => Ok(Button::Reroll),
        _ => Err(Reply::invalid(format!(
            "action '{action}': UPSCALE, VARIATION or REROLL"
        ))),
    }
}

/// A button asked for on a task.
struct Asked<'a> {
    task_id: &'a str,
    button: Button,
    /// The message hash the customId carried (`change` has none).
    hash: Option<&'a str>,
    remix: bool,
}

/// The caller's finished task `task_id` and its job: 404 code 3 when unknown, code 4 while it
/// has not succeeded.
async fn finished(app: &App, tenant: &Tenant, task_id: &str) -> Result<(ProxyTask, Job), Reply> {
    let view = app
        .store
        .mj_proxy_view(&tenant.id, task_id)
        .await?
        .ok_or_else(Reply::no_task)?;
    match view.job {
        Some(job) if job.status == JobStatus::Succeeded => Ok((view.task, job)),
        _ => Err(Reply::invalid("关联任务状态错误")),
    }
}

async fn perform(
    app: &App,
    tenant: &Tenant,
    speed: Speed,
    body: &Map<String, Value>,
    asked: Asked<'_>,
) -> Result<Reply, Reply> {
    let (parent, job) = finished(app, tenant, asked.task_id).await?;
    let parent_detail = Detail::of(&parent);
    let offered = buttons::of_task(job.params.grid, parent_detail.image_id.is_none());
    if !offered.contains(&asked.button) || asked.hash.is_some_and(|h| h != parent.hash) {
        return Err(Reply::invalid(format!(
            "该任务不支持此操作 (the task {} has no such button)",
            parent.id
        )));
    }
    let mut detail = common(app, tenant, speed, body).await?;
    detail.parent_id = Some(parent.id.clone());
    detail.prompt = parent_detail.prompt.clone();
    detail.description = format!(
        "/{} {} {}",
        verb(asked.button),
        parent.id,
        asked.button.describe()
    );
    if asked.button.modal() || (asked.remix && asked.button.remixable()) {
        detail.pending = Some(asked.button.custom_id(&parent.hash));
        let plan = Plan::new(asked.button.action(), Operation::Generate, detail);
        let id = record(app, tenant, &plan).await?;
        super::notify(app, &tenant.id, &id).await;
        return Ok(Reply::new(21, "Waiting for window confirm", Some(id))
            .with(json!({"finalPrompt": parent_detail.prompt, "remix": true})));
    }
    Ok(start(app, tenant, plan_for(asked.button, &job, detail), None).await)
}

fn verb(button: Button) -> &'static str {
    match button.action() {
        "UPSCALE" => "up",
        "VARIATION" => "variation",
        "REROLL" => "reroll",
        "ZOOM" => "zoom",
        "PAN" => "pan",
        _ => "inpaint",
    }
}

/// The job a button makes on the parent's job.
fn plan_for(button: Button, parent: &Job, detail: Detail) -> Plan {
    let (operation, index, grid) = button.job();
    let mut plan = Plan::new(button.action(), operation, detail);
    plan.grid = grid;
    plan.parent_job = index.map(|i| (parent.clone(), i));
    if grid {
        plan.seed = Some(seed_of(&plan.detail.prompt));
    }
    plan
}

/// `POST /mj/submit/modal {taskId, prompt?, maskBase64?, state?, notifyHook?}`: starts a
/// MODAL task with the prompt (the parent's when empty) and, for Vary (Region), the mask.
pub async fn modal(State(app): State<App>, MjTenant(tenant): MjTenant, body: Bytes) -> Reply {
    match modal_plan(&app, &tenant, &body).await {
        Ok((task_id, plan)) => start(&app, &tenant, plan, Some(&task_id)).await,
        Err(reply) => reply,
    }
}

async fn modal_plan(app: &App, tenant: &Tenant, body: &[u8]) -> Result<(String, Plan), Reply> {
    let body = object_body(body)?;
    let task_id = text(&body, "taskId")?.ok_or_else(|| Reply::invalid("taskId不能为空"))?;
    let task = app
        .store
        .mj_proxy_get(&tenant.id, &task_id)
        .await?
        .ok_or_else(Reply::no_task)?;
    let mut detail = Detail::of(&task);
    let pending = detail
        .pending
        .take()
        .filter(|_| task.phase.as_deref() == Some(PHASE_MODAL));
    let Some((button, _)) = pending.as_deref().and_then(buttons::parse) else {
        return Err(Reply::invalid("关联任务状态错误"));
    };
    let parent_id = detail.parent_id.clone().unwrap_or_default();
    let (_, parent_job) = finished(app, tenant, &parent_id).await?;
    if let Some(state) = text(&body, "state")? {
        detail.state = Some(state);
    }
    let prompt = text(&body, "prompt")?.unwrap_or_else(|| detail.prompt.clone());
    let mut plan = match button {
        Button::CustomZoom => {
            let (percent, rest) = buttons::custom_zoom(&prompt)
                .ok_or_else(|| Reply::invalid("--zoom 须大于 1 且不超过 2"))?;
            if !rest.is_empty() {
                detail.prompt = rest;
            }
            let mut plan = plan_for(button, &parent_job, detail);
            plan.operation = Operation::ZoomOut { percent };
            plan
        }
        Button::Region => {
            let mask =
                text(&body, "maskBase64")?.ok_or_else(|| Reply::invalid("maskBase64不能为空"))?;
            detail.prompt = prompt;
            let mut plan = plan_for(button, &parent_job, detail);
            plan.mask_key = Some(store_image(app, tenant, &mask).await?.object.key);
            plan
        }
        _ => {
            detail.prompt = prompt;
            plan_for(button, &parent_job, detail)
        }
    };
    plan.detail.pending = None;
    Ok((task.id, plan))
}
