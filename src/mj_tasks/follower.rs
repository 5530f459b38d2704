//! The follower of the facade's jobs: when one ends, its task's last notifyHook call is
//! queued (at least once; the store's order check makes a second time change nothing); when
//! one starts or progresses, the worker running it queues that call.

use async_trait::async_trait;

use super::MjTasks;
use crate::base::job::Job;
use crate::jobs::followups::JobFollower;

/// The name the facade's jobs carry in `NewJob::follow_up`.
pub const NAME: &str = "mj_proxy";

pub struct MjTaskFollower(pub MjTasks);

#[async_trait]
impl JobFollower for MjTaskFollower {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn job_ended(&self, job: &Job) -> Result<(), String> {
        self.0.job_changed(&job.id).await.map_err(|e| e.to_string())
    }

    async fn job_progressed(&self, job: &Job) -> Result<(), String> {
        self.0.job_changed(&job.id).await.map_err(|e| e.to_string())
    }
}
