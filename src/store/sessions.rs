//! The editor's share of the store: an end user's editing sessions, their messages, and the
//! per-session event log that live sockets replay (migration 0017). Each method is one
//! transaction, and every change writes its event in that transaction, so a device that
//! resumes from an event id misses nothing and sees nothing twice.
//!
//! Ownership is part of every query: a session, a message or an event of another user (or
//! tenant) is `None`, never an error that would confirm it exists. Event ids and message order
//! come from one counter on the session row (`counter`), bumped under the row's lock, so a
//! session's events commit in id order on both engines.
//!
//! Must not touch: HTTP bodies, jobs or providers (`crate::sessions` owns the rules).

use async_trait::async_trait;
use serde_json::Value;

use super::StoreResult;
use crate::base::clock::Millis;

/// Whose sessions: one end user of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionOwner {
    pub tenant_id: String,
    pub user_id: String,
}

impl SessionOwner {
    pub fn new(tenant_id: impl Into<String>, user_id: impl Into<String>) -> SessionOwner {
        SessionOwner {
            tenant_id: tenant_id.into(),
            user_id: user_id.into(),
        }
    }
}

/// An editing session.
#[derive(Debug, Clone, PartialEq)]
pub struct EditorSession {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub title: String,
    /// No title was given: the first message names the session.
    pub auto_title: bool,
    pub message_count: i64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub deleted_at: Option<Millis>,
}

/// One message of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct EditorMessage {
    pub id: String,
    pub session_id: String,
    /// Order within the session (the id of its creation event).
    pub seq: i64,
    pub role: String,
    pub text: String,
    /// A JSON object.
    pub params: Value,
    pub image_ids: Vec<String>,
    pub edited_of: Option<String>,
    /// The job this (user) message started.
    pub job_id: Option<String>,
    /// The job this (assistant) message reports the end of.
    pub answers_job: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub session_id: String,
    pub role: String,
    pub text: String,
    pub params: Value,
    pub image_ids: Vec<String>,
    pub edited_of: Option<String>,
    pub job_id: Option<String>,
    /// At most one message answers a job: adding a second returns the first, unchanged.
    pub answers_job: Option<String>,
    /// The title a session without one takes from this message.
    pub auto_title: Option<String>,
}

/// What an update changes (`None`: left as it is).
#[derive(Debug, Clone, Default)]
pub struct MessagePatch {
    pub text: Option<String>,
    pub params: Option<Value>,
    pub image_ids: Option<Vec<String>>,
}

/// What happened in a session, in order: what a live socket sends.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    /// Per session, from 1, without gaps.
    pub id: i64,
    pub session_id: String,
    /// `message_created`, `message_updated`, `message_deleted`, `session_updated`,
    /// `session_deleted`, `job_status`.
    pub kind: String,
    /// The message (or job) it is about.
    pub subject: Option<String>,
    /// What the kind needs beyond the subject (a job's status, a deleted message's copy).
    pub detail: Option<Value>,
    pub at: Millis,
}

/// A page of the owner's live sessions, most recently touched first.
#[derive(Debug, Clone)]
pub struct SessionListQuery {
    pub owner: SessionOwner,
    /// Matches titles and message texts, case-insensitively.
    pub q: Option<String>,
    pub limit: u32,
    pub offset: u64,
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    async fn editor_session_create(
        &self,
        owner: &SessionOwner,
        id: &str,
        title: Option<&str>,
        default_title: &str,
    ) -> StoreResult<EditorSession>;
    /// The owner's session, unless deleted.
    async fn editor_session_get(
        &self,
        owner: &SessionOwner,
        id: &str,
    ) -> StoreResult<Option<EditorSession>>;
    /// The owner's live sessions and how many match in all.
    async fn editor_session_list(
        &self,
        query: SessionListQuery,
    ) -> StoreResult<(Vec<EditorSession>, u64)>;
    /// Renames the session (it keeps the name: no automatic title after this).
    async fn editor_session_rename(
        &self,
        owner: &SessionOwner,
        id: &str,
        title: &str,
    ) -> StoreResult<Option<EditorSession>>;
    /// Soft-deletes it; `false` if it is not the owner's live session.
    async fn editor_session_delete(&self, owner: &SessionOwner, id: &str) -> StoreResult<bool>;

    /// Adds a message to the owner's live session: counts it, touches the session, takes one
    /// reference on each of the owner's images it names (other ids are kept, unreferenced),
    /// names an untitled session. `None` if the session is not the owner's live one.
    async fn editor_message_add(
        &self,
        owner: &SessionOwner,
        new: NewMessage,
    ) -> StoreResult<Option<EditorMessage>>;
    /// The owner's message (in a live session).
    async fn editor_message_get(
        &self,
        owner: &SessionOwner,
        id: &str,
    ) -> StoreResult<Option<EditorMessage>>;
    /// A page of the session's messages, oldest first, and how many it has; `None` if it is
    /// not the owner's live session.
    async fn editor_message_list(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        limit: u32,
        offset: u64,
    ) -> StoreResult<Option<(Vec<EditorMessage>, u64)>>;
    /// The last `n` messages before the one with sequence `before_seq`, oldest first.
    async fn editor_messages_before(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        before_seq: i64,
        n: u32,
    ) -> StoreResult<Vec<EditorMessage>>;
    /// Changes a message; image references follow the new list.
    async fn editor_message_update(
        &self,
        owner: &SessionOwner,
        id: &str,
        patch: MessagePatch,
    ) -> StoreResult<Option<EditorMessage>>;
    /// Deletes a message and lets go of its image references.
    async fn editor_message_delete(&self, owner: &SessionOwner, id: &str) -> StoreResult<bool>;
    /// The message that started `job_id` and its owner (for the job's follow-up).
    async fn editor_message_of_job(
        &self,
        job_id: &str,
    ) -> StoreResult<Option<(SessionOwner, EditorMessage)>>;
    /// Records a job's progress in the session's event log (for live sockets).
    async fn editor_event_add(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        kind: &str,
        subject: Option<&str>,
        detail: Option<Value>,
    ) -> StoreResult<Option<SessionEvent>>;
    /// The session's events after `after_id`, in order, at most `limit` (deleted sessions
    /// included: their last event says so).
    async fn editor_events_after(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        after_id: i64,
        limit: u32,
    ) -> StoreResult<Vec<SessionEvent>>;
    /// The id of the session's last event (0: none; `None`: not the owner's session).
    async fn editor_events_last_id(
        &self,
        owner: &SessionOwner,
        session_id: &str,
    ) -> StoreResult<Option<i64>>;
}

/// `%q%` for `LIKE ... ESCAPE '\'`, lower-cased.
pub(crate) fn like_pattern(q: &str) -> String {
    let mut out = String::from("%");
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Session columns in the order both engines read them.
pub(crate) const SESSION_COLUMNS: &str = "id, tenant_id, user_id, title, auto_title, \
     message_count, created_at, updated_at, deleted_at";

/// Message columns (of `editor_messages m`) in the order both engines read them.
pub(crate) const MESSAGE_COLUMNS: &str = "m.id, m.session_id, m.seq, m.role, m.text, m.params, \
     m.image_ids, m.edited_of, m.job_id, m.answers_job, m.created_at, m.updated_at";

/// A JSON column's text as a value (`fallback` when it does not parse).
pub(crate) fn json_or(text: &str, fallback: Value) -> Value {
    serde_json::from_str(text).unwrap_or(fallback)
}

/// An image id list column.
pub(crate) fn ids_of(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A list of ids as stored.
pub(crate) fn ids_text(ids: &[String]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

// The statements both engines share, with `?N` parameters (PostgreSQL's `$N` by [`pg_sql`]).

/// Counts one change of the owner's live session: its new counter (the event id), or no row.
pub(crate) const BUMP_SQL: &str = "UPDATE editor_sessions SET counter = counter + 1, \
     touched_at = ?4, updated_at = ?4 \
     WHERE id = ?1 AND tenant_id = ?2 AND user_id = ?3 AND deleted_at IS NULL RETURNING counter";

pub(crate) const EVENT_INSERT_SQL: &str = "INSERT INTO editor_events \
     (session_id, id, kind, subject, detail, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

pub(crate) const MESSAGE_INSERT_SQL: &str = "INSERT INTO editor_messages (id, session_id, seq, \
     role, text, params, image_ids, edited_of, job_id, answers_job, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)";

pub(crate) const AUTO_TITLE_SQL: &str =
    "UPDATE editor_sessions SET title = ?2, auto_title = FALSE WHERE id = ?1 AND auto_title";

pub(crate) const COUNT_SQL: &str =
    "UPDATE editor_sessions SET message_count = message_count + ?2 WHERE id = ?1";

pub(crate) const SESSION_INSERT_SQL: &str = "INSERT INTO editor_sessions (id, tenant_id, \
     user_id, title, auto_title, touched_at, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)";

pub(crate) fn session_get_sql() -> String {
    format!(
        "SELECT {SESSION_COLUMNS} FROM editor_sessions \
         WHERE id = ?1 AND tenant_id = ?2 AND user_id = ?3 AND deleted_at IS NULL"
    )
}

const SESSION_FILTER: &str = "tenant_id = ?1 AND user_id = ?2 AND deleted_at IS NULL \
     AND (CAST(?3 AS TEXT) IS NULL OR lower(title) LIKE ?3 ESCAPE '\\' \
          OR EXISTS (SELECT 1 FROM editor_messages m WHERE m.session_id = editor_sessions.id \
                     AND lower(m.text) LIKE ?3 ESCAPE '\\'))";

pub(crate) fn session_count_sql() -> String {
    format!("SELECT count(*) FROM editor_sessions WHERE {SESSION_FILTER}")
}

pub(crate) fn session_list_sql() -> String {
    format!(
        "SELECT {SESSION_COLUMNS} FROM editor_sessions WHERE {SESSION_FILTER} \
         ORDER BY touched_at DESC, id DESC LIMIT ?4 OFFSET ?5"
    )
}

/// The owner's message in a live session.
pub(crate) fn message_get_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM editor_messages m \
         JOIN editor_sessions s ON s.id = m.session_id \
         WHERE m.id = ?1 AND s.tenant_id = ?2 AND s.user_id = ?3 AND s.deleted_at IS NULL"
    )
}

pub(crate) fn message_list_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM editor_messages m WHERE m.session_id = ?1 \
         ORDER BY m.seq LIMIT ?2 OFFSET ?3"
    )
}

pub(crate) fn messages_before_sql() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM editor_messages m \
         JOIN editor_sessions s ON s.id = m.session_id \
         WHERE m.session_id = ?1 AND s.tenant_id = ?2 AND s.user_id = ?3 AND m.seq < ?4 \
         ORDER BY m.seq DESC LIMIT ?5"
    )
}

pub(crate) fn message_by_answer_sql() -> String {
    format!("SELECT {MESSAGE_COLUMNS} FROM editor_messages m WHERE m.answers_job = ?1")
}

pub(crate) fn message_of_job_sql() -> String {
    format!(
        "SELECT s.tenant_id, s.user_id, {MESSAGE_COLUMNS} FROM editor_messages m \
         JOIN editor_sessions s ON s.id = m.session_id WHERE m.job_id = ?1 LIMIT 1"
    )
}

pub(crate) const MESSAGE_UPDATE_SQL: &str = "UPDATE editor_messages SET text = ?2, params = ?3, \
     image_ids = ?4, updated_at = ?5 WHERE id = ?1";

pub(crate) const EVENTS_AFTER_SQL: &str = "SELECT e.id, e.session_id, e.kind, e.subject, \
     e.detail, e.at FROM editor_events e JOIN editor_sessions s ON s.id = e.session_id \
     WHERE e.session_id = ?1 AND s.tenant_id = ?2 AND s.user_id = ?3 AND e.id > ?4 \
     ORDER BY e.id LIMIT ?5";

pub(crate) const EVENTS_LAST_SQL: &str = "SELECT counter FROM editor_sessions \
     WHERE id = ?1 AND tenant_id = ?2 AND user_id = ?3";

/// A shared statement in PostgreSQL's parameter style.
pub(crate) fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$")
}
