//! The `photo` follower: when a task's last job ends, the task ends and its work is written
//! (one store transaction, once however often it is told). The work keeps the images of the
//! jobs that succeeded, in image order; their credits were settled and the failed jobs'
//! released by the store when each job ended. A task run on a workflow takes the run's
//! `ai_description` (and its error, when it failed).

use std::sync::Arc;

use async_trait::async_trait;

use crate::base::clock::now_millis;
use crate::base::job::{Job, JobStatus};
use crate::jobs::followups::JobFollower;
use crate::store::photo::{Task, TaskJob, Work};
use crate::store::Store;

/// The name photo jobs carry in `NewJob::follow_up`.
pub const FOLLOWER: &str = "photo";

pub struct PhotoFollower {
    store: Arc<dyn Store>,
}

impl PhotoFollower {
    pub fn new(store: Arc<dyn Store>) -> PhotoFollower {
        PhotoFollower { store }
    }
}

/// How a task whose jobs all ended ends: cancelled if it was, completed with at least one
/// image, failed with none (the first job's error).
pub fn outcome(task: &Task, jobs: &[TaskJob]) -> (&'static str, Vec<String>, Option<String>) {
    let images: Vec<String> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Succeeded)
        .flat_map(|j| j.result_keys.iter().cloned())
        .collect();
    let error = jobs
        .iter()
        .find(|j| j.status != JobStatus::Succeeded)
        .map(|j| {
            j.error_message
                .clone()
                .unwrap_or_else(|| "未知错误".to_owned())
        });
    let status = if task.status == "cancelled" {
        "cancelled"
    } else if images.is_empty() {
        "failed"
    } else {
        "completed"
    };
    let error = if status == "completed" { None } else { error };
    (status, images, error)
}

/// The work of an ended task.
pub fn work_of(task: &Task, status: &str, images: Vec<String>, error: Option<String>) -> Work {
    let now = now_millis();
    Work {
        work_id: super::new_uuid(),
        tenant_id: task.tenant_id.clone(),
        user_id: task.user_id.clone(),
        user_seq: task.user_seq,
        task_id: task.task_id.clone(),
        work_type: task.task_type.clone(),
        status: status.to_owned(),
        images,
        original_images: task.images.clone(),
        parameters: task.parameters.clone(),
        custom_description: task.custom_description.clone(),
        ai_description: None,
        is_public: false,
        is_favorite: false,
        tags: Vec::new(),
        error,
        created_at: now,
        updated_at: now,
        completed_at: Some(now),
    }
}

#[async_trait]
impl JobFollower for PhotoFollower {
    fn name(&self) -> &'static str {
        FOLLOWER
    }

    async fn job_ended(&self, job: &Job) -> Result<(), String> {
        let store = self.store.as_ref();
        let Some(task) = store
            .photo_task_of_job(&job.id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(());
        };
        let jobs = store
            .photo_task_jobs(&task.task_id)
            .await
            .map_err(|e| e.to_string())?;
        // Another job's follow-up ends the task once the last one is done.
        if !jobs.iter().all(|j| j.status.is_terminal()) {
            return Ok(());
        }
        let (status, images, error) = outcome(&task, &jobs);
        let mut work = work_of(&task, status, images, error);
        // A workflow's own words: its description, and its error as it gave it.
        if let Some(run) = store
            .photo_workflow_get(&task.task_id)
            .await
            .map_err(|e| e.to_string())?
        {
            work.ai_description = run.ai_description;
            if status == "failed" && run.error.is_some() {
                work.error = run.error;
            }
        }
        store
            .photo_task_end(&task.task_id, status, work)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
