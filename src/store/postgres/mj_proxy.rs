//! The `/mj` facade's tasks on PostgreSQL (see [`MjProxyStore`]).

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Row};

use super::{events, jobs, PgStore};
use crate::base::clock::Millis;
use crate::base::job::{Job, JobStatus, NewJob, SubmitOutcome};
use crate::store::mj_proxy::{
    MjProxyStore, ProxyDelivery, ProxyFilter, ProxyQueue, ProxyTask, ProxyView, PHASE_CANCEL,
    PHASE_MODAL,
};
use crate::store::{StoreError, StoreResult};

const COLUMNS: &str = "t.id, t.tenant_id, t.job_id, t.hash, t.action, t.phase, t.detail,
    t.notified, t.created_at, t.updated_at";

/// The tenant's tasks whose jobs wait, found from the waiting jobs' partial index.
const WAITING: &str = "jobs j JOIN mj_proxy_tasks t ON t.job_id = j.id
    WHERE j.tenant_id = $1 AND j.status IN ('QUEUED', 'RETRYING')";

fn row_of(row: &PgRow) -> Result<ProxyTask, sqlx::Error> {
    task_at(row, 0)
}

/// The task whose [`COLUMNS`] start at column `first` of `row`.
fn task_at(row: &PgRow, first: usize) -> Result<ProxyTask, sqlx::Error> {
    Ok(ProxyTask {
        id: row.try_get(first)?,
        tenant_id: row.try_get(first + 1)?,
        job_id: row.try_get(first + 2)?,
        hash: row.try_get(first + 3)?,
        action: row.try_get(first + 4)?,
        phase: row.try_get(first + 5)?,
        detail: row.try_get(first + 6)?,
        notified: i64::from(row.try_get::<i32, _>(first + 7)?),
        created_at: row.try_get(first + 8)?,
        updated_at: row.try_get(first + 9)?,
    })
}

/// A task with its job and, while the job runs, the job's progress, all in one statement;
/// the task's columns follow the job's ([`SELECT_VIEW`]'s second value says where).
static SELECT_VIEW: LazyLock<(String, usize)> = LazyLock::new(|| {
    let job_columns: Vec<String> = jobs::JOB_COLUMNS
        .split(',')
        .map(|column| format!("j.{}", column.trim()))
        .collect();
    // The task's columns are renamed: the job's are read by name, and share some names.
    let task_columns: Vec<String> = COLUMNS
        .split(',')
        .map(|column| {
            let column = column.trim();
            format!("{column} AS task_{}", column.trim_start_matches("t."))
        })
        .collect();
    let sql = format!(
        "SELECT {}, {}, CASE WHEN j.status = 'RUNNING' THEN (SELECT max(e.progress)
             FROM job_events e WHERE e.job_id = j.id AND e.attempt = j.attempts) END AS progress
         FROM mj_proxy_tasks t LEFT JOIN jobs j ON j.id = t.job_id AND j.tenant_id = t.tenant_id",
        job_columns.join(", "),
        task_columns.join(", ")
    );
    (sql, job_columns.len())
});

fn view_of_row(row: &PgRow) -> StoreResult<ProxyView> {
    let job = match row.try_get::<Option<i64>, _>("seq")? {
        Some(_) => Some(Job::try_from(jobs::JobRow::from_row(row)?)?),
        None => None,
    };
    let progress: Option<i32> = row.try_get("progress")?;
    Ok(ProxyView {
        task: task_at(row, SELECT_VIEW.1)?,
        job,
        progress: progress.and_then(|p| u8::try_from(p).ok()),
    })
}

impl PgStore {
    async fn mj_proxy_one(&self, filter: &str, binds: &[&str]) -> StoreResult<Option<ProxyTask>> {
        let sql = format!("SELECT {COLUMNS} FROM mj_proxy_tasks t WHERE {filter}");
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = query.bind(*b);
        }
        let found = query.fetch_optional(&self.pool).await?;
        Ok(found.as_ref().map(row_of).transpose()?)
    }

    /// The view of the one task `filter` finds, in one round trip.
    async fn view_one(&self, filter: &str, binds: &[&str]) -> StoreResult<Option<ProxyView>> {
        let sql = format!("{} WHERE {filter}", SELECT_VIEW.0);
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = query.bind(*b);
        }
        let found = query.fetch_optional(&self.pool).await?;
        found.as_ref().map(view_of_row).transpose()
    }

    /// [`PgStore::view_of`] of each task, in two statements whatever their number.
    async fn views_of(
        &self,
        tenant_id: &str,
        tasks: Vec<ProxyTask>,
    ) -> StoreResult<Vec<ProxyView>> {
        let ids: Vec<String> = tasks.iter().filter_map(|t| t.job_id.clone()).collect();
        let jobs: HashMap<String, Job> = jobs::get_many(&self.pool, tenant_id, &ids)
            .await?
            .into_iter()
            .map(|job| (job.id.clone(), job))
            .collect();
        let running: Vec<String> = jobs
            .values()
            .filter(|job| job.status == JobStatus::Running)
            .map(|job| job.id.clone())
            .collect();
        let progress: HashMap<String, u8> = events::progress_many(&self.pool, &running)
            .await?
            .into_iter()
            .collect();
        Ok(tasks
            .into_iter()
            .map(|task| {
                let job = task.job_id.as_ref().and_then(|id| jobs.get(id)).cloned();
                let progress = job.as_ref().and_then(|j| progress.get(&j.id)).copied();
                ProxyView {
                    task,
                    job,
                    progress,
                }
            })
            .collect())
    }
}

async fn insert(conn: &mut PgConnection, t: &ProxyTask) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO mj_proxy_tasks (id, tenant_id, job_id, hash, action, phase, detail,
            notified, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&t.id)
    .bind(&t.tenant_id)
    .bind(&t.job_id)
    .bind(&t.hash)
    .bind(&t.action)
    .bind(&t.phase)
    .bind(&t.detail)
    .bind(i32::try_from(t.notified).unwrap_or(-1))
    .bind(t.created_at)
    .bind(t.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl MjProxyStore for PgStore {
    async fn mj_proxy_insert(&self, t: ProxyTask) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, &t).await
    }

    async fn mj_proxy_submit(&self, job: NewJob, task: ProxyTask) -> StoreResult<SubmitOutcome> {
        if job.idempotency.is_some() {
            return Err(StoreError::Conflict(
                "a task's job carries no idempotency key".into(),
            ));
        }
        let params =
            serde_json::to_string(&job.params).map_err(|e| StoreError::Conflict(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        if !jobs::job_insert(&mut tx, &job, &params).await? {
            // Rolled back: a refused submit leaves nothing behind.
            return jobs::insufficient(&mut tx, &job).await;
        }
        insert(&mut tx, &task).await?;
        tx.commit().await?;
        Ok(SubmitOutcome::Created { job_id: job.id })
    }

    async fn mj_proxy_view(&self, tenant_id: &str, id: &str) -> StoreResult<Option<ProxyView>> {
        self.view_one("t.tenant_id = $1 AND t.id = $2", &[tenant_id, id])
            .await
    }

    async fn mj_proxy_get(&self, tenant_id: &str, id: &str) -> StoreResult<Option<ProxyTask>> {
        self.mj_proxy_one("t.tenant_id = $1 AND t.id = $2", &[tenant_id, id])
            .await
    }

    async fn mj_proxy_by_job(&self, job_id: &str) -> StoreResult<Option<ProxyView>> {
        self.view_one("t.job_id = $1", &[job_id]).await
    }

    async fn mj_proxy_list(
        &self,
        tenant_id: &str,
        filter: ProxyFilter,
        limit: u32,
    ) -> StoreResult<Vec<ProxyView>> {
        let sql = match filter {
            ProxyFilter::All => format!(
                "SELECT {COLUMNS} FROM mj_proxy_tasks t WHERE t.tenant_id = $1
                 ORDER BY t.created_at DESC, t.id DESC LIMIT $2"
            ),
            ProxyFilter::Queued => {
                format!("SELECT {COLUMNS} FROM {WAITING} ORDER BY j.seq LIMIT $2")
            }
        };
        let found = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let tasks = found.iter().map(row_of).collect::<Result<Vec<_>, _>>()?;
        self.views_of(tenant_id, tasks).await
    }

    async fn mj_proxy_views(&self, tenant_id: &str, ids: &[String]) -> StoreResult<Vec<ProxyView>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM mj_proxy_tasks t WHERE t.tenant_id = $1 AND t.id = ANY($2)"
        );
        let found = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        let tasks = found.iter().map(row_of).collect::<Result<Vec<_>, _>>()?;
        let views: HashMap<String, ProxyView> = self
            .views_of(tenant_id, tasks)
            .await?
            .into_iter()
            .map(|view| (view.task.id.clone(), view))
            .collect();
        Ok(ids.iter().filter_map(|id| views.get(id).cloned()).collect())
    }

    async fn mj_proxy_queue(&self, tenant_id: &str, limit: u32) -> StoreResult<ProxyQueue> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM {WAITING} LIMIT $2) AS w),
                (SELECT count(*) FROM jobs WHERE status IN ('QUEUED', 'RETRYING'))"
        );
        let (tasks, jobs): (i64, i64) = sqlx::query_as(&sql)
            .bind(tenant_id)
            .bind(i64::from(limit))
            .fetch_one(&self.pool)
            .await?;
        Ok(ProxyQueue {
            tasks: u64::try_from(tasks).unwrap_or(0),
            jobs: u64::try_from(jobs).unwrap_or(0),
        })
    }

    async fn mj_proxy_start(
        &self,
        tenant_id: &str,
        id: &str,
        job_id: &str,
        detail: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mj_proxy_tasks SET job_id = $3, detail = $4, phase = NULL, updated_at = $5
             WHERE tenant_id = $1 AND id = $2 AND phase = $6 AND job_id IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(job_id)
        .bind(detail)
        .bind(at)
        .bind(PHASE_MODAL)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mj_proxy_cancel_modal(
        &self,
        tenant_id: &str,
        id: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mj_proxy_tasks SET phase = $3, updated_at = $4
             WHERE tenant_id = $1 AND id = $2 AND phase = $5 AND job_id IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(PHASE_CANCEL)
        .bind(at)
        .bind(PHASE_MODAL)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mj_proxy_notify(&self, id: &str, order: i64, d: ProxyDelivery) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let rose =
            sqlx::query("UPDATE mj_proxy_tasks SET notified = $2 WHERE id = $1 AND notified < $2")
                .bind(id)
                .bind(i32::try_from(order).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await?;
        if rose.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, job_id, tenant_id, job_event_id, url, source,
                status, event_at, next_attempt_at, created_at, updated_at, body)
             VALUES ($1, $2, $3, 0, $4, 'job', $5, $6, $6, $6, $6, $7)",
        )
        .bind(&d.id)
        .bind(&d.job_id)
        .bind(&d.tenant_id)
        .bind(&d.url)
        .bind(d.status.as_str())
        .bind(d.at)
        .bind(&d.body)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
