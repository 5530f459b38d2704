//! The Midjourney API seed's tasks on PostgreSQL (see [`MjTaskStore`]).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::PgStore;
use crate::store::midjourney::{
    MjBotHit, MjBotResult, MjTask, MjTaskRow, MjTaskStore, SELECT, STATUS_SQL,
};
use crate::store::StoreResult;

/// The tenant's tasks still SUBMITTED (an open job, no bot status), found from its open jobs:
/// the tasks it made before are never read.
const UNFINISHED: &str = "jobs j JOIN mj_tasks t ON t.job_id = j.id
    WHERE j.tenant_id = $1 AND j.status IN ('QUEUED', 'RUNNING', 'RETRYING')
    AND t.bot_status IS NULL";

fn row_of(row: &PgRow) -> Result<MjTaskRow, sqlx::Error> {
    Ok(MjTaskRow {
        task: MjTask {
            task_id: row.try_get(0)?,
            trigger_id: row.try_get(1)?,
            tenant_id: row.try_get(2)?,
            account_id: row.try_get(3)?,
            job_id: row.try_get(4)?,
            task_name: row.try_get(5)?,
            task_type: row.try_get(6)?,
            image_index: i64::from(row.try_get::<i32, _>(7)?),
            msg_id: row.try_get(8)?,
            msg_hash: row.try_get(9)?,
            zoom_out: i64::from(row.try_get::<i32, _>(10)?),
            direction: row.try_get(11)?,
            ref_pic_url: row.try_get(12)?,
            prompts: row.try_get(13)?,
            bot_status: row.try_get(14)?,
            result_url: row.try_get(15)?,
            attachments: row.try_get(16)?,
            created_at: row.try_get(17)?,
            updated_at: row.try_get(18)?,
        },
        status: row.try_get(19)?,
    })
}

fn rows(found: Vec<PgRow>) -> StoreResult<Vec<MjTaskRow>> {
    Ok(found.iter().map(row_of).collect::<Result<Vec<_>, _>>()?)
}

impl PgStore {
    async fn mj_one(&self, filter: &str, a: &str, b: &str) -> StoreResult<Option<MjTaskRow>> {
        let sql = format!("{SELECT} WHERE {filter}");
        let found = sqlx::query(&sql)
            .bind(a)
            .bind(b)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.as_ref().map(row_of).transpose()?)
    }
}

#[async_trait]
impl MjTaskStore for PgStore {
    async fn mj_task_insert(&self, t: MjTask) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO mj_tasks (task_id, trigger_id, tenant_id, account_id, job_id, task_name,
                task_type, image_index, msg_id, msg_hash, zoom_out, direction, ref_pic_url,
                prompts, bot_status, result_url, attachments, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, $19)",
        )
        .bind(&t.task_id)
        .bind(&t.trigger_id)
        .bind(&t.tenant_id)
        .bind(&t.account_id)
        .bind(&t.job_id)
        .bind(&t.task_name)
        .bind(&t.task_type)
        .bind(i32::try_from(t.image_index).unwrap_or(0))
        .bind(t.msg_id)
        .bind(&t.msg_hash)
        .bind(i32::try_from(t.zoom_out).unwrap_or(0))
        .bind(&t.direction)
        .bind(&t.ref_pic_url)
        .bind(&t.prompts)
        .bind(&t.bot_status)
        .bind(&t.result_url)
        .bind(&t.attachments)
        .bind(t.created_at)
        .bind(t.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mj_task_get(&self, tenant_id: &str, task_id: &str) -> StoreResult<Option<MjTaskRow>> {
        self.mj_one("t.tenant_id = $1 AND t.task_id = $2", tenant_id, task_id)
            .await
    }

    async fn mj_task_by_hash(
        &self,
        tenant_id: &str,
        msg_hash: &str,
    ) -> StoreResult<Option<MjTaskRow>> {
        self.mj_one("t.tenant_id = $1 AND t.msg_hash = $2", tenant_id, msg_hash)
            .await
    }

    async fn mj_task_list(
        &self,
        account_id: &str,
        status: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> StoreResult<Vec<MjTaskRow>> {
        let found = match status {
            Some(status) => {
                let sql = format!(
                    "{SELECT} WHERE t.account_id = $1 AND {STATUS_SQL} = $2
                     ORDER BY t.created_at DESC, t.task_id DESC LIMIT $3"
                );
                sqlx::query(&sql)
                    .bind(account_id)
                    .bind(status)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!(
                    "{SELECT} WHERE t.account_id = $1
                     ORDER BY t.created_at DESC, t.task_id DESC LIMIT $2 OFFSET $3"
                );
                sqlx::query(&sql)
                    .bind(account_id)
                    .bind(i64::from(limit))
                    .bind(i64::from(offset))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows(found)
    }

    async fn mj_tasks_waiting(&self, tenant_id: &str) -> StoreResult<u64> {
        let sql = format!("SELECT count(*) FROM {UNFINISHED}");
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(tenant_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn mj_task_bot_result(&self, r: MjBotResult) -> StoreResult<Option<MjBotHit>> {
        let sql = format!(
            "UPDATE mj_tasks SET bot_status = $2, result_url = COALESCE($3, result_url),
                attachments = COALESCE($4, attachments), msg_id = COALESCE($5, msg_id),
                msg_hash = COALESCE($6, msg_hash), updated_at = $7
             WHERE task_id = (
                SELECT t.task_id FROM mj_tasks t LEFT JOIN jobs j ON j.id = t.job_id
                WHERE t.trigger_id = $1 AND {STATUS_SQL} = 'SUBMITTED'
                ORDER BY t.created_at DESC, t.task_id DESC LIMIT 1 FOR UPDATE OF t)
             RETURNING task_id, tenant_id, job_id"
        );
        let hit: Option<(String, String, Option<String>)> = sqlx::query_as(&sql)
            .bind(&r.trigger_id)
            .bind(&r.status)
            .bind(&r.result_url)
            .bind(&r.attachments)
            .bind(r.msg_id)
            .bind(&r.msg_hash)
            .bind(r.at)
            .fetch_optional(&self.pool)
            .await?;
        Ok(hit.map(|(task_id, tenant_id, job_id)| MjBotHit {
            task_id,
            tenant_id,
            job_id,
        }))
    }
}
