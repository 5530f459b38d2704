//! The `editor` job follower: when a job a message started ends, the session gets the
//! assistant's answer (the result images, stored in the user's image library as `generated`,
//! or what went wrong), and every device of the user hears of it.
//!
//! At least once, idempotent: at most one answer per job (the store keeps the first); a
//! retry after a crash between storing images and the answer may leave an unreferenced
//! `generated` image record behind (it holds nothing and can be deleted).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::Sessions;
use crate::base::image::ImageOwner;
use crate::base::job::{Job, JobStatus};
use crate::jobs::followups::JobFollower;
use crate::storage::ObjectStore;
use crate::store::sessions::{EditorMessage, NewMessage, SessionOwner};
use crate::uploads::{Library, Upload};

/// Its name in `NewJob::follow_up`.
pub const NAME: &str = "editor";

pub struct EditorFollower {
    pub sessions: Sessions,
    pub images: Library,
    pub objects: Arc<dyn ObjectStore>,
}

#[async_trait]
impl JobFollower for EditorFollower {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn job_ended(&self, job: &Job) -> Result<(), String> {
        let found = self
            .sessions
            .store
            .editor_message_of_job(&job.id)
            .await
            .map_err(|e| e.to_string())?;
        // The message (or its session) is gone: nobody to answer.
        let Some((owner, ask)) = found else {
            return Ok(());
        };
        let answer = self.answer(job, &owner, &ask).await?;
        self.sessions
            .job_progress(&owner, &ask.session_id, &job.id, status_detail(job))
            .await
            .map_err(|e| e.to_string())?;
        self.sessions
            .add_message(&owner, answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// What a `job_status` event says.
pub fn status_detail(job: &Job) -> Value {
    json!({
        "jobId": job.id,
        "status": job.status.as_str(),
        "errorCode": job.error_code,
        "errorMessage": job.error_message,
    })
}

impl EditorFollower {
    async fn answer(
        &self,
        job: &Job,
        owner: &SessionOwner,
        ask: &EditorMessage,
    ) -> Result<NewMessage, String> {
        let meta = job.result_meta.clone().unwrap_or(Value::Null);
        let (text, image_ids) = match job.status {
            JobStatus::Succeeded => {
                let ids = self.store_results(job, owner, &ask.session_id).await?;
                let caption = meta["caption"].as_str().filter(|c| !c.is_empty());
                (caption.unwrap_or("Here is your image.").to_owned(), ids)
            }
            JobStatus::Canceled => (
                "The image was canceled; nothing was charged.".into(),
                vec![],
            ),
            _ => (
                format!(
                    "The image could not be made ({}); nothing was charged.",
                    job.error_message.as_deref().unwrap_or("unknown error")
                ),
                vec![],
            ),
        };
        let mut params = status_detail(job);
        params["thoughtSignature"] = meta["thoughtSignature"].clone();
        params["model"] = meta["modelVersion"].clone();
        Ok(NewMessage {
            id: ulid::Ulid::new().to_string(),
            session_id: ask.session_id.clone(),
            role: "assistant".into(),
            text,
            params,
            image_ids,
            edited_of: None,
            job_id: None,
            answers_job: Some(job.id.clone()),
            auto_title: None,
        })
    }

    /// The job's results as the user's `generated` images of the session.
    async fn store_results(
        &self,
        job: &Job,
        owner: &SessionOwner,
        session_id: &str,
    ) -> Result<Vec<String>, String> {
        let image_owner = ImageOwner::user(&owner.tenant_id, &owner.user_id);
        let mut ids = Vec::with_capacity(job.result_keys.len());
        for key in &job.result_keys {
            let object = self.objects.get(key).await.map_err(|e| e.to_string())?;
            let upload = Upload {
                bytes: object.bytes,
                original_name: None,
                kind: "generated".into(),
                session_id: Some(session_id.to_owned()),
            };
            let record = self
                .images
                .upload(&image_owner, upload)
                .await
                .map_err(|e| e.to_string())?;
            ids.push(record.id);
        }
        Ok(ids)
    }
}
