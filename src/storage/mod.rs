//! Where result images live, and the links clients get to them.
//!
//! Owns: the [`ObjectStore`] seam (a local folder by default; any S3-compatible service at
//! scale, both through the `object_store` crate) and [`urls::ResultLinks`], which turns an
//! object key into the URL a client gets: a public URL, an S3-presigned link, or a signed,
//! expiring link that Easel serves itself; [`recent::RecentObjects`] keeps what this process
//! just stored in memory for a moment. Its `[storage]` configuration section lives in
//! [`config`].
//! Must not touch: jobs, the database or HTTP routing.

pub mod config;
pub mod recent;
pub mod urls;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore as _, PutOptions, PutPayload, RetryConfig,
};

pub use config::{S3Settings, StorageConfig, StorageKind};

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
    /// Removes `key`; a key that is not there is not an error. (How a worker takes back the
    /// images of an attempt whose job was canceled or taken over before it could finish.)
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// A URL that downloads `key` straight from the backend for `ttl`, with no Easel in
    /// between (an S3 presigned GET); `Ok(None)` when the backend cannot make one (a local
    /// folder, or S3 with presigning turned off).
    async fn presigned_get_url(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError>;
}

/// Any `object_store` backend: a local folder or an S3-compatible bucket.
pub struct ObjectStoreBackend {
    inner: Arc<dyn object_store::ObjectStore>,
    /// Makes presigned GET URLs (S3 with `presign` on).
    signer: Option<Arc<dyn Signer>>,
    /// Whether puts carry `Content-Type` and `Cache-Control` (the local folder refuses them).
    attributes: bool,
    /// For a local folder, puts are written straight to their file (see [`LocalWriter`]).
    local: Option<LocalWriter>,
}

/// Timeouts and retries for S3 calls: a worker storing a result or a proxied download
/// must not hang for minutes on an unreachable service.
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const S3_RETRIES: usize = 3;
const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// The objects are immutable (a key names one attempt's image), so they may be cached for
/// good by a CDN in front of the bucket.
const OBJECT_CACHE_CONTROL: &str = "max-age=31536000, immutable";

impl ObjectStoreBackend {
    /// A folder on the local disk (created if missing).
    pub fn local(root: &Path) -> Result<ObjectStoreBackend, StorageError> {
        std::fs::create_dir_all(root)
            .map_err(|e| StorageError::Unavailable(format!("{}: {e}", root.display())))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(root)
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        Ok(ObjectStoreBackend {
            inner: Arc::new(fs),
            signer: None,
            attributes: false,
            local: Some(LocalWriter::new(root)),
        })
    }

    /// An S3-compatible bucket (settings checked by `Config::validate`). Makes no network
    /// call: use [`ObjectStoreBackend::check`] to see whether the bucket answers.
    pub fn s3(settings: &S3Settings) -> Result<ObjectStoreBackend, StorageError> {
        let store = s3_builder(settings, settings.endpoint.as_deref())?
            .build()
            .map_err(|e| StorageError::Unavailable(format!("storage.s3: {e}")))?;
        let store = Arc::new(store);
        let signer: Option<Arc<dyn Signer>> = match (settings.presign, &settings.public_endpoint) {
            (false, _) => None,
            (true, None) => Some(store.clone()),
            // Links are signed for the address clients use; signing makes no network call.
            (true, Some(public)) => Some(Arc::new(
                s3_builder(settings, Some(public))?
                    .build()
                    .map_err(|e| StorageError::Unavailable(format!("storage.s3: {e}")))?,
            ) as Arc<AmazonS3>),
        };
        Ok(ObjectStoreBackend {
            inner: store,
            signer,
            attributes: true,
            local: None,
        })
    }

    /// Whether the bucket answers: a listing of one unused prefix (a HEAD cannot tell a
    /// missing bucket from a missing object). Wrong credentials, a missing bucket or an
    /// unreachable endpoint make it fail.
    pub async fn check(&self) -> Result<(), StorageError> {
        let prefix = ObjectPath::from("easel-startup-check");
        self.inner
            .list_with_delimiter(Some(&prefix))
            .await
            .map(|_| ())
            .map_err(|e| StorageError::Unavailable(e.to_string()))
    }
}

/// An `AmazonS3Builder` for the settings, talking to `endpoint`.
fn s3_builder(
    settings: &S3Settings,
    endpoint: Option<&str>,
) -> Result<AmazonS3Builder, StorageError> {
    let bucket = settings
        .bucket
        .as_deref()
        .ok_or_else(|| StorageError::Unavailable("storage.s3.bucket is not set".into()))?;
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(settings.region())
        .with_allow_http(settings.allow_http)
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(settings.allow_http)
                .with_connect_timeout(S3_CONNECT_TIMEOUT)
                .with_timeout(S3_REQUEST_TIMEOUT),
        )
        .with_retry(RetryConfig {
            max_retries: S3_RETRIES,
            retry_timeout: S3_RETRY_TIMEOUT,
            ..RetryConfig::default()
        });
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret.expose());
    }
    if let Some(endpoint) = endpoint {
        let endpoint = endpoint.trim_end_matches('/');
        if settings.path_style {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        } else {
            // object_store takes a virtual-hosted endpoint with the bucket already in it.
            builder = builder
                .with_endpoint(virtual_hosted_endpoint(endpoint, bucket)?)
                .with_virtual_hosted_style_request(true);
        }
    } else {
        builder = builder.with_virtual_hosted_style_request(!settings.path_style);
    }
    Ok(builder)
}

/// `https://host:port` and `bucket` → `https://bucket.host:port`.
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> Result<String, StorageError> {
    let mut url = url::Url::parse(endpoint)
        .map_err(|e| StorageError::Unavailable(format!("storage.s3.endpoint: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| StorageError::Unavailable("storage.s3.endpoint has no host".into()))?
        .to_owned();
    url.set_host(Some(&format!("{bucket}.{host}")))
        .map_err(|e| StorageError::Unavailable(format!("storage.s3.endpoint: {e}")))?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Object keys are made by Easel (`tenant/2026-11-23/job-1-0.png`); anything else is refused.
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

/// Writes local objects in place: `object_store`'s local folder stages every put in a
/// temporary file and renames it, which doubled the directory work per image; Easel's keys
/// are write-once (they carry the attempt's fence) and are published only after the write
/// returns, so a half-written file is never linked and in-place is safe.
struct LocalWriter {
    root: std::path::PathBuf,
    /// Bounds the blocking threads writing files at once ([`LOCAL_WRITERS`]).
    writers: Arc<tokio::sync::Semaphore>,
}

/// Files written (and synced) at once. Each write waits on its `fdatasync`, and syncs in
/// flight together let the disk serve them with fewer cache flushes: on the 2-core box a
/// backlog drained at 2,553 jobs/s with 2 writers, 4,400-5,200 with 32, no more with 64.
const LOCAL_WRITERS: usize = 32;

impl LocalWriter {
    fn new(root: &Path) -> LocalWriter {
        LocalWriter {
            root: root.to_path_buf(),
            writers: Arc::new(tokio::sync::Semaphore::new(LOCAL_WRITERS)),
        }
    }

    async fn put(&self, path: &ObjectPath, bytes: Bytes) -> Result<(), StorageError> {
        let file = self.root.join(path.as_ref());
        let _slot = self
            .writers
            .acquire()
            .await
            .map_err(|_| StorageError::Unavailable("local writer closed".into()))?;
        tokio::task::spawn_blocking(move || write_file(&file, &bytes))
            .await
            .map_err(|e| StorageError::Unavailable(format!("local write task: {e}")))?
            .map_err(|e| StorageError::Unavailable(format!("local write: {e}")))
    }
}

/// Writes `bytes` to `file` and makes them durable before returning: the job that names this
/// file is committed SUCCEEDED (durably) right after, and a crash must not leave it pointing
/// at an empty file. A folder made here is synced too, so its entry survives as well (a file's
/// own entry is logged with its data by journaling filesystems: ext4, XFS).
fn write_file(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match write_synced(file, bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // First object of its folder.
            if let Some(parent) = file.parent() {
                create_dir_all_synced(parent)?;
            }
            write_synced(file, bytes)
        }
        other => other,
    }
}

fn write_synced(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::fs::File::create(file)?;
    out.write_all(bytes)?;
    out.sync_data()
}

/// `create_dir_all`, then a sync of the folder holding each folder it made, so every new
/// entry is on disk (the deepest folder's own entries are the files, synced as written).
fn create_dir_all_synced(dir: &Path) -> std::io::Result<()> {
    let mut made = Vec::new();
    let mut cursor = Some(dir);
    while let Some(path) = cursor.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        made.push(path);
        cursor = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for parent in made.iter().filter_map(|p| p.parent()) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// A content-addressed validator: the same whichever node or backend serves the object.
fn etag_of(bytes: &[u8]) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    format!("\"{}\"", &hex::encode(digest)[..32])
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

#[cfg(test)]
impl ObjectStoreBackend {
    /// Objects in memory, for tests of what wraps a store (no disk syncs to wait on).
    pub(crate) fn in_memory() -> ObjectStoreBackend {
        ObjectStoreBackend {
            inner: Arc::new(object_store::memory::InMemory::new()),
            signer: None,
            attributes: false,
            local: None,
        }
    }
}

#[async_trait]
impl ObjectStore for ObjectStoreBackend {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StorageError> {
        let path = object_path(key)?;
        if let Some(local) = &self.local {
            return local.put(&path, bytes).await;
        }
        let mut options = PutOptions::default();
        if self.attributes {
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
            attributes.insert(Attribute::CacheControl, OBJECT_CACHE_CONTROL.into());
            options.attributes = attributes;
        }
        self.inner
            .put_opts(&path, PutPayload::from_bytes(bytes), options)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<StoredObject, StorageError> {
        let path = object_path(key)?;
        let result = self.inner.get(&path).await.map_err(map_err)?;
        let stored_type = result
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.as_ref().to_owned())
            .filter(|t| !t.is_empty());
        let bytes = result.bytes().await.map_err(map_err)?;
        Ok(StoredObject {
            etag: etag_of(&bytes),
            content_type: stored_type.unwrap_or_else(|| content_type_for(key).to_owned()),
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

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = object_path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn presigned_get_url(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        let path = object_path(key)?;
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let url = signer
            .signed_url(reqwest::Method::GET, &path, ttl)
            .await
            .map_err(map_err)?;
        Ok(Some(url.to_string()))
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
        store.delete("t/j/0.png").await.expect("delete");
        assert!(!store.exists("t/j/0.png").await.expect("exists"));
        store
            .delete("t/j/0.png")
            .await
            .expect("a second delete is fine");
        assert!(matches!(
            store.get("t/j/1.png").await,
            Err(StorageError::NotFound)
        ));
    }

    fn s3_settings(endpoint: Option<&str>, path_style: bool) -> S3Settings {
        S3Settings {
            endpoint: endpoint.map(str::to_owned),
            bucket: Some("images".into()),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some(crate::base::secret::Secret::new("wJalrXUtnFEMI")),
            path_style,
            ..Default::default()
        }
    }

    async fn presign(settings: &S3Settings) -> url::Url {
        let store = ObjectStoreBackend::s3(settings).expect("s3");
        let url = store
            .presigned_get_url("t/j/0.png", Duration::from_secs(600))
            .await
            .expect("presign")
            .expect("a URL");
        url::Url::parse(&url).expect("url")
    }

    #[tokio::test]
    async fn presigned_urls_follow_the_addressing_style() {
        let r2 = "https://acc123.r2.cloudflarestorage.com";
        let url = presign(&s3_settings(Some(r2), false)).await;
        assert_eq!(
            url.host_str(),
            Some("images.acc123.r2.cloudflarestorage.com")
        );
        assert_eq!(url.path(), "/t/j/0.png");
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["X-Amz-Expires"], "600");
        assert!(query["X-Amz-Credential"].contains("/auto/s3/aws4_request"));
        assert!(!url.as_str().contains("wJalrXUtnFEMI"));

        let url = presign(&s3_settings(Some(r2), true)).await;
        assert_eq!(url.host_str(), Some("acc123.r2.cloudflarestorage.com"));
        assert_eq!(url.path(), "/images/t/j/0.png");

        let url = presign(&s3_settings(None, false)).await;
        assert_eq!(url.host_str(), Some("images.s3.us-east-1.amazonaws.com"));

        let mut public = s3_settings(Some("http://minio:9000"), true);
        public.allow_http = true;
        public.public_endpoint = Some("http://localhost:9000".into());
        let url = presign(&public).await;
        assert_eq!(
            url.as_str().split('?').next(),
            Some("http://localhost:9000/images/t/j/0.png")
        );

        let mut off = s3_settings(Some(r2), false);
        off.presign = false;
        let store = ObjectStoreBackend::s3(&off).expect("s3");
        assert!(store
            .presigned_get_url("t/j/0.png", Duration::from_secs(60))
            .await
            .expect("presign")
            .is_none());
    }

    #[test]
    fn virtual_hosted_endpoints_put_the_bucket_in_the_host() {
        assert_eq!(
            virtual_hosted_endpoint("https://oss-cn-hangzhou.aliyuncs.com/", "images").expect("ok"),
            "https://images.oss-cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(
            virtual_hosted_endpoint("http://minio:9000", "images").expect("ok"),
            "http://images.minio:9000"
        );
        assert!(virtual_hosted_endpoint("http://127.0.0.1:9000", "images").is_err());
    }
}
