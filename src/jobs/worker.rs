//! The worker: claims jobs fairly, runs each attempt beside a lease heartbeat, stores the
//! images and reports the outcome under its fencing token.
//!
//! A worker never trusts its own memory over the store: if a heartbeat or the final write
//! says the lease was lost, the attempt's result is dropped (another worker owns the job).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::model::{now_millis, ClaimedJob, Finish};
use super::retry::backoff;
use crate::config::WorkerConfig;
use crate::events::{Change, EventBus};
use crate::providers::{GenerateRequest, ProviderError, Registry};
use crate::storage::ObjectStore;
use crate::store::{Store, StoreError};

/// What a worker needs from the rest of the process.
#[derive(Clone)]
pub struct WorkerDeps {
    pub store: Arc<dyn Store>,
    pub objects: Arc<dyn ObjectStore>,
    pub providers: Registry,
    pub config: WorkerConfig,
    /// Poked by submits in this process so an idle worker claims at once.
    pub wake: Arc<Notify>,
    /// Told of every status change this worker commits.
    pub events: Arc<dyn EventBus>,
}

pub struct Worker {
    deps: WorkerDeps,
    id: String,
}

impl Worker {
    pub fn new(deps: WorkerDeps) -> Worker {
        let id = format!("wrk_{}", ulid::Ulid::new().to_string().to_lowercase());
        Worker { deps, id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `stop` fires, then lets running jobs finish for the grace period and puts
    /// the rest back in the queue.
    pub async fn run(self, stop: CancellationToken) {
        let deps = self.deps;
        let slots = Arc::new(Semaphore::new(deps.config.concurrency as usize));
        let tracker = TaskTracker::new();
        // Fired after the grace period: attempts still running give their jobs back.
        let abort = CancellationToken::new();
        let lease = Duration::from_millis(deps.config.lease_ms);
        let poll = Duration::from_millis(deps.config.poll_ms);
        tracing::info!(worker = %self.id, concurrency = deps.config.concurrency, "worker started");
        while !stop.is_cancelled() {
            // Wait for a free slot before asking for work.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
                _ = stop.cancelled() => break,
            };
            let free = slots.available_permits() as u32 + 1;
            let claimed = match deps.store.job_claim(&self.id, free, lease).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed; retrying after the poll interval");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(first);
                tokio::select! {
                    _ = deps.wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            for c in &claimed {
                deps.events
                    .publish(Change::job(&c.job.tenant_id, &c.job.id));
            }
            let mut first = Some(first);
            for job in claimed {
                let permit = match first.take() {
                    Some(p) => p,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let deps = deps.clone();
                let abort = abort.clone();
                tracker.spawn(async move {
                    run_claimed(&deps, job, abort).await;
                    drop(permit);
                });
            }
        }
        tracker.close();
        let grace = Duration::from_secs(deps.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(worker = %self.id, "grace period over; releasing running jobs");
            abort.cancel();
            tracker.wait().await;
        }
        tracing::info!(worker = %self.id, "worker stopped");
    }
}

/// Runs one claimed attempt to its end: success, retry, failure, lease lost or released.
pub async fn run_claimed(deps: &WorkerDeps, claimed: ClaimedJob, abort: CancellationToken) {
    let job_id = claimed.job.id.clone();
    let fence = claimed.fence;
    let changed = Change::job(&claimed.job.tenant_id, &job_id);
    let lease_lost = CancellationToken::new();
    let heartbeat = heartbeat_loop(deps, &job_id, fence, lease_lost.clone());
    let attempt = attempt(deps, &claimed);
    tokio::pin!(attempt);
    tokio::pin!(heartbeat);
    let finish = tokio::select! {
        finish = &mut attempt => finish,
        _ = &mut heartbeat => return, // lease lost: another worker owns the job now
        _ = abort.cancelled() => {
            match deps.store.job_release(&job_id, fence).await {
                Ok(()) => deps.events.publish(changed),
                Err(e) => tracing::warn!(job = %job_id, error = %e, "release failed; the rescuer will requeue it"),
            }
            return;
        }
    };
    match deps.store.job_finish(&job_id, fence, finish).await {
        Ok(()) => deps.events.publish(changed),
        Err(StoreError::LeaseLost) => {
            tracing::warn!(job = %job_id, fence, "lease lost before the result was written; result dropped");
        }
        Err(e) => {
            tracing::error!(job = %job_id, error = %e, "finish failed; the rescuer will retry the job")
        }
    }
}

/// Extends the lease every `heartbeat_ms`; returns only when the lease is lost.
async fn heartbeat_loop(deps: &WorkerDeps, job_id: &str, fence: i64, lost: CancellationToken) {
    let every = Duration::from_millis(deps.config.heartbeat_ms);
    let lease = Duration::from_millis(deps.config.lease_ms);
    loop {
        tokio::time::sleep(every).await;
        match deps.store.job_heartbeat(job_id, fence, lease).await {
            Ok(_) => {}
            Err(StoreError::LeaseLost) => {
                tracing::warn!(job = %job_id, fence, "lease lost; abandoning the attempt");
                lost.cancel();
                return;
            }
            // A store hiccup: try again next beat; the lease has slack for that.
            Err(e) => tracing::warn!(job = %job_id, error = %e, "heartbeat failed"),
        }
    }
}

/// One attempt: provider call bounded by the job's deadline, then the images are stored.
async fn attempt(deps: &WorkerDeps, claimed: &ClaimedJob) -> Finish {
    let job = &claimed.job;
    let Some(provider) = deps.providers.get(&job.provider) else {
        return Finish::Failed {
            error_code: "PROVIDER_UNAVAILABLE".into(),
            error_message: format!(
                "provider '{}' is not configured on this worker",
                job.provider
            ),
        };
    };
    let request = GenerateRequest {
        job_id: job.id.clone(),
        prompt: job.prompt.clone(),
        mode: job.mode,
        input_image: None,
        seed: job.params.seed,
        n: job.params.n.unwrap_or(1),
        aspect_ratio: job.params.aspect_ratio.clone(),
        image_size: job.params.image_size.clone(),
    };
    let remaining = Duration::from_millis((job.deadline_at - now_millis()).max(0) as u64);
    let outcome = match tokio::time::timeout(remaining, provider.generate(&request, None)).await {
        Ok(outcome) => outcome,
        Err(_) => {
            return Finish::Failed {
                error_code: "JOB_TIMEOUT".into(),
                error_message: "the job did not finish before its deadline".into(),
            }
        }
    };
    match outcome {
        Ok(output) => store_images(deps, claimed, output).await,
        Err(error) => finish_for_error(deps, claimed, &error),
    }
}

async fn store_images(
    deps: &WorkerDeps,
    claimed: &ClaimedJob,
    output: crate::providers::GenerateOutput,
) -> Finish {
    let job = &claimed.job;
    if output.images.is_empty() {
        return Finish::Failed {
            error_code: "NO_IMAGE".into(),
            error_message: "the provider returned no image".into(),
        };
    }
    let mut keys = Vec::with_capacity(output.images.len());
    for (index, image) in output.images.into_iter().enumerate() {
        let ext = match image.mime.as_str() {
            "image/jpeg" => "jpg",
            "image/webp" => "webp",
            _ => "png",
        };
        // The attempt number keeps a late duplicate run from overwriting a winner's files.
        let key = format!(
            "{}/{}/{}-{index}.{ext}",
            job.tenant_id, job.id, claimed.fence
        );
        if let Err(e) = deps.objects.put(&key, image.bytes, &image.mime).await {
            return retry_or_fail(deps, claimed, "STORAGE_ERROR", &e.to_string(), None);
        }
        keys.push(key);
    }
    let meta = serde_json::json!({
        "caption": output.caption,
        "usage": output.usage,
        "modelVersion": output.model_version,
        "responseId": output.response_id,
        "thoughtSignature": output.thought_signature,
    });
    Finish::Succeeded {
        result_keys: keys,
        meta: Some(meta),
    }
}

fn finish_for_error(deps: &WorkerDeps, claimed: &ClaimedJob, error: &ProviderError) -> Finish {
    let message = error.to_string();
    match error {
        ProviderError::Retryable { retry_after, .. } => {
            retry_or_fail(deps, claimed, error.error_code(), &message, *retry_after)
        }
        ProviderError::KeyRejected { .. } => {
            retry_or_fail(deps, claimed, error.error_code(), &message, None)
        }
        ProviderError::Final { .. } | ProviderError::ContentBlocked { .. } => Finish::Failed {
            error_code: error.error_code().to_owned(),
            error_message: message,
        },
    }
}

fn retry_or_fail(
    deps: &WorkerDeps,
    claimed: &ClaimedJob,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
) -> Finish {
    let job = &claimed.job;
    if job.attempts >= job.max_attempts {
        return Finish::Failed {
            error_code: code.to_owned(),
            error_message: format!("{message} (after {} attempts)", job.attempts),
        };
    }
    let delay = backoff(
        job.attempts,
        Duration::from_millis(deps.config.retry_base_ms),
        Duration::from_millis(deps.config.retry_max_ms),
        retry_after,
    );
    Finish::Retry {
        run_at: now_millis() + delay.as_millis() as i64,
        error_code: code.to_owned(),
        error_message: message.to_owned(),
    }
}
