//! The PostgreSQL store: Easel at scale, one database shared by many API and worker processes.
//!
//! Owns: the connection pool, the `migrations/postgres` schema (brought up to date at open,
//! which is all `easel migrate` does), the SQL of every [`Store`] method (jobs in `jobs.rs`,
//! the fair claim in `claim.rs`, event reads in `events.rs`, tenants and keys in
//! `tenants.rs`, the webhook outbox in `webhooks.rs`, node heartbeats in `nodes.rs`, end users
//! and sessions in `users.rs`; each method one transaction, most of them one statement) and
//! the `LISTEN easel_jobs` listener behind [`Store::wait_for_work`].
//! Must not touch: HTTP, providers, object storage, limits or the worker loop. Never puts the
//! database password in an error or a log line: URLs are shown through [`redact_url`].
//!
//! Safe with any number of processes; every lock is a PostgreSQL one, held by a transaction:
//! - A claimer locks the tenant rows it serves (`FOR NO KEY UPDATE SKIP LOCKED`), so the count
//!   of a tenant's RUNNING jobs it checks against the concurrency limit cannot grow under it;
//!   the job rows it takes are locked `FOR UPDATE SKIP LOCKED`, so no job goes to two workers.
//!   `NO KEY` leaves submits free: their foreign-key check only needs `KEY SHARE`.
//! - Heartbeat, finish and release are UPDATEs guarded by `id`, `fence` and
//!   `status = 'RUNNING'`; no matching row is [`StoreError::LeaseLost`] and nothing is written.
//! - The maintenance pass picks its rows `FOR UPDATE SKIP LOCKED`; several may run at once.
//! - A submit with an idempotency key inserts the key first (`ON CONFLICT DO NOTHING`), so
//!   concurrent identical submits wait for the first one and replay its job.
//! - Webhook deliveries are written by a trigger on `job_events` (migration 0003), so every
//!   status change above writes its outbox rows in its own transaction. Webhook claims are
//!   serialised by one advisory lock, which keeps the per-URL in-flight cap exact (see
//!   `webhooks.rs`); their rows are taken `FOR UPDATE SKIP LOCKED`, and results are guarded
//!   by the claim token as jobs are by their fence.
//! - `NOTIFY easel_jobs` (payload: the schema, so deployments sharing a database in separate
//!   schemas do not wake each other) is only a hint; polling stays the safety net.
//!
//! Timestamps are Easel's own clock in milliseconds, as on SQLite, never the server's `now()`.

mod claim;
mod events;
mod followups;
mod images;
mod jobs;
mod ledger;
mod midjourney;
mod mj_proxy;
mod nodes;
mod photo;
mod sessions;
mod stripes;
mod tenants;
mod users;
mod webhooks;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Notify, OnceCell};

use super::{
    ApiKeyRecord, CancelOutcome, IdempotencyHit, Maintenance, NewApiKey, NewProviderKey, NewTenant,
    ProviderKeyRecord, Store, StoreError, StoreResult, Tenant,
};
use crate::base::clock::{Millis, SystemWallClock, WallClock};
use crate::base::job::{
    ClaimedJob, Claimer, Finish, Job, JobEvent, JobListQuery, JobPage, NewJob, SubmitOutcome,
};
use crate::base::redact::redact_url;
use crate::base::webhook::{
    AttemptReport, ClaimedDelivery, DeliveryListQuery, DeliveryPage, ReplayOutcome, SealedSecret,
    TenantWebhook, WebhookSet,
};

/// The schema, embedded in the binary; applied in order, each file once.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel of the wake-up hint.
const CHANNEL: &str = "easel_jobs";

/// Pool settings (`database.max_connections`, `database.acquire_timeout_secs`).
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation => StoreError::Conflict(db.message().to_owned()),
                // Class 22, data exception: the value itself was refused (a NUL character in
                // text, a number out of range). Only the message: the detail may quote data.
                _ if db.code().is_some_and(|c| c.starts_with("22")) => {
                    StoreError::Conflict(db.message().to_owned())
                }
                _ => StoreError::Unavailable(format!(
                    "postgres {}: {}",
                    db.code().unwrap_or_default(),
                    db.message()
                )),
            },
            // Pool timeouts, I/O, TLS, protocol: none of them carries the URL.
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// PostgreSQL behind the [`Store`] trait.
pub struct PgStore {
    pool: PgPool,
    /// Connection settings (with the password): only for the listener's own connection.
    options: PgConnectOptions,
    acquire_timeout: Duration,
    /// `current_schema()`: the payload of the wake-ups meant for this store.
    schema: String,
    wake: Arc<Notify>,
    /// Started by the first `wait_for_work`, so commands that never wait never listen.
    listener: OnceCell<ListenerTask>,
    /// Stamps every write; the server's `now()` is never used.
    clock: Arc<dyn WallClock>,
}

impl PgStore {
    /// Connects to `url` (`postgres://` or `postgresql://`) and brings the schema up to date.
    pub async fn open(url: &str, settings: &PgSettings) -> StoreResult<PgStore> {
        PgStore::open_with(parse_url(url)?, settings).await
    }

    /// As [`PgStore::open`], in `schema` (created if missing) rather than the URL's
    /// `search_path`: one database can hold many independent stores (tests do this).
    pub async fn connect_with_schema(
        url: &str,
        schema: &str,
        settings: &PgSettings,
    ) -> StoreResult<PgStore> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(StoreError::Conflict(format!(
                "schema name {schema:?}: lowercase letters, digits and _ only"
            )));
        }
        let options = parse_url(url)?;
        let mut conn = options.connect().await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        PgStore::open_with(options.options([("search_path", schema)]), settings).await
    }

    async fn open_with(options: PgConnectOptions, settings: &PgSettings) -> StoreResult<PgStore> {
        let options = if options.get_application_name().is_none() {
            options.application_name("easel")
        } else {
            options
        };
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(|conn, _meta| Box::pin(prefer_generic_plans(conn)))
            .connect_with(options.clone())
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("postgres migrations: {e}")))?;
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await?;
        let schema =
            schema.ok_or_else(|| StoreError::Unavailable("no schema in the search_path".into()))?;
        Ok(PgStore {
            pool,
            options,
            acquire_timeout: settings.acquire_timeout,
            schema,
            wake: Arc::new(Notify::new()),
            listener: OnceCell::new(),
            clock: SystemWallClock::shared(),
        })
    }

    /// Stamps every write with `clock` from now on (tests move a manual one).
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> PgStore {
        self.clock = clock;
        self
    }

    fn now(&self) -> Millis {
        self.clock.now_millis()
    }

    /// The pool, for tests and tools that need to look at the tables directly.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts listening for wake-ups now, if not yet. `wait_for_work` does this by itself on
    /// its first call; calling it ahead means no notification sent before then is missed.
    pub async fn listen(&self) -> StoreResult<()> {
        self.listener
            .get_or_try_init(|| self.start_listener())
            .await
            .map(drop)
    }

    /// Connects the listener (its own connection, outside the pool) and starts its task.
    async fn start_listener(&self) -> StoreResult<ListenerTask> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.acquire_timeout)
            .connect_lazy_with(self.options.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let task = tokio::spawn(listen_loop(
            listener,
            self.wake.clone(),
            self.schema.clone(),
        ));
        Ok(ListenerTask(task))
    }
}

/// Every statement is prepared once per connection and its parameters never change what a
/// good plan is (filters that would are separate statements, see `job_list`), so the
/// planner's default of re-planning each execution for the first five and whenever it
/// guesses a custom plan may be cheaper only costs time: it took more than half of a claim
/// (0.4 ms and 0.8 ms of planning for its two statements, against 0.7 ms executing them).
/// A `SET` after connecting rather than a startup option: connection poolers such as
/// PgBouncer refuse startup options they do not know.
async fn prefer_generic_plans(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(conn)
        .await
        .map(drop)
}

fn parse_url(url: &str) -> StoreResult<PgConnectOptions> {
    // The parser's message never quotes the URL; ours names it redacted.
    PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("database URL {}: {e}", redact_url(url))))
}

/// The listener's task; it ends with the store.
struct ListenerTask(tokio::task::JoinHandle<()>);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Wakes every waiter now, and leaves one permit for a waiter that is about to wait (it
/// claimed just before the notification and would otherwise sleep through it).
fn wake_all(wake: &Notify) {
    wake.notify_waiters();
    wake.notify_one();
}

async fn listen_loop(mut listener: PgListener, wake: Arc<Notify>, schema: String) {
    loop {
        match listener.try_recv().await {
            Ok(Some(note)) => {
                if note.payload() == schema {
                    wake_all(&wake);
                }
            }
            Ok(None) => {
                // The connection dropped and was re-established (LISTEN again included);
                // whatever was notified meanwhile is lost, so everyone polls once.
                tracing::warn!("postgres LISTEN connection was re-established");
                wake_all(&wake);
            }
            Err(e) => {
                tracing::warn!(error = %e, "postgres LISTEN failed; retrying in 1 s, polling meanwhile");
                wake_all(&wake);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn tenant_create(&self, tenant: NewTenant, key: NewApiKey) -> StoreResult<Tenant> {
        tenants::create(&self.pool, self.now(), &tenant, &key).await
    }

    async fn tenant_list(&self) -> StoreResult<Vec<Tenant>> {
        tenants::list(&self.pool).await
    }

    async fn tenant_get(&self, tenant_id: &str) -> StoreResult<Option<Tenant>> {
        tenants::get(&self.pool, tenant_id).await
    }

    async fn tenant_update_limits(
        &self,
        tenant_id: &str,
        rpm_limit: u32,
        concurrency_limit: u32,
        burst: Option<u32>,
    ) -> StoreResult<Tenant> {
        tenants::update_limits(&self.pool, tenant_id, rpm_limit, concurrency_limit, burst).await
    }

    async fn provider_key_set_enabled(
        &self,
        id: &str,
        enabled: bool,
        last_error: Option<&str>,
    ) -> StoreResult<()> {
        tenants::provider_key_set_enabled(&self.pool, id, enabled, last_error).await
    }

    async fn api_key_add(&self, tenant_id: &str, key: NewApiKey) -> StoreResult<()> {
        tenants::api_key_add(&self.pool, self.now(), tenant_id, &key).await
    }

    async fn api_key_find(&self, key_hash: &[u8; 32]) -> StoreResult<Option<ApiKeyRecord>> {
        tenants::api_key_find(&self.pool, key_hash).await
    }

    async fn provider_key_add(&self, key: NewProviderKey) -> StoreResult<ProviderKeyRecord> {
        tenants::provider_key_add(&self.pool, self.now(), &key).await
    }

    async fn provider_key_list(&self) -> StoreResult<Vec<ProviderKeyRecord>> {
        tenants::provider_key_list(&self.pool).await
    }

    async fn job_submit(&self, job: NewJob) -> StoreResult<SubmitOutcome> {
        jobs::submit(&self.pool, &job).await
    }

    /// The submit, then a claim of its tenant in a second transaction: the claim's tenant lock
    /// is what keeps concurrency limits exact across processes, so it is taken as any claim
    /// takes it.
    async fn job_submit_claimed(
        &self,
        job: NewJob,
        claimer: &Claimer,
    ) -> StoreResult<(SubmitOutcome, Option<ClaimedJob>)> {
        let outcome = jobs::submit(&self.pool, &job).await?;
        if !matches!(outcome, SubmitOutcome::Created { .. }) {
            return Ok((outcome, None));
        }
        // The job is in; a claim that fails leaves it to the workers.
        let claimed = claim::claim_submitted(&self.pool, self.now(), claimer, &job.tenant_id)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "claim at submit failed; the job waits for a worker");
                None
            });
        Ok((outcome, claimed))
    }

    async fn idempotency_find(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyHit>> {
        jobs::idempotency_find(&self.pool, tenant_id, key).await
    }

    async fn job_get(&self, tenant_id: &str, job_id: &str) -> StoreResult<Option<Job>> {
        jobs::get(&self.pool, tenant_id, job_id).await
    }

    async fn job_queue_position(&self, job: &Job) -> StoreResult<u64> {
        jobs::queue_position(&self.pool, job.seq).await
    }

    async fn job_list(&self, query: JobListQuery) -> StoreResult<JobPage> {
        jobs::list(&self.pool, &query).await
    }

    async fn job_cancel(&self, tenant_id: &str, job_id: &str) -> StoreResult<CancelOutcome> {
        jobs::cancel(&self.pool, self.now(), tenant_id, job_id).await
    }

    async fn job_events(&self, job_id: &str) -> StoreResult<Vec<JobEvent>> {
        events::events(&self.pool, job_id).await
    }

    async fn job_events_after(
        &self,
        tenant_id: &str,
        job_id: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<JobEvent>> {
        events::events_after(&self.pool, tenant_id, job_id, after_id, limit).await
    }

    async fn job_events_last_id(&self, tenant_id: &str) -> StoreResult<i64> {
        events::events_last_id(&self.pool, tenant_id).await
    }

    async fn job_claim(
        &self,
        worker_id: &str,
        max: u32,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedJob>> {
        claim::claim(&self.pool, self.now(), worker_id, max, lease).await
    }

    async fn job_heartbeat(
        &self,
        job_id: &str,
        fence: i64,
        lease: Duration,
    ) -> StoreResult<Millis> {
        jobs::heartbeat(&self.pool, self.now(), job_id, fence, lease).await
    }

    async fn job_finish(&self, job_id: &str, fence: i64, finish: Finish) -> StoreResult<()> {
        jobs::finish(&self.pool, self.now(), job_id, fence, &finish).await
    }

    async fn job_progress(&self, job_id: &str, fence: i64, percent: u8) -> StoreResult<bool> {
        events::progress(&self.pool, self.now(), job_id, fence, percent).await
    }

    async fn job_progress_get(&self, job_id: &str) -> StoreResult<Option<u8>> {
        events::progress_get(&self.pool, job_id).await
    }

    async fn job_release(&self, job_id: &str, fence: i64) -> StoreResult<()> {
        jobs::release(&self.pool, self.now(), job_id, fence).await
    }

    async fn job_maintain(&self, now: Millis) -> StoreResult<Maintenance> {
        jobs::maintain(&self.pool, now, self.now()).await
    }

    async fn job_next_run_at(&self) -> StoreResult<Option<Millis>> {
        jobs::next_run_at(&self.pool).await
    }

    async fn job_open_counts(&self) -> StoreResult<crate::store::OpenJobs> {
        let rows: Vec<(String, i64)> = sqlx::query_as(crate::store::OPEN_JOBS_SQL)
            .fetch_all(&self.pool)
            .await?;
        Ok(crate::store::OpenJobs::from_rows(rows))
    }

    /// Returns at the first `NOTIFY easel_jobs` for this schema, or after `timeout`. When the
    /// listener cannot connect, this is a plain sleep: the caller's poll still finds the work.
    async fn wait_for_work(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout(timeout, self.listen()).await {
            Ok(Ok(_)) => {
                let _ = tokio::time::timeout_at(deadline, self.wake.notified()).await;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "postgres LISTEN unavailable; polling only");
                tokio::time::sleep_until(deadline).await;
            }
            Err(_) => {} // the timeout passed while connecting
        }
    }

    async fn webhook_get(&self, tenant_id: &str) -> StoreResult<Option<TenantWebhook>> {
        webhooks::get(&self.pool, tenant_id).await
    }

    async fn webhook_set(
        &self,
        tenant_id: &str,
        set: WebhookSet,
    ) -> StoreResult<(TenantWebhook, bool)> {
        webhooks::set(&self.pool, self.now(), tenant_id, &set).await
    }

    async fn webhook_rotate_secret(
        &self,
        tenant_id: &str,
        secret: SealedSecret,
        prev_expires_at: Millis,
    ) -> StoreResult<TenantWebhook> {
        webhooks::rotate_secret(&self.pool, self.now(), tenant_id, &secret, prev_expires_at).await
    }

    async fn webhook_claim(
        &self,
        owner: &str,
        max: u32,
        lease: Duration,
        per_endpoint: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        webhooks::claim(&self.pool, self.now(), owner, max, lease, per_endpoint).await
    }

    async fn webhook_complete(
        &self,
        delivery_id: &str,
        claim_token: i64,
        report: AttemptReport,
    ) -> StoreResult<()> {
        webhooks::complete(&self.pool, delivery_id, claim_token, &report).await
    }

    async fn webhook_next_due_at(&self) -> StoreResult<Option<Millis>> {
        webhooks::next_due_at(&self.pool).await
    }

    async fn webhook_purge(&self, before: Millis, limit: u32) -> StoreResult<u64> {
        webhooks::purge(&self.pool, before, limit).await
    }

    async fn webhook_deliveries(&self, query: DeliveryListQuery) -> StoreResult<DeliveryPage> {
        webhooks::list(&self.pool, &query).await
    }

    async fn webhook_replay(
        &self,
        tenant_id: &str,
        delivery_id: &str,
    ) -> StoreResult<ReplayOutcome> {
        webhooks::replay(&self.pool, self.now(), tenant_id, delivery_id).await
    }

    async fn idempotency_purge(&self, before: Millis) -> StoreResult<u64> {
        jobs::idempotency_purge(&self.pool, before).await
    }

    async fn node_heartbeat(&self, node_id: &str, role: &str, now: Millis) -> StoreResult<()> {
        nodes::heartbeat(&self.pool, node_id, role, now).await
    }

    async fn nodes_live(&self, since: Millis) -> StoreResult<u32> {
        nodes::live(&self.pool, since).await
    }

    async fn nodes_purge(&self, before: Millis) -> StoreResult<u64> {
        nodes::purge(&self.pool, before).await
    }

    async fn node_remove(&self, node_id: &str) -> StoreResult<bool> {
        nodes::remove(&self.pool, node_id).await
    }

    async fn reset(&self) -> StoreResult<()> {
        // Identities keep counting (as SQLite's AUTOINCREMENT does): a seq is never reused.
        sqlx::query("DELETE FROM credit_packages WHERE tenant_id <> '*'")
            .execute(&self.pool)
            .await?;
        sqlx::query(&format!(
            "TRUNCATE {}, webhook_deliveries, tenant_webhooks, job_events, idempotency_keys,
                 jobs, api_keys, provider_keys, tenants, nodes, refresh_tokens, auth_sessions,
                 end_users, tenant_hosts, tenant_wechat, images, image_objects,
                 editor_events, editor_messages, editor_sessions, mj_proxy_tasks",
            ledger::RESET_TABLES
        ))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
