//! The editor's sessions: an end user's conversational editing sessions, their messages, and
//! what keeps every device of the user in step (the session event log, woken by the bus).
//!
//! Owns: the rules above the store's [`SessionStore`] (automatic titles, the `[editor]`
//! section, the bus notice a change sends), the context a generating message hands its job
//! (the session's earlier turns, [`context`]) and the `editor` job follower ([`follower`]) that
//! adds the assistant's answer when the job ends.
//! Must not touch: HTTP or the contract's bodies (`api::consumer::editor` renders them), SQL
//! (`store::sessions`), providers or the ledger (a job is priced and charged where every job
//! is, at submit).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::events::{Change, EventBus};
use crate::store::sessions::{
    EditorMessage, EditorSession, MessagePatch, NewMessage, SessionListQuery, SessionOwner,
};
use crate::store::{Store, StoreResult};

pub mod context;
pub mod feed;
pub mod follower;
pub mod hub;

/// The title of a session created without one, until its first message names it.
pub const DEFAULT_TITLE: &str = "New Chat";

/// `[editor]`: the editor's sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct EditorConfig {
    /// Earlier messages a generating message sends along as context.
    pub context_turns: u32,
}

impl Default for EditorConfig {
    fn default() -> Self {
        EditorConfig { context_turns: 6 }
    }
}

/// The bus notice of a change to one session: a session's sockets re-read its events.
pub fn notice(tenant_id: &str, session_id: &str) -> Change {
    Change::job(tenant_id, &topic(session_id))
}

/// How a session's notices are told apart on the bus (they share it with job notices).
const TOPIC_PREFIX: &str = "editor:";

/// The bus topic of one session.
pub fn topic(session_id: &str) -> String {
    format!("{TOPIC_PREFIX}{session_id}")
}

/// The title a first message gives a session: its first non-empty line, at most 50
/// characters (with `…` when cut).
pub fn title_from(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut title: String = line.chars().take(50).collect();
    if line.chars().count() > 50 {
        title.push('…');
    }
    Some(title)
}

/// The sessions of every user, on the store and the bus: each change is committed with its
/// event, then announced.
#[derive(Clone)]
pub struct Sessions {
    pub store: Arc<dyn Store>,
    pub events: Arc<dyn EventBus>,
    pub config: EditorConfig,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, events: Arc<dyn EventBus>, config: EditorConfig) -> Sessions {
        Sessions {
            store,
            events,
            config,
        }
    }

    fn announce(&self, owner: &SessionOwner, session_id: &str) {
        self.events.publish(notice(&owner.tenant_id, session_id));
    }

    pub async fn create(
        &self,
        owner: &SessionOwner,
        title: Option<&str>,
    ) -> StoreResult<EditorSession> {
        let id = ulid::Ulid::new().to_string();
        self.store
            .editor_session_create(owner, &id, title, DEFAULT_TITLE)
            .await
    }

    pub async fn get(&self, owner: &SessionOwner, id: &str) -> StoreResult<Option<EditorSession>> {
        self.store.editor_session_get(owner, id).await
    }

    pub async fn list(&self, query: SessionListQuery) -> StoreResult<(Vec<EditorSession>, u64)> {
        self.store.editor_session_list(query).await
    }

    pub async fn rename(
        &self,
        owner: &SessionOwner,
        id: &str,
        title: &str,
    ) -> StoreResult<Option<EditorSession>> {
        let renamed = self.store.editor_session_rename(owner, id, title).await?;
        if renamed.is_some() {
            self.announce(owner, id);
        }
        Ok(renamed)
    }

    pub async fn delete(&self, owner: &SessionOwner, id: &str) -> StoreResult<bool> {
        let deleted = self.store.editor_session_delete(owner, id).await?;
        if deleted {
            self.announce(owner, id);
        }
        Ok(deleted)
    }

    /// Adds a message (a first message names an untitled session).
    pub async fn add_message(
        &self,
        owner: &SessionOwner,
        mut new: NewMessage,
    ) -> StoreResult<Option<EditorMessage>> {
        if new.auto_title.is_none() {
            new.auto_title = title_from(&new.text);
        }
        let session_id = new.session_id.clone();
        let added = self.store.editor_message_add(owner, new).await?;
        if added.is_some() {
            self.announce(owner, &session_id);
        }
        Ok(added)
    }

    pub async fn get_message(
        &self,
        owner: &SessionOwner,
        id: &str,
    ) -> StoreResult<Option<EditorMessage>> {
        self.store.editor_message_get(owner, id).await
    }

    pub async fn update_message(
        &self,
        owner: &SessionOwner,
        id: &str,
        patch: MessagePatch,
    ) -> StoreResult<Option<EditorMessage>> {
        let updated = self.store.editor_message_update(owner, id, patch).await?;
        if let Some(message) = &updated {
            self.announce(owner, &message.session_id);
        }
        Ok(updated)
    }

    /// Deletes a message; the session it was in, if it was the owner's.
    pub async fn delete_message(
        &self,
        owner: &SessionOwner,
        id: &str,
    ) -> StoreResult<Option<String>> {
        let Some(message) = self.store.editor_message_get(owner, id).await? else {
            return Ok(None);
        };
        if !self.store.editor_message_delete(owner, id).await? {
            return Ok(None);
        }
        self.announce(owner, &message.session_id);
        Ok(Some(message.session_id))
    }

    /// Records a job's progress in its session's log and wakes the session's sockets.
    pub async fn job_progress(
        &self,
        owner: &SessionOwner,
        session_id: &str,
        job_id: &str,
        detail: serde_json::Value,
    ) -> StoreResult<()> {
        let recorded = self
            .store
            .editor_event_add(owner, session_id, "job_status", Some(job_id), Some(detail))
            .await?;
        if recorded.is_some() {
            self.announce(owner, session_id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_line() {
        assert_eq!(
            title_from("\n  Make it blue \nplease").as_deref(),
            Some("Make it blue")
        );
        assert_eq!(title_from("   "), None);
        let long = "x".repeat(60);
        assert_eq!(title_from(&long).map(|t| t.chars().count()), Some(51));
    }
}
