//! Waiting for a job to end, for the facade's synchronous answer: on the event bus's notices
//! for that job, with the periodic re-read ([`SAFETY_POLL`]) as the net for changes made by
//! other processes, bounded by `openai_api.wait_secs`.

use std::time::Duration;

use tokio::time::Instant;

use crate::app::App;
use crate::base::job::Job;
use crate::error::ApiError;
use crate::events::{Wake, SAFETY_POLL};

/// The job once it has ended, or as it is when `limit` runs out.
pub async fn until_done(
    app: &App,
    tenant_id: &str,
    job_id: &str,
    limit: Duration,
) -> Result<Job, ApiError> {
    let deadline = Instant::now() + limit;
    // Subscribed before the first read: a change committed after that read is announced after
    // it, so it is heard; one committed before is seen by the read.
    let mut notices = app.events.subscribe();
    loop {
        notices.drain();
        let job = app
            .store
            .job_get(tenant_id, job_id)
            .await?
            .ok_or_else(ApiError::job_not_found)?;
        if job.status.is_terminal() || Instant::now() >= deadline {
            return Ok(job);
        }
        let next_read = (Instant::now() + SAFETY_POLL).min(deadline);
        loop {
            tokio::select! {
                wake = notices.recv() => match wake {
                    Wake::Changed(change) if !change.concerns(tenant_id, Some(job_id)) => continue,
                    Wake::Closed => tokio::time::sleep_until(next_read).await,
                    _ => {}
                },
                _ = tokio::time::sleep_until(next_read) => {}
            }
            break;
        }
    }
}
