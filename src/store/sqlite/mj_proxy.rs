//! The `/mj` facade's tasks on SQLite (see [`MjProxyStore`]).

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteStore;
use super::{events, jobs};
use crate::base::clock::Millis;
use crate::base::job::{Job, JobStatus, NewJob, SubmitOutcome};
use crate::store::mj_proxy::{
    MjProxyStore, ProxyDelivery, ProxyFilter, ProxyQueue, ProxyTask, ProxyView, PHASE_CANCEL,
    PHASE_MODAL,
};
use crate::store::StoreResult;

const COLUMNS: &str = "t.id, t.tenant_id, t.job_id, t.hash, t.action, t.phase, t.detail,
    t.notified, t.created_at, t.updated_at";

/// The tenant's tasks whose jobs wait, read from the waiting jobs' partial index (jobs first:
/// a tenant's finished tasks are never visited).
const WAITING: &str = "jobs j CROSS JOIN mj_proxy_tasks t ON t.job_id = j.id
    WHERE j.tenant_id = ?1 AND j.status IN ('QUEUED', 'RETRYING')";

fn row_of(row: &Row<'_>) -> rusqlite::Result<ProxyTask> {
    task_at(row, 0)
}

/// The task whose [`COLUMNS`] start at column `first`.
fn task_at(row: &Row<'_>, first: usize) -> rusqlite::Result<ProxyTask> {
    Ok(ProxyTask {
        id: row.get(first)?,
        tenant_id: row.get(first + 1)?,
        job_id: row.get(first + 2)?,
        hash: row.get(first + 3)?,
        action: row.get(first + 4)?,
        phase: row.get(first + 5)?,
        detail: row.get(first + 6)?,
        notified: row.get(first + 7)?,
        created_at: row.get(first + 8)?,
        updated_at: row.get(first + 9)?,
    })
}

/// The task `id` of `tenant` with its job in one statement (a fetch is what a waiting client
/// repeats): the job's columns first, all NULL for a task without a job, then the task's.
fn task_with_job(
    c: &Connection,
    tenant: &str,
    id: &str,
) -> StoreResult<Option<(ProxyTask, Option<Job>)>> {
    // The statement, and where the task's columns start in it.
    static SQL: std::sync::LazyLock<(String, usize)> = std::sync::LazyLock::new(|| {
        let job_columns: Vec<String> = jobs::JOB_COLUMNS
            .split(',')
            .map(|column| format!("j.{}", column.trim()))
            .collect();
        let sql = format!(
            "SELECT {}, {COLUMNS} FROM mj_proxy_tasks t
             LEFT JOIN jobs j ON j.id = t.job_id AND j.tenant_id = t.tenant_id
             WHERE t.tenant_id = ?1 AND t.id = ?2",
            job_columns.join(", ")
        );
        (sql, job_columns.len())
    });
    let (sql, job_columns) = (&SQL.0, SQL.1);
    Ok(c.prepare_cached(sql)?
        .query_row([tenant, id], |row| {
            let job = match row.get::<_, Option<i64>>(0)? {
                Some(_) => Some(jobs::job_from_row(row)?),
                None => None,
            };
            Ok((task_at(row, job_columns)?, job))
        })
        .optional()?)
}

fn one(conn: &Connection, filter: &str, binds: &[&str]) -> StoreResult<Option<ProxyTask>> {
    let sql = format!("SELECT {COLUMNS} FROM mj_proxy_tasks t WHERE {filter}");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(rusqlite::params_from_iter(binds), row_of)
        .optional()?)
}

fn list(
    conn: &Connection,
    tenant: &str,
    filter: ProxyFilter,
    limit: u32,
) -> StoreResult<Vec<ProxyTask>> {
    let sql = match filter {
        ProxyFilter::All => format!(
            "SELECT {COLUMNS} FROM mj_proxy_tasks t WHERE t.tenant_id = ?1
             ORDER BY t.created_at DESC, t.id DESC LIMIT ?2"
        ),
        ProxyFilter::Queued => format!("SELECT {COLUMNS} FROM {WAITING} ORDER BY j.seq LIMIT ?2"),
    };
    Ok(conn
        .prepare_cached(&sql)?
        .query_map(params![tenant, limit], row_of)?
        .collect::<Result<Vec<_>, _>>()?)
}

fn insert(conn: &Connection, t: &ProxyTask) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO mj_proxy_tasks (id, tenant_id, job_id, hash, action, phase, detail,
            notified, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        t.id,
        t.tenant_id,
        t.job_id,
        t.hash,
        t.action,
        t.phase,
        t.detail,
        t.notified,
        t.created_at,
        t.updated_at
    ])?;
    Ok(())
}

/// The task with its job and, while the job runs, the job's progress.
fn view_of(c: &Connection, task: ProxyTask) -> StoreResult<ProxyView> {
    let job = match &task.job_id {
        Some(job_id) => jobs::get(c, &task.tenant_id, job_id)?,
        None => None,
    };
    with_progress(c, task, job)
}

/// The view of a task and its job, with the job's progress while it runs.
fn with_progress(c: &Connection, task: ProxyTask, job: Option<Job>) -> StoreResult<ProxyView> {
    let progress = match &job {
        Some(job) if job.status == JobStatus::Running => events::progress_get(c, &job.id)?,
        _ => None,
    };
    Ok(ProxyView {
        task,
        job,
        progress,
    })
}

#[async_trait]
impl MjProxyStore for SqliteStore {
    async fn mj_proxy_insert(&self, t: ProxyTask) -> StoreResult<()> {
        self.write(move |c| insert(c, &t)).await
    }

    async fn mj_proxy_submit(&self, job: NewJob, task: ProxyTask) -> StoreResult<SubmitOutcome> {
        self.write(move |c| {
            let outcome = jobs::submit(c, &job)?;
            if matches!(outcome, SubmitOutcome::Created { .. }) {
                // A taken id fails the write's savepoint: the job is not written either.
                insert(c, &task)?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn mj_proxy_view(&self, tenant_id: &str, id: &str) -> StoreResult<Option<ProxyView>> {
        let (tenant, id) = (tenant_id.to_owned(), id.to_owned());
        // Rows by key, as a job's read (a fetch is what a waiting client repeats).
        self.read_by_key(move |c| {
            let Some((task, job)) = task_with_job(c, &tenant, &id)? else {
                return Ok(None);
            };
            with_progress(c, task, job).map(Some)
        })
        .await
    }

    async fn mj_proxy_get(&self, tenant_id: &str, id: &str) -> StoreResult<Option<ProxyTask>> {
        let (tenant, id) = (tenant_id.to_owned(), id.to_owned());
        self.read_by_key(move |c| one(c, "t.tenant_id = ?1 AND t.id = ?2", &[&tenant, &id]))
            .await
    }

    async fn mj_proxy_by_job(&self, job_id: &str) -> StoreResult<Option<ProxyView>> {
        let job = job_id.to_owned();
        self.read(move |c| {
            let found = one(c, "t.job_id = ?1", &[&job])?;
            found.map(|task| view_of(c, task)).transpose()
        })
        .await
    }

    async fn mj_proxy_list(
        &self,
        tenant_id: &str,
        filter: ProxyFilter,
        limit: u32,
    ) -> StoreResult<Vec<ProxyView>> {
        let tenant = tenant_id.to_owned();
        self.read(move |c| {
            let tasks = list(c, &tenant, filter, limit)?;
            tasks.into_iter().map(|task| view_of(c, task)).collect()
        })
        .await
    }

    async fn mj_proxy_views(&self, tenant_id: &str, ids: &[String]) -> StoreResult<Vec<ProxyView>> {
        let (tenant, ids) = (tenant_id.to_owned(), ids.to_vec());
        self.read(move |c| {
            let mut views = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(task) = one(c, "t.tenant_id = ?1 AND t.id = ?2", &[&tenant, id])? {
                    views.push(view_of(c, task)?);
                }
            }
            Ok(views)
        })
        .await
    }

    async fn mj_proxy_queue(&self, tenant_id: &str, limit: u32) -> StoreResult<ProxyQueue> {
        let tenant = tenant_id.to_owned();
        // On the calling thread as a read by key: two counts on the waiting jobs' partial
        // index, which holds only what waits (every submit reads it; a hop to a blocking
        // thread and back cost more than the counts).
        self.read_by_key(move |c| {
            // Named: without a range on `seq` the planner would count through an index of
            // every job ever made rather than the partial index of the waiting ones.
            let sql = format!(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM {WAITING} LIMIT ?2)),
                    (SELECT count(*) FROM jobs INDEXED BY jobs_waiting
                     WHERE status IN ('QUEUED', 'RETRYING'))"
            );
            let (tasks, jobs): (i64, i64) = c
                .prepare_cached(&sql)?
                .query_row(params![tenant, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(ProxyQueue {
                tasks: u64::try_from(tasks).unwrap_or(0),
                jobs: u64::try_from(jobs).unwrap_or(0),
            })
        })
        .await
    }

    async fn mj_proxy_start(
        &self,
        tenant_id: &str,
        id: &str,
        job_id: &str,
        detail: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        let (tenant, id, job, detail) = (
            tenant_id.to_owned(),
            id.to_owned(),
            job_id.to_owned(),
            detail.to_owned(),
        );
        self.write(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE mj_proxy_tasks SET job_id = ?3, detail = ?4, phase = NULL,
                        updated_at = ?5
                     WHERE tenant_id = ?1 AND id = ?2 AND phase = ?6 AND job_id IS NULL",
                )?
                .execute(params![tenant, id, job, detail, at, PHASE_MODAL])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn mj_proxy_cancel_modal(
        &self,
        tenant_id: &str,
        id: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        let (tenant, id) = (tenant_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE mj_proxy_tasks SET phase = ?3, updated_at = ?4
                     WHERE tenant_id = ?1 AND id = ?2 AND phase = ?5 AND job_id IS NULL",
                )?
                .execute(params![tenant, id, PHASE_CANCEL, at, PHASE_MODAL])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn mj_proxy_notify(&self, id: &str, order: i64, d: ProxyDelivery) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |c| {
            let rose = c
                .prepare_cached(
                    "UPDATE mj_proxy_tasks SET notified = ?2 WHERE id = ?1 AND notified < ?2",
                )?
                .execute(params![id, order])?;
            if rose == 0 {
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT INTO webhook_deliveries (id, job_id, tenant_id, job_event_id, url, source,
                    status, event_at, next_attempt_at, created_at, updated_at, body)
                 VALUES (?1, ?2, ?3, 0, ?4, 'job', ?5, ?6, ?6, ?6, ?6, ?7)",
            )?
            .execute(params![
                d.id,
                d.job_id,
                d.tenant_id,
                d.url,
                d.status.as_str(),
                d.at,
                d.body
            ])?;
            Ok(true)
        })
        .await
    }
}
