//! `POST /mj/submit/imagine`, `/describe` and `/blend`, and the path every submit ends on
//! ([`start`]): the banned words (code 24), the queue bound and the tenant's rate (code 23),
//! the operation's check (code 4), the price, then the job and its task (code 1, or 22 with
//! `numberOfQueues` when jobs were waiting as it came: the queue bound and that count are one
//! read, and the job and its task one write). A refused submit makes nothing and costs
//! nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::Extension;
use base64::Engine;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::{object_body, text, MjTenant, Reply, Speed};
use crate::api::jobs::{check_parent, check_supported, enqueue, enqueued, Enqueued};
use crate::app::App;
use crate::base::clock::now_millis;
use crate::base::image::{ImageOwner, ImageRecord};
use crate::base::job::{new_job_id, Job, JobParams, Mode, NewJob};
use crate::base::operation::{BlendShape, Operation, BLEND_IMAGES};
use crate::error::{ApiError, ErrorCode};
use crate::ledger::pricing::{Payer, Priced};
use crate::mj_tasks::view::Detail;
use crate::store::mj_proxy::{ProxyTask, PHASE_MODAL};
use crate::store::{StoreError, Tenant};
use crate::uploads::{Upload, UploadError};

/// `state` and `notifyHook` bounds (the C# edition's).
const MAX_STATE: usize = 255;
const MAX_HOOK: usize = 2000;

/// What one submit makes.
pub struct Plan {
    /// The task's action (`IMAGINE`, `UPSCALE`, ...).
    pub action: &'static str,
    pub detail: Detail,
    pub operation: Operation,
    /// Four images and their grid.
    pub grid: bool,
    /// The parent job (read, and found succeeded, by the caller) and which of its images.
    pub parent_job: Option<(Job, u32)>,
    pub input_image_url: Option<String>,
    pub input_image_ids: Vec<String>,
    /// The object key of a Vary (Region) mask.
    pub mask_key: Option<String>,
    pub seed: Option<u64>,
}

impl Plan {
    pub fn new(action: &'static str, operation: Operation, detail: Detail) -> Plan {
        Plan {
            action,
            detail,
            operation,
            grid: false,
            parent_job: None,
            input_image_url: None,
            input_image_ids: Vec::new(),
            mask_key: None,
            seed: None,
        }
    }
}

/// A new 16-digit task id: the millisecond time and three random digits.
fn new_task_id() -> String {
    format!(
        "{}{:03}",
        now_millis(),
        rand::thread_rng().gen_range(0..1000u32)
    )
}

/// The fields every submit takes: `state`, `notifyHook` (checked as any webhook URL) and the
/// route's speed mode.
pub async fn common(
    app: &App,
    tenant: &Tenant,
    speed: Speed,
    body: &Map<String, Value>,
) -> Result<Detail, Reply> {
    let state = text(body, "state")?;
    if state
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_STATE)
    {
        return Err(Reply::invalid(format!("state 最多 {MAX_STATE} 个字符")));
    }
    let notify_hook = match text(body, "notifyHook")? {
        Some(hook) if hook.len() > MAX_HOOK => {
            return Err(Reply::invalid(format!("notifyHook 最多 {MAX_HOOK} 个字符")))
        }
        Some(hook) => Some(
            crate::api::webhooks::check_job_webhook_url(app, &tenant.id, &hook)
                .await
                .map_err(|e| Reply::invalid(format!("notifyHook: {}", e.message)))?,
        ),
        None => None,
    };
    Ok(Detail {
        state,
        notify_hook,
        mode: speed.0.map(str::to_owned),
        ..Detail::default()
    })
}

/// Makes the task (or, with `modal_task`, starts that MODAL task) and its job.
pub async fn start(app: &App, tenant: &Tenant, plan: Plan, modal_task: Option<&str>) -> Reply {
    match try_start(app, tenant, plan, modal_task).await {
        Ok(reply) | Err(reply) => reply,
    }
}

async fn try_start(
    app: &App,
    tenant: &Tenant,
    plan: Plan,
    modal_task: Option<&str>,
) -> Result<Reply, Reply> {
    refuse_banned(app, &plan.detail.prompt)?;
    let max_waiting = app.config.midjourney.max_waiting;
    let limit = u32::try_from(max_waiting).unwrap_or(u32::MAX);
    let queue = app.store.mj_proxy_queue(&tenant.id, limit).await?;
    if queue.tasks >= max_waiting {
        return Err(queue_full());
    }
    let provider = crate::api::midjourney::provider_of(app);
    let params = JobParams {
        operation: plan.operation,
        parent_job_id: plan.parent_job.as_ref().map(|p| p.0.id.clone()),
        parent_index: plan.parent_job.as_ref().map(|p| p.1),
        grid: plan.grid,
        n: plan.grid.then_some(4),
        input_image_ids: plan.input_image_ids.clone(),
        mask: plan.mask_key.clone(),
        seed: plan.seed,
        ..JobParams::default()
    };
    check_supported(app, &provider, &params).map_err(|e| Reply::invalid(e.message))?;
    if let Some((parent, _)) = &plan.parent_job {
        check_parent(parent, &params).map_err(|e| Reply::invalid(e.message))?;
    }
    crate::api::ratelimit::check_tenant(app, tenant)
        .await
        .map_err(|e| match e.code {
            ErrorCode::RateLimitExceeded => queue_full(),
            _ => Reply::failed("the rate limiter", e.message),
        })?;
    let priced = Priced {
        operation: plan.operation.kind(),
        mode: Mode::Final.as_str(),
        provider: &provider,
        images: 1,
    };
    let charge = app
        .pricing
        .charge(&tenant.id, &Payer::Tenant, priced)
        .await?;
    let now = now_millis();
    let job = NewJob {
        id: new_job_id(),
        tenant_id: tenant.id.clone(),
        // A describe has no prompt; its job is named for what it does.
        prompt: match plan.detail.prompt.as_str() {
            "" => plan.action.to_lowercase(),
            prompt => prompt.to_owned(),
        },
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
        // Its end queues the task's last notifyHook call.
        follow_up: plan
            .detail
            .notify_hook
            .is_some()
            .then(|| crate::mj_tasks::follower::NAME.to_owned()),
    };
    crate::api::uploads::hold_inputs(app, &tenant.id, &plan.input_image_ids)
        .await
        .map_err(|e| Reply::invalid(e.message))?;
    let task_id = match modal_task {
        None => {
            let task = new_task(tenant, &plan, Some(&job.id));
            let created = create(app, tenant, job, task).await;
            or_let_go(app, tenant, &plan, created).await?
        }
        Some(modal) => {
            let submitted = job_id_of(enqueue(app, job).await);
            let job_id = or_let_go(app, tenant, &plan, submitted).await?;
            started(app, tenant, modal, &job_id, &plan.detail).await?
        }
    };
    if plan.detail.notify_hook.is_some() {
        super::notify(app, &tenant.id, &task_id).await;
    }
    Ok(queued_answer(queue.jobs, task_id))
}

/// Writes the job and its new task in one transaction: the task's id.
async fn create(app: &App, tenant: &Tenant, job: NewJob, task: ProxyTask) -> Result<String, Reply> {
    let (task_id, outcome) =
        with_free_id(task, |t| app.store.mj_proxy_submit(job.clone(), t)).await?;
    job_id_of(enqueued(app, &tenant.id, outcome))?;
    Ok(task_id)
}

/// The id of the job a submit wrote, or its refusal (code 4).
fn job_id_of(enqueued: Result<Enqueued, ApiError>) -> Result<String, Reply> {
    match enqueued {
        Ok(Enqueued::Created { job_id }) | Ok(Enqueued::Replayed { job_id, .. }) => Ok(job_id),
        Err(e) => Err(match e.code {
            ErrorCode::InsufficientCredits => {
                Reply::invalid(format!("quota_not_enough: {}", e.message))
            }
            _ => Reply::invalid(e.message),
        }),
    }
}

/// `result`; when it is a refusal, the uploads the plan held are let go first.
async fn or_let_go<T>(
    app: &App,
    tenant: &Tenant,
    plan: &Plan,
    result: Result<T, Reply>,
) -> Result<T, Reply> {
    if result.is_err() {
        crate::api::uploads::let_go(app, &tenant.id, &plan.input_image_ids).await;
    }
    result
}

/// Code 24 when the prompt has a banned word.
fn refuse_banned(app: &App, prompt: &str) -> Result<(), Reply> {
    let banned = app.config.midjourney.banned_in(prompt);
    match banned.first() {
        None => Ok(()),
        Some(word) => Err(Reply::new(24, "可能包含敏感词", None)
            .with(json!({"promptEn": prompt, "bannedWord": word}))),
    }
}

fn queue_full() -> Reply {
    Reply::new(23, "队列已满，请稍后尝试", None)
}

/// Code 1, or 22 when `ahead` jobs waited to run as the task was submitted.
fn queued_answer(ahead: u64, task_id: String) -> Reply {
    if ahead == 0 {
        return Reply::new(1, "提交成功", Some(task_id));
    }
    Reply::new(22, format!("排队中，前面还有{ahead}个任务"), Some(task_id))
        .with(json!({"numberOfQueues": ahead}))
}

/// Writes a new MODAL task (one waiting for its `/mj/submit/modal`); its id.
pub async fn record(app: &App, tenant: &Tenant, plan: &Plan) -> Result<String, Reply> {
    let task = new_task(tenant, plan, None);
    let (id, ()) = with_free_id(task, |t| app.store.mj_proxy_insert(t)).await?;
    Ok(id)
}

/// A task of `plan` for the job `job_id` (a MODAL one when `None`), its id still to choose.
fn new_task(tenant: &Tenant, plan: &Plan, job_id: Option<&str>) -> ProxyTask {
    let now = now_millis();
    ProxyTask {
        id: String::new(),
        tenant_id: tenant.id.clone(),
        job_id: job_id.map(str::to_owned),
        hash: crate::api::midjourney::uuid4(),
        action: plan.action.to_owned(),
        phase: job_id.is_none().then(|| PHASE_MODAL.to_owned()),
        detail: plan.detail.to_text(),
        notified: -1,
        created_at: now,
        updated_at: now,
    }
}

/// Runs `write` with the task under new ids until one is free: that id and what `write`
/// answered.
async fn with_free_id<T, F, W>(mut task: ProxyTask, mut write: W) -> Result<(String, T), Reply>
where
    W: FnMut(ProxyTask) -> F,
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    for _ in 0..20 {
        task.id = new_task_id();
        match write(task.clone()).await {
            Ok(answer) => return Ok((task.id, answer)),
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Reply::failed("task id", "20 ids taken"))
}

async fn started(
    app: &App,
    tenant: &Tenant,
    task_id: &str,
    job_id: &str,
    detail: &Detail,
) -> Result<String, Reply> {
    let done = app
        .store
        .mj_proxy_start(&tenant.id, task_id, job_id, &detail.to_text(), now_millis())
        .await?;
    if !done {
        // Another modal submit won the race; this job is not the task's, so cancel it.
        let _ = app.store.job_cancel(&tenant.id, job_id).await;
        return Err(Reply::invalid("关联任务状态错误"));
    }
    Ok(task_id.to_owned())
}

/// One image of a `base64`/`base64Array` field, stored in the tenant's image library.
pub async fn store_image(app: &App, tenant: &Tenant, data: &str) -> Result<ImageRecord, Reply> {
    let encoded = match data.split_once(";base64,") {
        Some((head, rest)) if head.starts_with("data:") => rest,
        Some(_) => return Err(Reply::invalid("base64格式错误")),
        None => data,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Reply::invalid("base64格式错误"))?;
    let owner = ImageOwner::tenant(&tenant.id);
    match app.images.upload(&owner, Upload::new(bytes.into())).await {
        Ok(record) => Ok(record),
        Err(UploadError::Unavailable(e)) => Err(Reply::failed("image storage", e)),
        Err(e) => Err(Reply::invalid(format!("base64格式错误: {e}"))),
    }
}

/// Stores each image of a `base64Array`.
async fn store_images(app: &App, tenant: &Tenant, field: &Value) -> Result<Vec<String>, Reply> {
    let items = match field {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(Reply::invalid("base64Array 必须是数组")),
    };
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let data = item
            .as_str()
            .ok_or_else(|| Reply::invalid("base64格式错误"))?;
        ids.push(store_image(app, tenant, data).await?.id);
    }
    Ok(ids)
}

/// A seed named by `--seed N` in the prompt, else a new one (so `image-seed` has one).
pub fn seed_of(prompt: &str) -> u64 {
    let words: Vec<&str> = prompt.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "--seed")
        .and_then(|at| words.get(at + 1)?.parse::<u32>().ok())
        .map_or_else(|| u64::from(rand::thread_rng().gen::<u32>()), u64::from)
}

/// `POST /mj/submit/imagine {prompt, base64Array?, base64?, state?, notifyHook?}`.
pub async fn imagine(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    Extension(speed): Extension<Speed>,
    body: Bytes,
) -> Reply {
    match imagine_plan(&app, &tenant, speed, &body).await {
        Ok(plan) => start(&app, &tenant, plan, None).await,
        Err(reply) => reply,
    }
}

async fn imagine_plan(
    app: &App,
    tenant: &Tenant,
    speed: Speed,
    body: &[u8],
) -> Result<Plan, Reply> {
    let body = object_body(body)?;
    let prompt = text(&body, "prompt")?.ok_or_else(|| Reply::invalid("prompt不能为空"))?;
    let prompt = prompt.trim().to_owned();
    if prompt.chars().count() > app.config.server.max_prompt_chars {
        return Err(Reply::invalid(format!(
            "prompt 最多 {} 个字符",
            app.config.server.max_prompt_chars
        )));
    }
    refuse_banned(app, &prompt)?;
    let mut detail = common(app, tenant, speed, &body).await?;
    let mut images =
        store_images(app, tenant, body.get("base64Array").unwrap_or(&Value::Null)).await?;
    if let Some(one) = text(&body, "base64")? {
        images.push(store_image(app, tenant, &one).await?.id);
    }
    detail.description = format!("/imagine {prompt}");
    detail.prompt = prompt;
    let mut plan = Plan::new("IMAGINE", Operation::Generate, detail);
    plan.grid = true;
    plan.input_image_ids = images;
    plan.seed = Some(seed_of(&plan.detail.prompt));
    Ok(plan)
}

/// `POST /mj/submit/describe {base64}` (or `{link}`, the C# edition's).
pub async fn describe(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    Extension(speed): Extension<Speed>,
    body: Bytes,
) -> Reply {
    match describe_plan(&app, &tenant, speed, &body).await {
        Ok(plan) => start(&app, &tenant, plan, None).await,
        Err(reply) => reply,
    }
}

async fn describe_plan(
    app: &App,
    tenant: &Tenant,
    speed: Speed,
    body: &[u8],
) -> Result<Plan, Reply> {
    let body = object_body(body)?;
    let mut detail = common(app, tenant, speed, &body).await?;
    let mut plan = Plan::new("DESCRIBE", Operation::Describe, Detail::default());
    match (text(&body, "base64")?, text(&body, "link")?) {
        (Some(data), _) => {
            let id = store_image(app, tenant, &data).await?.id;
            detail.description = format!("/describe {id}.png");
            detail.image_id = Some(id.clone());
            plan.input_image_ids = vec![id];
        }
        (None, Some(link)) => {
            app.inputs
                .precheck(&link)
                .map_err(|e| Reply::invalid(format!("link: {}", e.message)))?;
            detail.description = format!("/describe {link}");
            plan.input_image_url = Some(link);
        }
        (None, None) => return Err(Reply::invalid("base64不能为空")),
    }
    plan.detail = detail;
    Ok(plan)
}

/// `POST /mj/submit/blend {base64Array: [2-5 images], dimensions}`.
pub async fn blend(
    State(app): State<App>,
    MjTenant(tenant): MjTenant,
    Extension(speed): Extension<Speed>,
    body: Bytes,
) -> Reply {
    match blend_plan(&app, &tenant, speed, &body).await {
        Ok(plan) => start(&app, &tenant, plan, None).await,
        Err(reply) => reply,
    }
}

async fn blend_plan(app: &App, tenant: &Tenant, speed: Speed, body: &[u8]) -> Result<Plan, Reply> {
    let body = object_body(body)?;
    let shape = match text(&body, "dimensions")?.as_deref() {
        None | Some("SQUARE") => BlendShape::Square,
        Some("PORTRAIT") => BlendShape::Portrait,
        Some("LANDSCAPE") => BlendShape::Landscape,
        Some(other) => {
            return Err(Reply::invalid(format!(
                "dimensions '{other}': PORTRAIT, SQUARE or LANDSCAPE"
            )))
        }
    };
    let count = body
        .get("base64Array")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if !BLEND_IMAGES.contains(&count) {
        return Err(Reply::invalid("base64List参数错误: 2-5 张图片"));
    }
    let mut detail = common(app, tenant, speed, &body).await?;
    let images = store_images(app, tenant, body.get("base64Array").unwrap_or(&Value::Null)).await?;
    detail.description = format!("/blend {} {count}", images.join(" "));
    let mut plan = Plan::new("BLEND", Operation::Blend(shape), detail);
    plan.grid = true;
    plan.input_image_ids = images;
    plan.seed = Some(seed_of(""));
    Ok(plan)
}
