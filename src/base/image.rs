//! The image library's rows: who owns an image, the stored object its bytes live in, and the
//! record a client sees. The rules are in `crate::uploads`; the SQL in `crate::store`.

use crate::base::clock::Millis;

/// Who an image belongs to: one of a tenant's end users, or the tenant itself. Another owner
/// never sees the image (404), even within the same tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageOwner {
    pub tenant_id: String,
    /// `None`: the tenant (uploads with its API key).
    pub user_id: Option<String>,
}

impl ImageOwner {
    pub fn tenant(tenant_id: impl Into<String>) -> ImageOwner {
        ImageOwner {
            tenant_id: tenant_id.into(),
            user_id: None,
        }
    }

    pub fn user(tenant_id: impl Into<String>, user_id: impl Into<String>) -> ImageOwner {
        ImageOwner {
            tenant_id: tenant_id.into(),
            user_id: Some(user_id.into()),
        }
    }

    /// How the store keeps the owner column: `""` for the tenant (a plain equality on both
    /// engines, with no NULL rules to mind).
    pub fn user_column(&self) -> &str {
        self.user_id.as_deref().unwrap_or("")
    }
}

/// The life of a stored object. `Pending`: recorded before its files are written (so a crash
/// leaves a row that names them); `Ready`: holds at least one image record; `Doomed`: its last
/// record is gone (or it was pending too long) and its files are being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectState {
    Pending,
    Ready,
    Doomed,
}

impl ObjectState {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectState::Pending => "pending",
            ObjectState::Ready => "ready",
            ObjectState::Doomed => "doomed",
        }
    }

    pub fn parse(s: &str) -> Option<ObjectState> {
        [
            ObjectState::Pending,
            ObjectState::Ready,
            ObjectState::Doomed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// One stored image (and its thumbnail) in object storage: one per content hash per tenant,
/// shared by every record of those bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageObject {
    pub id: String,
    pub tenant_id: String,
    /// SHA-256 (hex) of the bytes the client sent.
    pub content_hash: String,
    pub key: String,
    pub thumb_key: String,
    /// Of what is stored (always `image/jpeg` today).
    pub mime: String,
    /// Of the upload, after its orientation was applied.
    pub width: u32,
    pub height: u32,
    /// Bytes of the stored (processed) image.
    pub size: u64,
    pub state: ObjectState,
    /// Image records on this object.
    pub holders: u32,
    pub created_at: Millis,
}

/// An image record: one owner's use of a stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    pub id: String,
    pub owner: ImageOwner,
    /// `uploaded` or `generated` (the editor's `type`).
    pub kind: String,
    /// The editor's session, if the upload named one.
    pub session_id: Option<String>,
    /// The client's file name, as sent (shown, never used as a path).
    pub original_name: Option<String>,
    /// Messages, works and jobs using the image; it cannot be deleted while above 0.
    pub ref_count: u32,
    pub object: ImageObject,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A record to add.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub id: String,
    pub owner: ImageOwner,
    pub kind: String,
    pub session_id: Option<String>,
    pub original_name: Option<String>,
    pub content_hash: String,
    pub created_at: Millis,
}

/// Which of an owner's images to list.
#[derive(Debug, Clone)]
pub struct ImageListQuery {
    pub owner: ImageOwner,
    pub session_id: Option<String>,
    pub kind: Option<String>,
    pub limit: u32,
    pub offset: u64,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageDeleteOutcome {
    /// Gone. `Some`: it was the object's last record; the object is now doomed and its files
    /// are for the caller to delete (then [`ImageObject`] is forgotten).
    Deleted(Option<ImageObject>),
    /// Still used by messages, works or jobs (`refCount` above 0).
    Referenced(u32),
    NotFound,
}
