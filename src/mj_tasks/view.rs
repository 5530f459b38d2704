//! The task object of `fetch`, the lists and notifyHook (`contract/midjourney-proxy.md`
//! §1.4): string enums, `progress` as `"45%"` (`""` on failure), millisecond times, the
//! image (an imagine's grid), and on success the buttons whose customIds `/mj/submit/action`
//! takes back. Its status is read from the job: QUEUED is SUBMITTED, RUNNING and RETRYING
//! are IN_PROGRESS, SUCCEEDED is SUCCESS, FAILED and CANCELED are FAILURE (a cancel's reason
//! is `取消任务`); a task waiting for its modal is MODAL.

use serde::{Deserialize, Serialize};

use super::{buttons, MjTasks};
use crate::base::clock::now_millis;
use crate::base::image::ImageOwner;
use crate::base::job::{Job, JobStatus};
use crate::store::mj_proxy::{ProxyTask, ProxyView, PHASE_CANCEL, PHASE_MODAL};
use crate::store::StoreError;

/// The task's fields beyond its row's columns (stored as the row's `detail`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    pub prompt: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_hook: Option<String>,
    /// The task whose image this one works on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// FAST, TURBO or RELAX (the route prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// A describe's image (an upload of the image library).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// While MODAL: the customId it waits to perform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

impl Detail {
    pub fn of(task: &ProxyTask) -> Detail {
        serde_json::from_str(&task.detail).unwrap_or_default()
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// A task's status, progress and failure as the client sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub status: &'static str,
    /// 0-100; `None` on failure (shown as `""`).
    pub progress: Option<u8>,
    pub fail_reason: Option<String>,
}

impl Status {
    /// The order of SUCCESS and FAILURE.
    pub const END: i64 = 400;

    /// The order midjourney-proxy drops regressive callbacks by (NOT_START 0, SUBMITTED 1,
    /// IN_PROGRESS 3 + progress, FAILURE and SUCCESS 4), times 100; MODAL, which comes
    /// before its submit, is 0.5.
    pub fn order(&self) -> i64 {
        match self.status {
            "MODAL" => 50,
            "SUBMITTED" => 100,
            "IN_PROGRESS" => 300 + i64::from(self.progress.unwrap_or(0).min(99)),
            "SUCCESS" | "FAILURE" => Status::END,
            _ => 0,
        }
    }
}

const CANCELED: &str = "取消任务";

/// The task's status; `progress` is its running job's last report.
pub fn status_of(task: &ProxyTask, job: Option<&Job>, progress: Option<u8>) -> Status {
    let plain = |status, progress| Status {
        status,
        progress: Some(progress),
        fail_reason: None,
    };
    let failed = |reason: String| Status {
        status: "FAILURE",
        progress: None,
        fail_reason: Some(reason),
    };
    match (task.phase.as_deref(), job) {
        (Some(PHASE_MODAL), _) => plain("MODAL", 0),
        (Some(PHASE_CANCEL), _) => failed(CANCELED.into()),
        (_, None) => failed("任务不存在".into()),
        (_, Some(job)) => match job.status {
            JobStatus::Queued => plain("SUBMITTED", 0),
            JobStatus::Running => plain("IN_PROGRESS", progress.unwrap_or(0)),
            JobStatus::Retrying => plain("IN_PROGRESS", 0),
            JobStatus::Succeeded => plain("SUCCESS", 100),
            JobStatus::Canceled => failed(CANCELED.into()),
            JobStatus::Failed => failed(
                job.error_message
                    .clone()
                    .or_else(|| job.error_code.clone())
                    .unwrap_or_else(|| "任务失败".into()),
            ),
        },
    }
}

/// The task's job, if it has one.
pub async fn job_of(app: &MjTasks, task: &ProxyTask) -> Result<Option<Job>, StoreError> {
    match &task.job_id {
        Some(id) => app.store.job_get(&task.tenant_id, id).await,
        None => Ok(None),
    }
}

/// The task object of `fetch`, the lists and notifyHook, serialized as it is built.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskObject {
    pub id: String,
    pub action: String,
    pub status: &'static str,
    pub progress: String,
    pub prompt: String,
    pub prompt_en: String,
    pub description: String,
    pub state: Option<String>,
    pub submit_time: i64,
    pub start_time: Option<i64>,
    pub finish_time: Option<i64>,
    pub image_url: Option<String>,
    pub fail_reason: Option<String>,
    pub properties: TaskProperties,
    pub buttons: Vec<buttons::ShownButton>,
    pub bot_type: &'static str,
    pub mode: Option<String>,
    pub parent_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskProperties {
    pub final_prompt: String,
    pub message_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_hook: Option<String>,
}

/// The task object of a task, its job and the job's progress.
pub async fn render(app: &MjTasks, view: &ProxyView) -> TaskObject {
    let (task, job) = (&view.task, view.job.as_ref());
    let detail = Detail::of(task);
    let status = status_of(task, job, view.progress);
    let succeeded = status.status == "SUCCESS";
    let mut prompt = detail.prompt.clone();
    let mut image_url = None;
    let mut shown = Vec::new();
    if let (true, Some(job)) = (succeeded, job) {
        let text = job
            .result_meta
            .as_ref()
            .and_then(|m| m.get("text")?.as_str());
        if let Some(text) = text {
            prompt = text.to_owned();
        }
        image_url = match &detail.image_id {
            Some(id) => described_image(app, &task.tenant_id, id).await,
            None => shown_image(app, job).await,
        };
        shown = buttons::of_task(
            job.params.grid,
            image_url.is_some() && detail.image_id.is_none(),
        )
        .into_iter()
        .map(|b| b.shown(&task.hash))
        .collect();
    }
    let finish_time = job
        .and_then(|j| j.finished_at)
        .or(match task.phase.as_deref() {
            Some(PHASE_CANCEL) => Some(task.updated_at),
            _ => None,
        });
    TaskObject {
        id: task.id.clone(),
        action: task.action.clone(),
        status: status.status,
        progress: status.progress.map(|p| format!("{p}%")).unwrap_or_default(),
        prompt_en: prompt.clone(),
        properties: TaskProperties {
            final_prompt: prompt.clone(),
            message_hash: task.hash.clone(),
            notify_hook: detail.notify_hook,
        },
        prompt,
        description: detail.description,
        state: detail.state,
        submit_time: task.created_at,
        start_time: job.and_then(|j| j.started_at),
        finish_time,
        image_url,
        fail_reason: status.fail_reason,
        buttons: shown,
        bot_type: "MID_JOURNEY",
        mode: detail.mode,
        parent_id: detail.parent_id,
    }
}

/// The image a finished job shows: an imagine's grid, else its first image.
async fn shown_image(app: &MjTasks, job: &Job) -> Option<String> {
    let key = if job.params.grid {
        job.result_keys.last()
    } else {
        job.result_keys.first()
    }?;
    Some(app.urls.url(key, now_millis() / 1000).await)
}

async fn described_image(app: &MjTasks, tenant_id: &str, image_id: &str) -> Option<String> {
    let record = app
        .images
        .get(&ImageOwner::tenant(tenant_id), image_id)
        .await
        .ok()?;
    Some(app.images.link(&record.object.key).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_never_regress_along_a_task() {
        let s = |status, progress| Status {
            status,
            progress,
            fail_reason: None,
        };
        let path = [
            s("MODAL", Some(0)),
            s("SUBMITTED", Some(0)),
            s("IN_PROGRESS", Some(0)),
            s("IN_PROGRESS", Some(45)),
            s("SUCCESS", Some(100)),
        ];
        for pair in path.windows(2) {
            assert!(pair[0].order() < pair[1].order(), "{pair:?}");
        }
        assert_eq!(s("FAILURE", None).order(), s("SUCCESS", Some(100)).order());
    }
}
