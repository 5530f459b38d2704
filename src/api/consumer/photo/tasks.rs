//! `POST /api/tasks/create`, `GET /api/tasks/:task_id` (with its work once completed),
//! `GET /api/tasks/user/list`, `POST /api/tasks/:task_id/cancel` and
//! `GET /api/tasks/stats/queue`.
//!
//! A task of `batch_count` N is N jobs of one image each, made with their credit holds in one
//! transaction (`store::photo`); the workers run them with the tenant's limits and fairness.
//! Differences from the origin (listed in the README):
//! - the credits and the task are one transaction (the origin could lose the credits between
//!   its two); each image that succeeds settles its credit and each one that fails releases it
//!   (the origin refunded only a cancel); a cancel releases what has not run yet, and the
//!   images already made stay in the work;
//! - a scene's `{{name}}` variables are filled from `parameters` (and `custom_description`);
//!   a missing one is a 400 in the validation shape, never a broken prompt; an unknown
//!   `scene_id` is a 400;
//! - `images` must name the caller's uploads (a `file_name`, `file_path` or `file_url` the
//!   upload routes returned); anything else is a 400;
//! - the queue stats count the task jobs of the caller's tenant in Easel's queue (`waiting`
//!   queued, `delayed` waiting to retry, `active` running, `completed`, `failed` failed or
//!   cancelled);
//! - a task is `processing` from the claim of its first job (the claim's transaction writes
//!   it), with `progress` (0-100);
//! - the `max_batch_count` setting caps `batch_count` (400 in the validation shape).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::works::work_json;
use super::{
    done, filter, iso, listed, ok, ok_with, photo_invalid, store_failure, ListQuery, Problems,
};
use crate::api::consumer::extract::{JsonBody, SignedIn};
use crate::api::consumer::reply::{json, photo_error};
use crate::app::App;
use crate::base::clock::now_millis;
use crate::base::image::ImageOwner;
use crate::base::job::{new_job_id, JobParams, JobStatus, Mode, NewJob};
use crate::base::ledger::{AccountRef, Charge};
use crate::events::Change;
use crate::photo::follower::FOLLOWER;
use crate::photo::{new_uuid, template, workflow, TASK_TYPES};
use crate::store::photo::{Task, TaskCreated, TaskJob, TaskQuery};

/// Credits one image costs unless the tenant's `credits_per_image` setting says otherwise
/// (the origin's 1).
const CREDITS_PER_IMAGE: i64 = 1;
const MAX_BATCH: i64 = 50;
const MAX_DESCRIPTION: usize = 500;

/// A task as the origin's row; `jobs` (when read) give its `processing` state and progress.
pub fn task_json(t: &Task, jobs: Option<&[TaskJob]>) -> Value {
    let started = jobs.is_some_and(|js| js.iter().any(|j| j.status != JobStatus::Queued));
    let status = if t.status == "pending" && started {
        "processing"
    } else {
        t.status.as_str()
    };
    let progress = jobs.filter(|js| !js.is_empty()).map(|js| {
        let ended = js.iter().filter(|j| j.status.is_terminal()).count();
        ended * 100 / js.len()
    });
    json!({
        "task_id": t.task_id,
        "user_id": t.user_seq,
        "type": t.task_type,
        "status": status,
        "batch_count": t.batch_count,
        "images": t.images,
        "scene_id": t.scene_id,
        "parameters": t.parameters,
        "custom_description": t.custom_description,
        "priority": 5,
        "credits_deducted": t.credits,
        "progress": progress,
        "error": t.error,
        "created_at": iso(t.created_at),
        "updated_at": iso(t.updated_at),
        "completed_at": t.completed_at.map(iso),
    })
}

/// A checked `create` body.
struct TaskRequest {
    task_type: String,
    batch_count: i64,
    images: Vec<String>,
    scene_id: Option<String>,
    parameters: Map<String, Value>,
    custom_description: Option<String>,
}

fn parse(body: &Map<String, Value>) -> Result<TaskRequest, Vec<Value>> {
    let mut problems = Problems::default();
    let task_type = match body.get("type").and_then(Value::as_str) {
        Some(t) if TASK_TYPES.contains(&t) => t.to_owned(),
        _ => {
            problems.add("type", "任务类型必须是 fitting、photography 或 travel");
            String::new()
        }
    };
    let batch_count = match body.get("batch_count") {
        None => 1,
        Some(v) => match v.as_i64().filter(|n| (1..=MAX_BATCH).contains(n)) {
            Some(n) => n,
            None => {
                problems.add("batch_count", "生成数量必须是1到50之间的整数");
                1
            }
        },
    };
    let images: Option<Vec<String>> = body
        .get("images")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect());
    if images.is_none() {
        problems.add("images", "请至少上传一张图片");
    }
    let scene_id = match body.get("scene_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.add("scene_id", "场景ID必须是字符串");
            None
        }
    };
    let parameters = match body.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            problems.add("parameters", "参数必须是对象");
            Map::new()
        }
    };
    let custom_description = match body.get("custom_description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_DESCRIPTION => Some(s.clone()),
        Some(_) => {
            problems.add("custom_description", "自定义描述不能超过500个字符");
            None
        }
    };
    problems.answer()?;
    Ok(TaskRequest {
        task_type,
        batch_count,
        images: images.unwrap_or_default(),
        scene_id,
        parameters,
        custom_description,
    })
}

/// The prompt: the scene's template filled in, or the description, or the type's default.
async fn prompt(app: &App, tenant_id: &str, r: &TaskRequest) -> Result<String, Response> {
    let mut values = r.parameters.clone();
    if let Some(d) = &r.custom_description {
        values.insert("custom_description".into(), Value::String(d.clone()));
    }
    let Some(scene_id) = &r.scene_id else {
        return Ok(r
            .custom_description
            .clone()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| format!("a {} photo of the person in the image", r.task_type)));
    };
    let scene = match app.store.photo_scene_get(tenant_id, scene_id).await {
        Ok(Some(scene)) => scene,
        Ok(None) => return Err(photo_error(StatusCode::BAD_REQUEST, "场景不存在")),
        Err(e) => return Err(store_failure(e)),
    };
    template::fill(&scene.prompt_template, &values).map_err(|name| {
        photo_invalid(vec![json!({
            "field": format!("parameters.{name}"),
            "message": format!("缺少场景参数: {name}"),
        })])
    })
}

/// The object key of one of the caller's uploads, named as the upload routes returned it:
/// `<image id>.jpg` at the end of a `file_name` or `file_path`, or the link of a `file_url`
/// (whose path ends in the object key of one of the caller's images).
async fn input_key(app: &App, owner: &ImageOwner, named: &str) -> Option<String> {
    let path = named.split(['?', '#']).next()?;
    let last = path.rsplit('/').next()?;
    let stem = last.strip_suffix(".jpg")?;
    if stem.len() == 26 && stem.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return app.images.get(owner, stem).await.ok().map(|r| r.object.key);
    }
    // A link: its path ends in the object key, which must be one of the caller's images
    // (tried from each `uploads/` in the path: a bucket or host may hold the word too).
    let user_id = owner.user_id.as_deref().unwrap_or_default();
    for (at, _) in path.match_indices("uploads/") {
        let key = &path[at..];
        if let Ok(true) = app
            .store
            .photo_owns_object(&owner.tenant_id, user_id, key)
            .await
        {
            return Some(key.to_owned());
        }
    }
    None
}

async fn input_keys(
    app: &App,
    owner: &ImageOwner,
    images: &[String],
) -> Result<Vec<String>, Response> {
    let mut keys = Vec::with_capacity(images.len());
    let mut problems = Problems::default();
    for (index, named) in images.iter().enumerate() {
        match input_key(app, owner, named).await {
            Some(key) => keys.push(key),
            None => problems.add(&format!("images[{index}]"), "图片不存在，请先上传"),
        }
    }
    problems.answer().map_err(photo_invalid)?;
    Ok(keys)
}

/// The tenant's settings a task is made under.
struct TaskSettings {
    /// `credits_per_image` (a whole number, 0 or more; else the origin's 1).
    per_image: i64,
    /// `max_batch_count` (1 to 50; else 50).
    max_batch: i64,
}

async fn task_settings(app: &App, tenant_id: &str) -> Result<TaskSettings, Response> {
    let settings = app
        .store
        .photo_config_list(tenant_id)
        .await
        .map_err(store_failure)?;
    let number = |key: &str| {
        settings
            .iter()
            .find(|c| c.key == key)
            .and_then(|c| c.value.trim().parse::<i64>().ok())
    };
    Ok(TaskSettings {
        per_image: number("credits_per_image")
            .filter(|n| *n >= 0)
            .unwrap_or(CREDITS_PER_IMAGE),
        max_batch: number("max_batch_count")
            .filter(|n| (1..=MAX_BATCH).contains(n))
            .unwrap_or(MAX_BATCH),
    })
}

/// Where a task type's jobs run: its provider and model, its inputs (object keys) as the
/// provider takes them, and how long its jobs may take.
struct Runner {
    provider: String,
    model: Option<String>,
    inputs: Vec<String>,
    options: Option<Map<String, Value>>,
    timeout_ms: i64,
}

impl Runner {
    fn of(app: &App, task_type: &str, inputs: Vec<String>) -> Runner {
        let settings = app
            .config
            .photo
            .task_type(task_type)
            .cloned()
            .unwrap_or_default();
        if settings.workflow_url.is_some() {
            // The workflow reads the inputs by link: the worker need not load them.
            let keys = inputs.into_iter().map(Value::String).collect();
            return Runner {
                provider: workflow::PROVIDER.to_owned(),
                model: None,
                inputs: Vec::new(),
                options: Some(Map::from_iter([(
                    workflow::INPUT_KEYS.to_owned(),
                    Value::Array(keys),
                )])),
                timeout_ms: secs_to_ms(app.config.photo.workflow_timeout_secs),
            };
        }
        Runner {
            provider: settings
                .provider
                .unwrap_or_else(|| app.providers.default_name().to_owned()),
            model: settings.model,
            inputs,
            options: None,
            timeout_ms: secs_to_ms(app.config.worker.job_timeout_secs),
        }
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn jobs_for(app: &App, task: &Task, runner: &Runner) -> Vec<NewJob> {
    (0..task.batch_count)
        .map(|_| NewJob {
            id: new_job_id(),
            tenant_id: task.tenant_id.clone(),
            prompt: task.prompt.clone(),
            mode: Mode::Final,
            input_image_url: None,
            params: JobParams {
                n: Some(1),
                model: runner.model.clone(),
                inputs: runner.inputs.clone(),
                options: runner.options.clone(),
                ..JobParams::default()
            },
            provider: runner.provider.clone(),
            max_attempts: app.config.worker.max_attempts,
            created_at: task.created_at,
            cancel_at: None,
            deadline_at: task.created_at.saturating_add(runner.timeout_ms),
            idempotency: None,
            webhook_url: None,
            charge: Some(Charge {
                account: AccountRef::user(&task.tenant_id, &task.user_id),
                amount: task.credits / task.batch_count.max(1),
            }),
            follow_up: Some(FOLLOWER.to_owned()),
        })
        .collect()
}

pub async fn create(
    State(app): State<App>,
    SignedIn(authed): SignedIn,
    JsonBody(body): JsonBody,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(why) => return photo_invalid(vec![json!({"field": "body", "message": why})]),
    };
    let request = match parse(&body) {
        Ok(request) => request,
        Err(errors) => return photo_invalid(errors),
    };
    let user = &authed.user;
    let owner = ImageOwner::user(&user.tenant_id, &user.id);
    let inputs = match input_keys(&app, &owner, &request.images).await {
        Ok(inputs) => inputs,
        Err(refused) => return refused,
    };
    let prompt = match prompt(&app, &user.tenant_id, &request).await {
        Ok(prompt) => prompt,
        Err(refused) => return refused,
    };
    let runner = Runner::of(&app, &request.task_type, inputs);
    let TaskSettings {
        per_image,
        max_batch,
    } = match task_settings(&app, &user.tenant_id).await {
        Ok(settings) => settings,
        Err(refused) => return refused,
    };
    if request.batch_count > max_batch {
        return photo_invalid(vec![json!({
            "field": "batch_count",
            "message": format!("生成数量不能超过{max_batch}"),
        })]);
    }
    let now = now_millis();
    let task = Task {
        task_id: new_uuid(),
        tenant_id: user.tenant_id.clone(),
        user_id: user.id.clone(),
        user_seq: user.seq,
        task_type: request.task_type,
        status: "pending".into(),
        batch_count: request.batch_count,
        images: request.images,
        scene_id: request.scene_id,
        parameters: Value::Object(request.parameters),
        custom_description: request.custom_description,
        prompt,
        credits: request.batch_count * per_image,
        error: None,
        created_at: now,
        updated_at: now,
        completed_at: None,
    };
    let jobs = jobs_for(&app, &task, &runner);
    let job_ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    match app.store.photo_task_create(task.clone(), jobs).await {
        Ok(TaskCreated::Created) => {}
        Ok(TaskCreated::Insufficient {
            required,
            available,
        }) => {
            return json(
                StatusCode::BAD_REQUEST,
                json!({"success": false, "message": "积分不足", "data": {
                    "required": required,
                    "current": available,
                    "shortage": required - available,
                }}),
            )
        }
        Err(e) => return store_failure(e),
    }
    app.wake.notify_one();
    for id in &job_ids {
        app.events.publish(Change::job(&task.tenant_id, id));
    }
    ok_with(
        "任务创建成功",
        json!({
            "task_id": task.task_id,
            "type": task.task_type,
            "batch_count": task.batch_count,
            "status": "pending",
            "credits_deducted": task.credits,
        }),
    )
}

/// The caller's task, or the answer for a task it does not have.
async fn own_task(
    app: &App,
    authed: &crate::accounts::users::Authed,
    id: &str,
) -> Result<Task, Response> {
    match app.store.photo_task_get(&authed.user.tenant_id, id).await {
        Ok(Some(task)) if task.user_id == authed.user.id => Ok(task),
        Ok(_) => Err(photo_error(StatusCode::NOT_FOUND, "任务不存在")),
        Err(e) => Err(store_failure(e)),
    }
}

pub async fn get(
    State(app): State<App>,
    SignedIn(authed): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let task = match own_task(&app, &authed, &id).await {
        Ok(task) => task,
        Err(refused) => return refused,
    };
    let jobs = match app.store.photo_task_jobs(&task.task_id).await {
        Ok(jobs) => jobs,
        Err(e) => return store_failure(e),
    };
    let work = if task.status == "completed" {
        match app.store.photo_work_of_task(&task.task_id).await {
            Ok(Some(w)) => work_json(&app, &w).await,
            Ok(None) => Value::Null,
            Err(e) => return store_failure(e),
        }
    } else {
        Value::Null
    };
    ok(json!({"task": task_json(&task, Some(&jobs)), "work": work}))
}

pub async fn list(
    State(app): State<App>,
    SignedIn(authed): SignedIn,
    Query(q): Query<ListQuery>,
) -> Response {
    let page = q.page(20);
    let query = TaskQuery {
        tenant_id: authed.user.tenant_id.clone(),
        user_id: Some(authed.user.id.clone()),
        task_type: filter(&q.kind),
        status: filter(&q.status),
        offset: page.2,
        limit: page.1,
    };
    match app.store.photo_task_list(query).await {
        Ok((tasks, total)) => listed(
            "tasks",
            tasks.iter().map(|t| task_json(t, None)).collect(),
            page,
            total,
        ),
        Err(e) => store_failure(e),
    }
}

pub async fn cancel(
    State(app): State<App>,
    SignedIn(authed): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let task = match own_task(&app, &authed, &id).await {
        Ok(task) => task,
        Err(refused) => return refused,
    };
    let refused = || photo_error(StatusCode::BAD_REQUEST, "只能取消待处理或处理中的任务");
    if !task.is_open() {
        return refused();
    }
    match app
        .store
        .photo_task_mark(&task.task_id, "cancelled", Some("用户取消"), now_millis())
        .await
    {
        Ok(true) => {}
        Ok(false) => return refused(),
        Err(e) => return store_failure(e),
    }
    let jobs = match app.store.photo_task_jobs(&task.task_id).await {
        Ok(jobs) => jobs,
        Err(e) => return store_failure(e),
    };
    // Each cancel releases its job's hold in its own transaction; a job that ended first
    // keeps its settle (or release).
    for job in jobs.iter().filter(|j| !j.status.is_terminal()) {
        if let Err(e) = app.store.job_cancel(&task.tenant_id, &job.job_id).await {
            return store_failure(e);
        }
        app.events
            .publish(Change::job(&task.tenant_id, &job.job_id));
    }
    done("任务已取消，积分已退还")
}

/// Counts of one task type, in Bull's names.
fn type_counts(counts: &[crate::store::photo::QueueCount], task_type: &str) -> Value {
    let of = |statuses: &[JobStatus]| -> u64 {
        counts
            .iter()
            .filter(|c| c.task_type == task_type && statuses.contains(&c.status))
            .map(|c| c.count)
            .sum()
    };
    let waiting = of(&[JobStatus::Queued]);
    let active = of(&[JobStatus::Running]);
    let completed = of(&[JobStatus::Succeeded]);
    let failed = of(&[JobStatus::Failed, JobStatus::Canceled]);
    let delayed = of(&[JobStatus::Retrying]);
    json!({
        "waiting": waiting,
        "active": active,
        "completed": completed,
        "failed": failed,
        "delayed": delayed,
        "total": waiting + active + completed + failed + delayed,
    })
}

pub async fn queue(State(app): State<App>, SignedIn(authed): SignedIn) -> Response {
    match app.store.photo_queue_counts(&authed.user.tenant_id).await {
        Ok(counts) => {
            let data: Map<String, Value> = TASK_TYPES
                .iter()
                .map(|t| ((*t).to_owned(), type_counts(&counts, t)))
                .collect();
            ok(Value::Object(data))
        }
        Err(e) => store_failure(e),
    }
}
