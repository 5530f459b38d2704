//! The image library: every image a client gives Easel (the editor's and photo app's upload
//! routes, the tenant's `POST /v1/uploads`, jobs' `inputImageIds`) goes through [`Library`].
//!
//! Owns: validation by content and the processing pipeline ([`process`]), the bounded pool
//! it runs on, object keys, the dedupe of stored objects (one per content hash per tenant)
//! and their removal when no record holds them, including what a crash left ([`Library::collect`]).
//! Must not touch: HTTP, envelopes or routes (the API shapes each contract's answer from the
//! [`ImageRecord`] and [`UploadError`] given here), jobs or providers.
//!
//! Uses the engines through their traits: [`Store`] (its [`crate::store::images`] part) for the
//! rows, [`ObjectStore`] for the bytes, [`ResultLinks`] for the signed, expiring links.

pub mod intake;
pub mod process;

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::base::clock::{now_millis, Millis};
use crate::base::image::{
    ImageDeleteOutcome, ImageListQuery, ImageObject, ImageOwner, ImageRecord, NewImage, ObjectState,
};
use crate::storage::urls::ResultLinks;
use crate::storage::{ObjectStore, StorageError};
use crate::store::{Store, StoreError};

pub use process::{Pipeline, Processed, STORED_MIME};

/// `[uploads]`: what an upload may be and what is made of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct UploadsConfig {
    /// Largest file accepted (the editor's `MAX_FILE_SIZE`, 10 MB by default).
    pub max_bytes: u64,
    /// Largest width x height accepted, read from the header before any decoding.
    pub max_pixels: u64,
    /// The stored image fits inside this square (never enlarged).
    pub max_side: u32,
    pub thumb_side: u32,
    pub quality: u8,
    pub thumb_quality: u8,
    /// Images one request processes at once; 0: half the cores (at least 1), so one batch
    /// never takes every core.
    pub per_request: usize,
    /// An object still pending this long after its upload began is a crash's leftover.
    pub orphan_after_secs: u64,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            max_bytes: 10 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_side: 2048,
            thumb_side: 300,
            quality: 90,
            thumb_quality: 80,
            per_request: 0,
            orphan_after_secs: 3600,
        }
    }
}

impl UploadsConfig {
    pub fn pipeline(&self) -> Pipeline {
        Pipeline {
            max_bytes: self.max_bytes,
            max_pixels: self.max_pixels,
            max_side: self.max_side,
            thumb_side: self.thumb_side,
            quality: self.quality,
            thumb_quality: self.thumb_quality,
        }
    }
}

/// Why an upload (or a use of an image) was refused. Each route turns it into its contract's
/// error; [`UploadError::reason`] is a stable code for the job API's shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UploadError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is {size} bytes; the limit is {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("the image is {width}x{height} pixels; the limit is {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    BadEncoding(String),
    #[error("image not found")]
    NotFound,
    /// The store or object storage failed; the detail is for the log only.
    #[error("image storage is unavailable")]
    Unavailable(String),
}

impl UploadError {
    pub fn reason(&self) -> &'static str {
        match self {
            UploadError::Empty => "EMPTY_FILE",
            UploadError::TooLarge { .. } => "FILE_TOO_LARGE",
            UploadError::TooManyPixels { .. } => "TOO_MANY_PIXELS",
            UploadError::Unsupported(_) => "UNSUPPORTED_TYPE",
            UploadError::Corrupt(_) => "CORRUPT_IMAGE",
            UploadError::BadEncoding(_) => "BAD_ENCODING",
            UploadError::NotFound => "IMAGE_NOT_FOUND",
            UploadError::Unavailable(_) => "UNAVAILABLE",
        }
    }

    /// Too large in bytes or pixels (HTTP 413 on every contract that has it).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            UploadError::TooLarge { .. } | UploadError::TooManyPixels { .. }
        )
    }
}

impl From<StoreError> for UploadError {
    fn from(e: StoreError) -> Self {
        UploadError::Unavailable(e.to_string())
    }
}

impl From<StorageError> for UploadError {
    fn from(e: StorageError) -> Self {
        UploadError::Unavailable(e.to_string())
    }
}

/// One file to add.
#[derive(Debug, Clone)]
pub struct Upload {
    pub bytes: Bytes,
    /// The client's file name (shown, never a path).
    pub original_name: Option<String>,
    /// `uploaded` (default) or `generated`.
    pub kind: String,
    pub session_id: Option<String>,
}

impl Upload {
    pub fn new(bytes: Bytes) -> Upload {
        Upload {
            bytes,
            original_name: None,
            kind: "uploaded".into(),
            session_id: None,
        }
    }
}

/// The bytes of a stored image, for a provider.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub bytes: Bytes,
    pub mime: String,
}

/// What a maintenance pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    pub objects: u64,
    pub failed: u64,
}

/// The image library; cheap to clone.
#[derive(Clone)]
pub struct Library {
    store: Arc<dyn Store>,
    objects: Arc<dyn ObjectStore>,
    links: ResultLinks,
    config: UploadsConfig,
    /// Bounds the processing on blocking threads across all requests: one per core.
    cpu: Arc<Semaphore>,
    per_request: usize,
}

/// Doomed objects a maintenance pass takes at once.
const COLLECT_BATCH: u32 = 100;

impl Library {
    pub fn new(
        store: Arc<dyn Store>,
        objects: Arc<dyn ObjectStore>,
        links: ResultLinks,
        config: UploadsConfig,
    ) -> Library {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_request = match config.per_request {
            0 => (cores / 2).max(1),
            n => n,
        };
        Library {
            store,
            objects,
            links,
            config,
            cpu: Arc::new(Semaphore::new(cores)),
            per_request,
        }
    }

    pub fn config(&self) -> &UploadsConfig {
        &self.config
    }

    /// Validates, processes and stores one file for `owner`; the same bytes again share the
    /// stored object (and are not processed again).
    pub async fn upload(
        &self,
        owner: &ImageOwner,
        upload: Upload,
    ) -> Result<ImageRecord, UploadError> {
        let pipeline = self.config.pipeline();
        // The cheap refusals first, before hashing or a trip to the store.
        if upload.bytes.is_empty() {
            return Err(UploadError::Empty);
        }
        if upload.bytes.len() as u64 > pipeline.max_bytes {
            return Err(UploadError::TooLarge {
                size: upload.bytes.len() as u64,
                limit: pipeline.max_bytes,
            });
        }
        let new = NewImage {
            id: new_image_id(),
            owner: owner.clone(),
            kind: upload.kind,
            session_id: upload.session_id,
            original_name: upload.original_name,
            content_hash: hex::encode(Sha256::digest(&upload.bytes)),
            created_at: now_millis(),
        };
        if let Some(record) = self.store.image_add_existing(new.clone()).await? {
            return Ok(record);
        }
        let processed = self.process(upload.bytes).await?;
        let object = self.new_object(&new, &processed);
        self.store.image_object_begin(object.clone()).await?;
        let image = Bytes::from(processed.image);
        let thumb = Bytes::from(processed.thumb);
        let (stored, thumbed) = tokio::join!(
            self.objects.put(&object.key, image, STORED_MIME),
            self.objects.put(&object.thumb_key, thumb, STORED_MIME),
        );
        // On failure the pending row stays for the collector, which deletes what was written.
        stored?;
        thumbed?;
        let (record, redundant) = self.store.image_add(new, &object.id).await?;
        if let Some(redundant) = redundant {
            // Another upload of the same bytes finished first; ours is not needed.
            self.remove(&redundant).await;
        }
        Ok(record)
    }

    /// Uploads several files, each with its own result in order. At most `per_request` are
    /// processed at once, and all requests together at most one per core.
    pub async fn upload_many(
        &self,
        owner: &ImageOwner,
        uploads: Vec<Upload>,
    ) -> Vec<Result<ImageRecord, UploadError>> {
        futures::stream::iter(uploads)
            .map(|upload| self.upload(owner, upload))
            .buffered(self.per_request)
            .collect()
            .await
    }

    /// Runs the pipeline on the blocking pool, waiting for a core if all are busy.
    async fn process(&self, bytes: Bytes) -> Result<Processed, UploadError> {
        let _core = self
            .cpu
            .acquire()
            .await
            .map_err(|_| UploadError::Unavailable("image processing stopped".into()))?;
        let pipeline = self.config.pipeline();
        tokio::task::spawn_blocking(move || process::process(&bytes, &pipeline))
            .await
            .map_err(|e| UploadError::Unavailable(format!("image processing task: {e}")))?
    }

    fn new_object(&self, new: &NewImage, processed: &Processed) -> ImageObject {
        let id = new_image_id();
        let tenant: String = new
            .owner
            .tenant_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let hash = &new.content_hash;
        let stem = format!("uploads/{tenant}/{}/{hash}-{id}", &hash[..2]);
        ImageObject {
            key: format!("{stem}.jpg"),
            thumb_key: format!("{stem}_thumb.jpg"),
            id,
            tenant_id: new.owner.tenant_id.clone(),
            content_hash: hash.clone(),
            mime: STORED_MIME.into(),
            width: processed.width,
            height: processed.height,
            size: processed.image.len() as u64,
            state: ObjectState::Pending,
            holders: 0,
            created_at: new.created_at,
        }
    }

    /// The owner's image; `NotFound` for an unknown id or another owner's.
    pub async fn get(&self, owner: &ImageOwner, id: &str) -> Result<ImageRecord, UploadError> {
        self.store
            .image_get(owner, id)
            .await?
            .ok_or(UploadError::NotFound)
    }

    pub async fn list(
        &self,
        query: ImageListQuery,
    ) -> Result<(Vec<ImageRecord>, u64), UploadError> {
        Ok(self.store.image_list(query).await?)
    }

    /// Deletes the owner's image unless something uses it; the stored object goes with its
    /// last record.
    pub async fn delete(
        &self,
        owner: &ImageOwner,
        id: &str,
    ) -> Result<ImageDeleteOutcome, UploadError> {
        let outcome = self.store.image_delete(owner, id).await?;
        if let ImageDeleteOutcome::Deleted(Some(object)) = &outcome {
            self.remove(object).await;
        }
        Ok(outcome)
    }

    /// Marks each of `ids` used once more (a message, work or job took them), all or nothing:
    /// the ids the owner does not have come back, and then nothing changed.
    pub async fn retain(
        &self,
        owner: &ImageOwner,
        ids: &[String],
    ) -> Result<Vec<String>, UploadError> {
        Ok(self.store.image_refs(owner, ids, 1).await?)
    }

    /// Lets go of each of `ids` once (as [`Library::retain`]).
    pub async fn release(
        &self,
        owner: &ImageOwner,
        ids: &[String],
    ) -> Result<Vec<String>, UploadError> {
        Ok(self.store.image_refs(owner, ids, -1).await?)
    }

    /// The stored bytes of the owner's image (what a provider gets as an input).
    pub async fn load(&self, owner: &ImageOwner, id: &str) -> Result<LoadedImage, UploadError> {
        let record = self.get(owner, id).await?;
        let stored = self
            .objects
            .get(&record.object.key)
            .await
            .map_err(|e| match e {
                StorageError::NotFound => UploadError::NotFound,
                other => other.into(),
            })?;
        Ok(LoadedImage {
            bytes: stored.bytes,
            mime: record.object.mime,
        })
    }

    /// The link a client gets to `key` (signed and expiring, presigned, or public).
    pub async fn link(&self, key: &str) -> String {
        self.links.url(key, now_millis() / 1000).await
    }

    /// A maintenance pass: deletes the files of doomed objects (and of pending ones older than
    /// `orphan_after_secs`, which a crash left) and forgets them.
    pub async fn collect(&self, now: Millis) -> Result<Collected, UploadError> {
        let grace = i64::try_from(self.config.orphan_after_secs)
            .unwrap_or(i64::MAX / 2000)
            .saturating_mul(1000);
        let doomed = self
            .store
            .image_objects_collect(now.saturating_sub(grace), COLLECT_BATCH)
            .await?;
        let mut collected = Collected::default();
        for object in doomed {
            if self.remove(&object).await {
                collected.objects += 1;
            } else {
                collected.failed += 1;
            }
        }
        Ok(collected)
    }

    /// Deletes a doomed object's files, then forgets it; whether both happened (a failure is
    /// retried by the next [`Library::collect`]).
    async fn remove(&self, object: &ImageObject) -> bool {
        for key in [&object.key, &object.thumb_key] {
            if let Err(e) = self.objects.delete(key).await {
                tracing::warn!(error = %e, key, "image file not deleted; the collector retries");
                return false;
            }
        }
        match self.store.image_object_forget(&object.id).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, object = object.id, "deleted image object not forgotten");
                false
            }
        }
    }
}

/// A new image (or object) id: time-ordered, lowercase ULID.
pub fn new_image_id() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

/// Runs [`Library::collect`] every `every` until `stop`.
pub async fn run_collector(
    library: Library,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        match library.collect(now_millis()).await {
            Ok(c) if c.objects + c.failed > 0 => {
                tracing::info!(
                    removed = c.objects,
                    failed = c.failed,
                    "image objects collected"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "image collection failed"),
        }
    }
}
