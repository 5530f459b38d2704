//! Waiting for a job to end, for the facade's synchronous answer: on the job's notices
//! ([`crate::events::JobWatch`], which passes on none that says the job is still open: the
//! claim's, progress), with the periodic re-read ([`SAFETY_POLL`]) as the net for
//! changes made by other processes, bounded by `openai_api.wait_secs`.

use std::time::Duration;

use tokio::time::Instant;

use crate::app::App;
use crate::base::job::Job;
use crate::error::ApiError;
use crate::events::{Watched, SAFETY_POLL};

/// Where the wait starts.
pub enum Since {
    /// The job was submitted after `watched` began: every change it went through is heard
    /// (but its submit's and claim's notices, which say it is open), so there is nothing to
    /// read before the first notice.
    Submitted,
    /// The job existed before (an idempotent replay): read it first.
    Unknown,
}

/// The job once it has ended, or as it is when `limit` runs out. `watched` must watch it.
pub async fn until_done(
    app: &App,
    tenant_id: &str,
    job_id: &str,
    watched: &Watched,
    since: Since,
    limit: Duration,
) -> Result<Job, ApiError> {
    let deadline = Instant::now() + limit;
    let mut read = matches!(since, Since::Unknown);
    loop {
        if read {
            // A notice heard from here on announces a change this read may not see.
            let job = app
                .store
                .job_get(tenant_id, job_id)
                .await?
                .ok_or_else(ApiError::job_not_found)?;
            if job.status.is_terminal() || Instant::now() >= deadline {
                return Ok(job);
            }
        }
        let next_read = (Instant::now() + SAFETY_POLL).min(deadline);
        tokio::select! {
            _ = watched.notified() => read = true,
            _ = tokio::time::sleep_until(next_read) => read = true,
        }
    }
}
