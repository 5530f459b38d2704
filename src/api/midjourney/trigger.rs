//! The seed's trigger calls: `imagine`, `upscale`, `variation`, `reset`, `solo_variation`,
//! `solo_low_variation`, `solo_high_variation`, `expand`, `zoomout` and `describe`. Each one is
//! a job of the matching operation on the provider of `midjourney.provider` (else
//! `providers.default`), paid with one token held from the app key's account in the submit
//! transaction (settled when the job succeeds, released when it fails or is banned), and a
//! task row the other routes read.
//!
//! Order as the origin's: auth, then the token check (429), then the body (400 code 13), then
//! the banned words (code 14) and the queue bound (code 15), which cost nothing. `upscale`
//! and `variation` name their parent by its task id in `trigger_id` (the fork's semantics);
//! the other calls on an image name it by `msg_hash`.

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::auth::AppKey;
use super::{int_field, json_body, required, text_field, MjError};
use crate::api::jobs::{check_operation, enqueue, Enqueued};
use crate::app::App;
use crate::base::clock::now_millis;
use crate::base::job::{new_job_id, JobParams, Mode, NewJob, Operation};
use crate::base::operation::{Direction, Strength, UpscaleStyle};
use crate::ledger::pricing::{Payer, Priced};
use crate::store::midjourney::{MjTask, MjTaskRow};
use crate::store::StoreError;

/// Every trigger route, by its path's last segment.
pub const ROUTES: [&str; 10] = [
    "imagine",
    "upscale",
    "variation",
    "reset",
    "solo_variation",
    "solo_low_variation",
    "solo_high_variation",
    "expand",
    "zoomout",
    "describe",
];

/// The operation a route asks for (its kind prices the call before the body is read).
fn kind_of(route: &str) -> &'static str {
    match route {
        "imagine" => "generate",
        "upscale" => "upscale",
        "reset" => "reroll",
        "expand" => "outpaint",
        "zoomout" => "zoom_out",
        "describe" => "describe",
        _ => "variation",
    }
}

/// What one call will make.
struct Plan {
    operation: Operation,
    prompt: String,
    input_image_url: Option<String>,
    input_image_ids: Vec<String>,
    parent: Option<(String, u32)>,
    grid: bool,
    /// The task's trigger id (the parent's for upscale and variation).
    trigger_id: String,
    task_name: String,
    image_index: i64,
    zoom_out: i64,
    direction: String,
    /// `code` of the answer: 0 for imagine, upscale and variation, 1 otherwise (a quirk).
    code: u32,
    /// Imagine's task id is the origin's millisecond time; the others a UUID.
    timed_id: bool,
}

/// A random decimal id below 10^10, as the origin's `sha256(time) % 10**10`.
pub fn new_trigger_id() -> String {
    rand::thread_rng()
        .gen_range(0..10_000_000_000u64)
        .to_string()
}

/// A UUID v4 in its usual text form (task ids of the non-imagine calls, message hashes).
pub fn uuid4() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub async fn handle(route: &'static str, app: App, key: AppKey, body: Bytes) -> Response {
    match trigger(route, &app, &key, &body).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The provider MJ calls run on: `midjourney.provider`, else `providers.default`.
pub fn provider_of(app: &App) -> String {
    app.config
        .midjourney
        .provider
        .clone()
        .unwrap_or_else(|| app.providers.default_name().to_owned())
}

async fn trigger(
    route: &'static str,
    app: &App,
    key: &AppKey,
    body: &[u8],
) -> Result<Value, MjError> {
    let tenant_id = key.0.tenant_id.clone();
    let provider = provider_of(app);
    let payer = Payer::AppKey {
        api_key_id: key.api_key_id().to_owned(),
    };
    let priced = Priced {
        operation: kind_of(route),
        mode: Mode::Final.as_str(),
        provider: &provider,
        images: 1,
    };
    let charge = app.pricing.charge(&tenant_id, &payer, priced).await?;
    if let Some(charge) = &charge {
        let totals = app.store.ledger_totals(&key.0.account_id).await?;
        if totals.balance < charge.amount {
            return Err(MjError::token_limit());
        }
    }
    let body = json_body(body)?;
    let plan = plan(route, app, &tenant_id, &body).await?;
    let banned = app.config.midjourney.banned_in(&plan.prompt);
    if !banned.is_empty() {
        let words: Vec<String> = banned.iter().map(|w| format!("'{w}'")).collect();
        return Err(MjError::in_body(
            14,
            format!("banned prompt: {{{}}}", words.join(", ")),
        ));
    }
    let waiting = app.store.mj_tasks_waiting(&tenant_id).await?;
    if waiting >= app.config.midjourney.max_waiting {
        return Err(MjError::in_body(
            15,
            format!("Task queue is full: {}", app.config.midjourney.max_waiting),
        ));
    }
    let params = JobParams {
        operation: plan.operation,
        parent_job_id: plan.parent.as_ref().map(|p| p.0.clone()),
        parent_index: plan.parent.as_ref().map(|p| p.1),
        grid: plan.grid,
        n: plan.grid.then_some(4),
        input_image_ids: plan.input_image_ids.clone(),
        ..JobParams::default()
    };
    check_operation(app, &tenant_id, &provider, &params)
        .await
        .map_err(|e| MjError::params(e.message))?;
    let now = now_millis();
    let job = NewJob {
        id: new_job_id(),
        tenant_id: tenant_id.clone(),
        prompt: plan.prompt.clone(),
        mode: Mode::Final,
        input_image_url: plan.input_image_url.clone(),
        params,
        provider,
        max_attempts: app.config.worker.max_attempts,
        created_at: now,
        cancel_at: None,
        deadline_at: app.config.worker.deadline_from(now),
        idempotency: None,
        webhook_url: None,
        charge,
        follow_up: None,
    };
    crate::api::uploads::hold_inputs(app, &tenant_id, &plan.input_image_ids)
        .await
        .map_err(|e| MjError::params(e.message))?;
    let job_id = match enqueue(app, job).await {
        Ok(Enqueued::Created { job_id }) => job_id,
        Ok(Enqueued::Replayed { job_id, .. }) => job_id,
        Err(e) => {
            crate::api::uploads::let_go(app, &tenant_id, &plan.input_image_ids).await;
            return Err(match e.code {
                crate::error::ErrorCode::InsufficientCredits => MjError::token_limit(),
                _ => MjError::params(e.message),
            });
        }
    };
    let task_id = record(app, key, route, &plan, &job_id).await?;
    Ok(json!({
        "code": plan.code,
        "message": "success",
        "trigger_id": plan.trigger_id,
        "trigger_type": if route == "imagine" { "generate" } else { route },
        "result": task_id,
    }))
}

/// Writes the task row of a submitted job; its task id. Imagine's id is the millisecond time
/// (the next millisecond when two calls share one).
async fn record(
    app: &App,
    key: &AppKey,
    route: &str,
    plan: &Plan,
    job_id: &str,
) -> Result<String, MjError> {
    let now = now_millis();
    let mut task = MjTask {
        task_id: String::new(),
        trigger_id: plan.trigger_id.clone(),
        tenant_id: key.0.tenant_id.clone(),
        account_id: key.0.account_id.clone(),
        job_id: Some(job_id.to_owned()),
        task_name: plan.task_name.clone(),
        task_type: if route == "imagine" {
            "generate".into()
        } else {
            route.into()
        },
        image_index: plan.image_index,
        msg_id: rand::thread_rng().gen_range(1_000_000_000_000_000_000..i64::MAX),
        msg_hash: uuid4(),
        zoom_out: plan.zoom_out,
        direction: plan.direction.clone(),
        ref_pic_url: plan.input_image_url.clone(),
        prompts: plan.prompt.clone(),
        bot_status: None,
        result_url: None,
        attachments: None,
        created_at: now,
        updated_at: now,
    };
    for attempt in 0..20i64 {
        task.task_id = if plan.timed_id {
            (now + attempt).to_string()
        } else {
            uuid4()
        };
        match app.store.mj_task_insert(task.clone()).await {
            Ok(()) => return Ok(task.task_id),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(MjError::internal())
}

/// The finished task a call acts on, by task id or message hash; 404 code 10 when unknown,
/// 400 code 13 while it has no images.
async fn finished(found: Option<MjTaskRow>) -> Result<MjTask, MjError> {
    let row = found.ok_or_else(MjError::no_task)?;
    if row.status != "SUCCESS" || row.task.job_id.is_none() {
        return Err(MjError::params(format!(
            "the task {} is {}; only a finished task's images can be used",
            row.task.task_id, row.status
        )));
    }
    Ok(row.task)
}

fn image_index(body: &Map<String, Value>) -> Result<u32, MjError> {
    match int_field(body, "index") {
        Some(i @ 1..=4) => Ok(i as u32),
        _ => Err(MjError::params(format!(
            "index must be 1-4: {}",
            Value::Object(body.clone())
        ))),
    }
}

fn base_plan(operation: Operation, prompt: String, trigger_id: String, name: &str) -> Plan {
    Plan {
        operation,
        prompt,
        input_image_url: None,
        input_image_ids: Vec::new(),
        parent: None,
        grid: true,
        trigger_id,
        task_name: name.to_owned(),
        image_index: 0,
        zoom_out: 0,
        direction: String::new(),
        code: 1,
        timed_id: false,
    }
}

async fn plan(
    route: &str,
    app: &App,
    tenant_id: &str,
    body: &Map<String, Value>,
) -> Result<Plan, MjError> {
    match route {
        "imagine" => imagine(app, body),
        "upscale" | "variation" => {
            let index = image_index(body)?;
            let parent_id = required(body, "trigger_id")?;
            let parent = finished(app.store.mj_task_get(tenant_id, &parent_id).await?).await?;
            let (operation, grid) = if route == "upscale" {
                let op = Operation::Upscale {
                    style: UpscaleStyle::Subtle,
                    factor: 2,
                };
                (op, false)
            } else {
                (Operation::Variation(Strength::Strong), true)
            };
            let mut plan = base_plan(
                operation,
                parent.prompts.clone(),
                parent.trigger_id.clone(),
                &format!("{route}-{index}"),
            );
            plan.parent = parent.job_id.map(|job| (job, index));
            plan.grid = grid;
            plan.image_index = i64::from(index);
            plan.code = 0;
            Ok(plan)
        }
        "describe" => {
            let filename = required(body, "upload_filename")?;
            let image_id = super::upload::image_of(&filename).ok_or_else(|| {
                MjError::params(format!("upload_filename '{filename}' is not an upload"))
            })?;
            let trigger_id = text_field(body, "trigger_id").unwrap_or_else(new_trigger_id);
            let mut plan = base_plan(
                Operation::Describe,
                "describe".into(),
                trigger_id,
                "describe",
            );
            plan.input_image_ids = vec![image_id];
            plan.grid = false;
            Ok(plan)
        }
        _ => on_message(route, app, tenant_id, body).await,
    }
}

fn imagine(app: &App, body: &Map<String, Value>) -> Result<Plan, MjError> {
    let raw = required(body, "prompt")?;
    let mut prompt = raw.trim().to_owned();
    let mut picurl = text_field(body, "picurl").filter(|u| !u.trim().is_empty());
    // The origin: no picurl and a prompt starting with a link make that link the picurl.
    if picurl.is_none() && (prompt.starts_with("http://") || prompt.starts_with("https://")) {
        let (link, rest) = prompt
            .split_once(char::is_whitespace)
            .unwrap_or((&prompt, ""));
        picurl = Some(link.to_owned());
        prompt = rest.trim().to_owned();
    }
    if prompt.is_empty() || prompt.chars().count() > app.config.server.max_prompt_chars {
        return Err(MjError::params(format!(
            "prompt must be 1-{} characters",
            app.config.server.max_prompt_chars
        )));
    }
    if let Some(url) = &picurl {
        app.inputs
            .precheck(url)
            .map_err(|e| MjError::params(format!("picurl: {}", e.message)))?;
    }
    let mut plan = base_plan(Operation::Generate, prompt, new_trigger_id(), "imagine");
    plan.input_image_url = picurl;
    plan.code = 0;
    plan.timed_id = true;
    Ok(plan)
}

/// `reset`, the `solo_*` variations, `expand` and `zoomout`: on the image of the task whose
/// message hash is `msg_hash`.
async fn on_message(
    route: &str,
    app: &App,
    tenant_id: &str,
    body: &Map<String, Value>,
) -> Result<Plan, MjError> {
    let msg_hash = required(body, "msg_hash")?;
    let trigger_id = required(body, "trigger_id")?;
    let source = finished(app.store.mj_task_by_hash(tenant_id, &msg_hash).await?).await?;
    let mut direction = String::new();
    let mut zoom_out = 0;
    let operation = match route {
        "reset" => Operation::Reroll,
        "solo_low_variation" => Operation::Variation(Strength::Subtle),
        "solo_variation" | "solo_high_variation" => Operation::Variation(Strength::Strong),
        "expand" => {
            direction = required(body, "direction")?;
            Operation::Outpaint(match direction.as_str() {
                "left" => Direction::Left,
                "right" => Direction::Right,
                "up" => Direction::Up,
                "down" => Direction::Down,
                _ => return Err(MjError::params("direction must be left, right, up or down")),
            })
        }
        _ => {
            zoom_out = int_field(body, "zoomout").unwrap_or(0);
            if !(50..=99).contains(&zoom_out) {
                return Err(MjError::params("zoomout must be 50 (2x) to 99; 75 is 1.5x"));
            }
            // The origin's value is the share of the new canvas the image keeps.
            let percent = (10_000 / zoom_out).clamp(101, 200) as u16;
            Operation::ZoomOut { percent }
        }
    };
    let mut plan = base_plan(operation, source.prompts.clone(), trigger_id, route);
    if route != "reset" {
        plan.parent = source.job_id.map(|job| (job, 1));
    }
    plan.direction = direction;
    plan.zoom_out = zoom_out;
    Ok(plan)
}
