//! The worker: claims jobs fairly, runs each attempt beside a lease heartbeat, stores the
//! images and reports the outcome under its fencing token. A job submitted in its own process
//! may also reach it at once, claimed by the submit itself ([`DirectStart`]).
//!
//! A worker never trusts its own memory over the store: if a heartbeat or the final write
//! says the lease was lost, the attempt's result is dropped (another worker owns the job, or
//! the job was canceled), and the images it stored are deleted.
//!
//! A cancel of a RUNNING job moves its fencing token on in the store. The attempt hears of it
//! at once when the cancel's notice reaches this process on the event bus (the same process,
//! or any process with `REDIS_URL`), which makes it heartbeat now; otherwise its next regular
//! heartbeat finds the lease lost. Either way the attempt is dropped, its upstream key goes
//! back to the pool, and its late result is never written.
//!
//! Owns the `[worker]` configuration section ([`WorkerConfig`]). Its dependencies are built
//! by the composition root and handed in ([`WorkerDeps`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::gate::{Capacity, Gate, GlobalTicket};
use super::input_image::{job_input, InputFetcher};
use super::retry::backoff;
use crate::base::clock::now_millis;
use crate::base::job::{ClaimedJob, Claimer, Finish};
use crate::base::job_errors;
use crate::base::settings::{at_least_one, Invalid};
use crate::events::{Change, EventBus, Route, Topics, Watched};
use crate::keypool::{KeyLease, KeyPool, Outcome};
use crate::providers::{
    GenerateRequest, HistoryTurn, InputImage, Progress, Provider, ProviderError, Registry,
    RequestExtras,
};
use crate::storage::{ObjectStore, StorageError};
use crate::store::{Store, StoreError};
use crate::telemetry;

/// `[worker]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Jobs run at once by one worker process. Origin name: `WORKER_CONCURRENCY`.
    pub concurrency: u32,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    /// Safety-net poll when no wake-up arrives.
    pub poll_ms: u64,
    pub max_attempts: u32,
    /// A job still unfinished this long after submit fails with `JOB_TIMEOUT`.
    pub job_timeout_secs: u64,
    /// On shutdown, how long running jobs may take before they are put back in the queue.
    pub shutdown_grace_secs: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How often the maintenance pass (lease rescue, Cancel-After, deadlines) runs.
    pub maintenance_ms: u64,
    /// How often provider keys are re-read from the database (keys added by the CLI).
    pub key_refresh_ms: u64,
    /// How often keys disabled by an upstream rejection are re-tested.
    pub key_probe_secs: u64,
    /// A job submitted to a process whose worker has room starts at once, claimed by its own
    /// submit when no other tenant's job waits ([`DirectStart`]); off, every job waits for
    /// the claim loop.
    pub dispatch_on_submit: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 50,
            lease_ms: 30_000,
            heartbeat_ms: 10_000,
            poll_ms: 500,
            max_attempts: 3,
            job_timeout_secs: 600,
            shutdown_grace_secs: 30,
            retry_base_ms: 1000,
            retry_max_ms: 60_000,
            maintenance_ms: 1000,
            key_refresh_ms: 30_000,
            key_probe_secs: 300,
            dispatch_on_submit: true,
        }
    }
}

impl WorkerConfig {
    /// When a job submitted at `now` must have ended (`job_timeout_secs` later).
    pub fn deadline_from(&self, now: crate::base::clock::Millis) -> crate::base::clock::Millis {
        now.saturating_add(
            i64::try_from(self.job_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        )
    }

    /// The first problem found, with the key it concerns.
    pub fn validate(&self) -> Result<(), Invalid> {
        at_least_one([
            ("worker.concurrency", self.concurrency.into()),
            ("worker.max_attempts", self.max_attempts.into()),
        ])?;
        if self.heartbeat_ms == 0 || self.heartbeat_ms >= self.lease_ms {
            return Err((
                "worker.heartbeat_ms",
                "must be at least 1 and shorter than worker.lease_ms".into(),
            ));
        }
        Ok(())
    }
}

/// What a worker needs from the rest of the process.
#[derive(Clone)]
pub struct WorkerDeps {
    pub store: Arc<dyn Store>,
    pub objects: Arc<dyn ObjectStore>,
    pub providers: Registry,
    pub config: WorkerConfig,
    pub inputs: Arc<InputFetcher>,
    /// Uploads named by jobs' `inputImageIds`.
    pub images: crate::uploads::Library,
    /// Global concurrency and rate at execution.
    pub gate: Gate,
    /// Upstream keys for providers that need them.
    pub keys: Arc<KeyPool>,
    /// Poked by submits in this process so an idle worker claims at once.
    pub wake: Arc<Notify>,
    /// Told of every status change this worker commits.
    pub events: Arc<dyn EventBus>,
    /// Claimed jobs that will need an upstream key and do not hold one yet: the next claim
    /// is sized to the free keys minus these, or it would take jobs no key can run soon.
    pub awaiting_keys: Arc<AtomicU32>,
    /// Told when a job they follow starts an attempt or progresses.
    pub followers: super::followups::Followers,
}

/// One claimed job counted in [`WorkerDeps::awaiting_keys`] until it gets its key (or ends).
pub struct AwaitingKey {
    count: Option<Arc<AtomicU32>>,
    settled: AtomicBool,
}

impl AwaitingKey {
    fn new(deps: &WorkerDeps, provider: &str) -> AwaitingKey {
        let count = needs_key(deps, provider).then(|| {
            deps.awaiting_keys.fetch_add(1, Ordering::Relaxed);
            deps.awaiting_keys.clone()
        });
        AwaitingKey {
            count,
            settled: AtomicBool::new(false),
        }
    }

    /// As [`AwaitingKey::new`], only if a free key of `provider` is left for it after the jobs
    /// already counted: what a submit that starts its job takes before it claims, so that
    /// submits at once never start more jobs than the free keys can run.
    fn reserve(deps: &WorkerDeps, provider: &str) -> Option<AwaitingKey> {
        if !needs_key(deps, provider) {
            return Some(AwaitingKey::none());
        }
        let free = deps.keys.free_slots(provider);
        deps.awaiting_keys
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |awaiting| {
                (awaiting < free).then_some(awaiting + 1)
            })
            .ok()?;
        Some(AwaitingKey {
            count: Some(deps.awaiting_keys.clone()),
            settled: AtomicBool::new(false),
        })
    }

    /// Not counted: the job runs without a key (tests, other entry points).
    pub fn none() -> AwaitingKey {
        AwaitingKey {
            count: None,
            settled: AtomicBool::new(true),
        }
    }

    /// The job holds its key now (idempotent).
    fn settle(&self) {
        if let Some(count) = &self.count {
            if !self.settled.swap(true, Ordering::Relaxed) {
                count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for AwaitingKey {
    fn drop(&mut self) {
        self.settle();
    }
}

pub struct Worker {
    deps: WorkerDeps,
    id: Arc<str>,
    running: Running,
}

/// What the worker's claim loop shares with the submits it takes at once ([`DirectStart`]):
/// its slots, its running attempts, and the notices those attempts heed.
#[derive(Clone)]
struct Running {
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    /// Fired after the grace period: attempts still running give their jobs back.
    abort: CancellationToken,
    watch: Topics,
}

impl Running {
    /// Runs a claimed job on one of the slots (`permit`) until its attempt ends; `awaiting`
    /// counts it among the jobs waiting for a key until it holds one.
    fn start(
        &self,
        deps: &WorkerDeps,
        job: ClaimedJob,
        permit: OwnedSemaphorePermit,
        awaiting: AwaitingKey,
    ) {
        let deps = deps.clone();
        let abort = self.abort.clone();
        let watched = self.watch.watch(&job.job.id);
        self.tracker.spawn(async move {
            run_claimed_awaiting(&deps, job, abort, awaiting, Some(&watched)).await;
            drop(permit);
        });
    }
}

impl Worker {
    /// A worker of `deps` (needs a Tokio runtime: its attempts' notices are routed by a task).
    pub fn new(deps: WorkerDeps) -> Worker {
        let id = format!("wrk_{}", ulid::Ulid::new().to_string().to_lowercase());
        let running = Running {
            slots: Arc::new(Semaphore::new(deps.config.concurrency as usize)),
            tracker: TaskTracker::new(),
            abort: CancellationToken::new(),
            watch: Topics::start(deps.events.as_ref(), attempt_route),
        };
        Worker {
            deps,
            id: id.into(),
            running,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The handle that gives this worker the jobs submitted in its process
    /// (`worker.dispatch_on_submit`).
    pub fn direct_start(&self) -> DirectStart {
        DirectStart {
            deps: self.deps.clone(),
            worker_id: self.id.clone(),
            running: self.running.clone(),
        }
    }

    /// Runs until `stop` fires, then lets running jobs finish for the grace period and puts
    /// the rest back in the queue.
    pub async fn run(self, stop: CancellationToken) {
        let Worker { deps, id, running } = self;
        let slots = &running.slots;
        let lease = Duration::from_millis(deps.config.lease_ms);
        let poll = Duration::from_millis(deps.config.poll_ms);
        tracing::info!(worker = %id, concurrency = deps.config.concurrency, "worker started");
        while !stop.is_cancelled() {
            // Wait for a free slot before asking for work.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
                _ = stop.cancelled() => break,
            };
            // The slots the claim may fill, held before it: submits that start their own jobs
            // take slots too, and a claimed job must never find none left.
            let keys_free = key_capacity(&deps);
            let mut held = hold_slots(slots, first, keys_free);
            let free = (held.num_permits() as u32).min(keys_free);
            if free == 0 {
                // Every upstream key is busy: claim again when one is handed back (the poll
                // covers keys that free up by time, after a cool-down).
                drop(held);
                tokio::select! {
                    _ = deps.keys.key_released() => {}
                    _ = tokio::time::sleep(poll.min(Duration::from_millis(50))) => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            let wanted = match deps.gate.capacity(free).await {
                Capacity::Jobs(n) => n,
                Capacity::WaitFor(wait) => {
                    drop(held);
                    tokio::select! {
                        _ = tokio::time::sleep(wait.min(poll)) => {}
                        _ = stop.cancelled() => break,
                    }
                    continue;
                }
            };
            let asked = Instant::now();
            let claimed = match deps.store.job_claim(&id, wanted, lease).await {
                Ok(jobs) => {
                    telemetry::jobs_claimed(jobs.len(), asked.elapsed());
                    jobs
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed; retrying after the poll interval");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(held);
                tokio::select! {
                    _ = deps.wake.notified() => {}
                    _ = deps.store.wait_for_work(poll) => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            for c in &claimed {
                deps.events
                    .publish(Change::job_open(&c.job.tenant_id, &c.job.id));
            }
            // At most `wanted <= held` jobs: each takes one of the held slots; the rest go back.
            for job in claimed {
                let Some(permit) = held.split(1) else {
                    tracing::error!(job = %job.job.id, "claimed beyond the held slots; the rescuer will requeue it");
                    continue;
                };
                let awaiting = AwaitingKey::new(&deps, &job.job.provider);
                running.start(&deps, job, permit, awaiting);
            }
        }
        running.tracker.close();
        let grace = Duration::from_secs(deps.config.shutdown_grace_secs);
        if tokio::time::timeout(grace, running.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(worker = %id, "grace period over; releasing running jobs");
            running.abort.cancel();
            running.tracker.wait().await;
        }
        tracing::info!(worker = %id, "worker stopped");
    }
}

/// Gives a job submitted in this process to its worker at once, when the worker has a free
/// slot and a free upstream key for it and the global limits let it start: the submit claims
/// it if no other tenant's job waits ([`crate::store::Store::job_submit_claimed`]), so it
/// starts without waiting for the claim loop's next round trip. A process without a worker
/// (`--role api`) has none, and its submits wait for a claim as before.
#[derive(Clone)]
pub struct DirectStart {
    deps: WorkerDeps,
    worker_id: Arc<str>,
    running: Running,
}

/// A slot (and a key's turn) held for a job about to be submitted; given back if the submit
/// does not claim it.
pub struct Reserved {
    permit: OwnedSemaphorePermit,
    awaiting: AwaitingKey,
    direct: DirectStart,
}

impl DirectStart {
    /// A slot for a job of `provider`, if it could start now; `None` leaves it to the claim.
    pub async fn reserve(&self, provider: &str) -> Option<Reserved> {
        if self.running.tracker.is_closed() {
            return None;
        }
        let permit = self.running.slots.clone().try_acquire_owned().ok()?;
        let awaiting = AwaitingKey::reserve(&self.deps, provider)?;
        match self.deps.gate.capacity(1).await {
            Capacity::Jobs(n) if n > 0 => Some(Reserved {
                permit,
                awaiting,
                direct: self.clone(),
            }),
            _ => None,
        }
    }
}

impl Reserved {
    /// Who claims the job at its submit: this worker, with its usual lease.
    pub fn claimer(&self) -> Claimer {
        let deps = &self.direct.deps;
        Claimer {
            worker_id: self.direct.worker_id.to_string(),
            lease: Duration::from_millis(deps.config.lease_ms),
        }
    }

    /// Runs the job its submit claimed on the held slot.
    pub fn start(self, claimed: ClaimedJob) {
        let Reserved {
            permit,
            awaiting,
            direct,
        } = self;
        telemetry::job_claimed_at_submit();
        direct
            .running
            .start(&direct.deps, claimed, permit, awaiting);
    }
}

/// `first` and as many more free slots as the keys could use, as one permit.
fn hold_slots(
    slots: &Arc<Semaphore>,
    first: OwnedSemaphorePermit,
    keys_free: u32,
) -> OwnedSemaphorePermit {
    let mut held = first;
    let more = (slots.available_permits() as u32).min(keys_free.saturating_sub(1));
    if let Ok(extra) = slots.clone().try_acquire_many_owned(more) {
        held.merge(extra);
    }
    held
}

/// How many more jobs the free upstream keys of the default provider can take now, counting
/// the claimed jobs still waiting for theirs.
fn key_capacity(deps: &WorkerDeps) -> u32 {
    let provider = deps.providers.default_name();
    match needs_key(deps, provider) {
        true => deps
            .keys
            .free_slots(provider)
            .saturating_sub(deps.awaiting_keys.load(Ordering::Relaxed)),
        false => u32::MAX,
    }
}

/// Whether jobs of `provider` run on an upstream key from the pool.
fn needs_key(deps: &WorkerDeps, provider: &str) -> bool {
    deps.providers
        .get(provider)
        .is_some_and(|p| p.capabilities().needs_key)
}

/// What the running attempts of one worker want to hear from the event bus: a notice about
/// their job (a cancel, say) makes that attempt heartbeat at once, and a heartbeat that finds
/// the lease lost ends the attempt. A notice that says the job is still open (its claim, its
/// own progress) changes nothing the attempt must know; notices without a job (the
/// maintenance pass) are left to the regular heartbeat, which catches whatever they did.
fn attempt_route(change: &Change) -> Route<'_> {
    match change.job_id.as_deref() {
        Some(job_id) if !change.open => Route::Topic(job_id),
        _ => Route::Nobody,
    }
}

/// Runs one claimed attempt to its end: success, retry, failure, lease lost or released.
pub async fn run_claimed(deps: &WorkerDeps, claimed: ClaimedJob, abort: CancellationToken) {
    run_claimed_awaiting(deps, claimed, abort, AwaitingKey::none(), None).await
}

async fn run_claimed_awaiting(
    deps: &WorkerDeps,
    claimed: ClaimedJob,
    abort: CancellationToken,
    awaiting: AwaitingKey,
    recheck: Option<&Watched>,
) {
    let job_id = claimed.job.id.clone();
    let fence = claimed.fence;
    let claimed_at = Instant::now();
    // Admission: a global slot (and rate token). The claim was sized to what was free, so
    // this waits only when another worker got there first.
    let ticket = {
        let admit = wait_for_admission(deps);
        let heartbeat = heartbeat_loop(deps, &job_id, fence, None, recheck);
        tokio::select! {
            ticket = admit => ticket,
            _ = heartbeat => return, // lease lost: canceled, or another worker owns the job
            _ = abort.cancelled() => return release(deps, &claimed, fence).await,
        }
    };
    // The images this attempt put, to take back if its result is not the one kept.
    let stored = Mutex::new(Vec::new());
    let finish = {
        let attempt = attempt(deps, &claimed, &awaiting, &stored);
        let heartbeat = heartbeat_loop(deps, &job_id, fence, Some(&ticket), recheck);
        tokio::select! {
            finish = attempt => Some(finish),
            _ = heartbeat => None,
            _ = abort.cancelled() => {
                release(deps, &claimed, fence).await;
                None
            }
        }
    };
    deps.gate.release(ticket).await;
    let Some(finish) = finish else {
        return delete_stored(deps, &job_id, stored).await;
    };
    let result = match &finish {
        Finish::Succeeded { .. } => "succeeded",
        Finish::Retry { .. } => "retrying",
        Finish::Failed { .. } => "failed",
    };
    match deps.store.job_finish(&job_id, fence, finish).await {
        Ok(()) => {
            telemetry::attempt_ended(&claimed.job.provider, result, claimed_at.elapsed());
            deps.events
                .publish(Change::job(&claimed.job.tenant_id, &job_id))
        }
        Err(StoreError::LeaseLost) => {
            tracing::warn!(job = %job_id, fence, "lease lost before the result was written (canceled or taken over); result dropped");
            delete_stored(deps, &job_id, stored).await;
        }
        Err(e) => {
            tracing::error!(job = %job_id, error = %e, "finish failed; the rescuer will retry the job")
        }
    }
}

/// Deletes the images of an attempt whose result was not written: no job names them.
async fn delete_stored(deps: &WorkerDeps, job_id: &str, stored: Mutex<Vec<String>>) {
    let keys = stored
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for key in keys {
        if let Err(e) = deps.objects.delete(&key).await {
            tracing::warn!(job = %job_id, key = %key, error = %e, "could not delete a dropped result image");
        }
    }
}

async fn release(deps: &WorkerDeps, claimed: &ClaimedJob, fence: i64) {
    let job = &claimed.job;
    match deps.store.job_release(&job.id, fence).await {
        Ok(()) => deps.events.publish(Change::job(&job.tenant_id, &job.id)),
        Err(e) => {
            tracing::warn!(job = %job.id, error = %e, "release failed; the rescuer will requeue it")
        }
    }
}

async fn wait_for_admission(deps: &WorkerDeps) -> GlobalTicket {
    let lease = Duration::from_millis(deps.config.lease_ms);
    loop {
        if let Some(ticket) = deps.gate.admit(lease).await {
            return ticket;
        }
        let wait = match deps.gate.capacity(1).await {
            Capacity::WaitFor(d) => d,
            Capacity::Jobs(_) => Duration::from_millis(5),
        };
        tokio::time::sleep(wait).await;
    }
}

/// Extends the job's lease (and the ticket's permits) every `heartbeat_ms`, and at once when
/// `recheck` fires (the job changed); returns only when the job's lease is lost.
async fn heartbeat_loop(
    deps: &WorkerDeps,
    job_id: &str,
    fence: i64,
    ticket: Option<&GlobalTicket>,
    recheck: Option<&Watched>,
) {
    let every = Duration::from_millis(deps.config.heartbeat_ms);
    let lease = Duration::from_millis(deps.config.lease_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = changed(recheck) => {}
        }
        match deps.store.job_heartbeat(job_id, fence, lease).await {
            Ok(_) => {}
            Err(StoreError::LeaseLost) => {
                tracing::info!(job = %job_id, fence, "lease lost (canceled or taken over); abandoning the attempt");
                return;
            }
            // A store hiccup: try again next beat; the lease has slack for that.
            Err(e) => tracing::warn!(job = %job_id, error = %e, "heartbeat failed"),
        }
        if let Some(ticket) = ticket {
            deps.gate.renew(ticket, lease).await;
        }
    }
}

/// The next notice of the watched job; never without a watch.
async fn changed(watched: Option<&Watched>) {
    match watched {
        Some(watched) => watched.notified().await,
        None => std::future::pending().await,
    }
}

/// One attempt: provider call bounded by the job's deadline, then the images are stored (each
/// key put is added to `stored`).
async fn attempt(
    deps: &WorkerDeps,
    claimed: &ClaimedJob,
    awaiting: &AwaitingKey,
    stored: &Mutex<Vec<String>>,
) -> Finish {
    let job = &claimed.job;
    deps.followers.progressed(job).await;
    let Some(provider) = deps.providers.get(&job.provider) else {
        return Finish::Failed {
            error_code: job_errors::PROVIDER_UNAVAILABLE.into(),
            error_message: format!(
                "provider '{}' is not configured on this worker",
                job.provider
            ),
        };
    };
    let uploaded = match uploaded_inputs(deps, claimed).await {
        Ok(uploaded) => uploaded,
        Err(finish) => return finish,
    };
    let mut uploaded_images = uploaded.images.into_iter();
    let sources = match super::operations::source_images(deps, job).await {
        Ok(sources) => sources,
        Err(e) if e.retryable => return retry_or_fail(deps, claimed, e.code, &e.message, None),
        Err(e) => {
            return Finish::Failed {
                error_code: e.code.to_owned(),
                error_message: e.message,
            }
        }
    };
    let mut more_images = Vec::new();
    let parent_upstream = sources.as_ref().and_then(|s| s.parent_upstream.clone());
    let input_image = match &job.input_image_url {
        // A parent job's image, or a blend's uploads.
        _ if sources.is_some() => {
            let mut sources = sources.map(|s| s.images).unwrap_or_default().into_iter();
            let first = sources.next();
            more_images.extend(sources);
            first
        }
        // The tenant's uploads named by `inputImageIds`, from the image library.
        None if !job.params.input_image_ids.is_empty() => {
            match job_input(&deps.images, &deps.inputs, job).await {
                Ok(image) => image,
                Err(e) if e.retryable => {
                    return retry_or_fail(deps, claimed, e.code, &e.message, None)
                }
                Err(e) => {
                    return Finish::Failed {
                        error_code: e.code.to_owned(),
                        error_message: e.message,
                    }
                }
            }
        }
        None => uploaded_images.next(),
        Some(url) => match deps.inputs.fetch(url).await {
            Ok(image) => Some(image),
            Err(e) if e.retryable => return retry_or_fail(deps, claimed, e.code, &e.message, None),
            Err(e) => {
                return Finish::Failed {
                    error_code: e.code.to_owned(),
                    error_message: e.message,
                }
            }
        },
    };
    let (progress, reports) = Progress::channel();
    let request = GenerateRequest {
        job_id: job.id.clone(),
        prompt: job.prompt.clone(),
        mode: job.mode,
        input_image,
        seed: job.params.seed,
        n: job.params.n.unwrap_or(1),
        aspect_ratio: job.params.aspect_ratio.clone(),
        image_size: job.params.image_size.clone(),
        extra: RequestExtras {
            more_images: more_images.into_iter().chain(uploaded_images).collect(),
            mask: uploaded.mask,
            model: job.params.model.clone(),
            variation: job.params.variation,
            options: job.params.options.clone().unwrap_or_default(),
            operation: job.params.operation,
            history: uploaded.history,
            parent: parent_upstream,
            parent_index: job.params.parent_index,
            progress,
        },
    };
    let remaining = Duration::from_millis((job.deadline_at - now_millis()).max(0) as u64);
    let call = call_provider(deps, provider.as_ref(), &request, awaiting);
    let call = with_progress(deps, claimed, call, reports);
    let outcome = match tokio::time::timeout(remaining, call).await {
        Ok(outcome) => outcome,
        Err(_) => {
            return Finish::Failed {
                error_code: job_errors::JOB_TIMEOUT.into(),
                error_message: "the job did not finish before its deadline".into(),
            }
        }
    };
    match outcome {
        Ok(output) => store_images(deps, claimed, output, stored).await,
        Err(error) => finish_for_error(deps, claimed, &error),
    }
}

/// Runs the provider's call while recording the progress it reports as job events (each
/// rise one event, published on the bus so streams hear it, and told to the job's follower:
/// the `/mj` facade's notifyHook calls).
async fn with_progress<F, T>(
    deps: &WorkerDeps,
    claimed: &ClaimedJob,
    call: F,
    mut reports: tokio::sync::watch::Receiver<u8>,
) -> T
where
    F: std::future::Future<Output = T>,
{
    tokio::pin!(call);
    loop {
        tokio::select! {
            out = &mut call => return out,
            Ok(()) = reports.changed() => {
                let percent = *reports.borrow_and_update();
                let job = &claimed.job;
                match deps.store.job_progress(&job.id, claimed.fence, percent).await {
                    Ok(true) => {
                        deps.events.publish(Change::job_open(&job.tenant_id, &job.id));
                        deps.followers.progressed(job).await;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(job = %job.id, error = %e, "progress not recorded"),
                }
            }
        }
    }
}

/// The images a client uploaded with the job (the OpenAI facade's edits), read back from the
/// object store.
struct UploadedInputs {
    images: Vec<InputImage>,
    mask: Option<InputImage>,
    /// The earlier turns of a conversation (an editor session), with their images.
    history: Vec<HistoryTurn>,
}

async fn uploaded_inputs(
    deps: &WorkerDeps,
    claimed: &ClaimedJob,
) -> Result<UploadedInputs, Finish> {
    let params = &claimed.job.params;
    let mut images = Vec::with_capacity(params.inputs.len());
    for key in &params.inputs {
        images.push(read_input(deps, claimed, key).await?);
    }
    let mask = match &params.mask {
        Some(key) => Some(read_input(deps, claimed, key).await?),
        None => None,
    };
    let mut history = Vec::with_capacity(params.history.len());
    for turn in &params.history {
        let mut images = Vec::with_capacity(turn.image_keys.len());
        for key in &turn.image_keys {
            images.push(read_input(deps, claimed, key).await?);
        }
        history.push(HistoryTurn {
            role: turn.role.clone(),
            text: turn.text.clone(),
            images,
            thought_signature: turn.thought_signature.clone(),
        });
    }
    Ok(UploadedInputs {
        images,
        mask,
        history,
    })
}

async fn read_input(
    deps: &WorkerDeps,
    claimed: &ClaimedJob,
    key: &str,
) -> Result<InputImage, Finish> {
    match deps.objects.get(key).await {
        Ok(object) => Ok(InputImage {
            bytes: object.bytes,
            mime: object.content_type,
        }),
        Err(StorageError::Unavailable(e)) => Err(retry_or_fail(
            deps,
            claimed,
            job_errors::STORAGE_ERROR,
            &e,
            None,
        )),
        Err(e) => Err(Finish::Failed {
            error_code: job_errors::INPUT_IMAGE_MISSING.into(),
            error_message: format!("an uploaded input image cannot be read: {e}"),
        }),
    }
}

/// Upstream keys a job may try in one attempt when keys are rejected (401/403).
const MAX_KEY_SWITCHES: usize = 3;

/// Calls the provider, with a key from the pool when it needs one. A rejected key is
/// disabled by the pool and the call moves to another key within the same attempt.
async fn call_provider(
    deps: &WorkerDeps,
    provider: &dyn Provider,
    request: &GenerateRequest,
    awaiting: &AwaitingKey,
) -> Result<crate::providers::GenerateOutput, ProviderError> {
    if !provider.capabilities().needs_key {
        let started = Instant::now();
        let result = provider.generate(request, None).await;
        telemetry::upstream_call(provider.name(), outcome_label(&result), started.elapsed());
        return result;
    }
    let mut last = None;
    for _ in 0..MAX_KEY_SWITCHES {
        let lease = wait_for_key(deps, provider).await;
        let credential = lease.credential.clone();
        let held = HeldKey::new(deps, lease);
        awaiting.settle();
        let started = Instant::now();
        let result = provider.generate(request, Some(&credential)).await;
        telemetry::upstream_call(provider.name(), outcome_label(&result), started.elapsed());
        held.report(Outcome::of(&result)).await;
        match result {
            Err(ProviderError::KeyRejected { message }) => {
                last = Some(ProviderError::KeyRejected { message });
            }
            other => return other,
        }
    }
    Err(last.unwrap_or(ProviderError::KeyRejected {
        message: "no upstream key was accepted".into(),
    }))
}

/// A key lease that goes back to the pool even when the attempt holding it is dropped mid-call
/// (its job was canceled or taken over): then as `Neutral`, since the call taught nothing
/// about the key. Otherwise the call's own outcome is reported.
struct HeldKey {
    keys: Arc<KeyPool>,
    lease: Option<KeyLease>,
}

impl HeldKey {
    fn new(deps: &WorkerDeps, lease: KeyLease) -> HeldKey {
        HeldKey {
            keys: deps.keys.clone(),
            lease: Some(lease),
        }
    }

    async fn report(mut self, outcome: Outcome) {
        if let Some(lease) = self.lease.take() {
            if let Err(e) = self.keys.report(lease, outcome).await {
                tracing::warn!(error = %e, "key pool report failed");
            }
        }
    }
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let keys = self.keys.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = keys.report(lease, Outcome::Neutral).await {
                    tracing::warn!(error = %e, "key pool report of an aborted call failed");
                }
            });
        }
    }
}

/// The `outcome` label of a provider call (see [`telemetry::upstream_call`]).
fn outcome_label(result: &Result<crate::providers::GenerateOutput, ProviderError>) -> &'static str {
    match result {
        Ok(_) => "success",
        Err(ProviderError::Retryable { .. }) => "retryable",
        Err(ProviderError::Final { .. }) => "final",
        Err(ProviderError::ContentBlocked { .. }) => "content_blocked",
        Err(ProviderError::KeyRejected { .. }) => "key_rejected",
    }
}

/// A key's concurrency permit lasts one upstream call of its provider and this much more, so
/// a crashed process's slot comes back soon.
const KEY_LEASE_MARGIN: Duration = Duration::from_secs(10);

/// Waits until the pool hands out a key; the claim was sized to the free keys, so this is
/// short unless another process took them first.
async fn wait_for_key(deps: &WorkerDeps, provider: &dyn Provider) -> KeyLease {
    let lease = provider.call_timeout() + KEY_LEASE_MARGIN;
    loop {
        match deps.keys.acquire(provider.name(), lease).await {
            Ok(Some(lease)) => return lease,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "key pool unavailable"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn store_images(
    deps: &WorkerDeps,
    claimed: &ClaimedJob,
    output: crate::providers::GenerateOutput,
    stored: &Mutex<Vec<String>>,
) -> Finish {
    let job = &claimed.job;
    let output = if job.params.grid {
        match super::operations::with_grid(output).await {
            Ok(output) => output,
            Err(message) => {
                return Finish::Failed {
                    error_code: job_errors::NO_IMAGE.into(),
                    error_message: message,
                }
            }
        }
    } else {
        output
    };
    let text_only = job.params.operation.gives_text() && output.caption.is_some();
    if output.images.is_empty() && !text_only {
        return Finish::Failed {
            error_code: job_errors::NO_IMAGE.into(),
            error_message: "the provider returned no image".into(),
        };
    }
    // All at once: each put waits on its own sync, and syncs in flight together cost the disk
    // fewer flushes (one after another, a four-image job waited four syncs, an imagine five).
    // Every put ends before the outcome is read, so `stored` names each file written.
    let puts = output
        .images
        .into_iter()
        .enumerate()
        .map(|(index, image)| async move {
            let ext = match image.mime.as_str() {
                "image/jpeg" => "jpg",
                "image/webp" => "webp",
                _ => "png",
            };
            let key = object_key(job, claimed.fence, index, ext);
            deps.objects.put(&key, image.bytes, &image.mime).await?;
            if let Ok(mut stored) = stored.lock() {
                stored.push(key.clone());
            }
            Ok::<_, StorageError>(key)
        });
    let mut keys = Vec::new();
    for put in futures::future::join_all(puts).await {
        match put {
            Ok(key) => keys.push(key),
            Err(e) => {
                return retry_or_fail(
                    deps,
                    claimed,
                    job_errors::STORAGE_ERROR,
                    &e.to_string(),
                    None,
                )
            }
        }
    }
    let meta = serde_json::json!({
        "upstream": output.details,
        "caption": output.caption,
        "usage": output.usage,
        "modelVersion": output.model_version,
        "responseId": output.response_id,
        "thoughtSignature": output.thought_signature,
    });
    let mut meta = meta;
    if let (true, Some(map)) = (job.params.operation.gives_text(), meta.as_object_mut()) {
        // A describe's answer: the job's text result.
        map.insert(
            "text".into(),
            map.get("caption").cloned().unwrap_or_default(),
        );
    }
    Finish::Succeeded {
        result_keys: keys,
        meta: Some(meta),
    }
}

/// `tenant/YYYY-MM-DD/job-fence-index.ext`: one folder per tenant and day rather than per
/// job, because creating a directory per job was the largest cost of a local-disk run; the
/// day also gives operators a prefix to expire or archive by. The fence keeps a late
/// duplicate run from overwriting the winner's files.
fn object_key(job: &crate::base::job::Job, fence: i64, index: usize, ext: &str) -> String {
    let day = crate::base::clock::format_millis(job.created_at);
    let day = day.get(..10).unwrap_or("0000-00-00");
    let (tenant, id) = (&job.tenant_id, &job.id);
    format!("{tenant}/{day}/{id}-{fence}-{index}.{ext}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_share_a_folder_per_tenant_and_day() {
        let job = crate::base::job::Job {
            id: "job_1".into(),
            seq: 1,
            tenant_id: "ten_a".into(),
            status: crate::base::job::JobStatus::Running,
            prompt: "p".into(),
            mode: crate::base::job::Mode::Draft,
            input_image_url: None,
            params: Default::default(),
            provider: "local".into(),
            result_keys: vec![],
            error_code: None,
            error_message: None,
            attempts: 1,
            max_attempts: 3,
            created_at: 1_763_946_000_000, // 2025-11-24 01:00 UTC
            updated_at: 0,
            started_at: None,
            finished_at: None,
            cancel_at: None,
            deadline_at: 0,
            result_meta: None,
            follow_up: None,
        };
        assert_eq!(
            object_key(&job, 3, 0, "png"),
            "ten_a/2025-11-24/job_1-3-0.png"
        );
        assert_ne!(object_key(&job, 3, 0, "png"), object_key(&job, 4, 0, "png"));
    }
}
