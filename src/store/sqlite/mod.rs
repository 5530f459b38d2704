//! The SQLite store: the embedded default.
//!
//! One writer thread owns the only write connection and commits in groups: every write that
//! arrives while a commit is under way joins the next transaction, each in its own savepoint,
//! and its caller hears back only after the commit is durable (`synchronous=FULL`). That is
//! how SQLite, with one fsync per commit, accepts more jobs per second than it can commit
//! transactions. A group of nothing but claims, heartbeats and progress reports is committed
//! without the sync ([`Durability::Relaxed`]): losing one with the machine is harmless, and
//! a job's path from submit to result waits for one sync fewer. Reads run on a small pool of
//! WAL reader connections.
//!
//! rusqlite rather than sqlx here: the group-commit writer needs a connection it owns on one
//! thread, which sqlx's async pool does not give.

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
mod tenants;
mod users;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::{
    ApiKeyRecord, CancelOutcome, IdempotencyHit, Maintenance, NewApiKey, NewProviderKey, NewTenant,
    ProviderKeyRecord, Store, StoreError, StoreResult, Tenant,
};
use crate::base::clock::{Millis, SystemWallClock, WallClock};
use crate::base::job::{
    ClaimedJob, Claimer, Finish, Job, JobEvent, JobListQuery, JobPage, NewJob, SubmitOutcome,
};
use crate::base::webhook::{
    AttemptReport, ClaimedDelivery, DeliveryClaim, DeliveryListQuery, DeliveryPage, ReplayOutcome,
    SealedSecret, TenantWebhook, WebhookSet,
};

/// Applied in order; `PRAGMA user_version` counts those already applied. Never edit a shipped
/// file: add the next one.
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/sqlite/0001_init.sql"),
    include_str!("../../../migrations/sqlite/0002_provider_key_state.sql"),
    include_str!("../../../migrations/sqlite/0003_webhooks.sql"),
    include_str!("../../../migrations/sqlite/0004_nodes.sql"),
    include_str!("../../../migrations/sqlite/0005_webhook_retention.sql"),
    include_str!("../../../migrations/sqlite/0006_waiting_by_tenant.sql"),
    include_str!("../../../migrations/sqlite/0007_tenant_burst.sql"),
    include_str!("../../../migrations/sqlite/0008_end_users.sql"),
    include_str!("../../../migrations/sqlite/0009_ledger.sql"),
    include_str!("../../../migrations/sqlite/0012_images.sql"),
    include_str!("../../../migrations/sqlite/0016_job_followups.sql"),
    include_str!("../../../migrations/sqlite/0017_editor_sessions.sql"),
    include_str!("../../../migrations/sqlite/0018_photo.sql"),
    include_str!("../../../migrations/sqlite/0019_mj_tasks.sql"),
    include_str!("../../../migrations/sqlite/0020_photo_workflow.sql"),
    include_str!("../../../migrations/sqlite/0021_mj_proxy_tasks.sql"),
    // 0022 is PostgreSQL's hold stripes (SQLite has one writer): the numbers stay aligned.
    include_str!("../../../migrations/sqlite/0023_mj_tasks_job.sql"),
    include_str!("../../../migrations/sqlite/0024_job_progress.sql"),
];

/// A column whose stored text does not parse (a status, a mode, JSON).
pub(super) fn bad_column(index: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("bad {what}").into(),
    )
}

pub(super) fn lease_millis(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Writes gathered into one transaction at most.
const MAX_GROUP: usize = 512;

type Delivery = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write, run by the writer thread with the store's clock (read only by writes that stamp
/// a time, at the moment they run, so stamps follow the order of commits).
type WriteOp = Box<dyn FnOnce(&Connection, &dyn WallClock) -> Delivery + Send>;

/// A write waiting for the writer thread, and whether its commit must reach the disk before
/// its caller hears back.
struct QueuedWrite {
    op: WriteOp,
    durability: Durability,
}

/// How far a group's commit goes before its callers hear back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Durability {
    /// `synchronous=FULL`: the WAL is synced at the commit.
    Synced,
    /// `synchronous=NORMAL`: the commit is in the WAL (safe from a crash of the process, not
    /// from a power loss), and the next synced commit syncs it too, since the WAL is one file
    /// written in order. Only for writes that may be lost with the machine because the state
    /// before them is still sound and redoing them is safe: a claim (the job is QUEUED again
    /// and every process that could have run it died with the machine), a heartbeat, a
    /// progress report. A group with any synced write is synced.
    Relaxed,
}

impl Durability {
    /// Of a whole group: synced if any of its writes must be.
    fn of(group: &[QueuedWrite]) -> Durability {
        if group.iter().any(|w| w.durability == Durability::Synced) {
            Durability::Synced
        } else {
            Durability::Relaxed
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Durability::Synced => "PRAGMA synchronous = FULL",
            Durability::Relaxed => "PRAGMA synchronous = NORMAL",
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(e, msg)
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict(msg.unwrap_or_else(|| e.to_string()))
            }
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// SQLite behind the [`Store`] trait.
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::UnboundedSender<QueuedWrite>,
    readers: Arc<ReaderPool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        SqliteStore::open_with_clock(path, SystemWallClock::shared())
    }

    /// As [`SqliteStore::open`], stamping every write with `clock` (tests move a manual one).
    pub fn open_with_clock(path: &Path, clock: Arc<dyn WallClock>) -> StoreResult<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("create {}: {e}", dir.display())))?;
        }
        let mut conn = open_connection(path, false)?;
        migrate(&mut conn)?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("easel-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, clock))
            .map_err(|e| StoreError::Unavailable(format!("spawn writer: {e}")))?;
        let readers = ReaderPool::new(path.to_path_buf(), READERS);
        Ok(SqliteStore {
            writer: tx,
            readers: Arc::new(readers),
        })
    }

    /// Runs `op` inside the next group transaction and returns its result once committed.
    async fn write<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        self.enqueue(Durability::Synced, move |conn, _clock| op(conn))
            .await
    }

    /// As [`SqliteStore::write`], for a write that stamps the time: `op` gets the store
    /// clock's now, read when the write runs.
    async fn write_at<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection, Millis) -> StoreResult<R> + Send + 'static,
    {
        self.enqueue(Durability::Synced, move |conn, clock| {
            op(conn, clock.now_millis())
        })
        .await
    }

    /// As [`SqliteStore::write_at`], for a write that may be lost with a power failure (see
    /// [`Durability::Relaxed`]): a claim, a heartbeat, a progress report. Its caller does not
    /// wait for a sync of the disk unless a synced write shares its group.
    async fn write_at_relaxed<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection, Millis) -> StoreResult<R> + Send + 'static,
    {
        self.enqueue(Durability::Relaxed, move |conn, clock| {
            op(conn, clock.now_millis())
        })
        .await
    }

    async fn enqueue<R, F>(&self, durability: Durability, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection, &dyn WallClock) -> StoreResult<R> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<StoreResult<R>>();
        let boxed: WriteOp = Box::new(move |conn: &Connection, clock: &dyn WallClock| {
            let result = in_savepoint(conn, |c| op(c, clock));
            Box::new(move |commit: Result<(), StoreError>| {
                let _ = reply_tx.send(commit.and(result));
            })
        });
        self.writer
            .send(QueuedWrite {
                op: boxed,
                durability,
            })
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
        reply_rx
            .await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    /// Runs a read on a pooled connection off the async runtime.
    async fn read<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        // A turn first (waited for here, not on a blocking thread), so the reads running at
        // once never outnumber the pool's connections and none is opened for one read.
        let turn = self
            .readers
            .turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("reader pool closed".into()))?;
        self.read_with_turn(turn, op).await
    }

    async fn read_with_turn<R, F>(&self, turn: OwnedSemaphorePermit, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let result = pool.with(op);
            drop(turn);
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task: {e}")))?
    }

    /// A read of a few rows by key (a job by its id), run right here when a connection is
    /// idle: from the page cache it takes microseconds, less than the hop to a blocking
    /// thread and back, which cost a waiting facade call more than the read. Otherwise it
    /// waits its turn as [`SqliteStore::read`] does.
    async fn read_by_key<R, F>(&self, op: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let Ok(turn) = self.readers.turns.clone().try_acquire_owned() else {
            return self.read(op).await;
        };
        match self.readers.take_idle() {
            Some(conn) => {
                let result = op(&conn);
                self.readers.put_back(conn);
                result
            }
            // None opened yet: opening one parses the schema, which is for a blocking thread.
            None => self.read_with_turn(turn, op).await,
        }
    }
}

fn open_connection(path: &Path, read_only: bool) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    // WAL lets readers run beside the writer; FULL makes every acknowledged commit durable.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )?;
    if read_only {
        // Readers come and go with the load; a small page cache each (512 KiB, not SQLite's
        // 2 MiB) keeps them from holding the database several times over in memory: the
        // operating system's cache serves their misses.
        conn.execute_batch("PRAGMA cache_size = -512;")?;
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Runs one write in its own savepoint so its failure does not undo the rest of the group.
fn in_savepoint<R>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> StoreResult<R>,
) -> StoreResult<R> {
    // Cached statements: these run for every write, so they are parsed once.
    conn.prepare_cached("SAVEPOINT op")?.execute([])?;
    let result = op(conn);
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO op")?.execute([])?;
    }
    conn.prepare_cached("RELEASE op")?.execute([])?;
    result
}

fn writer_loop(
    conn: Connection,
    mut rx: mpsc::UnboundedReceiver<QueuedWrite>,
    clock: Arc<dyn WallClock>,
) {
    let mut batch: Vec<QueuedWrite> = Vec::with_capacity(MAX_GROUP);
    // As `open_connection` set it.
    let mut durability = Durability::Synced;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        // The setting cannot change inside a transaction: it is chosen for the whole group.
        let wanted = Durability::of(&batch);
        let set = if wanted == durability {
            Ok(())
        } else {
            conn.execute_batch(wanted.pragma())
        };
        let begun = set.and_then(|()| {
            durability = wanted;
            conn.prepare_cached("BEGIN IMMEDIATE")
                .and_then(|mut s| s.execute([]))
        });
        if let Err(e) = begun {
            // Dropping the ops drops their reply senders: each caller sees Unavailable.
            tracing::error!(error = %e, "sqlite writer cannot begin a transaction");
            batch.clear();
            continue;
        }
        let deliveries: Vec<Delivery> = batch
            .drain(..)
            .map(|write| (write.op)(&conn, &*clock))
            .collect();
        let commit = conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for deliver in deliveries {
            deliver(commit.clone().map_err(StoreError::Unavailable));
        }
    }
}

/// Read-only connections, at most [`READERS`], opened when first needed and kept: opening
/// one parses the whole schema, which cost a fifth of the CPU of a facade benchmark while
/// reads beyond a few idle connections opened (and closed) their own.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One per connection: a read holds one while it runs.
    turns: Arc<tokio::sync::Semaphore>,
}

/// Reads at once. Each is short (a few indexed rows) and the box they run on has few cores;
/// more would only hold more page caches in memory.
const READERS: usize = 4;

impl ReaderPool {
    fn new(path: PathBuf, size: usize) -> ReaderPool {
        ReaderPool {
            path,
            idle: Mutex::new(Vec::with_capacity(size)),
            turns: Arc::new(tokio::sync::Semaphore::new(size)),
        }
    }

    /// Runs `op` on an idle connection (a new one when none is: fewer than [`READERS`] exist,
    /// since the caller holds a turn), then keeps the connection for the next read.
    fn with<R>(&self, op: impl FnOnce(&Connection) -> StoreResult<R>) -> StoreResult<R> {
        let conn = match self.take_idle() {
            Some(conn) => conn,
            None => open_connection(&self.path, true)?,
        };
        let result = op(&conn);
        self.put_back(conn);
        result
    }

    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().ok().and_then(|mut idle| idle.pop())
    }

    fn put_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn tenant_create(&self, tenant: NewTenant, key: NewApiKey) -> StoreResult<Tenant> {
        self.write_at(move |c, now| tenants::create(c, now, &tenant, &key))
            .await
    }

    async fn tenant_list(&self) -> StoreResult<Vec<Tenant>> {
        self.read(tenants::list).await
    }

    async fn tenant_get(&self, tenant_id: &str) -> StoreResult<Option<Tenant>> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| tenants::get(c, &tenant_id)).await
    }

    async fn tenant_update_limits(
        &self,
        tenant_id: &str,
        rpm_limit: u32,
        concurrency_limit: u32,
        burst: Option<u32>,
    ) -> StoreResult<Tenant> {
        let tenant_id = tenant_id.to_owned();
        self.write(move |c| {
            tenants::update_limits(c, &tenant_id, rpm_limit, concurrency_limit, burst)
        })
        .await
    }

    async fn api_key_add(&self, tenant_id: &str, key: NewApiKey) -> StoreResult<()> {
        let tenant_id = tenant_id.to_owned();
        self.write_at(move |c, now| tenants::api_key_add(c, now, &tenant_id, &key))
            .await
    }

    async fn api_key_find(&self, key_hash: &[u8; 32]) -> StoreResult<Option<ApiKeyRecord>> {
        let key_hash = *key_hash;
        self.read(move |c| tenants::api_key_find(c, &key_hash))
            .await
    }

    async fn provider_key_add(&self, key: NewProviderKey) -> StoreResult<ProviderKeyRecord> {
        self.write_at(move |c, now| tenants::provider_key_add(c, now, &key))
            .await
    }

    async fn provider_key_list(&self) -> StoreResult<Vec<ProviderKeyRecord>> {
        self.read(tenants::provider_key_list).await
    }

    async fn provider_key_set_enabled(
        &self,
        id: &str,
        enabled: bool,
        last_error: Option<&str>,
    ) -> StoreResult<()> {
        let id = id.to_owned();
        let last_error = last_error.map(str::to_owned);
        self.write(move |c| {
            tenants::provider_key_set_enabled(c, &id, enabled, last_error.as_deref())
        })
        .await
    }

    async fn job_submit(&self, job: NewJob) -> StoreResult<SubmitOutcome> {
        self.write(move |c| jobs::submit(c, &job)).await
    }

    async fn job_submit_claimed(
        &self,
        job: NewJob,
        claimer: &Claimer,
    ) -> StoreResult<(SubmitOutcome, Option<ClaimedJob>)> {
        let claimer = claimer.clone();
        self.write_at(move |c, now| claim::submit_claimed(c, now, &claimer, &job))
            .await
    }

    async fn idempotency_find(
        &self,
        tenant_id: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotencyHit>> {
        let (tenant_id, key) = (tenant_id.to_owned(), key.to_owned());
        self.read(move |c| jobs::idempotency_find(c, &tenant_id, &key))
            .await
    }

    async fn job_get(&self, tenant_id: &str, job_id: &str) -> StoreResult<Option<Job>> {
        let (tenant_id, job_id) = (tenant_id.to_owned(), job_id.to_owned());
        self.read_by_key(move |c| jobs::get(c, &tenant_id, &job_id))
            .await
    }

    async fn job_queue_position(&self, job: &Job) -> StoreResult<u64> {
        let seq = job.seq;
        self.read(move |c| jobs::queue_position(c, seq)).await
    }

    async fn job_list(&self, query: JobListQuery) -> StoreResult<JobPage> {
        self.read(move |c| jobs::list(c, &query)).await
    }

    async fn job_cancel(&self, tenant_id: &str, job_id: &str) -> StoreResult<CancelOutcome> {
        let (tenant_id, job_id) = (tenant_id.to_owned(), job_id.to_owned());
        self.write_at(move |c, now| jobs::cancel(c, now, &tenant_id, &job_id))
            .await
    }

    async fn job_events(&self, job_id: &str) -> StoreResult<Vec<JobEvent>> {
        let job_id = job_id.to_owned();
        self.read(move |c| events::events(c, &job_id)).await
    }

    async fn job_events_after(
        &self,
        tenant_id: &str,
        job_id: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<JobEvent>> {
        let (tenant_id, job_id) = (tenant_id.to_owned(), job_id.map(str::to_owned));
        self.read(move |c| events::events_after(c, &tenant_id, job_id.as_deref(), after_id, limit))
            .await
    }

    async fn job_events_last_id(&self, tenant_id: &str) -> StoreResult<i64> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| events::events_last_id(c, &tenant_id))
            .await
    }

    async fn job_claim(
        &self,
        worker_id: &str,
        max: u32,
        lease: Duration,
    ) -> StoreResult<Vec<ClaimedJob>> {
        let worker_id = worker_id.to_owned();
        self.write_at_relaxed(move |c, now| claim::claim(c, now, &worker_id, max, lease))
            .await
    }

    async fn job_heartbeat(
        &self,
        job_id: &str,
        fence: i64,
        lease: Duration,
    ) -> StoreResult<Millis> {
        let job_id = job_id.to_owned();
        self.write_at_relaxed(move |c, now| jobs::heartbeat(c, now, &job_id, fence, lease))
            .await
    }

    async fn job_finish(&self, job_id: &str, fence: i64, finish: Finish) -> StoreResult<()> {
        let job_id = job_id.to_owned();
        self.write_at(move |c, now| jobs::finish(c, now, &job_id, fence, &finish))
            .await
    }

    async fn job_progress(&self, job_id: &str, fence: i64, percent: u8) -> StoreResult<bool> {
        let job_id = job_id.to_owned();
        self.write_at_relaxed(move |c, now| events::progress(c, now, &job_id, fence, percent))
            .await
    }

    async fn job_progress_get(&self, job_id: &str) -> StoreResult<Option<u8>> {
        let job_id = job_id.to_owned();
        self.read(move |c| events::progress_get(c, &job_id)).await
    }

    async fn job_release(&self, job_id: &str, fence: i64) -> StoreResult<()> {
        let job_id = job_id.to_owned();
        self.write_at(move |c, now| jobs::release(c, now, &job_id, fence))
            .await
    }

    async fn job_maintain(&self, now: Millis) -> StoreResult<Maintenance> {
        self.write_at(move |c, clock_now| jobs::maintain(c, now, clock_now))
            .await
    }

    async fn job_next_run_at(&self) -> StoreResult<Option<Millis>> {
        self.read(jobs::next_run_at).await
    }

    async fn job_open_counts(&self) -> StoreResult<crate::store::OpenJobs> {
        self.read(jobs::open_counts).await
    }

    async fn idempotency_purge(&self, before: Millis) -> StoreResult<u64> {
        self.write(move |c| jobs::idempotency_purge(c, before))
            .await
    }

    async fn webhook_get(&self, tenant_id: &str) -> StoreResult<Option<TenantWebhook>> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| webhooks::get(c, &tenant_id)).await
    }

    async fn webhook_set(
        &self,
        tenant_id: &str,
        set: WebhookSet,
    ) -> StoreResult<(TenantWebhook, bool)> {
        let tenant_id = tenant_id.to_owned();
        self.write_at(move |c, now| webhooks::set(c, now, &tenant_id, &set))
            .await
    }

    async fn webhook_rotate_secret(
        &self,
        tenant_id: &str,
        secret: SealedSecret,
        prev_expires_at: Millis,
    ) -> StoreResult<TenantWebhook> {
        let tenant_id = tenant_id.to_owned();
        self.write_at(move |c, now| {
            webhooks::rotate_secret(c, now, &tenant_id, &secret, prev_expires_at)
        })
        .await
    }

    async fn webhook_claim(
        &self,
        owner: &str,
        max: u32,
        lease: Duration,
        per_endpoint: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let owner = owner.to_owned();
        self.write_at(move |c, now| webhooks::claim(c, now, &owner, max, lease, per_endpoint))
            .await
    }

    async fn webhook_complete(
        &self,
        delivery_id: &str,
        claim_token: i64,
        report: AttemptReport,
    ) -> StoreResult<()> {
        let delivery_id = delivery_id.to_owned();
        self.write(move |c| webhooks::complete(c, &delivery_id, claim_token, &report))
            .await
    }

    async fn webhook_complete_and_claim(
        &self,
        delivery_id: &str,
        claim_token: i64,
        report: AttemptReport,
        next: &DeliveryClaim,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let delivery_id = delivery_id.to_owned();
        let next = next.clone();
        // One savepoint: a lost claim token rolls back both, so nothing is claimed either.
        self.write_at(move |c, now| {
            webhooks::complete(c, &delivery_id, claim_token, &report)?;
            webhooks::claim(c, now, &next.owner, next.max, next.lease, next.per_endpoint)
        })
        .await
    }

    async fn webhook_next_due_at(&self) -> StoreResult<Option<Millis>> {
        self.read(webhooks::next_due_at).await
    }

    async fn webhook_purge(&self, before: Millis, limit: u32) -> StoreResult<u64> {
        self.write(move |c| webhooks::purge(c, before, limit)).await
    }

    async fn webhook_deliveries(&self, query: DeliveryListQuery) -> StoreResult<DeliveryPage> {
        self.read(move |c| webhooks::list(c, &query)).await
    }

    async fn webhook_replay(
        &self,
        tenant_id: &str,
        delivery_id: &str,
    ) -> StoreResult<ReplayOutcome> {
        let (tenant_id, delivery_id) = (tenant_id.to_owned(), delivery_id.to_owned());
        self.write_at(move |c, now| webhooks::replay(c, now, &tenant_id, &delivery_id))
            .await
    }

    async fn node_heartbeat(&self, node_id: &str, role: &str, now: Millis) -> StoreResult<()> {
        let (node_id, role) = (node_id.to_owned(), role.to_owned());
        self.write(move |c| nodes::heartbeat(c, &node_id, &role, now))
            .await
    }

    async fn nodes_live(&self, since: Millis) -> StoreResult<u32> {
        self.read(move |c| nodes::live(c, since)).await
    }

    async fn nodes_purge(&self, before: Millis) -> StoreResult<u64> {
        self.write(move |c| nodes::purge(c, before)).await
    }

    async fn node_remove(&self, node_id: &str) -> StoreResult<bool> {
        let node_id = node_id.to_owned();
        self.write(move |c| nodes::remove(c, &node_id)).await
    }

    async fn reset(&self) -> StoreResult<()> {
        self.write(|c| {
            c.execute_batch(ledger::RESET_SQL)?;
            c.execute_batch(
                "DELETE FROM refresh_tokens; DELETE FROM auth_sessions; DELETE FROM end_users;
                 DELETE FROM tenant_hosts; DELETE FROM tenant_wechat;
                 DELETE FROM webhook_deliveries; DELETE FROM tenant_webhooks;
                 DELETE FROM job_events; DELETE FROM idempotency_keys; DELETE FROM jobs;
                 DELETE FROM api_keys; DELETE FROM provider_keys; DELETE FROM tenants;
                 DELETE FROM nodes; DELETE FROM images; DELETE FROM image_objects;
                 DELETE FROM editor_events; DELETE FROM editor_messages;
                 DELETE FROM editor_sessions; DELETE FROM mj_proxy_tasks;",
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(durability: Durability) -> QueuedWrite {
        QueuedWrite {
            op: Box::new(|_, _| Box::new(|_| {})),
            durability,
        }
    }

    #[test]
    fn a_group_is_synced_when_any_of_its_writes_must_be() {
        use Durability::{Relaxed, Synced};
        assert_eq!(Durability::of(&[queued(Relaxed), queued(Relaxed)]), Relaxed);
        assert_eq!(Durability::of(&[queued(Relaxed), queued(Synced)]), Synced);
        assert_eq!(Durability::of(&[queued(Synced)]), Synced);
    }

    /// `PRAGMA synchronous` as the write's transaction sees it: 1 NORMAL, 2 FULL.
    fn synchronous(conn: &Connection) -> StoreResult<i64> {
        Ok(conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    #[tokio::test]
    async fn relaxed_writes_commit_without_the_sync_and_the_next_synced_one_restores_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("easel.db")).expect("open");
        let relaxed = store.write_at_relaxed(|c, _| synchronous(c)).await;
        assert_eq!(relaxed.expect("relaxed write"), 1);
        let synced = store.write_at(|c, _| synchronous(c)).await;
        assert_eq!(synced.expect("synced write"), 2);
        let plain = store.write(synchronous).await;
        assert_eq!(plain.expect("plain write"), 2);
        let relaxed_again = store.write_at_relaxed(|c, _| synchronous(c)).await;
        assert_eq!(relaxed_again.expect("relaxed write"), 1);
    }
}
