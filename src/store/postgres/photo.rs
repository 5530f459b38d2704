//! The photo app on PostgreSQL (see [`PhotoStore`]): the statements of
//! [`crate::store::photo::sql`]. A task's creation writes its jobs' holds one by one in one
//! transaction (each guarded like any paid submit's), so two tasks at once cannot both spend
//! the same credits, and a task that cannot pay for every job leaves nothing behind.

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};

use super::jobs::job_insert;
use super::PgStore;
use crate::base::clock::Millis;
use crate::base::job::NewJob;
use crate::base::ledger::Order;
use crate::store::photo::{
    config_from, order_from, queue_counts, scene_from, sql, task_from, task_job_from, work_from,
    workflow_run_from, ConfigEntry, OrderListQuery, Param, PhotoStore, QueueCount, RowRead, Scene,
    SceneQuery, Statement, Task, TaskCreated, TaskJob, TaskQuery, Work, WorkPatch, WorkQuery,
    WorkflowEnd, WorkflowRun, OVERVIEW,
};
use crate::store::{StoreError, StoreResult};

impl RowRead for PgRow {
    type Error = sqlx::Error;

    fn text(&self, index: usize) -> Result<String, sqlx::Error> {
        self.try_get(index)
    }

    fn opt_text(&self, index: usize) -> Result<Option<String>, sqlx::Error> {
        self.try_get(index)
    }

    fn int(&self, index: usize) -> Result<i64, sqlx::Error> {
        self.try_get(index)
    }

    fn opt_int(&self, index: usize) -> Result<Option<i64>, sqlx::Error> {
        self.try_get(index)
    }
}

fn bound<'a>(sql: &'a str, params: &[Param]) -> Query<'a, Postgres, PgArguments> {
    let mut query = sqlx::query(sql);
    for param in params {
        query = match param {
            Param::Text(v) => query.bind(v.clone()),
            Param::Int(v) => query.bind(*v),
        };
    }
    query
}

async fn exec(conn: &mut PgConnection, (sql, params): &Statement) -> StoreResult<u64> {
    Ok(bound(sql, params).execute(conn).await?.rows_affected())
}

async fn rows<T>(
    conn: &mut PgConnection,
    (sql, params): &Statement,
    read: impl Fn(&PgRow) -> Result<T, sqlx::Error>,
) -> StoreResult<Vec<T>> {
    let found = bound(sql, params).fetch_all(conn).await?;
    Ok(found.iter().map(read).collect::<Result<Vec<_>, _>>()?)
}

async fn one<T>(
    conn: &mut PgConnection,
    (sql, params): &Statement,
    read: impl Fn(&PgRow) -> Result<T, sqlx::Error>,
) -> StoreResult<Option<T>> {
    let found = bound(sql, params).fetch_optional(conn).await?;
    Ok(found.as_ref().map(read).transpose()?)
}

async fn count(conn: &mut PgConnection, statement: &Statement) -> StoreResult<u64> {
    let n: i64 = one(conn, statement, |r| r.try_get(0)).await?.unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn task_create(
    conn: &mut PgConnection,
    task: &Task,
    jobs: &[NewJob],
) -> StoreResult<TaskCreated> {
    exec(conn, &sql::task_insert(task)).await?;
    // Each job holds its own price (from the connection's stripe, refilled under the account's
    // locks when short); the first that cannot pay ends the task, and the caller, which commits
    // only a created task, rolls back the holds before it.
    let mut held = 0;
    for (index, job) in jobs.iter().enumerate() {
        exec(conn, &sql::task_job_insert(&task.task_id, &job.id, index)).await?;
        let params =
            serde_json::to_string(&job.params).map_err(|e| StoreError::Conflict(e.to_string()))?;
        let price = job.charge.as_ref().map_or(0, |c| c.amount.max(0));
        if !job_insert(conn, job, &params).await? {
            let Some(charge) = &job.charge else {
                return Err(StoreError::Conflict("task job not made".into()));
            };
            let left = super::ledger::balance_of(conn, &charge.account.id).await?;
            let required = jobs
                .iter()
                .filter_map(|j| j.charge.as_ref())
                .map(|c| c.amount)
                .sum();
            return Ok(TaskCreated::Insufficient {
                required,
                available: left + held,
            });
        }
        held += price;
    }
    Ok(TaskCreated::Created)
}

#[async_trait]
impl PhotoStore for PgStore {
    async fn photo_scene_put(&self, scene: Scene) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        exec(&mut conn, &sql::scene_put(&scene)).await.map(|_| ())
    }

    async fn photo_scene_get(&self, tenant_id: &str, scene_id: &str) -> StoreResult<Option<Scene>> {
        let mut conn = self.pool.acquire().await?;
        one(&mut conn, &sql::scene_get(tenant_id, scene_id), scene_from).await
    }

    async fn photo_scene_delete(&self, tenant_id: &str, scene_id: &str) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        Ok(exec(&mut conn, &sql::scene_delete(tenant_id, scene_id)).await? > 0)
    }

    async fn photo_scene_list(&self, query: SceneQuery) -> StoreResult<(Vec<Scene>, u64)> {
        let (list, total) = sql::scene_list(&query);
        let mut conn = self.pool.acquire().await?;
        Ok((
            rows(&mut conn, &list, scene_from).await?,
            count(&mut conn, &total).await?,
        ))
    }

    async fn photo_task_create(&self, task: Task, jobs: Vec<NewJob>) -> StoreResult<TaskCreated> {
        let mut tx = self.pool.begin().await?;
        let outcome = task_create(&mut tx, &task, &jobs).await?;
        if outcome == TaskCreated::Created {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn photo_task_get(&self, tenant_id: &str, task_id: &str) -> StoreResult<Option<Task>> {
        let mut conn = self.pool.acquire().await?;
        one(&mut conn, &sql::task_get(tenant_id, task_id), task_from).await
    }

    async fn photo_task_list(&self, query: TaskQuery) -> StoreResult<(Vec<Task>, u64)> {
        let (list, total) = sql::task_list(&query);
        let mut conn = self.pool.acquire().await?;
        Ok((
            rows(&mut conn, &list, task_from).await?,
            count(&mut conn, &total).await?,
        ))
    }

    async fn photo_task_jobs(&self, task_id: &str) -> StoreResult<Vec<TaskJob>> {
        let mut conn = self.pool.acquire().await?;
        rows(&mut conn, &sql::task_jobs(task_id), task_job_from).await
    }

    async fn photo_task_of_job(&self, job_id: &str) -> StoreResult<Option<Task>> {
        let mut conn = self.pool.acquire().await?;
        one(&mut conn, &sql::task_of_job(job_id), task_from).await
    }

    async fn photo_task_mark(
        &self,
        task_id: &str,
        status: &str,
        error: Option<&str>,
        at: Millis,
    ) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        Ok(exec(&mut conn, &sql::task_mark(task_id, status, error, at)).await? > 0)
    }

    async fn photo_task_end(&self, task_id: &str, status: &str, work: Work) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let written = one(&mut tx, &sql::work_insert(&work), |r| {
            r.try_get::<String, _>(0)
        })
        .await?
        .is_some();
        if written {
            let end = sql::task_end(task_id, status, work.error.as_deref(), work.updated_at);
            exec(&mut tx, &end).await?;
            tx.commit().await?;
        }
        Ok(written)
    }

    async fn photo_work_get(&self, tenant_id: &str, work_id: &str) -> StoreResult<Option<Work>> {
        let mut conn = self.pool.acquire().await?;
        one(&mut conn, &sql::work_get(tenant_id, work_id), work_from).await
    }

    async fn photo_work_of_task(&self, task_id: &str) -> StoreResult<Option<Work>> {
        let mut conn = self.pool.acquire().await?;
        one(&mut conn, &sql::work_of_task(task_id), work_from).await
    }

    async fn photo_work_list(&self, query: WorkQuery) -> StoreResult<(Vec<Work>, u64)> {
        let (list, total) = sql::work_list(&query);
        let mut conn = self.pool.acquire().await?;
        Ok((
            rows(&mut conn, &list, work_from).await?,
            count(&mut conn, &total).await?,
        ))
    }

    async fn photo_work_update(
        &self,
        tenant_id: &str,
        user_id: &str,
        work_id: &str,
        patch: WorkPatch,
        at: Millis,
    ) -> StoreResult<Option<Work>> {
        let statement = sql::work_update(tenant_id, user_id, work_id, &patch, at);
        let mut conn = self.pool.acquire().await?;
        one(&mut conn, &statement, work_from).await
    }

    async fn photo_works_delete(
        &self,
        tenant_id: &str,
        user_id: &str,
        work_ids: &[String],
    ) -> StoreResult<bool> {
        if work_ids.is_empty() {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        let deleted = exec(&mut tx, &sql::works_delete(tenant_id, user_id, work_ids)).await?;
        // All or nothing: a shorter count rolls the deletes back.
        if deleted != work_ids.len() as u64 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn photo_queue_counts(&self, tenant_id: &str) -> StoreResult<Vec<QueueCount>> {
        let mut conn = self.pool.acquire().await?;
        let found = rows(&mut conn, &sql::queue_counts(tenant_id), |r| {
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
        })
        .await?;
        Ok(queue_counts(found))
    }

    async fn photo_owns_object(
        &self,
        tenant_id: &str,
        user_id: &str,
        object_key: &str,
    ) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        Ok(count(&mut conn, &sql::owns_object(tenant_id, user_id, object_key)).await? > 0)
    }

    async fn photo_workflow_get(&self, task_id: &str) -> StoreResult<Option<WorkflowRun>> {
        let mut conn = self.pool.acquire().await?;
        one(&mut conn, &sql::workflow_get(task_id), workflow_run_from).await
    }

    async fn photo_workflow_begin(
        &self,
        tenant_id: &str,
        task_id: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        let statement = sql::workflow_begin(tenant_id, task_id, at);
        let won = one(&mut conn, &statement, |r| r.try_get::<String, _>(0)).await?;
        Ok(won.is_some())
    }

    async fn photo_workflow_abandon(&self, task_id: &str) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        exec(&mut conn, &sql::workflow_abandon(task_id))
            .await
            .map(drop)
    }

    async fn photo_workflow_end(
        &self,
        task_id: &str,
        end: WorkflowEnd,
        at: Millis,
    ) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        let statement = sql::workflow_end(task_id, &end, at);
        let written = one(&mut conn, &statement, |r| r.try_get::<String, _>(0)).await?;
        Ok(written.is_some())
    }

    async fn photo_overview(&self, tenant_id: &str, since: Millis) -> StoreResult<Vec<i64>> {
        let mut conn = self.pool.acquire().await?;
        let row = one(&mut conn, &sql::overview(tenant_id, since), |r| {
            (0..OVERVIEW.len())
                .map(|i| r.try_get::<i64, _>(i))
                .collect::<Result<Vec<i64>, _>>()
        })
        .await?;
        Ok(row.unwrap_or_default())
    }

    async fn photo_orders(&self, query: OrderListQuery) -> StoreResult<(Vec<Order>, u64)> {
        let (list, total) = sql::orders(&query);
        let mut conn = self.pool.acquire().await?;
        Ok((
            rows(&mut conn, &list, order_from).await?,
            count(&mut conn, &total).await?,
        ))
    }

    async fn photo_config_list(&self, tenant_id: &str) -> StoreResult<Vec<ConfigEntry>> {
        let mut conn = self.pool.acquire().await?;
        rows(&mut conn, &sql::config_list(tenant_id), config_from).await
    }

    async fn photo_config_set(
        &self,
        tenant_id: &str,
        key: &str,
        value: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        Ok(exec(&mut conn, &sql::config_set(tenant_id, key, value, at)).await? > 0)
    }
}
