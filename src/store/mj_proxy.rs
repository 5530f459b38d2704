//! The `/mj` facade's tasks (`mj_proxy_tasks`): one row per midjourney-proxy submit, naming
//! the job that does its work. A MODAL task has no job until its modal submit starts one
//! ([`MjProxyStore::mj_proxy_start`]); a task's other fields are the facade's JSON `detail`,
//! which this module stores and never reads. A notifyHook call is a row of the webhook outbox
//! whose `body` is sent as is. A submit writes its job and its task in one transaction
//! ([`MjProxyStore::mj_proxy_submit`], through the job store's own insert), and a task is
//! read with its job and the job's progress in one read ([`MjProxyStore::mj_proxy_view`]), a
//! page of them too ([`MjProxyStore::mj_proxy_list`]).
//! Must not touch: job state (a task's status is read from its job by the caller).

use async_trait::async_trait;

use super::StoreResult;
use crate::base::clock::Millis;
use crate::base::job::{Job, JobStatus, NewJob, SubmitOutcome};

/// A task waiting for its `/mj/submit/modal`.
pub const PHASE_MODAL: &str = "MODAL";
/// A MODAL task canceled before it started.
pub const PHASE_CANCEL: &str = "CANCEL";

/// One task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyTask {
    /// The 16-digit task id.
    pub id: String,
    pub tenant_id: String,
    pub job_id: Option<String>,
    /// The message hash its buttons' customIds carry.
    pub hash: String,
    /// `IMAGINE`, `UPSCALE`, ... (midjourney-proxy's TaskAction).
    pub action: String,
    /// [`PHASE_MODAL`] or [`PHASE_CANCEL`] before any job; `None` once it has one.
    pub phase: Option<String>,
    /// The facade's JSON of the rest of the task.
    pub detail: String,
    /// The order of the last notifyHook call queued (-1: none).
    pub notified: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A task with its job (`None` while it has none, or when the job was deleted) and, while
/// that job runs, the progress its provider last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyView {
    pub task: ProxyTask,
    pub job: Option<Job>,
    pub progress: Option<u8>,
}

/// The queue as a submit finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyQueue {
    /// The tenant's tasks whose jobs wait to run, counted up to the limit asked.
    pub tasks: u64,
    /// Every job waiting to run (the jobs a job submitted now would wait behind).
    pub jobs: u64,
}

/// Which of a tenant's tasks to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFilter {
    /// Every task, newest first.
    All,
    /// Tasks whose job waits to run (QUEUED or RETRYING), oldest first.
    Queued,
}

/// A notifyHook call for the webhook outbox: its body is the task object, sent as is.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyDelivery {
    /// `evt_` + ULID.
    pub id: String,
    /// The task's job (the task's id while it has none).
    pub job_id: String,
    pub tenant_id: String,
    pub url: String,
    /// The job's status, for the delivery log.
    pub status: JobStatus,
    pub body: String,
    pub at: Millis,
}

#[async_trait]
pub trait MjProxyStore: Send + Sync + 'static {
    /// Writes a new task; `Conflict` when its id is taken.
    async fn mj_proxy_insert(&self, task: ProxyTask) -> StoreResult<()>;
    /// Writes `job` as the job store's submit does (its hold, its QUEUED event) and, when it
    /// is created, the task `task` (whose `job_id` names it) in the same transaction; nothing
    /// is written unless both are. `Conflict` when the task's id is taken. The job carries no
    /// idempotency key (the facade has none).
    async fn mj_proxy_submit(&self, job: NewJob, task: ProxyTask) -> StoreResult<SubmitOutcome>;
    /// The tenant's task `id` with its job and, while the job runs, its progress.
    async fn mj_proxy_view(&self, tenant_id: &str, id: &str) -> StoreResult<Option<ProxyView>>;
    /// The tenant's task `id`.
    async fn mj_proxy_get(&self, tenant_id: &str, id: &str) -> StoreResult<Option<ProxyTask>>;
    /// The task a job works for, as [`MjProxyStore::mj_proxy_view`] shows it.
    async fn mj_proxy_by_job(&self, job_id: &str) -> StoreResult<Option<ProxyView>>;
    /// The tenant's tasks as `filter` says, at most `limit`, each as
    /// [`MjProxyStore::mj_proxy_view`] shows it, in one read (not one more per task).
    async fn mj_proxy_list(
        &self,
        tenant_id: &str,
        filter: ProxyFilter,
        limit: u32,
    ) -> StoreResult<Vec<ProxyView>>;
    /// The tenant's tasks among `ids`, in their order (unknown ids skipped), each as
    /// [`MjProxyStore::mj_proxy_view`] shows it, in one read.
    async fn mj_proxy_views(&self, tenant_id: &str, ids: &[String]) -> StoreResult<Vec<ProxyView>>;
    /// The queue a new task of the tenant joins, in one read.
    async fn mj_proxy_queue(&self, tenant_id: &str, limit: u32) -> StoreResult<ProxyQueue>;
    /// Gives a MODAL task its job and new detail; false when it is not (or no longer) MODAL.
    async fn mj_proxy_start(
        &self,
        tenant_id: &str,
        id: &str,
        job_id: &str,
        detail: &str,
        at: Millis,
    ) -> StoreResult<bool>;
    /// Cancels a MODAL task; false when it is not (or no longer) MODAL.
    async fn mj_proxy_cancel_modal(
        &self,
        tenant_id: &str,
        id: &str,
        at: Millis,
    ) -> StoreResult<bool>;
    /// Queues the notifyHook call `delivery` of `order` for task `id` (an outbox row, in one
    /// transaction with the task's new order); false, and nothing written, when a call of the
    /// same or a higher order was queued already.
    async fn mj_proxy_notify(
        &self,
        id: &str,
        order: i64,
        delivery: ProxyDelivery,
    ) -> StoreResult<bool>;
}
