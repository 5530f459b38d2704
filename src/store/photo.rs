//! The photo app's share of the store (migration 0018): scenes, tasks (each a batch of jobs of
//! one image, so every image's credit is settled or released on its own), the works tasks
//! make, and the app's settings. Each method is one transaction.
//!
//! A task is created with its jobs, and the jobs with their credit holds, by
//! [`PhotoStore::photo_task_create`]: nothing is written when the account cannot pay for all
//! of them. A task ends once, with its work, in [`PhotoStore::photo_task_end`].

use async_trait::async_trait;
use serde_json::Value;

use super::StoreResult;
use crate::base::clock::Millis;
use crate::base::job::{JobStatus, NewJob};
use crate::base::ledger::{Order, OrderStatus};

/// A scene: a prompt template with its display settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub scene_id: String,
    pub tenant_id: String,
    pub scene_name: String,
    pub category: String,
    pub description: Option<String>,
    pub prompt_template: String,
    pub cover_image: Option<String>,
    pub parameters: Option<Value>,
    pub tags: Option<Value>,
    pub status: String,
    pub display_order: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Filter and page of a tenant's scenes (display order, then newest first).
#[derive(Debug, Clone, Default)]
pub struct SceneQuery {
    pub tenant_id: String,
    pub category: Option<String>,
    pub status: Option<String>,
    /// Matched (case-insensitively, as a substring) against the name and the description.
    pub keyword: Option<String>,
    pub offset: u64,
    pub limit: u32,
}

/// A task: `batch_count` images of one type, each its own job.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub task_id: String,
    pub tenant_id: String,
    pub user_id: String,
    /// The user's number (the origin's `user_id`).
    pub user_seq: i64,
    pub task_type: String,
    /// `pending`, `processing`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub batch_count: i64,
    /// The input images as the client named them.
    pub images: Vec<String>,
    pub scene_id: Option<String>,
    pub parameters: Value,
    pub custom_description: Option<String>,
    /// The prompt the jobs run (the scene's template filled in).
    pub prompt: String,
    /// Credits held at creation.
    pub credits: i64,
    pub error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub completed_at: Option<Millis>,
}

impl Task {
    /// Whether the task may still change (run, be cancelled).
    pub fn is_open(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "processing")
    }
}

/// Filter and page of tasks, newest first.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub tenant_id: String,
    pub user_id: Option<String>,
    pub task_type: Option<String>,
    pub status: Option<String>,
    pub offset: u64,
    pub limit: u32,
}

/// One job of a task, as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskJob {
    pub job_id: String,
    pub status: JobStatus,
    pub result_keys: Vec<String>,
    pub error_message: Option<String>,
}

/// What creating a task did.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskCreated {
    Created,
    /// The account holds less than the jobs cost: nothing was written.
    Insufficient {
        required: i64,
        available: i64,
    },
}

/// A work: what a task made (or why it made nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub work_id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub user_seq: i64,
    pub task_id: String,
    pub work_type: String,
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    /// Object-store keys of the images made, in order.
    pub images: Vec<String>,
    pub original_images: Vec<String>,
    pub parameters: Value,
    pub custom_description: Option<String>,
    pub ai_description: Option<String>,
    pub is_public: bool,
    pub is_favorite: bool,
    pub tags: Vec<String>,
    pub error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub completed_at: Option<Millis>,
}

/// Filter and page of works, newest first.
#[derive(Debug, Clone, Default)]
pub struct WorkQuery {
    pub tenant_id: String,
    pub user_id: Option<String>,
    /// The origin's admin-only `user_id` filter (the user's number).
    pub user_seq: Option<i64>,
    pub work_type: Option<String>,
    pub status: Option<String>,
    pub is_public: Option<bool>,
    pub is_favorite: Option<bool>,
    pub offset: u64,
    pub limit: u32,
}

/// The fields a user may change on a work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkPatch {
    pub is_favorite: Option<bool>,
    pub is_public: Option<bool>,
    pub tags: Option<Vec<String>>,
}

/// Filter and page of a tenant's credit orders.
#[derive(Debug, Clone, Default)]
pub struct OrderListQuery {
    pub tenant_id: String,
    pub account_id: Option<String>,
    pub status: Option<String>,
    pub offset: u64,
    pub limit: u32,
}

/// The admin overview: `(group, figure, SQL)`, each SQL a scalar over tenant `$1` and the
/// start of today `$2`. Money is in cents; credits consumed are the settled holds.
pub const OVERVIEW: &[(&str, &str, &str)] = &[
    ("users", "total_users", "SELECT count(*) FROM end_users WHERE tenant_id = $1 AND deleted_at IS NULL"),
    ("users", "today_new_users", "SELECT count(*) FROM end_users WHERE tenant_id = $1 AND deleted_at IS NULL AND created_at >= $2"),
    ("users", "active_users", "SELECT count(*) FROM end_users WHERE tenant_id = $1 AND deleted_at IS NULL AND status = 'active'"),
    ("works", "total_works", "SELECT count(*) FROM photo_works WHERE tenant_id = $1"),
    ("works", "today_works", "SELECT count(*) FROM photo_works WHERE tenant_id = $1 AND created_at >= $2"),
    ("works", "completed_works", "SELECT count(*) FROM photo_works WHERE tenant_id = $1 AND status = 'completed'"),
    ("works", "failed_works", "SELECT count(*) FROM photo_works WHERE tenant_id = $1 AND status = 'failed'"),
    ("tasks", "total_tasks", "SELECT count(*) FROM photo_tasks WHERE tenant_id = $1"),
    ("tasks", "pending_tasks", "SELECT count(*) FROM photo_tasks WHERE tenant_id = $1 AND status = 'pending'"),
    ("tasks", "processing_tasks", "SELECT count(*) FROM photo_tasks WHERE tenant_id = $1 AND status = 'processing'"),
    ("tasks", "completed_tasks", "SELECT count(*) FROM photo_tasks WHERE tenant_id = $1 AND status = 'completed'"),
    ("tasks", "failed_tasks", "SELECT count(*) FROM photo_tasks WHERE tenant_id = $1 AND status = 'failed'"),
    ("orders", "total_orders", "SELECT count(*) FROM credit_orders WHERE tenant_id = $1"),
    ("orders", "total_revenue", "SELECT CAST(coalesce(sum(amount_cents), 0) AS BIGINT) FROM credit_orders WHERE tenant_id = $1 AND status = 'paid'"),
    ("orders", "today_revenue", "SELECT CAST(coalesce(sum(amount_cents), 0) AS BIGINT) FROM credit_orders WHERE tenant_id = $1 AND status = 'paid' AND paid_at >= $2"),
    // From the entries, which both engines keep alike (PostgreSQL's cached balances are
    // spread over hold stripes).
    ("credits", "total_credits", "SELECT CAST(coalesce(sum(e.amount), 0) AS BIGINT) FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id WHERE a.tenant_id = $1 AND a.kind = 'user'"),
    ("credits", "total_recharged", "SELECT CAST(coalesce(sum(e.amount), 0) AS BIGINT) FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id WHERE a.tenant_id = $1 AND a.kind = 'user' AND e.kind = 'recharge'"),
    ("credits", "total_consumed", "SELECT CAST(coalesce(-sum(e.held), 0) AS BIGINT) FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id WHERE a.tenant_id = $1 AND a.kind = 'user' AND e.kind = 'settle'"),
];

/// A setting: its text and the type it is read as (`string`, `number`, `boolean`, `json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
    pub value_type: String,
    pub description: Option<String>,
}

/// Jobs of a tenant's tasks of one type in one status.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueCount {
    pub task_type: String,
    pub status: JobStatus,
    pub count: u64,
}

/// A task run on an n8n workflow (migration 0020): posted to the webhook by one of its jobs,
/// ended once by the workflow's callback.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRun {
    pub task_id: String,
    pub tenant_id: String,
    /// When a job posted the task to the webhook.
    pub posted_at: Option<Millis>,
    /// `None` while waiting; then `completed` or `failed`, once.
    pub outcome: Option<String>,
    /// The callback's images as it sent them (`[{url, format, batch_index}]`).
    pub images: Value,
    pub ai_description: Option<String>,
    pub error: Option<String>,
    pub created_at: Millis,
    pub ended_at: Option<Millis>,
}

/// What a workflow's callback said.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowEnd {
    /// `completed` or `failed`.
    pub outcome: String,
    pub images: Value,
    pub ai_description: Option<String>,
    pub error: Option<String>,
}

#[async_trait]
pub trait PhotoStore: Send + Sync + 'static {
    /// Creates or replaces a scene.
    async fn photo_scene_put(&self, scene: Scene) -> StoreResult<()>;
    async fn photo_scene_get(&self, tenant_id: &str, scene_id: &str) -> StoreResult<Option<Scene>>;
    /// Whether there was such a scene.
    async fn photo_scene_delete(&self, tenant_id: &str, scene_id: &str) -> StoreResult<bool>;
    /// The page and how many match in all.
    async fn photo_scene_list(&self, query: SceneQuery) -> StoreResult<(Vec<Scene>, u64)>;

    /// One transaction: the task, its jobs (QUEUED) and each job's hold. `Insufficient` when
    /// the jobs' charges together exceed the balance of the account they are charged to.
    async fn photo_task_create(&self, task: Task, jobs: Vec<NewJob>) -> StoreResult<TaskCreated>;
    async fn photo_task_get(&self, tenant_id: &str, task_id: &str) -> StoreResult<Option<Task>>;
    async fn photo_task_list(&self, query: TaskQuery) -> StoreResult<(Vec<Task>, u64)>;
    /// The task's jobs in image order, with their status and results.
    async fn photo_task_jobs(&self, task_id: &str) -> StoreResult<Vec<TaskJob>>;
    /// The task a job belongs to.
    async fn photo_task_of_job(&self, job_id: &str) -> StoreResult<Option<Task>>;
    /// Moves an open task to `status` (`processing`, or `cancelled` with its error); whether
    /// it was open. A task that ended stays as it is.
    async fn photo_task_mark(
        &self,
        task_id: &str,
        status: &str,
        error: Option<&str>,
        at: Millis,
    ) -> StoreResult<bool>;
    /// One transaction: the task ends (`completed`, `failed`; or a `cancelled` one gets its
    /// work) and its work is written. Only the first call for a task writes: later ones
    /// (a follow-up delivered twice) change nothing and get `false`.
    async fn photo_task_end(&self, task_id: &str, status: &str, work: Work) -> StoreResult<bool>;

    async fn photo_work_get(&self, tenant_id: &str, work_id: &str) -> StoreResult<Option<Work>>;
    async fn photo_work_of_task(&self, task_id: &str) -> StoreResult<Option<Work>>;
    async fn photo_work_list(&self, query: WorkQuery) -> StoreResult<(Vec<Work>, u64)>;
    /// Changes the user's work; `None` if the user has no such work.
    async fn photo_work_update(
        &self,
        tenant_id: &str,
        user_id: &str,
        work_id: &str,
        patch: WorkPatch,
        at: Millis,
    ) -> StoreResult<Option<Work>>;
    /// Deletes the user's works, all or nothing: `false` (and nothing deleted) when one of
    /// them is not the user's.
    async fn photo_works_delete(
        &self,
        tenant_id: &str,
        user_id: &str,
        work_ids: &[String],
    ) -> StoreResult<bool>;

    /// The jobs of the tenant's tasks by task type and job status.
    async fn photo_queue_counts(&self, tenant_id: &str) -> StoreResult<Vec<QueueCount>>;

    /// Whether the end user has an image stored as `object_key` (a task input named by its
    /// link).
    async fn photo_owns_object(
        &self,
        tenant_id: &str,
        user_id: &str,
        object_key: &str,
    ) -> StoreResult<bool>;

    /// The admin overview's figures, in the order of [`OVERVIEW`]; `since` starts "today".
    async fn photo_overview(&self, tenant_id: &str, since: Millis) -> StoreResult<Vec<i64>>;
    /// The tenant's credit orders (one account's with `account_id`), newest first.
    async fn photo_orders(&self, query: OrderListQuery) -> StoreResult<(Vec<Order>, u64)>;

    /// The workflow run of a task, if one was posted or called back.
    async fn photo_workflow_get(&self, task_id: &str) -> StoreResult<Option<WorkflowRun>>;
    /// Starts the task's run (posted at `at`); `false` when it has one already (another job
    /// of the task posted it).
    async fn photo_workflow_begin(
        &self,
        tenant_id: &str,
        task_id: &str,
        at: Millis,
    ) -> StoreResult<bool>;
    /// Forgets a run still waiting (its post failed), so the next job posts again.
    async fn photo_workflow_abandon(&self, task_id: &str) -> StoreResult<()>;
    /// Ends the run of an open task with what its callback said; `false` (and nothing
    /// written) when the task ended already or its run has an outcome: a callback that comes
    /// twice, or late, changes nothing.
    async fn photo_workflow_end(
        &self,
        task_id: &str,
        end: WorkflowEnd,
        at: Millis,
    ) -> StoreResult<bool>;

    /// The tenant's settings: its own, and the defaults it has not set, by key.
    async fn photo_config_list(&self, tenant_id: &str) -> StoreResult<Vec<ConfigEntry>>;
    /// Sets a known setting for the tenant (keeping its type); `false` for an unknown key.
    async fn photo_config_set(
        &self,
        tenant_id: &str,
        key: &str,
        value: &str,
        at: Millis,
    ) -> StoreResult<bool>;
}

/// A JSON column's text.
pub(crate) fn to_json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// A JSON column read back: text that is not JSON (written by hand) reads as `null`.
fn from_json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// A JSON column of strings read back; anything else reads as empty.
fn strings_from_json_text(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Counts from `(type, status, count)` rows, statuses that do not parse left out.
pub(crate) fn queue_counts(rows: Vec<(String, String, i64)>) -> Vec<QueueCount> {
    rows.into_iter()
        .filter_map(|(task_type, status, count)| {
            Some(QueueCount {
                task_type,
                status: JobStatus::parse(&status)?,
                count: u64::try_from(count).unwrap_or(0),
            })
        })
        .collect()
}

/// A statement parameter. Both engines run the same SQL text (PostgreSQL's `$n`; SQLite
/// reads it as `?n`), so the statements below are written once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(Option<String>),
    Int(Option<i64>),
}

fn text(value: &str) -> Param {
    Param::Text(Some(value.to_owned()))
}

fn opt_text(value: Option<&str>) -> Param {
    Param::Text(value.map(str::to_owned))
}

fn int(value: i64) -> Param {
    Param::Int(Some(value))
}

fn flag(value: Option<bool>) -> Param {
    Param::Int(value.map(i64::from))
}

/// A statement and its parameters.
pub(crate) type Statement = (String, Vec<Param>);

/// The statement in SQLite's spelling.
pub(crate) fn for_sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Reads the columns of one row, whichever engine it came from.
pub(crate) trait RowRead {
    type Error;
    fn text(&self, index: usize) -> Result<String, Self::Error>;
    fn opt_text(&self, index: usize) -> Result<Option<String>, Self::Error>;
    fn int(&self, index: usize) -> Result<i64, Self::Error>;
    fn opt_int(&self, index: usize) -> Result<Option<i64>, Self::Error>;

    fn json(&self, index: usize) -> Result<Value, Self::Error> {
        Ok(from_json_text(&self.text(index)?))
    }

    fn opt_json(&self, index: usize) -> Result<Option<Value>, Self::Error> {
        Ok(self.opt_text(index)?.map(|t| from_json_text(&t)))
    }

    fn strings(&self, index: usize) -> Result<Vec<String>, Self::Error> {
        Ok(strings_from_json_text(&self.text(index)?))
    }
}

const SCENE_COLUMNS: &str = "scene_id, tenant_id, scene_name, category, description,
    prompt_template, cover_image, parameters, tags, status, display_order, created_at, updated_at";
const TASK_COLUMNS: &str = "task_id, tenant_id, user_id, user_seq, type, status,
    batch_count, images, scene_id, parameters, custom_description, prompt, credits, error,
    created_at, updated_at, completed_at";
const WORK_COLUMNS: &str = "work_id, tenant_id, user_id, user_seq, task_id, type,
    status, images, original_images, parameters, custom_description, ai_description, is_public,
    is_favorite, tags, error, created_at, updated_at, completed_at";

pub(crate) fn scene_from<R: RowRead>(r: &R) -> Result<Scene, R::Error> {
    Ok(Scene {
        scene_id: r.text(0)?,
        tenant_id: r.text(1)?,
        scene_name: r.text(2)?,
        category: r.text(3)?,
        description: r.opt_text(4)?,
        prompt_template: r.text(5)?,
        cover_image: r.opt_text(6)?,
        parameters: r.opt_json(7)?,
        tags: r.opt_json(8)?,
        status: r.text(9)?,
        display_order: r.int(10)?,
        created_at: r.int(11)?,
        updated_at: r.int(12)?,
    })
}

pub(crate) fn task_from<R: RowRead>(r: &R) -> Result<Task, R::Error> {
    Ok(Task {
        task_id: r.text(0)?,
        tenant_id: r.text(1)?,
        user_id: r.text(2)?,
        user_seq: r.int(3)?,
        task_type: r.text(4)?,
        status: r.text(5)?,
        batch_count: r.int(6)?,
        images: r.strings(7)?,
        scene_id: r.opt_text(8)?,
        parameters: r.json(9)?,
        custom_description: r.opt_text(10)?,
        prompt: r.text(11)?,
        credits: r.int(12)?,
        error: r.opt_text(13)?,
        created_at: r.int(14)?,
        updated_at: r.int(15)?,
        completed_at: r.opt_int(16)?,
    })
}

pub(crate) fn work_from<R: RowRead>(r: &R) -> Result<Work, R::Error> {
    Ok(Work {
        work_id: r.text(0)?,
        tenant_id: r.text(1)?,
        user_id: r.text(2)?,
        user_seq: r.int(3)?,
        task_id: r.text(4)?,
        work_type: r.text(5)?,
        status: r.text(6)?,
        images: r.strings(7)?,
        original_images: r.strings(8)?,
        parameters: r.json(9)?,
        custom_description: r.opt_text(10)?,
        ai_description: r.opt_text(11)?,
        is_public: r.int(12)? != 0,
        is_favorite: r.int(13)? != 0,
        tags: r.strings(14)?,
        error: r.opt_text(15)?,
        created_at: r.int(16)?,
        updated_at: r.int(17)?,
        completed_at: r.opt_int(18)?,
    })
}

pub(crate) fn task_job_from<R: RowRead>(r: &R) -> Result<TaskJob, R::Error> {
    let status = r.text(1)?;
    Ok(TaskJob {
        job_id: r.text(0)?,
        status: JobStatus::parse(&status).unwrap_or(JobStatus::Queued),
        result_keys: r.strings(2)?,
        error_message: r.opt_text(3)?,
    })
}

pub(crate) fn workflow_run_from<R: RowRead>(r: &R) -> Result<WorkflowRun, R::Error> {
    Ok(WorkflowRun {
        task_id: r.text(0)?,
        tenant_id: r.text(1)?,
        posted_at: r.opt_int(2)?,
        outcome: r.opt_text(3)?,
        images: r.opt_json(4)?.unwrap_or(Value::Null),
        ai_description: r.opt_text(5)?,
        error: r.opt_text(6)?,
        created_at: r.int(7)?,
        ended_at: r.opt_int(8)?,
    })
}

pub(crate) fn config_from<R: RowRead>(r: &R) -> Result<ConfigEntry, R::Error> {
    Ok(ConfigEntry {
        key: r.text(0)?,
        value: r.text(1)?,
        value_type: r.text(2)?,
        description: r.opt_text(3)?,
    })
}

pub(crate) fn order_from<R: RowRead>(r: &R) -> Result<Order, R::Error> {
    let status = r.text(7)?;
    Ok(Order {
        order_no: r.text(0)?,
        tenant_id: r.text(1)?,
        account_id: r.text(2)?,
        package_id: r.text(3)?,
        credits: r.int(4)?,
        amount_cents: r.int(5)?,
        payment_method: r.text(6)?,
        status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Pending),
        paid_via: r.opt_text(8)?,
        created_at: r.int(9)?,
        paid_at: r.opt_int(10)?,
    })
}

/// The page parameters (`LIMIT`, `OFFSET`).
fn page(offset: u64, limit: u32) -> [Param; 2] {
    [
        int(i64::from(limit)),
        int(i64::try_from(offset).unwrap_or(i64::MAX)),
    ]
}

/// `FROM <table> WHERE tenant_id = $1 AND <column> = $n ...` with only the filters given
/// (a `None` value is no filter), and its parameters. Leaving the absent ones out, rather
/// than `($n IS NULL OR column = $n)`, lets both engines use the indexes (a user's works,
/// a tenant's tasks) however the statement was prepared.
fn filtered(table: &str, tenant_id: &str, filters: Vec<(&str, Param)>) -> (String, Vec<Param>) {
    let mut sql = format!("FROM {table} WHERE tenant_id = $1");
    let mut params = vec![text(tenant_id)];
    for (column, value) in filters {
        if matches!(value, Param::Text(None) | Param::Int(None)) {
            continue;
        }
        params.push(value);
        sql.push_str(&format!(" AND {column} = ${}", params.len()));
    }
    (sql, params)
}

/// A list statement (with `LIMIT $n OFFSET $n+1` after the filters) and its count statement.
fn listing(
    columns: &str,
    from_where: &str,
    order: &str,
    mut params: Vec<Param>,
    offset: u64,
    limit: u32,
) -> (Statement, Statement) {
    let n = params.len();
    let count = (format!("SELECT count(*) {from_where}"), params.clone());
    params.extend(page(offset, limit));
    let list = format!(
        "SELECT {columns} {from_where} ORDER BY {order} LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    );
    ((list, params), count)
}

/// The statements of [`PhotoStore`], the same on both engines.
pub(crate) mod sql {
    use super::*;

    pub fn scene_put(s: &Scene) -> Statement {
        (
            format!(
                "INSERT INTO photo_scenes ({SCENE_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (scene_id) DO UPDATE SET scene_name = excluded.scene_name,
                     category = excluded.category, description = excluded.description,
                     prompt_template = excluded.prompt_template,
                     cover_image = excluded.cover_image, parameters = excluded.parameters,
                     tags = excluded.tags, status = excluded.status,
                     display_order = excluded.display_order, updated_at = excluded.updated_at
                 WHERE photo_scenes.tenant_id = excluded.tenant_id"
            ),
            vec![
                text(&s.scene_id),
                text(&s.tenant_id),
                text(&s.scene_name),
                text(&s.category),
                opt_text(s.description.as_deref()),
                text(&s.prompt_template),
                opt_text(s.cover_image.as_deref()),
                Param::Text(s.parameters.as_ref().map(to_json_text)),
                Param::Text(s.tags.as_ref().map(to_json_text)),
                text(&s.status),
                int(s.display_order),
                int(s.created_at),
                int(s.updated_at),
            ],
        )
    }

    pub fn scene_get(tenant_id: &str, scene_id: &str) -> Statement {
        (
            format!(
                "SELECT {SCENE_COLUMNS} FROM photo_scenes WHERE tenant_id = $1 AND scene_id = $2"
            ),
            vec![text(tenant_id), text(scene_id)],
        )
    }

    pub fn scene_delete(tenant_id: &str, scene_id: &str) -> Statement {
        (
            "DELETE FROM photo_scenes WHERE tenant_id = $1 AND scene_id = $2".into(),
            vec![text(tenant_id), text(scene_id)],
        )
    }

    pub fn scene_list(q: &SceneQuery) -> (Statement, Statement) {
        let keyword = q
            .keyword
            .as_deref()
            .map(|k| format!("%{}%", k.to_lowercase()));
        listing(
            SCENE_COLUMNS,
            "FROM photo_scenes WHERE tenant_id = $1
                 AND (CAST($2 AS TEXT) IS NULL OR category = $2)
                 AND (CAST($3 AS TEXT) IS NULL OR status = $3)
                 AND (CAST($4 AS TEXT) IS NULL OR lower(scene_name) LIKE $4
                      OR lower(coalesce(description, '')) LIKE $4)",
            "display_order ASC, created_at DESC, scene_id",
            vec![
                text(&q.tenant_id),
                opt_text(q.category.as_deref()),
                opt_text(q.status.as_deref()),
                Param::Text(keyword),
            ],
            q.offset,
            q.limit,
        )
    }

    pub fn task_insert(t: &Task) -> Statement {
        (
            format!(
                "INSERT INTO photo_tasks ({TASK_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                         $17)"
            ),
            vec![
                text(&t.task_id),
                text(&t.tenant_id),
                text(&t.user_id),
                int(t.user_seq),
                text(&t.task_type),
                text(&t.status),
                int(t.batch_count),
                text(&to_json_text(&t.images)),
                opt_text(t.scene_id.as_deref()),
                text(&to_json_text(&t.parameters)),
                opt_text(t.custom_description.as_deref()),
                text(&t.prompt),
                int(t.credits),
                opt_text(t.error.as_deref()),
                int(t.created_at),
                int(t.updated_at),
                Param::Int(t.completed_at),
            ],
        )
    }

    pub fn task_job_insert(task_id: &str, job_id: &str, index: usize) -> Statement {
        (
            "INSERT INTO photo_task_jobs (job_id, task_id, idx) VALUES ($1, $2, $3)".into(),
            vec![
                text(job_id),
                text(task_id),
                int(i64::try_from(index).unwrap_or(0)),
            ],
        )
    }

    pub fn task_get(tenant_id: &str, task_id: &str) -> Statement {
        (
            format!("SELECT {TASK_COLUMNS} FROM photo_tasks WHERE tenant_id = $1 AND task_id = $2"),
            vec![text(tenant_id), text(task_id)],
        )
    }

    pub fn task_of_job(job_id: &str) -> Statement {
        (
            format!(
                "SELECT {TASK_COLUMNS} FROM photo_tasks WHERE task_id =
                     (SELECT task_id FROM photo_task_jobs WHERE job_id = $1)"
            ),
            vec![text(job_id)],
        )
    }

    pub fn task_list(q: &TaskQuery) -> (Statement, Statement) {
        let (from_where, params) = filtered(
            "photo_tasks",
            &q.tenant_id,
            vec![
                ("user_id", opt_text(q.user_id.as_deref())),
                ("type", opt_text(q.task_type.as_deref())),
                ("status", opt_text(q.status.as_deref())),
            ],
        );
        listing(
            TASK_COLUMNS,
            &from_where,
            "created_at DESC, task_id DESC",
            params,
            q.offset,
            q.limit,
        )
    }

    pub fn task_jobs(task_id: &str) -> Statement {
        (
            "SELECT j.id, j.status, j.result_keys, j.error_message
             FROM photo_task_jobs t JOIN jobs j ON j.id = t.job_id
             WHERE t.task_id = $1 ORDER BY t.idx"
                .into(),
            vec![text(task_id)],
        )
    }

    pub fn task_mark(task_id: &str, status: &str, error: Option<&str>, at: Millis) -> Statement {
        (
            "UPDATE photo_tasks SET status = $2, error = coalesce($3, error), updated_at = $4
             WHERE task_id = $1 AND status IN ('pending', 'processing')"
                .into(),
            vec![text(task_id), text(status), opt_text(error), int(at)],
        )
    }

    /// The task's end, written only together with its work (see [`work_insert`]).
    pub fn task_end(task_id: &str, status: &str, error: Option<&str>, at: Millis) -> Statement {
        (
            "UPDATE photo_tasks SET status = $2, error = coalesce(error, $3), updated_at = $4,
                 completed_at = $4
             WHERE task_id = $1 AND status IN ('pending', 'processing')"
                .into(),
            vec![text(task_id), text(status), opt_text(error), int(at)],
        )
    }

    /// Inserts the work unless its task has one; a row comes back when it was written.
    pub fn work_insert(w: &Work) -> Statement {
        (
            format!(
                "INSERT INTO photo_works ({WORK_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                         $17, $18, $19)
                 ON CONFLICT (task_id) DO NOTHING RETURNING work_id"
            ),
            vec![
                text(&w.work_id),
                text(&w.tenant_id),
                text(&w.user_id),
                int(w.user_seq),
                text(&w.task_id),
                text(&w.work_type),
                text(&w.status),
                text(&to_json_text(&w.images)),
                text(&to_json_text(&w.original_images)),
                text(&to_json_text(&w.parameters)),
                opt_text(w.custom_description.as_deref()),
                opt_text(w.ai_description.as_deref()),
                flag(Some(w.is_public)),
                flag(Some(w.is_favorite)),
                text(&to_json_text(&w.tags)),
                opt_text(w.error.as_deref()),
                int(w.created_at),
                int(w.updated_at),
                Param::Int(w.completed_at),
            ],
        )
    }

    pub fn work_get(tenant_id: &str, work_id: &str) -> Statement {
        (
            format!("SELECT {WORK_COLUMNS} FROM photo_works WHERE tenant_id = $1 AND work_id = $2"),
            vec![text(tenant_id), text(work_id)],
        )
    }

    pub fn work_of_task(task_id: &str) -> Statement {
        (
            format!("SELECT {WORK_COLUMNS} FROM photo_works WHERE task_id = $1"),
            vec![text(task_id)],
        )
    }

    pub fn work_list(q: &WorkQuery) -> (Statement, Statement) {
        let (from_where, params) = filtered(
            "photo_works",
            &q.tenant_id,
            vec![
                ("user_id", opt_text(q.user_id.as_deref())),
                ("user_seq", Param::Int(q.user_seq)),
                ("type", opt_text(q.work_type.as_deref())),
                ("status", opt_text(q.status.as_deref())),
                ("is_public", flag(q.is_public)),
                ("is_favorite", flag(q.is_favorite)),
            ],
        );
        listing(
            WORK_COLUMNS,
            &from_where,
            "created_at DESC, work_id DESC",
            params,
            q.offset,
            q.limit,
        )
    }

    pub fn work_update(
        tenant_id: &str,
        user_id: &str,
        work_id: &str,
        patch: &WorkPatch,
        at: Millis,
    ) -> Statement {
        (
            format!(
                "UPDATE photo_works SET is_favorite = coalesce($4, is_favorite),
                     is_public = coalesce($5, is_public), tags = coalesce($6, tags),
                     updated_at = $7
                 WHERE tenant_id = $1 AND user_id = $2 AND work_id = $3
                 RETURNING {WORK_COLUMNS}"
            ),
            vec![
                text(tenant_id),
                text(user_id),
                text(work_id),
                flag(patch.is_favorite),
                flag(patch.is_public),
                Param::Text(patch.tags.as_ref().map(to_json_text)),
                int(at),
            ],
        )
    }

    /// `DELETE` (or `SELECT count(*)`) of the user's works among `work_ids`.
    fn works_among(verb: &str, tenant_id: &str, user_id: &str, work_ids: &[String]) -> Statement {
        let marks: Vec<String> = (0..work_ids.len()).map(|i| format!("${}", i + 3)).collect();
        let mut params = vec![text(tenant_id), text(user_id)];
        params.extend(work_ids.iter().map(|id| text(id)));
        (
            format!(
                "{verb} FROM photo_works WHERE tenant_id = $1 AND user_id = $2
                     AND work_id IN ({})",
                marks.join(", ")
            ),
            params,
        )
    }

    /// How many of `work_ids` (distinct, at least one) are the user's.
    pub fn works_owned(tenant_id: &str, user_id: &str, work_ids: &[String]) -> Statement {
        works_among("SELECT count(*)", tenant_id, user_id, work_ids)
    }

    pub fn works_delete(tenant_id: &str, user_id: &str, work_ids: &[String]) -> Statement {
        works_among("DELETE", tenant_id, user_id, work_ids)
    }

    pub fn queue_counts(tenant_id: &str) -> Statement {
        (
            "SELECT t.type, j.status, count(*) FROM photo_tasks t
                 JOIN photo_task_jobs tj ON tj.task_id = t.task_id
                 JOIN jobs j ON j.id = tj.job_id
             WHERE t.tenant_id = $1 GROUP BY t.type, j.status"
                .into(),
            vec![text(tenant_id)],
        )
    }

    pub fn owns_object(tenant_id: &str, user_id: &str, object_key: &str) -> Statement {
        (
            "SELECT count(*) FROM images i JOIN image_objects o ON o.id = i.object_id
             WHERE i.tenant_id = $1 AND i.owner_user = $2 AND o.object_key = $3"
                .into(),
            vec![text(tenant_id), text(user_id), text(object_key)],
        )
    }

    /// One row of every [`OVERVIEW`] figure.
    pub fn overview(tenant_id: &str, since: Millis) -> Statement {
        let figures: Vec<String> = OVERVIEW.iter().map(|(_, _, q)| format!("({q})")).collect();
        (
            format!("SELECT {}", figures.join(", ")),
            vec![text(tenant_id), int(since)],
        )
    }

    pub fn orders(q: &OrderListQuery) -> (Statement, Statement) {
        listing(
            "order_no, tenant_id, account_id, package_id, credits, amount_cents, payment_method,
             status, paid_via, created_at, paid_at",
            "FROM credit_orders WHERE tenant_id = $1
                 AND (CAST($2 AS TEXT) IS NULL OR account_id = $2)
                 AND (CAST($3 AS TEXT) IS NULL OR status = $3)",
            "created_at DESC, order_no DESC",
            vec![
                text(&q.tenant_id),
                opt_text(q.account_id.as_deref()),
                opt_text(q.status.as_deref()),
            ],
            q.offset,
            q.limit,
        )
    }

    pub fn workflow_get(task_id: &str) -> Statement {
        (
            "SELECT task_id, tenant_id, posted_at, outcome, images, ai_description, error,
                 created_at, ended_at
             FROM photo_workflow_runs WHERE task_id = $1"
                .into(),
            vec![text(task_id)],
        )
    }

    /// A row comes back when the run was started here.
    pub fn workflow_begin(tenant_id: &str, task_id: &str, at: Millis) -> Statement {
        (
            "INSERT INTO photo_workflow_runs (task_id, tenant_id, posted_at, created_at)
             VALUES ($1, $2, $3, $3) ON CONFLICT (task_id) DO NOTHING RETURNING task_id"
                .into(),
            vec![text(task_id), text(tenant_id), int(at)],
        )
    }

    pub fn workflow_abandon(task_id: &str) -> Statement {
        (
            "DELETE FROM photo_workflow_runs WHERE task_id = $1 AND outcome IS NULL".into(),
            vec![text(task_id)],
        )
    }

    /// Ends the run of an open task once; a row comes back when it was written.
    pub fn workflow_end(task_id: &str, end: &WorkflowEnd, at: Millis) -> Statement {
        (
            "INSERT INTO photo_workflow_runs (task_id, tenant_id, outcome, images,
                 ai_description, error, created_at, ended_at)
             SELECT task_id, tenant_id, $2, $3, $4, $5, $6, $6 FROM photo_tasks
             WHERE task_id = $1 AND status IN ('pending', 'processing')
             ON CONFLICT (task_id) DO UPDATE SET outcome = excluded.outcome,
                 images = excluded.images, ai_description = excluded.ai_description,
                 error = excluded.error, ended_at = excluded.ended_at
             WHERE photo_workflow_runs.outcome IS NULL
             RETURNING task_id"
                .into(),
            vec![
                text(task_id),
                text(&end.outcome),
                text(&to_json_text(&end.images)),
                opt_text(end.ai_description.as_deref()),
                opt_text(end.error.as_deref()),
                int(at),
            ],
        )
    }

    pub fn config_list(tenant_id: &str) -> Statement {
        (
            "SELECT d.config_key, coalesce(o.config_value, d.config_value), d.value_type,
                 d.description
             FROM photo_config d
             LEFT JOIN photo_config o ON o.tenant_id = $1 AND o.config_key = d.config_key
             WHERE d.tenant_id = '*' ORDER BY d.config_key"
                .into(),
            vec![text(tenant_id)],
        )
    }

    /// Writes the tenant's value of a key that has a default; nothing for an unknown key.
    pub fn config_set(tenant_id: &str, key: &str, value: &str, at: Millis) -> Statement {
        (
            "INSERT INTO photo_config (tenant_id, config_key, config_value, value_type,
                 description, updated_at)
             SELECT $1, config_key, $3, value_type, description, $4 FROM photo_config
             WHERE tenant_id = '*' AND config_key = $2
             ON CONFLICT (tenant_id, config_key) DO UPDATE
                 SET config_value = excluded.config_value, updated_at = excluded.updated_at"
                .into(),
            vec![text(tenant_id), text(key), text(value), int(at)],
        )
    }
}
