//! The objects this process stored in the last moments, kept in memory so that reading one
//! back soon after (the OpenAI facade's `b64_json` answer, a client downloading the result it
//! was just told of) costs no disk read or S3 round trip.
//!
//! Safe because keys are write-once (each names one attempt's image): a cached copy can only
//! be stale after a delete, and deletes made here evict. A delete made by another process is
//! seen after [`MAX_AGE`] at the latest.
//!
//! Hand-written rather than a cache crate: it is a byte-bounded FIFO with an age limit, which
//! the well-kept crates (moka, quick_cache) give only with background tasks or without age.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectStore, StorageError, StoredObject};

/// Bytes kept at most (the oldest objects go first).
pub const MAX_BYTES: usize = 8 << 20;
/// Objects kept at most: small images are many, and each entry costs its key twice.
pub const MAX_COUNT: usize = 1024;
/// Larger objects are not kept: one would push out everything else.
pub const MAX_OBJECT: usize = 2 << 20;
/// How long an object is served from memory.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// An [`ObjectStore`] that remembers what it recently put.
pub struct RecentObjects {
    inner: Arc<dyn ObjectStore>,
    kept: Mutex<Kept>,
}

struct Recent {
    bytes: Bytes,
    content_type: String,
    at: Instant,
}

#[derive(Default)]
struct Kept {
    objects: HashMap<String, Recent>,
    /// Keys in the order they were put, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

impl Kept {
    fn insert(&mut self, key: &str, object: Recent) {
        self.remove(key);
        let now = object.at;
        self.bytes += object.bytes.len();
        self.objects.insert(key.to_owned(), object);
        self.order.push_back(key.to_owned());
        self.evict(now);
    }

    fn remove(&mut self, key: &str) {
        if let Some(object) = self.objects.remove(key) {
            self.bytes -= object.bytes.len();
            self.order.retain(|k| k != key);
        }
    }

    /// Drops the oldest objects while there are too many, of too many bytes, or too old.
    fn evict(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let Some(object) = self.objects.get(oldest) else {
                self.order.pop_front();
                continue;
            };
            let within = self.bytes <= MAX_BYTES && self.objects.len() <= MAX_COUNT;
            if within && now.duration_since(object.at) < MAX_AGE {
                break;
            }
            self.bytes -= object.bytes.len();
            self.objects.remove(oldest);
            self.order.pop_front();
        }
    }

    fn get(&self, key: &str, now: Instant) -> Option<StoredObject> {
        let object = self.objects.get(key)?;
        (now.duration_since(object.at) < MAX_AGE).then(|| StoredObject {
            // Computed when read, as the backend does: most kept objects are never read.
            etag: super::etag_of(&object.bytes),
            content_type: object.content_type.clone(),
            bytes: object.bytes.clone(),
        })
    }
}

impl RecentObjects {
    pub fn new(inner: Arc<dyn ObjectStore>) -> RecentObjects {
        RecentObjects {
            inner,
            kept: Mutex::new(Kept::default()),
        }
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while holding the lock leaves the maps consistent (each step is whole).
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ObjectStore for RecentObjects {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StorageError> {
        self.inner.put(key, bytes.clone(), content_type).await?;
        if bytes.len() <= MAX_OBJECT {
            let object = Recent {
                bytes,
                content_type: content_type.to_owned(),
                at: Instant::now(),
            };
            self.kept().insert(key, object);
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<StoredObject, StorageError> {
        if let Some(object) = self.kept().get(key, Instant::now()) {
            return Ok(object);
        }
        self.inner.get(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        if self.kept().get(key, Instant::now()).is_some() {
            return Ok(true);
        }
        self.inner.exists(key).await
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.kept().remove(key);
        self.inner.delete(key).await
    }

    async fn presigned_get_url(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        self.inner.presigned_get_url(key, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ObjectStoreBackend;

    fn store(dir: &std::path::Path) -> (Arc<dyn ObjectStore>, RecentObjects) {
        let disk: Arc<dyn ObjectStore> = Arc::new(ObjectStoreBackend::local(dir).unwrap());
        (disk.clone(), RecentObjects::new(disk))
    }

    #[tokio::test]
    async fn a_recent_object_is_read_from_memory_as_the_disk_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, recent) = store(dir.path());
        let bytes = Bytes::from_static(b"\x89PNG fake image");
        recent
            .put("t/a.png", bytes.clone(), "image/png")
            .await
            .unwrap();
        // Removed behind the cache's back: a read still answers, so it came from memory.
        std::fs::remove_file(dir.path().join("t/a.png")).unwrap();
        let got = recent.get("t/a.png").await.unwrap();
        assert_eq!(got.bytes, bytes);
        assert_eq!(got.content_type, "image/png");
        // The same validator the disk gives for the same bytes.
        disk.put("t/b.png", bytes.clone(), "image/png")
            .await
            .unwrap();
        assert_eq!(got.etag, disk.get("t/b.png").await.unwrap().etag);
        assert!(recent.exists("t/a.png").await.unwrap());
    }

    #[tokio::test]
    async fn a_delete_evicts_and_the_oldest_go_first_past_the_byte_bound() {
        // Over a thousand puts: in memory, so the test does not wait on a thousand disk syncs.
        let recent = RecentObjects::new(Arc::new(ObjectStoreBackend::in_memory()));
        recent
            .put("t/gone.png", Bytes::from_static(b"x"), "image/png")
            .await
            .unwrap();
        recent.delete("t/gone.png").await.unwrap();
        assert!(matches!(
            recent.get("t/gone.png").await,
            Err(StorageError::NotFound)
        ));
        let big = Bytes::from(vec![7u8; MAX_OBJECT]);
        let count = MAX_BYTES / MAX_OBJECT + 1;
        for i in 0..count {
            recent
                .put(&format!("t/{i}.png"), big.clone(), "image/png")
                .await
                .unwrap();
        }
        {
            let kept = recent.kept();
            assert!(kept.bytes <= MAX_BYTES);
            assert!(!kept.objects.contains_key("t/0.png"));
            assert!(kept.objects.contains_key(&format!("t/{}.png", count - 1)));
            assert_eq!(kept.order.len(), kept.objects.len());
        }
        for i in 0..=MAX_COUNT {
            recent
                .put(
                    &format!("t/small{i}.png"),
                    Bytes::from_static(b"s"),
                    "image/png",
                )
                .await
                .unwrap();
        }
        let kept = recent.kept();
        assert_eq!(kept.objects.len(), MAX_COUNT);
        assert!(!kept.objects.contains_key("t/small0.png"));
    }

    #[test]
    fn an_old_object_is_not_served_and_goes_at_the_next_put() {
        let mut kept = Kept::default();
        let then = Instant::now();
        let object = |b: &'static [u8], at| Recent {
            bytes: Bytes::from_static(b),
            content_type: "image/png".into(),
            at,
        };
        kept.insert("old", object(b"old", then));
        assert!(kept.get("old", then).is_some());
        assert!(kept.get("old", then + MAX_AGE).is_none());
        kept.insert("new", object(b"new", then + MAX_AGE));
        assert!(!kept.objects.contains_key("old"));
        assert_eq!(kept.bytes, 3);
    }

    #[test]
    fn a_large_object_is_not_kept() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (_, recent) = store(dir.path());
        let huge = Bytes::from(vec![1u8; MAX_OBJECT + 1]);
        rt.block_on(recent.put("t/huge.png", huge.clone(), "image/png"))
            .unwrap();
        assert_eq!(recent.kept().bytes, 0);
        assert_eq!(rt.block_on(recent.get("t/huge.png")).unwrap().bytes, huge);
    }
}
