//! The image library's share of the store: stored objects (one per content hash per tenant,
//! counted by their records) and image records (an owner's use of an object, with the
//! `refCount` of messages, works and jobs using it). Each method is one transaction.
//!
//! An object's files are written between [`ImageStore::image_object_begin`] (a `pending` row
//! naming them, so a crash leaves something to collect) and [`ImageStore::image_add`] (ready,
//! with its first record). The last record's delete makes it `doomed`; the caller deletes the
//! files and then [`ImageStore::image_object_forget`]s it. [`ImageStore::image_objects_collect`]
//! finds what a crash left in between.

use async_trait::async_trait;

use super::StoreResult;
use crate::base::clock::Millis;
use crate::base::image::{
    ImageDeleteOutcome, ImageListQuery, ImageObject, ImageOwner, ImageRecord, NewImage,
};

#[async_trait]
pub trait ImageStore: Send + Sync + 'static {
    /// Adds a record on the tenant's ready object of `new.content_hash`, if there is one (no
    /// bytes to process or write then); `None` when there is none.
    async fn image_add_existing(&self, new: NewImage) -> StoreResult<Option<ImageRecord>>;
    /// Records a `pending` object whose files are about to be written.
    async fn image_object_begin(&self, object: ImageObject) -> StoreResult<()>;
    /// Makes the pending object `object_id` ready with `new` as its first record. If another
    /// upload of the same bytes made its object ready first, the record goes on that one and
    /// ours is returned, doomed, for the caller to delete. `NotFound` if ours is no longer
    /// pending (the collector took it).
    async fn image_add(
        &self,
        new: NewImage,
        object_id: &str,
    ) -> StoreResult<(ImageRecord, Option<ImageObject>)>;
    /// The owner's image; `None` for an unknown id or another owner's.
    async fn image_get(&self, owner: &ImageOwner, id: &str) -> StoreResult<Option<ImageRecord>>;
    /// The owner's images, newest first, and how many match in all.
    async fn image_list(&self, query: ImageListQuery) -> StoreResult<(Vec<ImageRecord>, u64)>;
    /// Adds `delta` to the `refCount` of each of the owner's `ids` (a use: +1; a release: -1,
    /// never below 0), all or nothing: the ids that are unknown (or another owner's) are
    /// returned and nothing changes.
    async fn image_refs(
        &self,
        owner: &ImageOwner,
        ids: &[String],
        delta: i32,
    ) -> StoreResult<Vec<String>>;
    /// Deletes the owner's record unless something still uses it.
    async fn image_delete(&self, owner: &ImageOwner, id: &str) -> StoreResult<ImageDeleteOutcome>;
    /// Dooms objects still pending from before `stale_before` (their upload died), then
    /// returns up to `limit` doomed objects, oldest first: files to delete.
    async fn image_objects_collect(
        &self,
        stale_before: Millis,
        limit: u32,
    ) -> StoreResult<Vec<ImageObject>>;
    /// Forgets a doomed object whose files are gone; `false` if it is not doomed.
    async fn image_object_forget(&self, object_id: &str) -> StoreResult<bool>;
}

/// An object's columns in the order both engines read them (`o` is `image_objects`).
pub(crate) const OBJECT_COLUMNS: &str = "o.id, o.tenant_id, o.content_hash, o.object_key, \
     o.thumb_key, o.mime, o.width, o.height, o.size, o.state, o.holders, o.created_at";

/// A record joined with its object: the record's columns, then [`OBJECT_COLUMNS`].
pub(crate) const RECORD_SELECT: &str = "SELECT i.id, i.tenant_id, i.owner_user, i.kind, \
     i.session_id, i.original_name, i.ref_count, i.created_at, i.updated_at, \
     o.id, o.tenant_id, o.content_hash, o.object_key, o.thumb_key, o.mime, o.width, o.height, \
     o.size, o.state, o.holders, o.created_at \
     FROM images i JOIN image_objects o ON o.id = i.object_id";
