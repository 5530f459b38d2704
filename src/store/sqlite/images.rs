//! The image library on SQLite (see [`ImageStore`]). The single writer makes each method's
//! read-then-write safe without locks: two uploads of the same bytes cannot both make their
//! object ready, and a delete cannot doom an object a new record is being added to.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteStore;
use crate::base::clock::Millis;
use crate::base::image::{
    ImageDeleteOutcome, ImageListQuery, ImageObject, ImageOwner, ImageRecord, NewImage, ObjectState,
};
use crate::store::images::{ImageStore, OBJECT_COLUMNS, RECORD_SELECT};
use crate::store::{StoreError, StoreResult};

fn object_from(row: &Row<'_>, at: usize) -> rusqlite::Result<ImageObject> {
    let state: String = row.get(at + 9)?;
    Ok(ImageObject {
        id: row.get(at)?,
        tenant_id: row.get(at + 1)?,
        content_hash: row.get(at + 2)?,
        key: row.get(at + 3)?,
        thumb_key: row.get(at + 4)?,
        mime: row.get(at + 5)?,
        width: row.get(at + 6)?,
        height: row.get(at + 7)?,
        size: row.get(at + 8)?,
        state: ObjectState::parse(&state).unwrap_or(ObjectState::Doomed),
        holders: row.get(at + 10)?,
        created_at: row.get(at + 11)?,
    })
}

fn record_from(row: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    let user: String = row.get(2)?;
    Ok(ImageRecord {
        id: row.get(0)?,
        owner: ImageOwner {
            tenant_id: row.get(1)?,
            user_id: Some(user).filter(|u| !u.is_empty()),
        },
        kind: row.get(3)?,
        session_id: row.get(4)?,
        original_name: row.get(5)?,
        ref_count: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        object: object_from(row, 9)?,
    })
}

fn get(conn: &Connection, owner: &ImageOwner, id: &str) -> StoreResult<Option<ImageRecord>> {
    let sql = format!(
        "{} WHERE i.id = ?1 AND i.tenant_id = ?2 AND i.owner_user = ?3",
        RECORD_SELECT
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(
            params![id, owner.tenant_id, owner.user_column()],
            record_from,
        )
        .optional()?)
}

fn insert_record(conn: &Connection, new: &NewImage, object_id: &str) -> StoreResult<ImageRecord> {
    conn.prepare_cached(
        "INSERT INTO images (id, tenant_id, owner_user, object_id, kind, session_id,
                             original_name, ref_count, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8)",
    )?
    .execute(params![
        new.id,
        new.owner.tenant_id,
        new.owner.user_column(),
        object_id,
        new.kind,
        new.session_id,
        new.original_name,
        new.created_at,
    ])?;
    get(conn, &new.owner, &new.id)?.ok_or(StoreError::NotFound)
}

/// Takes a hold on the tenant's ready object of `hash`; its id, if there is one.
fn hold_ready(conn: &Connection, tenant_id: &str, hash: &str) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached(
            "UPDATE image_objects SET holders = holders + 1
             WHERE tenant_id = ?1 AND content_hash = ?2 AND state = 'ready' RETURNING id",
        )?
        .query_row(params![tenant_id, hash], |r| r.get(0))
        .optional()?)
}

fn add_existing(conn: &Connection, new: &NewImage) -> StoreResult<Option<ImageRecord>> {
    match hold_ready(conn, &new.owner.tenant_id, &new.content_hash)? {
        Some(object_id) => insert_record(conn, new, &object_id).map(Some),
        None => Ok(None),
    }
}

fn object_begin(conn: &Connection, o: &ImageObject) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO image_objects (id, tenant_id, content_hash, object_key, thumb_key, mime,
                                    width, height, size, state, holders, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', 0, ?10)",
    )?
    .execute(params![
        o.id,
        o.tenant_id,
        o.content_hash,
        o.key,
        o.thumb_key,
        o.mime,
        o.width,
        o.height,
        o.size,
        o.created_at
    ])?;
    Ok(())
}

fn object_get(conn: &Connection, id: &str) -> StoreResult<Option<ImageObject>> {
    let sql = format!("SELECT {OBJECT_COLUMNS} FROM image_objects o WHERE o.id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], |r| object_from(r, 0))
        .optional()?)
}

/// Moves a pending object to `to`; whether it was pending.
fn leave_pending(conn: &Connection, id: &str, to: ObjectState, holders: u32) -> StoreResult<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE image_objects SET state = ?2, holders = ?3 WHERE id = ?1 AND state = 'pending'",
        )?
        .execute(params![id, to.as_str(), holders])?;
    Ok(changed == 1)
}

fn add(
    conn: &Connection,
    new: &NewImage,
    object_id: &str,
) -> StoreResult<(ImageRecord, Option<ImageObject>)> {
    if let Some(winner) = hold_ready(conn, &new.owner.tenant_id, &new.content_hash)? {
        if !leave_pending(conn, object_id, ObjectState::Doomed, 0)? {
            return Err(StoreError::NotFound);
        }
        let redundant = object_get(conn, object_id)?;
        return Ok((insert_record(conn, new, &winner)?, redundant));
    }
    if !leave_pending(conn, object_id, ObjectState::Ready, 1)? {
        return Err(StoreError::NotFound);
    }
    Ok((insert_record(conn, new, object_id)?, None))
}

fn list(conn: &Connection, q: &ImageListQuery) -> StoreResult<(Vec<ImageRecord>, u64)> {
    let filter = "i.tenant_id = ?1 AND i.owner_user = ?2
         AND (?3 IS NULL OR i.session_id = ?3) AND (?4 IS NULL OR i.kind = ?4)";
    let args = params![
        q.owner.tenant_id,
        q.owner.user_column(),
        q.session_id,
        q.kind
    ];
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM images i WHERE {filter}"))?
        .query_row(args, |r| r.get(0))?;
    let sql = format!(
        "{} WHERE {filter} ORDER BY i.created_at DESC, i.id DESC LIMIT ?5 OFFSET ?6",
        RECORD_SELECT
    );
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let items = conn
        .prepare_cached(&sql)?
        .query_map(
            params![
                q.owner.tenant_id,
                q.owner.user_column(),
                q.session_id,
                q.kind,
                q.limit,
                offset
            ],
            record_from,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

fn refs(
    conn: &Connection,
    owner: &ImageOwner,
    ids: &[String],
    delta: i32,
) -> StoreResult<Vec<String>> {
    let mut exists = conn.prepare_cached(
        "SELECT 1 FROM images WHERE id = ?1 AND tenant_id = ?2 AND owner_user = ?3",
    )?;
    let mut missing = Vec::new();
    for id in ids {
        let found = exists
            .query_row(
                params![id, owner.tenant_id, owner.user_column()],
                |_| Ok(()),
            )
            .optional()?;
        if found.is_none() {
            missing.push(id.clone());
        }
    }
    if !missing.is_empty() {
        return Ok(missing);
    }
    let mut bump =
        conn.prepare_cached("UPDATE images SET ref_count = MAX(0, ref_count + ?2) WHERE id = ?1")?;
    for id in ids {
        bump.execute(params![id, delta])?;
    }
    Ok(missing)
}

fn delete(conn: &Connection, owner: &ImageOwner, id: &str) -> StoreResult<ImageDeleteOutcome> {
    let Some(record) = get(conn, owner, id)? else {
        return Ok(ImageDeleteOutcome::NotFound);
    };
    if record.ref_count > 0 {
        return Ok(ImageDeleteOutcome::Referenced(record.ref_count));
    }
    conn.prepare_cached("DELETE FROM images WHERE id = ?1")?
        .execute([id])?;
    let state: String = conn
        .prepare_cached(
            "UPDATE image_objects SET holders = holders - 1,
                 state = CASE WHEN holders = 1 THEN 'doomed' ELSE state END
             WHERE id = ?1 RETURNING state",
        )?
        .query_row([&record.object.id], |r| r.get(0))?;
    if state == ObjectState::Doomed.as_str() {
        return Ok(ImageDeleteOutcome::Deleted(object_get(
            conn,
            &record.object.id,
        )?));
    }
    Ok(ImageDeleteOutcome::Deleted(None))
}

fn collect(conn: &Connection, stale_before: Millis, limit: u32) -> StoreResult<Vec<ImageObject>> {
    conn.prepare_cached(
        "UPDATE image_objects SET state = 'doomed' WHERE state = 'pending' AND created_at < ?1",
    )?
    .execute([stale_before])?;
    let sql = format!(
        "SELECT {OBJECT_COLUMNS} FROM image_objects o WHERE o.state = 'doomed'
         ORDER BY o.created_at, o.id LIMIT ?1"
    );
    let objects = conn
        .prepare_cached(&sql)?
        .query_map([limit], |r| object_from(r, 0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(objects)
}

fn forget(conn: &Connection, object_id: &str) -> StoreResult<bool> {
    let deleted = conn
        .prepare_cached("DELETE FROM image_objects WHERE id = ?1 AND state = 'doomed'")?
        .execute([object_id])?;
    Ok(deleted == 1)
}

#[async_trait]
impl ImageStore for SqliteStore {
    async fn image_add_existing(&self, new: NewImage) -> StoreResult<Option<ImageRecord>> {
        self.write(move |c| add_existing(c, &new)).await
    }

    async fn image_object_begin(&self, object: ImageObject) -> StoreResult<()> {
        self.write(move |c| object_begin(c, &object)).await
    }

    async fn image_add(
        &self,
        new: NewImage,
        object_id: &str,
    ) -> StoreResult<(ImageRecord, Option<ImageObject>)> {
        let object_id = object_id.to_owned();
        self.write(move |c| add(c, &new, &object_id)).await
    }

    async fn image_get(&self, owner: &ImageOwner, id: &str) -> StoreResult<Option<ImageRecord>> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.read(move |c| get(c, &owner, &id)).await
    }

    async fn image_list(&self, query: ImageListQuery) -> StoreResult<(Vec<ImageRecord>, u64)> {
        self.read(move |c| list(c, &query)).await
    }

    async fn image_refs(
        &self,
        owner: &ImageOwner,
        ids: &[String],
        delta: i32,
    ) -> StoreResult<Vec<String>> {
        let (owner, ids) = (owner.clone(), ids.to_vec());
        self.write(move |c| refs(c, &owner, &ids, delta)).await
    }

    async fn image_delete(&self, owner: &ImageOwner, id: &str) -> StoreResult<ImageDeleteOutcome> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.write(move |c| delete(c, &owner, &id)).await
    }

    async fn image_objects_collect(
        &self,
        stale_before: Millis,
        limit: u32,
    ) -> StoreResult<Vec<ImageObject>> {
        self.write(move |c| collect(c, stale_before, limit)).await
    }

    async fn image_object_forget(&self, object_id: &str) -> StoreResult<bool> {
        let object_id = object_id.to_owned();
        self.write(move |c| forget(c, &object_id)).await
    }
}
