//! The editor's sessions, messages and session events on SQLite (see [`SessionStore`]); the
//! single writer orders every session's events.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{json, Value};

use super::SqliteStore;
use crate::base::clock::Millis;
use crate::store::sessions::*;
use crate::store::StoreResult;

fn session_from(row: &Row) -> rusqlite::Result<EditorSession> {
    Ok(EditorSession {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        user_id: row.get(2)?,
        title: row.get(3)?,
        auto_title: row.get(4)?,
        message_count: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
        deleted_at: row.get(8)?,
    })
}

/// A message from the columns starting at `at`.
fn message_at(row: &Row, at: usize) -> rusqlite::Result<EditorMessage> {
    let params: String = row.get(at + 5)?;
    let ids: String = row.get(at + 6)?;
    Ok(EditorMessage {
        id: row.get(at)?,
        session_id: row.get(at + 1)?,
        seq: row.get(at + 2)?,
        role: row.get(at + 3)?,
        text: row.get(at + 4)?,
        params: json_or(&params, json!({})),
        image_ids: ids_of(&ids),
        edited_of: row.get(at + 7)?,
        job_id: row.get(at + 8)?,
        answers_job: row.get(at + 9)?,
        created_at: row.get(at + 10)?,
        updated_at: row.get(at + 11)?,
    })
}

fn message_from(row: &Row) -> rusqlite::Result<EditorMessage> {
    message_at(row, 0)
}

fn event_from(row: &Row) -> rusqlite::Result<SessionEvent> {
    let detail: Option<String> = row.get(4)?;
    Ok(SessionEvent {
        id: row.get(0)?,
        session_id: row.get(1)?,
        kind: row.get(2)?,
        subject: row.get(3)?,
        detail: detail.map(|d| json_or(&d, Value::Null)),
        at: row.get(5)?,
    })
}

/// Counts a change of the owner's live session: the new event id, `None` if it is not one.
fn bump(
    c: &Connection,
    owner: &SessionOwner,
    session_id: &str,
    now: Millis,
) -> StoreResult<Option<i64>> {
    Ok(c.prepare_cached(BUMP_SQL)?
        .query_row(
            params![session_id, owner.tenant_id, owner.user_id, now],
            |r| r.get(0),
        )
        .optional()?)
}

struct Event<'a> {
    kind: &'a str,
    subject: Option<&'a str>,
    detail: Option<Value>,
}

/// Bumps the session and writes its event: the event, `None` if the session is not live.
fn record(
    c: &Connection,
    owner: &SessionOwner,
    session_id: &str,
    now: Millis,
    event: Event,
) -> StoreResult<Option<SessionEvent>> {
    let Some(id) = bump(c, owner, session_id, now)? else {
        return Ok(None);
    };
    c.prepare_cached(EVENT_INSERT_SQL)?.execute(params![
        session_id,
        id,
        event.kind,
        event.subject,
        event.detail.as_ref().map(Value::to_string),
        now
    ])?;
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
fn refs(c: &Connection, owner: &SessionOwner, ids: &[String], delta: i64) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    c.prepare_cached(
        "UPDATE images SET ref_count = MAX(0, ref_count + ?4)
         WHERE tenant_id = ?1 AND owner_user = ?2 AND id IN (SELECT value FROM json_each(?3))",
    )?
    .execute(params![
        owner.tenant_id,
        owner.user_id,
        ids_text(ids),
        delta
    ])?;
    Ok(())
}

fn session_get(
    c: &Connection,
    owner: &SessionOwner,
    id: &str,
) -> StoreResult<Option<EditorSession>> {
    Ok(c.prepare_cached(&session_get_sql())?
        .query_row(params![id, owner.tenant_id, owner.user_id], session_from)
        .optional()?)
}

fn message_get(
    c: &Connection,
    owner: &SessionOwner,
    id: &str,
) -> StoreResult<Option<EditorMessage>> {
    Ok(c.prepare_cached(&message_get_sql())?
        .query_row(params![id, owner.tenant_id, owner.user_id], message_from)
        .optional()?)
}

fn message_add(
    c: &Connection,
    owner: &SessionOwner,
    new: NewMessage,
    now: Millis,
) -> StoreResult<Option<EditorMessage>> {
    if let Some(job) = &new.answers_job {
        let existing = c
            .prepare_cached(&message_by_answer_sql())?
            .query_row(params![job], message_from)
            .optional()?;
        if existing.is_some() {
            return Ok(existing);
        }
    }
    let event = Event {
        kind: "message_created",
        subject: Some(&new.id),
        detail: None,
    };
    let Some(event) = record(c, owner, &new.session_id, now, event)? else {
        return Ok(None);
    };
    c.prepare_cached(MESSAGE_INSERT_SQL)?.execute(params![
        new.id,
        new.session_id,
        event.id,
        new.role,
        new.text,
        new.params.to_string(),
        ids_text(&new.image_ids),
        new.edited_of,
        new.job_id,
        new.answers_job,
        now
    ])?;
    c.prepare_cached(COUNT_SQL)?
        .execute(params![new.session_id, 1i64])?;
    if let Some(title) = &new.auto_title {
        c.prepare_cached(AUTO_TITLE_SQL)?
            .execute(params![new.session_id, title])?;
    }
    refs(c, owner, &new.image_ids, 1)?;
    message_get(c, owner, &new.id)
}

fn message_update(
    c: &Connection,
    owner: &SessionOwner,
    id: &str,
    patch: MessagePatch,
    now: Millis,
) -> StoreResult<Option<EditorMessage>> {
    let Some(old) = message_get(c, owner, id)? else {
        return Ok(None);
    };
    let event = Event {
        kind: "message_updated",
        subject: Some(id),
        detail: None,
    };
    record(c, owner, &old.session_id, now, event)?;
    let ids = patch.image_ids.unwrap_or_else(|| old.image_ids.clone());
    c.prepare_cached(MESSAGE_UPDATE_SQL)?.execute(params![
        id,
        patch.text.unwrap_or(old.text),
        patch.params.unwrap_or(old.params).to_string(),
        ids_text(&ids),
        now
    ])?;
    refs(c, owner, &old.image_ids, -1)?;
    refs(c, owner, &ids, 1)?;
    message_get(c, owner, id)
}

fn message_delete(
    c: &Connection,
    owner: &SessionOwner,
    id: &str,
    now: Millis,
) -> StoreResult<bool> {
    let Some(old) = message_get(c, owner, id)? else {
        return Ok(false);
    };
    let event = Event {
        kind: "message_deleted",
        subject: Some(id),
        detail: Some(json!({"id": id, "sessionId": old.session_id})),
    };
    record(c, owner, &old.session_id, now, event)?;
    c.prepare_cached("DELETE FROM editor_messages WHERE id = ?1")?
        .execute(params![id])?;
    c.prepare_cached(COUNT_SQL)?
        .execute(params![old.session_id, -1i64])?;
    refs(c, owner, &old.image_ids, -1)?;
    Ok(true)
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn editor_session_create(
        &self,
        owner: &SessionOwner,
        id: &str,
        title: Option<&str>,
        default_title: &str,
    ) -> StoreResult<EditorSession> {
        let owner = owner.clone();
        let id = id.to_owned();
        let auto = title.is_none();
        let title = title.unwrap_or(default_title).to_owned();
        self.write_at(move |c, now| {
            c.prepare_cached(SESSION_INSERT_SQL)?.execute(params![
                id,
                owner.tenant_id,
                owner.user_id,
                title,
                auto,
                now
            ])?;
            session_get(c, &owner, &id)?.ok_or(crate::store::StoreError::NotFound)
        })
        .await
    }

    async fn editor_session_get(
        &self,
        owner: &SessionOwner,
        id: &str,
    ) -> StoreResult<Option<EditorSession>> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.read(move |c| session_get(c, &owner, &id)).await
    }

    async fn editor_session_list(
        &self,
        q: SessionListQuery,
    ) -> StoreResult<(Vec<EditorSession>, u64)> {
        self.read(move |c| {
            let pattern = q.q.as_deref().map(like_pattern);
            let owner = &q.owner;
            let total: i64 = c
                .prepare_cached(&session_count_sql())?
                .query_row(params![owner.tenant_id, owner.user_id, pattern], |r| {
                    r.get(0)
                })?;
            let items = c
                .prepare_cached(&session_list_sql())?
                .query_map(
                    params![
                        owner.tenant_id,
                        owner.user_id,
                        pattern,
                        q.limit,
                        i64::try_from(q.offset).unwrap_or(i64::MAX)
                    ],
                    session_from,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((items, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    async fn editor_session_rename(
        &self,
        owner: &SessionOwner,
        id: &str,
        title: &str,
    ) -> StoreResult<Option<EditorSession>> {
        let (owner, id, title) = (owner.clone(), id.to_owned(), title.to_owned());
        self.write_at(move |c, now| {
            let event = Event {
                kind: "session_updated",
                subject: None,
                detail: None,
            };
            if record(c, &owner, &id, now, event)?.is_none() {
                return Ok(None);
            }
            c.prepare_cached(
                "UPDATE editor_sessions SET title = ?2, auto_title = FALSE WHERE id = ?1",
            )?
            .execute(params![id, title])?;
            session_get(c, &owner, &id)
        })
        .await
    }

    async fn editor_session_delete(&self, owner: &SessionOwner, id: &str) -> StoreResult<bool> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.write_at(move |c, now| {
            let event = Event {
                kind: "session_deleted",
                subject: None,
                detail: None,
            };
            if record(c, &owner, &id, now, event)?.is_none() {
                return Ok(false);
            }
            c.prepare_cached("UPDATE editor_sessions SET deleted_at = ?2 WHERE id = ?1")?
                .execute(params![id, now])?;
            Ok(true)
        })
        .await
    }

    async fn editor_message_add(
        &self,
        owner: &SessionOwner,
        new: NewMessage,
    ) -> StoreResult<Option<EditorMessage>> {
        let owner = owner.clone();
        self.write_at(move |c, now| message_add(c, &owner, new, now))
            .await
    }

    async fn editor_message_get(
        &self,
        owner: &SessionOwner,
        id: &str,
    ) -> StoreResult<Option<EditorMessage>> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.read(move |c| message_get(c, &owner, &id)).await
    }

    async fn editor_message_list(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        limit: u32,
        offset: u64,
    ) -> StoreResult<Option<(Vec<EditorMessage>, u64)>> {
        let (owner, session_id) = (owner.clone(), session_id.to_owned());
        self.read(move |c| {
            let Some(session) = session_get(c, &owner, &session_id)? else {
                return Ok(None);
            };
            let items = c
                .prepare_cached(&message_list_sql())?
                .query_map(
                    params![session_id, limit, i64::try_from(offset).unwrap_or(i64::MAX)],
                    message_from,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((
                items,
                u64::try_from(session.message_count).unwrap_or(0),
            )))
        })
        .await
    }

    async fn editor_messages_before(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        before_seq: i64,
        n: u32,
    ) -> StoreResult<Vec<EditorMessage>> {
        let (owner, session_id) = (owner.clone(), session_id.to_owned());
        self.read(move |c| {
            let mut items = c
                .prepare_cached(&messages_before_sql())?
                .query_map(
                    params![session_id, owner.tenant_id, owner.user_id, before_seq, n],
                    message_from,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            items.reverse();
            Ok(items)
        })
        .await
    }

    async fn editor_message_update(
        &self,
        owner: &SessionOwner,
        id: &str,
        patch: MessagePatch,
    ) -> StoreResult<Option<EditorMessage>> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.write_at(move |c, now| message_update(c, &owner, &id, patch, now))
            .await
    }

    async fn editor_message_delete(&self, owner: &SessionOwner, id: &str) -> StoreResult<bool> {
        let (owner, id) = (owner.clone(), id.to_owned());
        self.write_at(move |c, now| message_delete(c, &owner, &id, now))
            .await
    }

    async fn editor_message_of_job(
        &self,
        job_id: &str,
    ) -> StoreResult<Option<(SessionOwner, EditorMessage)>> {
        let job_id = job_id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&message_of_job_sql())?
                .query_row(params![job_id], |r| {
                    Ok((
                        SessionOwner::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                        message_at(r, 2)?,
                    ))
                })
                .optional()?)
        })
        .await
    }

    async fn editor_event_add(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        kind: &str,
        subject: Option<&str>,
        detail: Option<Value>,
    ) -> StoreResult<Option<SessionEvent>> {
        let (owner, session_id, kind) = (owner.clone(), session_id.to_owned(), kind.to_owned());
        let subject = subject.map(str::to_owned);
        self.write_at(move |c, now| {
            let event = Event {
                kind: &kind,
                subject: subject.as_deref(),
                detail,
            };
            record(c, &owner, &session_id, now, event)
        })
        .await
    }

    async fn editor_events_after(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<SessionEvent>> {
        let (owner, session_id) = (owner.clone(), session_id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(EVENTS_AFTER_SQL)?
                .query_map(
                    params![session_id, owner.tenant_id, owner.user_id, after_id, limit],
                    event_from,
                )?
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn editor_events_last_id(
        &self,
        owner: &SessionOwner,
        session_id: &str,
    ) -> StoreResult<Option<i64>> {
        let (owner, session_id) = (owner.clone(), session_id.to_owned());
        self.read(move |c| {
            Ok(c.prepare_cached(EVENTS_LAST_SQL)?
                .query_row(params![session_id, owner.tenant_id, owner.user_id], |r| {
                    r.get(0)
                })
                .optional()?)
        })
        .await
    }
}
