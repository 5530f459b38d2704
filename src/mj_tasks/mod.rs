//! The `/mj` facade's tasks beyond their routes: what a task looks like to a midjourney-proxy
//! client ([`view`]: the task object, its status read from its job), its buttons and their
//! customIds ([`buttons`]), and its notifyHook calls: the whole task object POSTed on every
//! change that does not regress (midjourney-proxy's order), through the webhook outbox, so
//! they are signed with the tenant's webhook secret (Standard Webhooks headers), retried, and
//! sent only to addresses the webhook rules allow.
//!
//! A change is noticed where it is committed: the API calls [`MjTasks::notify`] after each
//! submit, a modal or a cancel; the worker running a job tells [`follower::MjTaskFollower`]
//! when the job starts and each time its progress rises (so a deployment whose API and
//! workers are separate processes sends those calls too); and the follower hears every such
//! job's end at least once, so the last call is never lost. The store's
//! [`crate::store::mj_proxy::MjProxyStore::mj_proxy_notify`] writes a call only when its order
//! rises, in one transaction with the outbox row, so each is sent once whoever noticed it.
//! Must not touch: job state, the routes (`api::mj_facade`) or delivery (`webhooks`).

pub mod buttons;
pub mod follower;
pub mod view;

use std::sync::Arc;

use crate::base::clock::now_millis;
use crate::base::job::{new_job_id, JobStatus};
use crate::events::{Change, EventBus};
use crate::storage::urls::ResultLinks;
use crate::store::mj_proxy::{ProxyDelivery, ProxyView};
use crate::store::{Store, StoreError};
use crate::uploads::Library;

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
    /// Queues the notifyHook call of the task `view` shows for its current state, unless it
    /// has none or a call of the same or a later state was queued already.
    pub async fn notify(&self, view: &ProxyView) -> Result<(), StoreError> {
        let task = &view.task;
        let detail = view::Detail::of(task);
        let Some(hook) = detail.notify_hook else {
            return Ok(());
        };
        let job = view.job.as_ref();
        let order = view::status_of(task, job, view.progress).order();
        if order <= task.notified {
            return Ok(());
        }
        let body = view::render(self, view).await;
        let job_id = task.job_id.clone().unwrap_or_else(|| task.id.clone());
        let delivery = ProxyDelivery {
            id: format!("evt_{}", new_job_id()),
            job_id: job_id.clone(),
            tenant_id: task.tenant_id.clone(),
            url: hook,
            status: job.map_or(JobStatus::Queued, |j| j.status),
            body: serde_json::to_string(&body).unwrap_or_default(),
            at: now_millis(),
        };
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

    /// The tenant's task `id` changed: its notifyHook call, if it has a hook.
    pub async fn task_changed(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        match self.store.mj_proxy_view(tenant_id, id).await? {
            Some(view) => self.notify(&view).await,
            None => Ok(()),
        }
    }

    /// A job changed: the notifyHook call of the task it works for, if any.
    pub async fn job_changed(&self, job_id: &str) -> Result<(), StoreError> {
        match self.store.mj_proxy_by_job(job_id).await? {
            Some(view) => self.notify(&view).await,
            None => Ok(()),
        }
    }
}
