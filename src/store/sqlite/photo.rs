//! The photo app on SQLite (see [`PhotoStore`]): the statements of [`crate::store::photo::sql`]
//! in SQLite's spelling. The single writer makes a task's balance check and its holds one
//! step no other write can come between.

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, Value as SqlValue};
use rusqlite::{params_from_iter, Connection, OptionalExtension, Row, ToSql};

use super::{jobs, ledger, SqliteStore};
use crate::base::clock::Millis;
use crate::base::job::{NewJob, SubmitOutcome};
use crate::base::ledger::Order;
use crate::store::photo::{
    config_from, for_sqlite, order_from, queue_counts, scene_from, sql, task_from, task_job_from,
    work_from, workflow_run_from, ConfigEntry, OrderListQuery, Param, PhotoStore, QueueCount,
    RowRead, Scene, SceneQuery, Statement, Task, TaskCreated, TaskJob, TaskQuery, Work, WorkPatch,
    WorkQuery, WorkflowEnd, WorkflowRun, OVERVIEW,
};
use crate::store::{StoreError, StoreResult};

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(match self {
            Param::Text(Some(t)) => SqlValue::Text(t.clone()),
            Param::Int(Some(i)) => SqlValue::Integer(*i),
            Param::Text(None) | Param::Int(None) => SqlValue::Null,
        }))
    }
}

impl RowRead for Row<'_> {
    type Error = rusqlite::Error;

    fn text(&self, index: usize) -> rusqlite::Result<String> {
        self.get(index)
    }

    fn opt_text(&self, index: usize) -> rusqlite::Result<Option<String>> {
        self.get(index)
    }

    fn int(&self, index: usize) -> rusqlite::Result<i64> {
        self.get(index)
    }

    fn opt_int(&self, index: usize) -> rusqlite::Result<Option<i64>> {
        self.get(index)
    }
}

fn exec(conn: &Connection, (sql, params): &Statement) -> StoreResult<usize> {
    Ok(conn
        .prepare_cached(&for_sqlite(sql))?
        .execute(params_from_iter(params.iter()))?)
}

fn rows<T>(
    conn: &Connection,
    (sql, params): &Statement,
    read: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(&for_sqlite(sql))?;
    let found = stmt
        .query_map(params_from_iter(params.iter()), |r| read(r))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(found)
}

fn one<T>(
    conn: &Connection,
    (sql, params): &Statement,
    read: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    Ok(conn
        .prepare_cached(&for_sqlite(sql))?
        .query_row(params_from_iter(params.iter()), |r| read(r))
        .optional()?)
}

fn count(conn: &Connection, statement: &Statement) -> StoreResult<u64> {
    let n: i64 = one(conn, statement, |r| r.get(0))?.unwrap_or(0);
    Ok(u64::try_from(n).unwrap_or(0))
}

fn page<T: Send + 'static>(
    conn: &Connection,
    (list, total): &(Statement, Statement),
    read: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<(Vec<T>, u64)> {
    Ok((rows(conn, list, read)?, count(conn, total)?))
}

fn task_create(conn: &Connection, task: &Task, jobs: &[NewJob]) -> StoreResult<TaskCreated> {
    let charges: Vec<_> = jobs.iter().filter_map(|j| j.charge.as_ref()).collect();
    let required: i64 = charges.iter().map(|c| c.amount).sum();
    if let Some(charge) = charges.first().filter(|_| required > 0) {
        let available = ledger::balance_of(conn, &charge.account.id)?;
        if available < required {
            return Ok(TaskCreated::Insufficient {
                required,
                available,
            });
        }
    }
    exec(conn, &sql::task_insert(task))?;
    for (index, job) in jobs.iter().enumerate() {
        exec(conn, &sql::task_job_insert(&task.task_id, &job.id, index))?;
        match jobs::submit(conn, job)? {
            SubmitOutcome::Created { .. } => {}
            // The balance was checked above: a refusal here undoes the whole task.
            other => {
                return Err(StoreError::Conflict(format!(
                    "task job not made: {other:?}"
                )))
            }
        }
    }
    Ok(TaskCreated::Created)
}

fn task_end(conn: &Connection, task_id: &str, status: &str, work: &Work) -> StoreResult<bool> {
    let written = one(conn, &sql::work_insert(work), |r| r.get::<_, String>(0))?.is_some();
    if written {
        exec(
            conn,
            &sql::task_end(task_id, status, work.error.as_deref(), work.updated_at),
        )?;
    }
    Ok(written)
}

fn works_delete(
    conn: &Connection,
    tenant_id: &str,
    user_id: &str,
    work_ids: &[String],
) -> StoreResult<bool> {
    if work_ids.is_empty()
        || count(conn, &sql::works_owned(tenant_id, user_id, work_ids))? != work_ids.len() as u64
    {
        return Ok(false);
    }
    exec(conn, &sql::works_delete(tenant_id, user_id, work_ids))?;
    Ok(true)
}

#[async_trait]
impl PhotoStore for SqliteStore {
    async fn photo_scene_put(&self, scene: Scene) -> StoreResult<()> {
        self.write(move |c| exec(c, &sql::scene_put(&scene)).map(|_| ()))
            .await
    }

    async fn photo_scene_get(&self, tenant_id: &str, scene_id: &str) -> StoreResult<Option<Scene>> {
        let statement = sql::scene_get(tenant_id, scene_id);
        self.read(move |c| one(c, &statement, |r| scene_from(r)))
            .await
    }

    async fn photo_scene_delete(&self, tenant_id: &str, scene_id: &str) -> StoreResult<bool> {
        let statement = sql::scene_delete(tenant_id, scene_id);
        self.write(move |c| Ok(exec(c, &statement)? > 0)).await
    }

    async fn photo_scene_list(&self, query: SceneQuery) -> StoreResult<(Vec<Scene>, u64)> {
        let statements = sql::scene_list(&query);
        self.read(move |c| page(c, &statements, |r| scene_from(r)))
            .await
    }

    async fn photo_task_create(&self, task: Task, jobs: Vec<NewJob>) -> StoreResult<TaskCreated> {
        self.write(move |c| task_create(c, &task, &jobs)).await
    }

    async fn photo_task_get(&self, tenant_id: &str, task_id: &str) -> StoreResult<Option<Task>> {
        let statement = sql::task_get(tenant_id, task_id);
        self.read(move |c| one(c, &statement, |r| task_from(r)))
            .await
    }

    async fn photo_task_list(&self, query: TaskQuery) -> StoreResult<(Vec<Task>, u64)> {
        let statements = sql::task_list(&query);
        self.read(move |c| page(c, &statements, |r| task_from(r)))
            .await
    }

    async fn photo_task_jobs(&self, task_id: &str) -> StoreResult<Vec<TaskJob>> {
        let statement = sql::task_jobs(task_id);
        self.read(move |c| rows(c, &statement, |r| task_job_from(r)))
            .await
    }

    async fn photo_task_of_job(&self, job_id: &str) -> StoreResult<Option<Task>> {
        let statement = sql::task_of_job(job_id);
        self.read(move |c| one(c, &statement, |r| task_from(r)))
            .await
    }

    async fn photo_task_mark(
        &self,
        task_id: &str,
        status: &str,
        error: Option<&str>,
        at: Millis,
    ) -> StoreResult<bool> {
        let statement = sql::task_mark(task_id, status, error, at);
        self.write(move |c| Ok(exec(c, &statement)? > 0)).await
    }

    async fn photo_task_end(&self, task_id: &str, status: &str, work: Work) -> StoreResult<bool> {
        let (task_id, status) = (task_id.to_owned(), status.to_owned());
        self.write(move |c| task_end(c, &task_id, &status, &work))
            .await
    }

    async fn photo_work_get(&self, tenant_id: &str, work_id: &str) -> StoreResult<Option<Work>> {
        let statement = sql::work_get(tenant_id, work_id);
        self.read(move |c| one(c, &statement, |r| work_from(r)))
            .await
    }

    async fn photo_work_of_task(&self, task_id: &str) -> StoreResult<Option<Work>> {
        let statement = sql::work_of_task(task_id);
        self.read(move |c| one(c, &statement, |r| work_from(r)))
            .await
    }

    async fn photo_work_list(&self, query: WorkQuery) -> StoreResult<(Vec<Work>, u64)> {
        let statements = sql::work_list(&query);
        self.read(move |c| page(c, &statements, |r| work_from(r)))
            .await
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
        self.write(move |c| one(c, &statement, |r| work_from(r)))
            .await
    }

    async fn photo_works_delete(
        &self,
        tenant_id: &str,
        user_id: &str,
        work_ids: &[String],
    ) -> StoreResult<bool> {
        let (tenant_id, user_id, work_ids) =
            (tenant_id.to_owned(), user_id.to_owned(), work_ids.to_vec());
        self.write(move |c| works_delete(c, &tenant_id, &user_id, &work_ids))
            .await
    }

    async fn photo_queue_counts(&self, tenant_id: &str) -> StoreResult<Vec<QueueCount>> {
        let statement = sql::queue_counts(tenant_id);
        let found = self
            .read(move |c| rows(c, &statement, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
            .await?;
        Ok(queue_counts(found))
    }

    async fn photo_owns_object(
        &self,
        tenant_id: &str,
        user_id: &str,
        object_key: &str,
    ) -> StoreResult<bool> {
        let statement = sql::owns_object(tenant_id, user_id, object_key);
        self.read(move |c| Ok(count(c, &statement)? > 0)).await
    }

    async fn photo_workflow_get(&self, task_id: &str) -> StoreResult<Option<WorkflowRun>> {
        let statement = sql::workflow_get(task_id);
        self.read(move |c| one(c, &statement, |r| workflow_run_from(r)))
            .await
    }

    async fn photo_workflow_begin(
        &self,
        tenant_id: &str,
        task_id: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        let statement = sql::workflow_begin(tenant_id, task_id, at);
        self.write(move |c| Ok(one(c, &statement, |r| r.get::<_, String>(0))?.is_some()))
            .await
    }

    async fn photo_workflow_abandon(&self, task_id: &str) -> StoreResult<()> {
        let statement = sql::workflow_abandon(task_id);
        self.write(move |c| exec(c, &statement).map(drop)).await
    }

    async fn photo_workflow_end(
        &self,
        task_id: &str,
        end: WorkflowEnd,
        at: Millis,
    ) -> StoreResult<bool> {
        let statement = sql::workflow_end(task_id, &end, at);
        self.write(move |c| Ok(one(c, &statement, |r| r.get::<_, String>(0))?.is_some()))
            .await
    }

    async fn photo_overview(&self, tenant_id: &str, since: Millis) -> StoreResult<Vec<i64>> {
        let statement = sql::overview(tenant_id, since);
        let row = self
            .read(move |c| {
                one(c, &statement, |r| {
                    (0..OVERVIEW.len())
                        .map(|i| r.get(i))
                        .collect::<Result<Vec<i64>, _>>()
                })
            })
            .await?;
        Ok(row.unwrap_or_default())
    }

    async fn photo_orders(&self, query: OrderListQuery) -> StoreResult<(Vec<Order>, u64)> {
        let statements = sql::orders(&query);
        self.read(move |c| page(c, &statements, |r| order_from(r)))
            .await
    }

    async fn photo_config_list(&self, tenant_id: &str) -> StoreResult<Vec<ConfigEntry>> {
        let statement = sql::config_list(tenant_id);
        self.read(move |c| rows(c, &statement, |r| config_from(r)))
            .await
    }

    async fn photo_config_set(
        &self,
        tenant_id: &str,
        key: &str,
        value: &str,
        at: Millis,
    ) -> StoreResult<bool> {
        let statement = sql::config_set(tenant_id, key, value, at);
        self.write(move |c| Ok(exec(c, &statement)? > 0)).await
    }
}
