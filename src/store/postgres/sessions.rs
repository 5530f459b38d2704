//! The editor's sessions, messages and session events on PostgreSQL (see [`SessionStore`]).
//! Every change bumps the session row's counter first (`UPDATE ... RETURNING`), which locks
//! the row until commit: a session's changes are serialised and its event ids commit in order.

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::PgStore;
use crate::base::clock::Millis;
use crate::store::sessions::*;
use crate::store::{StoreError, StoreResult};

fn session_from(row: &PgRow) -> Result<EditorSession, sqlx::Error> {
    Ok(EditorSession {
        id: row.try_get(0)?,
        tenant_id: row.try_get(1)?,
        user_id: row.try_get(2)?,
        title: row.try_get(3)?,
        auto_title: row.try_get(4)?,
        message_count: row.try_get(5)?,
        created_at: row.try_get(6)?,
        updated_at: row.try_get(7)?,
        deleted_at: row.try_get(8)?,
    })
}

fn message_at(row: &PgRow, at: usize) -> Result<EditorMessage, sqlx::Error> {
    let params: String = row.try_get(at + 5)?;
    let ids: String = row.try_get(at + 6)?;
    Ok(EditorMessage {
        id: row.try_get(at)?,
        session_id: row.try_get(at + 1)?,
        seq: row.try_get(at + 2)?,
        role: row.try_get(at + 3)?,
        text: row.try_get(at + 4)?,
        params: json_or(&params, json!({})),
        image_ids: ids_of(&ids),
        edited_of: row.try_get(at + 7)?,
        job_id: row.try_get(at + 8)?,
        answers_job: row.try_get(at + 9)?,
        created_at: row.try_get(at + 10)?,
        updated_at: row.try_get(at + 11)?,
    })
}

fn message_from(row: &PgRow) -> Result<EditorMessage, sqlx::Error> {
    message_at(row, 0)
}

fn event_from(row: &PgRow) -> Result<SessionEvent, sqlx::Error> {
    let detail: Option<String> = row.try_get(4)?;
    Ok(SessionEvent {
        id: row.try_get(0)?,
        session_id: row.try_get(1)?,
        kind: row.try_get(2)?,
        subject: row.try_get(3)?,
        detail: detail.map(|d| json_or(&d, Value::Null)),
        at: row.try_get(5)?,
    })
}

fn offset(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

struct Event<'a> {
    kind: &'a str,
    subject: Option<&'a str>,
    detail: Option<Value>,
}

/// Bumps the owner's live session and writes its event: the event, `None` if not live.
async fn record(
    c: &mut PgConnection,
    owner: &SessionOwner,
    session_id: &str,
    now: Millis,
    event: Event<'_>,
) -> StoreResult<Option<SessionEvent>> {
    let id: Option<i64> = sqlx::query_scalar(&pg_sql(BUMP_SQL))
        .bind(session_id)
        .bind(&owner.tenant_id)
        .bind(&owner.user_id)
        .bind(now)
        .fetch_optional(&mut *c)
        .await?;
    let Some(id) = id else { return Ok(None) };
    sqlx::query(&pg_sql(EVENT_INSERT_SQL))
        .bind(session_id)
        .bind(id)
        .bind(event.kind)
        .bind(event.subject)
        .bind(event.detail.as_ref().map(Value::to_string))
        .bind(now)
        .execute(&mut *c)
        .await?;
    Ok(Some(SessionEvent {
        id,
        session_id: session_id.to_owned(),
        kind: event.kind.to_owned(),
        subject: event.subject.map(str::to_owned),
        detail: event.detail,
        at: now,
    }))
}

/// Adds `delta` to the `refCount` of the owner's images among `ids` (never below 0).
async fn refs(
    c: &mut PgConnection,
    owner: &SessionOwner,
    ids: &[String],
    delta: i32,
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE images SET ref_count = GREATEST(0, ref_count + $4)
         WHERE tenant_id = $1 AND owner_user = $2 AND id = ANY($3)",
    )
    .bind(&owner.tenant_id)
    .bind(&owner.user_id)
    .bind(ids)
    .bind(delta)
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn session_get(
    c: &mut PgConnection,
    owner: &SessionOwner,
    id: &str,
) -> StoreResult<Option<EditorSession>> {
    let row = sqlx::query(&pg_sql(&session_get_sql()))
        .bind(id)
        .bind(&owner.tenant_id)
        .bind(&owner.user_id)
        .fetch_optional(&mut *c)
        .await?;
    Ok(row.as_ref().map(session_from).transpose()?)
}

async fn message_get(
    c: &mut PgConnection,
    owner: &SessionOwner,
    id: &str,
) -> StoreResult<Option<EditorMessage>> {
    let row = sqlx::query(&pg_sql(&message_get_sql()))
        .bind(id)
        .bind(&owner.tenant_id)
        .bind(&owner.user_id)
        .fetch_optional(&mut *c)
        .await?;
    Ok(row.as_ref().map(message_from).transpose()?)
}

async fn message_add(
    c: &mut PgConnection,
    owner: &SessionOwner,
    new: NewMessage,
    now: Millis,
) -> StoreResult<Option<EditorMessage>> {
    if let Some(job) = &new.answers_job {
        let row = sqlx::query(&pg_sql(&message_by_answer_sql()))
            .bind(job)
            .fetch_optional(&mut *c)
            .await?;
        if let Some(row) = row {
            return Ok(Some(message_from(&row)?));
        }
    }
    let event = Event {
        kind: "message_created",
        subject: Some(&new.id),
        detail: None,
    };
    let Some(event) = record(c, owner, &new.session_id, now, event).await? else {
        return Ok(None);
    };
    sqlx::query(&pg_sql(MESSAGE_INSERT_SQL))
        .bind(&new.id)
        .bind(&new.session_id)
        .bind(event.id)
        .bind(&new.role)
        .bind(&new.text)
        .bind(new.params.to_string())
        .bind(ids_text(&new.image_ids))
        .bind(&new.edited_of)
        .bind(&new.job_id)
        .bind(&new.answers_job)
        .bind(now)
        .execute(&mut *c)
        .await?;
    count(c, &new.session_id, 1).await?;
    if let Some(title) = &new.auto_title {
        sqlx::query(&pg_sql(AUTO_TITLE_SQL))
            .bind(&new.session_id)
            .bind(title)
            .execute(&mut *c)
            .await?;
    }
    refs(c, owner, &new.image_ids, 1).await?;
    message_get(c, owner, &new.id).await
}

async fn count(c: &mut PgConnection, session_id: &str, delta: i64) -> StoreResult<()> {
    sqlx::query(&pg_sql(COUNT_SQL))
        .bind(session_id)
        .bind(delta)
        .execute(&mut *c)
        .await?;
    Ok(())
}

async fn message_update(
    c: &mut PgConnection,
    owner: &SessionOwner,
    id: &str,
    patch: MessagePatch,
    now: Millis,
) -> StoreResult<Option<EditorMessage>> {
    let Some(old) = message_get(c, owner, id).await? else {
        return Ok(None);
    };
    let event = Event {
        kind: "message_updated",
        subject: Some(id),
        detail: None,
    };
    record(c, owner, &old.session_id, now, event).await?;
    let ids = patch.image_ids.unwrap_or_else(|| old.image_ids.clone());
    sqlx::query(&pg_sql(MESSAGE_UPDATE_SQL))
        .bind(id)
        .bind(patch.text.unwrap_or(old.text))
        .bind(patch.params.unwrap_or(old.params).to_string())
        .bind(ids_text(&ids))
        .bind(now)
        .execute(&mut *c)
        .await?;
    refs(c, owner, &old.image_ids, -1).await?;
    refs(c, owner, &ids, 1).await?;
    message_get(c, owner, id).await
}

async fn message_delete(
    c: &mut PgConnection,
    owner: &SessionOwner,
    id: &str,
    now: Millis,
) -> StoreResult<bool> {
    let Some(old) = message_get(c, owner, id).await? else {
        return Ok(false);
    };
    let event = Event {
        kind: "message_deleted",
        subject: Some(id),
        detail: Some(json!({"id": id, "sessionId": old.session_id})),
    };
    record(c, owner, &old.session_id, now, event).await?;
    sqlx::query("DELETE FROM editor_messages WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    count(c, &old.session_id, -1).await?;
    refs(c, owner, &old.image_ids, -1).await?;
    Ok(true)
}

/// Opens a session-level change (rename, delete): its event is written; `None` if the
/// session is not the owner's live one (nothing written).
async fn session_change(
    store: &PgStore,
    owner: &SessionOwner,
    id: &str,
    kind: &str,
) -> StoreResult<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
    let mut tx = store.pool.begin().await?;
    let event = Event {
        kind,
        subject: None,
        detail: None,
    };
    Ok(record(&mut tx, owner, id, store.now(), event)
        .await?
        .map(|_| tx))
}

#[async_trait]
impl SessionStore for PgStore {
    async fn editor_session_create(
        &self,
        owner: &SessionOwner,
        id: &str,
        title: Option<&str>,
        default_title: &str,
    ) -> StoreResult<EditorSession> {
        let now = self.now();
        let mut conn = self.pool.acquire().await?;
        sqlx::query(&pg_sql(SESSION_INSERT_SQL))
            .bind(id)
            .bind(&owner.tenant_id)
            .bind(&owner.user_id)
            .bind(title.unwrap_or(default_title))
            .bind(title.is_none())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        session_get(&mut conn, owner, id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn editor_session_get(
        &self,
        owner: &SessionOwner,
        id: &str,
    ) -> StoreResult<Option<EditorSession>> {
        let mut conn = self.pool.acquire().await?;
        session_get(&mut conn, owner, id).await
    }

    async fn editor_session_list(
        &self,
        q: SessionListQuery,
    ) -> StoreResult<(Vec<EditorSession>, u64)> {
        let pattern = q.q.as_deref().map(like_pattern);
        let total: i64 = sqlx::query_scalar(&pg_sql(&session_count_sql()))
            .bind(&q.owner.tenant_id)
            .bind(&q.owner.user_id)
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(&pg_sql(&session_list_sql()))
            .bind(&q.owner.tenant_id)
            .bind(&q.owner.user_id)
            .bind(&pattern)
            .bind(i64::from(q.limit))
            .bind(offset(q.offset))
            .fetch_all(&self.pool)
            .await?;
        let items = rows.iter().map(session_from).collect::<Result<_, _>>()?;
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }

    async fn editor_session_rename(
        &self,
        owner: &SessionOwner,
        id: &str,
        title: &str,
    ) -> StoreResult<Option<EditorSession>> {
        let Some(mut tx) = session_change(self, owner, id, "session_updated").await? else {
            return Ok(None);
        };
        sqlx::query("UPDATE editor_sessions SET title = $2, auto_title = FALSE WHERE id = $1")
            .bind(id)
            .bind(title)
            .execute(&mut *tx)
            .await?;
        let session = session_get(&mut tx, owner, id).await?;
        tx.commit().await?;
        Ok(session)
    }

    async fn editor_session_delete(&self, owner: &SessionOwner, id: &str) -> StoreResult<bool> {
        let Some(mut tx) = session_change(self, owner, id, "session_deleted").await? else {
            return Ok(false);
        };
        sqlx::query("UPDATE editor_sessions SET deleted_at = $2 WHERE id = $1")
            .bind(id)
            .bind(self.now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn editor_message_add(
        &self,
        owner: &SessionOwner,
        new: NewMessage,
    ) -> StoreResult<Option<EditorMessage>> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let added = message_add(&mut tx, owner, new, now).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn editor_message_get(
        &self,
        owner: &SessionOwner,
        id: &str,
    ) -> StoreResult<Option<EditorMessage>> {
        let mut conn = self.pool.acquire().await?;
        message_get(&mut conn, owner, id).await
    }

    async fn editor_message_list(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        limit: u32,
        offset_by: u64,
    ) -> StoreResult<Option<(Vec<EditorMessage>, u64)>> {
        let mut conn = self.pool.acquire().await?;
        let Some(session) = session_get(&mut conn, owner, session_id).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(&pg_sql(&message_list_sql()))
            .bind(session_id)
            .bind(i64::from(limit))
            .bind(offset(offset_by))
            .fetch_all(&mut *conn)
            .await?;
        let items = rows.iter().map(message_from).collect::<Result<_, _>>()?;
        Ok(Some((
            items,
            u64::try_from(session.message_count).unwrap_or(0),
        )))
    }

    async fn editor_messages_before(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        before_seq: i64,
        n: u32,
    ) -> StoreResult<Vec<EditorMessage>> {
        let rows = sqlx::query(&pg_sql(&messages_before_sql()))
            .bind(session_id)
            .bind(&owner.tenant_id)
            .bind(&owner.user_id)
            .bind(before_seq)
            .bind(i64::from(n))
            .fetch_all(&self.pool)
            .await?;
        let mut items = rows
            .iter()
            .map(message_from)
            .collect::<Result<Vec<_>, _>>()?;
        items.reverse();
        Ok(items)
    }

    async fn editor_message_update(
        &self,
        owner: &SessionOwner,
        id: &str,
        patch: MessagePatch,
    ) -> StoreResult<Option<EditorMessage>> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let updated = message_update(&mut tx, owner, id, patch, now).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn editor_message_delete(&self, owner: &SessionOwner, id: &str) -> StoreResult<bool> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let deleted = message_delete(&mut tx, owner, id, now).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn editor_message_of_job(
        &self,
        job_id: &str,
    ) -> StoreResult<Option<(SessionOwner, EditorMessage)>> {
        let row = sqlx::query(&pg_sql(&message_of_job_sql()))
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let owner = SessionOwner::new(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
        Ok(Some((owner, message_at(&row, 2)?)))
    }

    async fn editor_event_add(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        kind: &str,
        subject: Option<&str>,
        detail: Option<Value>,
    ) -> StoreResult<Option<SessionEvent>> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let event = Event {
            kind,
            subject,
            detail,
        };
        let recorded = record(&mut tx, owner, session_id, now, event).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    async fn editor_events_after(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<SessionEvent>> {
        let rows = sqlx::query(&pg_sql(EVENTS_AFTER_SQL))
            .bind(session_id)
            .bind(&owner.tenant_id)
            .bind(&owner.user_id)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(event_from).collect::<Result<_, _>>()?)
    }

    async fn editor_events_last_id(
        &self,
        owner: &SessionOwner,
        session_id: &str,
    ) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(&pg_sql(EVENTS_LAST_SQL))
            .bind(session_id)
            .bind(&owner.tenant_id)
            .bind(&owner.user_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}
