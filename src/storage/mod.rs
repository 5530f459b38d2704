//! Where result images live, and the links clients get to them.
//!
//! Owns: the [`ObjectStore`] seam (a local folder by default; S3-compatible services at
//! scale, both through the `object_store` crate) and [`urls::UrlSigner`], which turns an
//! object key into a public URL or a signed, expiring link that Easel serves itself.
//! Must not touch: jobs, the database or HTTP routing.

pub mod urls;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found")]
    NotFound,
    #[error("invalid object key")]
    InvalidKey,
    #[error("object storage unavailable: {0}")]
    Unavailable(String),
}

/// One stored object.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub bytes: Bytes,
    pub content_type: String,
    /// Strong validator for HTTP caching.
    pub etag: String,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StorageError>;
    async fn get(&self, key: &str) -> Result<StoredObject, StorageError>;
    async fn exists(&self, key: &str) -> Result<bool, StorageError>;
}

/// Any `object_store` backend: local folder now, S3-compatible later.
pub struct ObjectStoreBackend {
    inner: Arc<dyn object_store::ObjectStore>,
}

impl ObjectStoreBackend {
    /// A folder on the local disk (created if missing).
    pub fn local(root: &Path) -> Result<ObjectStoreBackend, StorageError> {
        std::fs::create_dir_all(root)
            .map_err(|e| StorageError::Unavailable(format!("{}: {e}", root.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(root)
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        Ok(ObjectStoreBackend {
            inner: Arc::new(fs),
        })
    }
}

/// Object keys are made by Easel (`tenant/job/0.png`); anything else is refused.
fn object_path(key: &str) -> Result<ObjectPath, StorageError> {
    let valid = !key.is_empty()
        && key.len() <= 512
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    if !valid {
        return Err(StorageError::InvalidKey);
    }
    ObjectPath::parse(key).map_err(|_| StorageError::InvalidKey)
}

fn content_type_for(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("png") => "image/png",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "application/octet-stream",
    }
}

fn map_err(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        other => StorageError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl ObjectStore for ObjectStoreBackend {
    async fn put(&self, key: &str, bytes: Bytes, _content_type: &str) -> Result<(), StorageError> {
        let path = object_path(key)?;
        self.inner
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<StoredObject, StorageError> {
        let path = object_path(key)?;
        let result = self.inner.get(&path).await.map_err(map_err)?;
        let bytes = result.bytes().await.map_err(map_err)?;
        // Content-addressed validator: independent of which node or backend serves it.
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
        Ok(StoredObject {
            etag: format!("\"{}\"", &hex::encode(digest)[..32]),
            content_type: content_type_for(key).to_owned(),
            bytes,
        })
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = object_path(key)?;
        match self.inner.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(object_path("t_1/job_2/0.png").is_ok());
        for bad in ["", "../x", "a//b", "a/./b", "a/b c", "/abs", "a/%2e%2e"] {
            assert!(object_path(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn local_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStoreBackend::local(dir.path()).expect("store");
        store
            .put("t/j/0.png", Bytes::from_static(b"\x89PNG"), "image/png")
            .await
            .expect("put");
        let got = store.get("t/j/0.png").await.expect("get");
        assert_eq!(&got.bytes[..], b"\x89PNG");
        assert_eq!(got.content_type, "image/png");
        assert!(store.exists("t/j/0.png").await.expect("exists"));
        assert!(matches!(
            store.get("t/j/1.png").await,
            Err(StorageError::NotFound)
        ));
    }
}
