//! The `/mj` facade's tasks beyond their routes: what a task looks like to a midjourney-proxy
//! client ([`view`]: the task object, its status read from its job), its buttons and their
//! customIds ([`buttons`]), and its notifyHook calls: the whole task object POSTed on every
//! change that does not regress (midjourney-proxy's order), through the webhook outbox, so
//! they are signed with the tenant's webhook secret (Standard Webhooks headers), retried, and
//! sent only to addresses the webhook rules allow.
//!
//! A change is noticed three ways: the API calls [`MjTasks::notify`] after each submit, a
//! modal or a cancel; [`run`] hears job changes on the bus (a job started) for the jobs this
//! process submitted with a notifyHook ([`hooked`]: every other job change costs nothing, not
//! even a read; in a deployment whose API and workers are separate processes only the
//! submit's and the end's calls are sent); and [`follower::MjTaskFollower`] hears every such
//! job's end at least once, so the last call is never lost. The store's
//! [`crate::store::mj_proxy::MjProxyStore::mj_proxy_notify`] writes a call only when its order
//! rises, in one transaction with the outbox row, so each is sent once whoever noticed it.
//! Must not touch: job state, the routes (`api::mj_facade`) or delivery (`webhooks`).

pub mod buttons;
pub mod follower;
pub mod view;

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

use tokio_util::sync::CancellationToken;

use crate::base::clock::now_millis;
use crate::base::job::{new_job_id, JobStatus};
use crate::events::{Change, EventBus, Subscription, Wake};
use crate::storage::urls::ResultLinks;
use crate::store::mj_proxy::{ProxyDelivery, ProxyTask};
use crate::store::{Store, StoreError};
use crate::uploads::Library;

/// Jobs submitted in this process whose tasks have a notifyHook, until they end.
static HOOKED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
/// Past this many (ends this process never heard), the set starts again.
const HOOKED_MAX: usize = 100_000;

fn hooked_set() -> std::sync::MutexGuard<'static, HashSet<String>> {
    HOOKED.lock().unwrap_or_else(|p| p.into_inner())
}

/// The job `job_id` works for a task with a notifyHook: [`run`] follows its changes.
pub fn hooked(job_id: &str) {
    let mut set = hooked_set();
    if set.len() >= HOOKED_MAX {
        set.clear();
    }
    set.insert(job_id.to_owned());
}

/// What the facade's tasks need: the store, result links, the image library (a describe's
/// image) and the bus (to wake the webhook dispatcher).
#[derive(Clone)]
pub struct MjTasks {
    pub store: Arc<dyn Store>,
    pub urls: ResultLinks,
    pub images: Library,
    pub events: Arc<dyn EventBus>,
}

impl MjTasks {
    /// Queues the task's notifyHook call for its current state, unless it has none or a call
    /// of the same or a later state was queued already.
    pub async fn notify(&self, task: &ProxyTask) -> Result<(), StoreError> {
        let detail = view::Detail::of(task);
        let Some(hook) = detail.notify_hook else {
            return Ok(());
        };
        let job = view::job_of(self, task).await?;
        let progress = view::progress_of(self, job.as_ref()).await;
        let order = view::status_of(task, job.as_ref(), progress).order();
        if order <= task.notified {
            return Ok(());
        }
        let body = view::render(self, task, job.as_ref(), progress).await;
        let job_id = task.job_id.clone().unwrap_or_else(|| task.id.clone());
        let delivery = ProxyDelivery {
            id: format!("evt_{}", new_job_id()),
            job_id: job_id.clone(),
            tenant_id: task.tenant_id.clone(),
            url: hook,
            status: job.map_or(JobStatus::Queued, |j| j.status),
            body: body.to_string(),
            at: now_millis(),
        };
        if order >= view::Status::END {
            hooked_set().remove(&job_id);
        }
        if self
            .store
            .mj_proxy_notify(&task.id, order, delivery)
            .await?
        {
            // The dispatcher wakes on job changes.
            self.events.publish(Change::job(&task.tenant_id, &job_id));
        }
        Ok(())
    }

    /// A job changed: the notifyHook call of the task it works for, if any.
    pub async fn job_changed(&self, job_id: &str) -> Result<(), StoreError> {
        match self.store.mj_proxy_by_job(job_id).await? {
            Some(task) => self.notify(&task).await,
            None => Ok(()),
        }
    }
}

/// Hears job changes on the bus until `stop` and queues their tasks' calls. A notice missed
/// here (a full buffer, another process's bus) costs only an intermediate call: the end of
/// every job reaches the follower.
pub async fn run(tasks: MjTasks, mut notices: Subscription, stop: CancellationToken) {
    loop {
        let wake = tokio::select! {
            _ = stop.cancelled() => return,
            wake = notices.recv() => wake,
        };
        match wake {
            Wake::Changed(change) => {
                let job_id = change.job_id.as_deref();
                if let Some(job_id) = job_id.filter(|j| hooked_set().contains(*j)) {
                    if let Err(e) = tasks.job_changed(job_id).await {
                        tracing::warn!(job = %job_id, error = %e, "mj notifyHook not queued");
                    }
                }
            }
            Wake::Missed => {}
            Wake::Closed => return,
        }
    }
}
