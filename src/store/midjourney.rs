//! The Midjourney API seed's tasks (`mj_tasks`): one row per trigger call, naming the job that
//! does its work. The origin's status of a task is read from its job in the same query
//! ([`STATUS_SQL`]), so it is never stale; the origin's Discord bot may set one of its own
//! (`bot_status`) through the callback route.

use async_trait::async_trait;

use super::StoreResult;
use crate::base::clock::Millis;

/// One task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MjTask {
    pub task_id: String,
    pub trigger_id: String,
    pub tenant_id: String,
    /// The app key's token account (`key:<api key id>`).
    pub account_id: String,
    pub job_id: Option<String>,
    pub task_name: String,
    pub task_type: String,
    pub image_index: i64,
    pub msg_id: i64,
    pub msg_hash: String,
    pub zoom_out: i64,
    pub direction: String,
    pub ref_pic_url: Option<String>,
    pub prompts: String,
    pub bot_status: Option<String>,
    pub result_url: Option<String>,
    pub attachments: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A task with the origin's status (`SUBMITTED`, `SUCCESS`, `BANNED`, `TIMEOUT`, `FAILURE`).
#[derive(Debug, Clone, PartialEq)]
pub struct MjTaskRow {
    pub task: MjTask,
    pub status: String,
}

/// What the origin's bot reported of the newest unfinished task of a trigger id.
#[derive(Debug, Clone)]
pub struct MjBotResult {
    pub trigger_id: String,
    /// `SUCCESS` or `BANNED`.
    pub status: String,
    pub result_url: Option<String>,
    pub attachments: Option<String>,
    pub msg_id: Option<i64>,
    pub msg_hash: Option<String>,
    pub at: Millis,
}

/// The task a bot result was recorded on.
#[derive(Debug, Clone, PartialEq)]
pub struct MjBotHit {
    pub task_id: String,
    pub tenant_id: String,
    pub job_id: Option<String>,
}

/// The task columns, in [`MjTask`]'s order, on the alias `t`, then the status.
pub const SELECT: &str = "SELECT t.task_id, t.trigger_id, t.tenant_id, t.account_id, t.job_id,
    t.task_name, t.task_type, t.image_index, t.msg_id, t.msg_hash, t.zoom_out, t.direction,
    t.ref_pic_url, t.prompts, t.bot_status, t.result_url, t.attachments, t.created_at,
    t.updated_at, CASE
        WHEN t.bot_status IS NOT NULL THEN t.bot_status
        WHEN j.status = 'SUCCEEDED' THEN 'SUCCESS'
        WHEN j.status = 'FAILED' AND j.error_code = 'CONTENT_BLOCKED' THEN 'BANNED'
        WHEN j.status = 'FAILED' AND j.error_code = 'JOB_TIMEOUT' THEN 'TIMEOUT'
        WHEN j.status IN ('FAILED', 'CANCELED') THEN 'FAILURE'
        ELSE 'SUBMITTED' END AS task_status
    FROM mj_tasks t LEFT JOIN jobs j ON j.id = t.job_id";

/// The status expression of [`SELECT`] alone, for filters.
pub const STATUS_SQL: &str = "(CASE
        WHEN t.bot_status IS NOT NULL THEN t.bot_status
        WHEN j.status = 'SUCCEEDED' THEN 'SUCCESS'
        WHEN j.status = 'FAILED' AND j.error_code = 'CONTENT_BLOCKED' THEN 'BANNED'
        WHEN j.status = 'FAILED' AND j.error_code = 'JOB_TIMEOUT' THEN 'TIMEOUT'
        WHEN j.status IN ('FAILED', 'CANCELED') THEN 'FAILURE'
        ELSE 'SUBMITTED' END)";

#[async_trait]
pub trait MjTaskStore: Send + Sync + 'static {
    /// Writes a new task; `Conflict` when its `task_id` (or its `msg_hash`) is taken.
    async fn mj_task_insert(&self, task: MjTask) -> StoreResult<()>;
    /// The tenant's task `task_id`.
    async fn mj_task_get(&self, tenant_id: &str, task_id: &str) -> StoreResult<Option<MjTaskRow>>;
    /// The tenant's task whose images `msg_hash` names.
    async fn mj_task_by_hash(
        &self,
        tenant_id: &str,
        msg_hash: &str,
    ) -> StoreResult<Option<MjTaskRow>>;
    /// An account's tasks, newest first: `limit` from `offset`, or the first `limit` with
    /// `status` (the origin ignores the offset then).
    async fn mj_task_list(
        &self,
        account_id: &str,
        status: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> StoreResult<Vec<MjTaskRow>>;
    /// Tasks of the tenant still SUBMITTED (the origin's wait queue).
    async fn mj_tasks_waiting(&self, tenant_id: &str) -> StoreResult<u64>;
    /// The bot's result for the newest SUBMITTED task of its trigger id: that task's (id,
    /// tenant, job), or `None` when there is none (the origin's `任务不存在`).
    async fn mj_task_bot_result(&self, result: MjBotResult) -> StoreResult<Option<MjBotHit>>;
}
