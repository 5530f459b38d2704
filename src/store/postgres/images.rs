//! The image library on PostgreSQL (see [`ImageStore`]). Safe with many processes:
//! - Adding a record takes a hold with one `UPDATE ... WHERE state = 'ready'` on the object
//!   row, and a delete drops its hold (dooming the object at 0) with one `UPDATE` on that same
//!   row, so the row lock orders them: a hold never lands on an object a delete doomed.
//! - Making an object ready runs under a transaction advisory lock on (tenant, content hash),
//!   so two uploads of the same bytes never both make theirs ready.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::PgStore;
use crate::base::clock::Millis;
use crate::base::image::{
    ImageDeleteOutcome, ImageListQuery, ImageObject, ImageOwner, ImageRecord, NewImage, ObjectState,
};
use crate::store::images::{ImageStore, OBJECT_COLUMNS, RECORD_SELECT};
use crate::store::{StoreError, StoreResult};

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn small(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn object_from(row: &PgRow, at: usize) -> Result<ImageObject, sqlx::Error> {
    let state: String = row.try_get(at + 9)?;
    Ok(ImageObject {
        id: row.try_get(at)?,
        tenant_id: row.try_get(at + 1)?,
        content_hash: row.try_get(at + 2)?,
        key: row.try_get(at + 3)?,
        thumb_key: row.try_get(at + 4)?,
        mime: row.try_get(at + 5)?,
        width: small(row.try_get(at + 6)?),
        height: small(row.try_get(at + 7)?),
        size: unsigned(row.try_get(at + 8)?),
        state: ObjectState::parse(&state).unwrap_or(ObjectState::Doomed),
        holders: small(row.try_get(at + 10)?),
        created_at: row.try_get(at + 11)?,
    })
}

fn record_from(row: &PgRow) -> Result<ImageRecord, sqlx::Error> {
    let user: String = row.try_get(2)?;
    Ok(ImageRecord {
        id: row.try_get(0)?,
        owner: ImageOwner {
            tenant_id: row.try_get(1)?,
            user_id: Some(user).filter(|u| !u.is_empty()),
        },
        kind: row.try_get(3)?,
        session_id: row.try_get(4)?,
        original_name: row.try_get(5)?,
        ref_count: small(row.try_get(6)?),
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
        object: object_from(row, 9)?,
    })
}

async fn get(
    conn: &mut PgConnection,
    owner: &ImageOwner,
    id: &str,
) -> StoreResult<Option<ImageRecord>> {
    let sql = format!(
        "{} WHERE i.id = $1 AND i.tenant_id = $2 AND i.owner_user = $3",
        RECORD_SELECT
    );
    let row = sqlx::query(&sql)
        .bind(id)
        .bind(&owner.tenant_id)
        .bind(owner.user_column())
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(record_from).transpose()?)
}

async fn insert_record(
    conn: &mut PgConnection,
    new: &NewImage,
    object_id: &str,
) -> StoreResult<ImageRecord> {
    sqlx::query(
        "INSERT INTO images (id, tenant_id, owner_user, object_id, kind, session_id,
                             original_name, ref_count, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
    )
    .bind(&new.id)
    .bind(&new.owner.tenant_id)
    .bind(new.owner.user_column())
    .bind(object_id)
    .bind(&new.kind)
    .bind(&new.session_id)
    .bind(&new.original_name)
    .bind(new.created_at)
    .execute(&mut *conn)
    .await?;
    get(conn, &new.owner, &new.id)
        .await?
        .ok_or(StoreError::NotFound)
}

async fn hold_ready(
    conn: &mut PgConnection,
    tenant_id: &str,
    hash: &str,
) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE image_objects SET holders = holders + 1
         WHERE tenant_id = $1 AND content_hash = $2 AND state = 'ready' RETURNING id",
    )
    .bind(tenant_id)
    .bind(hash)
    .fetch_optional(conn)
    .await?)
}

async fn object_get(conn: &mut PgConnection, id: &str) -> StoreResult<Option<ImageObject>> {
    let sql = format!("SELECT {OBJECT_COLUMNS} FROM image_objects o WHERE o.id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
    Ok(row.as_ref().map(|r| object_from(r, 0)).transpose()?)
}

async fn leave_pending(
    conn: &mut PgConnection,
    id: &str,
    to: ObjectState,
    holders: i32,
) -> StoreResult<bool> {
    let changed = sqlx::query(
        "UPDATE image_objects SET state = $2, holders = $3 WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(holders)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

async fn add(
    conn: &mut PgConnection,
    new: &NewImage,
    object_id: &str,
) -> StoreResult<(ImageRecord, Option<ImageObject>)> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))")
        .bind(&new.owner.tenant_id)
        .bind(&new.content_hash)
        .execute(&mut *conn)
        .await?;
    if let Some(winner) = hold_ready(conn, &new.owner.tenant_id, &new.content_hash).await? {
        if !leave_pending(conn, object_id, ObjectState::Doomed, 0).await? {
            return Err(StoreError::NotFound);
        }
        let redundant = object_get(conn, object_id).await?;
        return Ok((insert_record(conn, new, &winner).await?, redundant));
    }
    if !leave_pending(conn, object_id, ObjectState::Ready, 1).await? {
        return Err(StoreError::NotFound);
    }
    Ok((insert_record(conn, new, object_id).await?, None))
}

async fn delete(
    conn: &mut PgConnection,
    owner: &ImageOwner,
    id: &str,
) -> StoreResult<ImageDeleteOutcome> {
    // Locks the record: a concurrent use (refs) or delete of it waits.
    let row: Option<(String, i32)> = sqlx::query_as(
        "SELECT object_id, ref_count FROM images
         WHERE id = $1 AND tenant_id = $2 AND owner_user = $3 FOR UPDATE",
    )
    .bind(id)
    .bind(&owner.tenant_id)
    .bind(owner.user_column())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((object_id, ref_count)) = row else {
        return Ok(ImageDeleteOutcome::NotFound);
    };
    if ref_count > 0 {
        return Ok(ImageDeleteOutcome::Referenced(small(ref_count)));
    }
    sqlx::query("DELETE FROM images WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let state: String = sqlx::query_scalar(
        "UPDATE image_objects SET holders = holders - 1,
             state = CASE WHEN holders = 1 THEN 'doomed' ELSE state END
         WHERE id = $1 RETURNING state",
    )
    .bind(&object_id)
    .fetch_one(&mut *conn)
    .await?;
    if state == ObjectState::Doomed.as_str() {
        return Ok(ImageDeleteOutcome::Deleted(
            object_get(conn, &object_id).await?,
        ));
    }
    Ok(ImageDeleteOutcome::Deleted(None))
}

async fn refs(
    conn: &mut PgConnection,
    owner: &ImageOwner,
    ids: &[String],
    delta: i32,
) -> StoreResult<Vec<String>> {
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM images WHERE id = ANY($1) AND tenant_id = $2 AND owner_user = $3
         ORDER BY id FOR UPDATE",
    )
    .bind(ids)
    .bind(&owner.tenant_id)
    .bind(owner.user_column())
    .fetch_all(&mut *conn)
    .await?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains(id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Ok(missing);
    }
    // An id given twice counts twice, as in SQLite.
    for id in ids {
        sqlx::query("UPDATE images SET ref_count = GREATEST(0, ref_count + $2) WHERE id = $1")
            .bind(id)
            .bind(delta)
            .execute(&mut *conn)
            .await?;
    }
    Ok(missing)
}

#[async_trait]
impl ImageStore for PgStore {
    async fn image_add_existing(&self, new: NewImage) -> StoreResult<Option<ImageRecord>> {
        let mut tx = self.pool.begin().await?;
        let added = match hold_ready(&mut tx, &new.owner.tenant_id, &new.content_hash).await? {
            Some(object_id) => Some(insert_record(&mut tx, &new, &object_id).await?),
            None => None,
        };
        tx.commit().await?;
        Ok(added)
    }

    async fn image_object_begin(&self, o: ImageObject) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO image_objects (id, tenant_id, content_hash, object_key, thumb_key, mime,
                                        width, height, size, state, holders, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10)",
        )
        .bind(&o.id)
        .bind(&o.tenant_id)
        .bind(&o.content_hash)
        .bind(&o.key)
        .bind(&o.thumb_key)
        .bind(&o.mime)
        .bind(i32::try_from(o.width).unwrap_or(i32::MAX))
        .bind(i32::try_from(o.height).unwrap_or(i32::MAX))
        .bind(i64::try_from(o.size).unwrap_or(i64::MAX))
        .bind(o.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn image_add(
        &self,
        new: NewImage,
        object_id: &str,
    ) -> StoreResult<(ImageRecord, Option<ImageObject>)> {
        let mut tx = self.pool.begin().await?;
        let added = add(&mut tx, &new, object_id).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn image_get(&self, owner: &ImageOwner, id: &str) -> StoreResult<Option<ImageRecord>> {
        let mut conn = self.pool.acquire().await?;
        get(&mut conn, owner, id).await
    }

    async fn image_list(&self, q: ImageListQuery) -> StoreResult<(Vec<ImageRecord>, u64)> {
        let filter = "i.tenant_id = $1 AND i.owner_user = $2
             AND ($3::text IS NULL OR i.session_id = $3) AND ($4::text IS NULL OR i.kind = $4)";
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM images i WHERE {filter}"))
                .bind(&q.owner.tenant_id)
                .bind(q.owner.user_column())
                .bind(&q.session_id)
                .bind(&q.kind)
                .fetch_one(&self.pool)
                .await?;
        let sql = format!(
            "{} WHERE {filter} ORDER BY i.created_at DESC, i.id DESC LIMIT $5 OFFSET $6",
            RECORD_SELECT
        );
        let rows = sqlx::query(&sql)
            .bind(&q.owner.tenant_id)
            .bind(q.owner.user_column())
            .bind(&q.session_id)
            .bind(&q.kind)
            .bind(i64::from(q.limit))
            .bind(i64::try_from(q.offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let items = rows.iter().map(record_from).collect::<Result<_, _>>()?;
        Ok((items, unsigned(total)))
    }

    async fn image_refs(
        &self,
        owner: &ImageOwner,
        ids: &[String],
        delta: i32,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let missing = refs(&mut tx, owner, ids, delta).await?;
        tx.commit().await?;
        Ok(missing)
    }

    async fn image_delete(&self, owner: &ImageOwner, id: &str) -> StoreResult<ImageDeleteOutcome> {
        let mut tx = self.pool.begin().await?;
        let outcome = delete(&mut tx, owner, id).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn image_objects_collect(
        &self,
        stale_before: Millis,
        limit: u32,
    ) -> StoreResult<Vec<ImageObject>> {
        sqlx::query(
            "UPDATE image_objects SET state = 'doomed' WHERE state = 'pending' AND created_at < $1",
        )
        .bind(stale_before)
        .execute(&self.pool)
        .await?;
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM image_objects o WHERE o.state = 'doomed'
             ORDER BY o.created_at, o.id LIMIT $1"
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| object_from(r, 0))
            .collect::<Result<_, _>>()?)
    }

    async fn image_object_forget(&self, object_id: &str) -> StoreResult<bool> {
        let deleted = sqlx::query("DELETE FROM image_objects WHERE id = $1 AND state = 'doomed'")
            .bind(object_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted == 1)
    }
}
