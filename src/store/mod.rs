//! Durable state behind one [`Store`] trait: tenants, API keys, provider keys, jobs (the
//! queue), job events, idempotency records, the webhook outbox, node heartbeats, (in
//! [`users`]) end users, their sessions and refresh tokens, the credit [`ledger`] and the
//! image library's objects and records ([`images`]), the editor's sessions ([`sessions`])
//! the photo app's rows ([`photo`]) and the Midjourney tasks ([`midjourney`], [`mj_proxy`]).
//!
//! Owns: SQL, migrations and transactions. Each "one transaction" of DESIGN.md is one trait
//! method here, so no backend can split it: `job_submit` writes the idempotency record, the
//! job and its first event together; `job_finish` changes the status only while the caller's
//! fencing token is current. Every status change's job event also writes its webhook
//! deliveries (the outbox) in that same transaction.
//! Must not touch: HTTP, providers, object storage or limits. Engines live in submodules
//! (`sqlite`, the embedded default, and `postgres` at scale), each with its own SQL and
//! migrations, all passing one conformance suite (`tests/store.rs`).

pub mod followups;
pub mod images;
pub mod ledger;
pub mod midjourney;
pub mod mj_proxy;
pub mod photo;
pub mod postgres;
pub mod sessions;
pub mod sqlite;
pub mod users;

pub use users::UserStore;

use std::time::Duration;

use async_trait::async_trait;

use crate::base::job::{
    ClaimedJob, Claimer, Finish, Job, JobEvent, JobListQuery, JobPage, JobStatus, NewJob,
    SubmitOutcome,
};

use crate::base::clock::Millis;
use crate::base::webhook::{
    AttemptReport, ClaimedDelivery, DeliveryClaim, DeliveryListQuery, DeliveryPage, ReplayOutcome,
    SealedSecret, TenantWebhook, WebhookSet,
};

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness or state rule refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's lease (fencing token) is no longer current; its write was refused.
    #[error("lease lost")]
    LeaseLost,
    /// The engine failed or is unreachable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A tenant (a customer of the gateway) with its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub rpm_limit: u32,
    pub concurrency_limit: u32,
    /// Submits it may send at once; `None`: the configured default (`limits.tenant_burst`).
    pub burst: Option<u32>,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: String,
    pub name: String,
    pub rpm_limit: u32,
    pub concurrency_limit: u32,
    /// `None`: the configured default, now and after the default changes.
    pub burst: Option<u32>,
}

/// What a replayed `Idempotency-Key` points at.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyHit {
    /// The fingerprint of the request that first used the key.
    pub request_hash: String,
    pub job_id: String,
    pub status: JobStatus,
}

/// A tenant API key as stored: only the SHA-256 of the key and a display prefix.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    pub key_hash: [u8; 32],
    pub prefix: String,
}

/// What auth needs to know about a presented key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub key_hash: [u8; 32],
    pub tenant: Tenant,
}

/// An upstream provider key, sealed (encrypted) before it reaches the store.
#[derive(Debug, Clone)]
pub struct NewProviderKey {
    pub id: String,
    pub provider: String,
    pub secret_sealed: Vec<u8>,
    pub fingerprint: String,
    pub rpm_limit: u32,
    pub concurrency_limit: u32,
    pub endpoint: Option<String>,
    pub priority: i32,
    pub project: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ProviderKeyRecord {
    pub id: String,
    pub provider: String,
    pub secret_sealed: Vec<u8>,
    pub fingerprint: String,
    pub rpm_limit: u32,
    pub concurrency_limit: u32,
    pub endpoint: Option<String>,
    pub priority: i32,
    pub project: Option<String>,
    pub enabled: bool,
    /// Why the key pool disabled the key (the upstream rejected it); `None` while enabled or
    /// when an operator disabled it.
    pub last_error: Option<String>,
    pub created_at: Millis,
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    Canceled,
    /// The job exists but its status forbids canceling.
    InvalidState(JobStatus),
    NotFound,
}

/// Unfinished jobs of every tenant by status: the queue's depth, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenJobs {
    pub queued: u64,
    pub retrying: u64,
    pub running: u64,
}

impl OpenJobs {
    /// From `(status, count)` rows; other statuses are ignored.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, i64)>) -> OpenJobs {
        let mut open = OpenJobs::default();
        for (status, count) in rows {
            let count = u64::try_from(count).unwrap_or(0);
            match status.as_str() {
                "QUEUED" => open.queued = count,
                "RETRYING" => open.retrying = count,
                "RUNNING" => open.running = count,
                _ => {}
            }
        }
        open
    }
}

/// The statement both engines count open jobs with (the `jobs_open_deadline` partial index
/// holds exactly these rows).
pub(crate) const OPEN_JOBS_SQL: &str = "SELECT status, count(*) FROM jobs
     WHERE status IN ('QUEUED', 'RUNNING', 'RETRYING') GROUP BY status";

/// Counts of what the maintenance pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Maintenance {
    /// Running jobs whose lease expired, put back in the queue (or failed when out of attempts).
    pub rescued: u64,
    /// Waiting jobs past their `Cancel-After`.
    pub canceled: u64,
    /// Jobs past their deadline, failed.
    pub expired: u64,
}

/// Every store keeps the credit ledger too ([`ledger::LedgerStore`]).
#[async_trait]
pub trait Store:
    UserStore
    + ledger::LedgerStore
    + images::ImageStore
    + followups::FollowupStore
    + sessions::SessionStore
    + photo::PhotoStore
    + midjourney::MjTaskStore
    + mj_proxy::MjProxyStore
    + Send
    + Sync
    + 'static
{
    /// Creates a tenant together with its first API key.
    async fn tenant_create(&self, tenant: NewTenant, key: NewApiKey) -> StoreResult<Tenant>;
    async fn tenant_list(&self) -> StoreResult<Vec<Tenant>>;
    async fn tenant_get(&self, tenant_id: &str) -> StoreResult<Option<Tenant>>;
    /// Changes a tenant's limits (all of them: a `None` burst goes back to the default);
    /// they apply to the next submit and the next claim.
    async fn tenant_update_limits(
        &self,
        tenant_id: &str,
        rpm_limit: u32,
        concurrency_limit: u32,
        burst: Option<u32>,
    ) -> StoreResult<Tenant>;
    /// Adds another API key to an existing tenant.
    async fn api_key_add(&self, tenant_id: &str, key: NewApiKey) -> StoreResult<()>;
    /// Finds the live key with this hash.
    async fn api_key_find(&self, key_hash: &[u8; 32]) -> StoreResult<Option<ApiKeyRecord>>;

    async fn provider_key_add(&self, key: NewProviderKey) -> StoreResult<ProviderKeyRecord>;
    async fn provider_key_list(&self) -> StoreResult<Vec<ProviderKeyRecord>>;
    /// Enables or disables a key and records why (`last_error`, replaced every time: `None`
    /// clears it). `NotFound` if there is no such key.
    async fn provider_key_set_enabled(
        &self,
        id: &str,
        enabled: bool,
        last_error: Option<&str>,
    ) -> StoreResult<()>;

    /// One transaction: idempotency record (if any), job row (QUEUED) and its first event.
    async fn job_submit(&self, job: NewJob) -> StoreResult<SubmitOutcome>;
    /// As [`Store::job_submit`], then the tenant's next job (this one, unless an older one
    /// waits) is claimed by `claimer` if the fair claim would serve the tenant next anyway: no
    /// other tenant has a job waiting to run, and it is under its concurrency limit. A submit
    /// to a process whose worker has room so starts at once, without waiting for the claim
    /// loop. `None`: the job waits for a claim. A claim that fails leaves the job submitted.
    async fn job_submit_claimed(
        &self,
        job: NewJob,
        claimer: &Claimer,
    ) -> StoreResult<(SubmitOutcome, Option<ClaimedJob>)>;
    /// The job a tenant's `Idempotency-Key` already made, if any: how a retried submit is
    /// answered before it spends the tenant's rate. (`job_submit` still settles a race
    /// between two first uses of a key.)
    async fn idempotency_find(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyHit>>;
    async fn job_get(&self, tenant_id: &str, job_id: &str) -> StoreResult<Option<Job>>;
    /// How many waiting jobs were submitted before this one.
    async fn job_queue_position(&self, job: &Job) -> StoreResult<u64>;
    /// Newest first; at most `limit` items.
    async fn job_list(&self, query: JobListQuery) -> StoreResult<JobPage>;
    /// One transaction: a QUEUED, RETRYING or RUNNING job becomes CANCELED with its event
    /// (and webhook rows). Its fencing token moves on, so a running attempt's next heartbeat
    /// and its finish find the lease lost and write nothing. (A credit hold on the job is
    /// released here too, in this transaction, once the ledger exists.) A finished job is
    /// `InvalidState`; whichever of a cancel and an attempt's finish commits first wins, and
    /// the other changes nothing.
    async fn job_cancel(&self, tenant_id: &str, job_id: &str) -> StoreResult<CancelOutcome>;
    async fn job_events(&self, job_id: &str) -> StoreResult<Vec<JobEvent>>;
    /// The tenant's events (or one of its jobs' events) with an id above `after_id`, in id
    /// order, at most `limit`: how a live stream catches up and resumes.
    ///
    /// Contract: an event becomes visible here only after every event with a smaller id is
    /// visible, so a reader that remembers the last id it saw never skips one. (SQLite gets
    /// this from its single writer; a backend whose ids can commit out of order must hold
    /// back rows above an uncommitted id.)
    async fn job_events_after(
        &self,
        tenant_id: &str,
        job_id: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<JobEvent>>;
    /// The id of the tenant's newest event; 0 when it has none. A stream that starts "now"
    /// starts after it.
    async fn job_events_last_id(&self, tenant_id: &str) -> StoreResult<i64>;

    /// Claims up to `max` runnable jobs, round-robin over tenants under their concurrency
    /// limit. Each claim bumps the attempt and the fencing token and sets a lease.
    async fn job_claim(
        &self,
        worker_id: &str,
        max: u32,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedJob>>;
    /// Extends the lease; `LeaseLost` if the token is no longer current.
    async fn job_heartbeat(&self, job_id: &str, fence: i64, lease: Duration)
        -> StoreResult<Millis>;
    /// Ends an attempt; `LeaseLost` (and nothing written) if the token is no longer current.
    async fn job_finish(&self, job_id: &str, fence: i64, finish: Finish) -> StoreResult<()>;
    /// Records the running attempt's progress (0-99) as a RUNNING event with `progress`, when
    /// it rose above the attempt's last report; false when it did not or the lease is gone.
    async fn job_progress(&self, job_id: &str, fence: i64, percent: u8) -> StoreResult<bool>;
    /// The last progress its current attempt reported, if any.
    async fn job_progress_get(&self, job_id: &str) -> StoreResult<Option<u8>>;
    /// Gives a claimed job back to the queue untouched (graceful shutdown).
    async fn job_release(&self, job_id: &str, fence: i64) -> StoreResult<()>;
    /// Rescues expired leases, applies `Cancel-After` and deadlines.
    async fn job_maintain(&self, now: Millis) -> StoreResult<Maintenance>;
    /// The earliest time a waiting job becomes runnable, if any is waiting.
    async fn job_next_run_at(&self) -> StoreResult<Option<Millis>>;
    /// Unfinished jobs by status, over every tenant.
    async fn job_open_counts(&self) -> StoreResult<OpenJobs>;

    /// Waits until new work may have become claimable (a submit, a requeue, a freed slot), or
    /// until `timeout` passes. A hint only: it may return early for nothing, and a caller
    /// must still poll. The default sleeps `timeout`; PostgreSQL wakes on `NOTIFY`.
    async fn wait_for_work(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }

    /// The tenant's webhook endpoint, if it has one.
    async fn webhook_get(&self, tenant_id: &str) -> StoreResult<Option<TenantWebhook>>;
    /// Creates or updates the tenant's endpoint (URL and event filter) and enables it again.
    /// The secret is written only when the tenant has none yet; the flag says whether it was
    /// (then the caller shows it, once). `NotFound` for an unknown tenant.
    async fn webhook_set(
        &self,
        tenant_id: &str,
        set: WebhookSet,
    ) -> StoreResult<(TenantWebhook, bool)>;
    /// Makes `secret` current; the current one keeps signing until `prev_expires_at` (and an
    /// older previous one is dropped). `NotFound` if the tenant has no endpoint yet.
    async fn webhook_rotate_secret(
        &self,
        tenant_id: &str,
        secret: SealedSecret,
        prev_expires_at: Millis,
    ) -> StoreResult<TenantWebhook>;
    /// One transaction: claims up to `max` due deliveries (pending and due, or delivering with
    /// an expired lease), oldest due first, never more than `per_endpoint` in flight to one URL
    /// across all dispatchers. Each claim bumps `attempts` and the claim token, sets a lease
    /// and returns the tenant's signing secrets that are still valid.
    async fn webhook_claim(
        &self,
        owner: &str,
        max: u32,
        lease: Duration,
        per_endpoint: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records an attempt; `LeaseLost` (and nothing written) if the claim token moved on.
    async fn webhook_complete(
        &self,
        delivery_id: &str,
        claim_token: i64,
        report: AttemptReport,
    ) -> StoreResult<()>;
    /// Records an attempt as [`Store::webhook_complete`] does, then claims as
    /// [`Store::webhook_claim`] does: how a dispatcher whose attempt ended takes its next
    /// delivery without a second round trip. `LeaseLost`: nothing recorded, nothing claimed.
    /// Any other error may come from either step. The default makes the two calls; SQLite
    /// does both in one write.
    async fn webhook_complete_and_claim(
        &self,
        delivery_id: &str,
        claim_token: i64,
        report: AttemptReport,
        next: &DeliveryClaim,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        self.webhook_complete(delivery_id, claim_token, report)
            .await?;
        self.webhook_claim(&next.owner, next.max, next.lease, next.per_endpoint)
            .await
    }
    /// The earliest time a delivery becomes claimable, if any is waiting or in flight.
    async fn webhook_next_due_at(&self) -> StoreResult<Option<Millis>>;
    /// Deletes up to `limit` deliveries that ended (`succeeded`, `failed`, `disabled`) before
    /// `before`, oldest first, and returns how many; a caller with more to purge calls again
    /// while it gets `limit`. Pending and in-flight deliveries are never deleted, however old.
    async fn webhook_purge(&self, before: Millis, limit: u32) -> StoreResult<u64>;
    /// A delivery log, newest first: the tenant's, or one job's (`job_id`).
    async fn webhook_deliveries(&self, query: DeliveryListQuery) -> StoreResult<DeliveryPage>;
    /// Re-queues a delivery now with the same id and a fresh attempt budget.
    async fn webhook_replay(
        &self,
        tenant_id: &str,
        delivery_id: &str,
    ) -> StoreResult<ReplayOutcome>;

    /// Deletes idempotency records older than `before`.
    async fn idempotency_purge(&self, before: Millis) -> StoreResult<u64>;

    /// Records that the process `node_id` (role `api`, `worker` or `api+worker`) is alive at
    /// `now`: a new node starts at `now`, a known one moves its `last_seen` forward (never
    /// back, so a late heartbeat is harmless).
    async fn node_heartbeat(&self, node_id: &str, role: &str, now: Millis) -> StoreResult<()>;
    /// How many nodes have heartbeaten at or after `since`: the live nodes a limit is divided
    /// by while the shared limiter is unreachable.
    async fn nodes_live(&self, since: Millis) -> StoreResult<u32>;
    /// Forgets nodes last seen before `before` (processes long gone).
    async fn nodes_purge(&self, before: Millis) -> StoreResult<u64>;
    /// Forgets one node at once (its process is shutting down cleanly), so a restart does not
    /// count it as live beside its successor. Whether it was there.
    async fn node_remove(&self, node_id: &str) -> StoreResult<bool>;
    /// Deletes all data (the `reset` command).
    async fn reset(&self) -> StoreResult<()>;
}
