//! The Midjourney API seed's tasks on SQLite (see [`MjTaskStore`]).

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteStore;
use crate::store::midjourney::{
    MjBotHit, MjBotResult, MjTask, MjTaskRow, MjTaskStore, SELECT, STATUS_SQL,
};
use crate::store::StoreResult;

/// The tenant's tasks still SUBMITTED (an open job, no bot status), found from its open jobs:
/// the tasks it made before are never read.
const UNFINISHED: &str = "jobs j CROSS JOIN mj_tasks t ON t.job_id = j.id
    WHERE j.tenant_id = ?1 AND j.status IN ('QUEUED', 'RUNNING', 'RETRYING')
    AND t.bot_status IS NULL";

fn row_of(row: &Row<'_>) -> rusqlite::Result<MjTaskRow> {
    Ok(MjTaskRow {
        task: MjTask {
            task_id: row.get(0)?,
            trigger_id: row.get(1)?,
            tenant_id: row.get(2)?,
            account_id: row.get(3)?,
            job_id: row.get(4)?,
            task_name: row.get(5)?,
            task_type: row.get(6)?,
            image_index: row.get(7)?,
            msg_id: row.get(8)?,
            msg_hash: row.get(9)?,
            zoom_out: row.get(10)?,
            direction: row.get(11)?,
            ref_pic_url: row.get(12)?,
            prompts: row.get(13)?,
            bot_status: row.get(14)?,
            result_url: row.get(15)?,
            attachments: row.get(16)?,
            created_at: row.get(17)?,
            updated_at: row.get(18)?,
        },
        status: row.get(19)?,
    })
}

fn insert(conn: &Connection, t: &MjTask) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO mj_tasks (task_id, trigger_id, tenant_id, account_id, job_id, task_name,
            task_type, image_index, msg_id, msg_hash, zoom_out, direction, ref_pic_url, prompts,
            bot_status, result_url, attachments, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19)",
    )?
    .execute(params![
        t.task_id,
        t.trigger_id,
        t.tenant_id,
        t.account_id,
        t.job_id,
        t.task_name,
        t.task_type,
        t.image_index,
        t.msg_id,
        t.msg_hash,
        t.zoom_out,
        t.direction,
        t.ref_pic_url,
        t.prompts,
        t.bot_status,
        t.result_url,
        t.attachments,
        t.created_at,
        t.updated_at,
    ])?;
    Ok(())
}

fn one(conn: &Connection, filter: &str, a: &str, b: &str) -> StoreResult<Option<MjTaskRow>> {
    let sql = format!("{SELECT} WHERE {filter}");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![a, b], row_of)
        .optional()?)
}

fn list(
    conn: &Connection,
    account_id: &str,
    status: Option<&str>,
    limit: u32,
    offset: u32,
) -> StoreResult<Vec<MjTaskRow>> {
    let rows = match status {
        Some(status) => {
            let sql = format!(
                "{SELECT} WHERE t.account_id = ?1 AND {STATUS_SQL} = ?2
                 ORDER BY t.created_at DESC, t.task_id DESC LIMIT ?3"
            );
            conn.prepare_cached(&sql)?
                .query_map(params![account_id, status, limit], row_of)?
                .collect::<Result<Vec<_>, _>>()?
        }
        None => {
            let sql = format!(
                "{SELECT} WHERE t.account_id = ?1
                 ORDER BY t.created_at DESC, t.task_id DESC LIMIT ?2 OFFSET ?3"
            );
            conn.prepare_cached(&sql)?
                .query_map(params![account_id, limit, offset], row_of)?
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(rows)
}

fn bot_result(conn: &Connection, r: &MjBotResult) -> StoreResult<Option<MjBotHit>> {
    let sql = format!(
        "SELECT t.task_id, t.tenant_id, t.job_id FROM mj_tasks t
         LEFT JOIN jobs j ON j.id = t.job_id
         WHERE t.trigger_id = ?1 AND {STATUS_SQL} = 'SUBMITTED'
         ORDER BY t.created_at DESC, t.task_id DESC LIMIT 1"
    );
    let Some(hit) = conn
        .prepare_cached(&sql)?
        .query_row(params![r.trigger_id], |row| {
            Ok(MjBotHit {
                task_id: row.get(0)?,
                tenant_id: row.get(1)?,
                job_id: row.get(2)?,
            })
        })
        .optional()?
    else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE mj_tasks SET bot_status = ?2, result_url = COALESCE(?3, result_url),
            attachments = COALESCE(?4, attachments), msg_id = COALESCE(?5, msg_id),
            msg_hash = COALESCE(?6, msg_hash), updated_at = ?7
         WHERE task_id = ?1",
    )?
    .execute(params![
        hit.task_id,
        r.status,
        r.result_url,
        r.attachments,
        r.msg_id,
        r.msg_hash,
        r.at
    ])?;
    Ok(Some(hit))
}

#[async_trait]
impl MjTaskStore for SqliteStore {
    async fn mj_task_insert(&self, task: MjTask) -> StoreResult<()> {
        self.write(move |c| insert(c, &task)).await
    }

    async fn mj_task_get(&self, tenant_id: &str, task_id: &str) -> StoreResult<Option<MjTaskRow>> {
        let (tenant, id) = (tenant_id.to_owned(), task_id.to_owned());
        self.read(move |c| one(c, "t.tenant_id = ?1 AND t.task_id = ?2", &tenant, &id))
            .await
    }

    async fn mj_task_by_hash(
        &self,
        tenant_id: &str,
        msg_hash: &str,
    ) -> StoreResult<Option<MjTaskRow>> {
        let (tenant, hash) = (tenant_id.to_owned(), msg_hash.to_owned());
        self.read(move |c| one(c, "t.tenant_id = ?1 AND t.msg_hash = ?2", &tenant, &hash))
            .await
    }

    async fn mj_task_list(
        &self,
        account_id: &str,
        status: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> StoreResult<Vec<MjTaskRow>> {
        let (account, status) = (account_id.to_owned(), status.map(str::to_owned));
        self.read(move |c| list(c, &account, status.as_deref(), limit, offset))
            .await
    }

    async fn mj_tasks_waiting(&self, tenant_id: &str) -> StoreResult<u64> {
        let tenant = tenant_id.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT count(*) FROM {UNFINISHED}");
            let n: i64 = c
                .prepare_cached(&sql)?
                .query_row(params![tenant], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn mj_task_bot_result(&self, result: MjBotResult) -> StoreResult<Option<MjBotHit>> {
        self.write(move |c| bot_result(c, &result)).await
    }
}
