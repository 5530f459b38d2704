//! Result links, chosen by [`ResultLinks::url`] in this order:
//! 1. `<public_base_url>/<key>` when a CDN or public bucket fronts the objects;
//! 2. an S3 presigned GET (S3 storage with `storage.s3.presign`), valid `url_ttl_secs`;
//! 3. `<server>/v1/files/<key>?expires=<unix>&sig=<hex>`, an HMAC-SHA256 over the key and
//!    expiry that only this deployment can make, checked when the link is used; Easel serves
//!    the bytes from whichever backend holds them (a local folder, or the bucket as a proxy).
//!    A presigning failure also falls back to this link.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::ObjectStore;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct UrlSigner {
    secret: Vec<u8>,
    server_url: String,
    public_base_url: Option<String>,
    ttl_secs: u64,
}

impl UrlSigner {
    pub fn new(
        secret: &[u8],
        server_url: &str,
        public_base_url: Option<&str>,
        ttl_secs: u64,
    ) -> UrlSigner {
        UrlSigner {
            secret: secret.to_vec(),
            server_url: server_url.trim_end_matches('/').to_owned(),
            public_base_url: public_base_url.map(|u| u.trim_end_matches('/').to_owned()),
            ttl_secs,
        }
    }

    fn mac(&self, key: &str, expires: i64) -> Vec<u8> {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("hmac takes any key");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The URL a client gets for `key`, valid from `now_secs`.
    pub fn url(&self, key: &str, now_secs: i64) -> String {
        if let Some(base) = &self.public_base_url {
            return format!("{base}/{key}");
        }
        // Round the expiry up to the minute so repeated reads give the same URL (cacheable).
        let ttl = i64::try_from(self.ttl_secs).unwrap_or(i64::MAX / 2);
        let expires = (now_secs.saturating_add(ttl) / 60 + 1) * 60;
        let sig = hex::encode(self.mac(key, expires));
        format!(
            "{}/v1/files/{key}?expires={expires}&sig={sig}",
            self.server_url
        )
    }

    /// Whether a presented signature is valid and unexpired.
    pub fn verify(&self, key: &str, expires: i64, sig_hex: &str, now_secs: i64) -> bool {
        if expires < now_secs {
            return false;
        }
        let Ok(sig) = hex::decode(sig_hex) else {
            return false;
        };
        bool::from(self.mac(key, expires).ct_eq(&sig))
    }
}

/// How the URLs of result objects are made; cheap to clone. The one place that decides
/// (job views, event streams and webhooks all call [`ResultLinks::urls`]).
#[derive(Clone)]
pub struct ResultLinks {
    signer: UrlSigner,
    presign: Option<Presign>,
}

#[derive(Clone)]
struct Presign {
    objects: Arc<dyn ObjectStore>,
    ttl: Duration,
    /// Recently presigned URLs, so repeated reads of a job within a short window give the
    /// same URL (stable `ETag`s, cacheable by clients); a SigV4 URL embeds its signing time.
    cache: Arc<Mutex<PresignCache>>,
}

struct PresignCache {
    /// Seconds a presigned URL is handed out again; 0 disables the cache.
    window: i64,
    /// `now / window` of the entries.
    slot: i64,
    urls: HashMap<String, String>,
}

/// Bounds the cache between window changes (each entry is one result image).
const PRESIGN_CACHE_MAX: usize = 10_000;

impl ResultLinks {
    /// Easel-signed (or public) links only.
    pub fn signed(signer: UrlSigner) -> ResultLinks {
        ResultLinks {
            signer,
            presign: None,
        }
    }

    /// Presigned links from `objects` (an S3 backend), valid for the signer's TTL, unless a
    /// public base URL is configured; Easel-signed links when presigning is unavailable.
    pub fn presigned(signer: UrlSigner, objects: Arc<dyn ObjectStore>) -> ResultLinks {
        if signer.public_base_url.is_some() {
            return ResultLinks::signed(signer);
        }
        let ttl_secs = signer.ttl_secs;
        // Reused for at most a tenth of the lifetime (and a minute), so a handed-out URL
        // always has at least 90% of its lifetime left.
        let window = i64::try_from((ttl_secs / 10).min(60)).unwrap_or(60);
        ResultLinks {
            presign: Some(Presign {
                objects,
                ttl: Duration::from_secs(ttl_secs),
                cache: Arc::new(Mutex::new(PresignCache {
                    window,
                    slot: 0,
                    urls: HashMap::new(),
                })),
            }),
            signer,
        }
    }

    /// The URL a client gets for `key`, at `now_secs`.
    pub async fn url(&self, key: &str, now_secs: i64) -> String {
        let Some(presign) = &self.presign else {
            return self.signer.url(key, now_secs);
        };
        if let Some(url) = presign.cached(key, now_secs) {
            return url;
        }
        match presign.objects.presigned_get_url(key, presign.ttl).await {
            Ok(Some(url)) => {
                presign.remember(key, &url, now_secs);
                url
            }
            Ok(None) => self.signer.url(key, now_secs),
            Err(e) => {
                tracing::warn!(error = %e, key, "presigning failed; handing out an Easel-served link");
                self.signer.url(key, now_secs)
            }
        }
    }

    /// The URLs of several keys, in order.
    pub async fn urls(&self, keys: &[String], now_secs: i64) -> Vec<String> {
        let mut urls = Vec::with_capacity(keys.len());
        for key in keys {
            urls.push(self.url(key, now_secs).await);
        }
        urls
    }

    /// Whether an Easel-signed `/v1/files` link is valid and unexpired.
    pub fn verify(&self, key: &str, expires: i64, sig_hex: &str, now_secs: i64) -> bool {
        self.signer.verify(key, expires, sig_hex, now_secs)
    }
}

impl Presign {
    fn cached(&self, key: &str, now_secs: i64) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.window == 0 || cache.slot != now_secs.div_euclid(cache.window) {
            return None;
        }
        cache.urls.get(key).cloned()
    }

    fn remember(&self, key: &str, url: &str, now_secs: i64) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.window == 0 {
            return;
        }
        let slot = now_secs.div_euclid(cache.window);
        if slot < cache.slot {
            return;
        }
        if cache.slot != slot || cache.urls.len() >= PRESIGN_CACHE_MAX {
            cache.urls.clear();
            cache.slot = slot;
        }
        cache.urls.insert(key.to_owned(), url.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> (String, i64, String) {
        let (path, query) = url.split_once('?').expect("query");
        let key = path.split("/v1/files/").nth(1).expect("key").to_owned();
        let mut expires = 0;
        let mut sig = String::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => expires = v.parse().expect("int"),
                Some(("sig", v)) => sig = v.to_owned(),
                _ => {}
            }
        }
        (key, expires, sig)
    }

    #[test]
    fn signed_links_verify_and_expire() {
        let signer = UrlSigner::new(b"secret", "http://localhost:3000/", None, 3600);
        let url = signer.url("t/j/0.png", 1_000_000);
        assert!(url.starts_with("http://localhost:3000/v1/files/t/j/0.png?expires="));
        let (key, expires, sig) = parse(&url);
        assert!(signer.verify(&key, expires, &sig, 1_000_000));
        assert!(!signer.verify(&key, expires, &sig, expires + 1));
        assert!(!signer.verify("t/j/1.png", expires, &sig, 1_000_000));
        assert!(!signer.verify(&key, expires + 60, &sig, 1_000_000));
        let other = UrlSigner::new(b"other", "http://localhost:3000", None, 3600);
        assert!(!other.verify(&key, expires, &sig, 1_000_000));
    }

    #[test]
    fn public_base_url_wins() {
        let signer = UrlSigner::new(b"s", "http://x", Some("https://cdn.example.com/"), 60);
        assert_eq!(signer.url("a/b.png", 0), "https://cdn.example.com/a/b.png");
    }

    /// A backend whose presigned URLs count up, or fail, or are not available.
    struct FakeSigner {
        made: std::sync::atomic::AtomicUsize,
        answer: Result<bool, ()>,
    }

    #[async_trait::async_trait]
    impl ObjectStore for FakeSigner {
        async fn put(
            &self,
            _: &str,
            _: bytes::Bytes,
            _: &str,
        ) -> Result<(), super::super::StorageError> {
            Ok(())
        }
        async fn get(
            &self,
            _: &str,
        ) -> Result<super::super::StoredObject, super::super::StorageError> {
            Err(super::super::StorageError::NotFound)
        }
        async fn exists(&self, _: &str) -> Result<bool, super::super::StorageError> {
            Ok(false)
        }
        async fn delete(&self, _: &str) -> Result<(), super::super::StorageError> {
            Ok(())
        }
        async fn presigned_get_url(
            &self,
            key: &str,
            ttl: Duration,
        ) -> Result<Option<String>, super::super::StorageError> {
            match self.answer {
                Err(()) => Err(super::super::StorageError::Unavailable("down".into())),
                Ok(false) => Ok(None),
                Ok(true) => {
                    let n = self.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Some(format!(
                        "https://s3/{key}?ttl={}&n={n}",
                        ttl.as_secs()
                    )))
                }
            }
        }
    }

    fn fake(answer: Result<bool, ()>) -> Arc<dyn ObjectStore> {
        Arc::new(FakeSigner {
            made: Default::default(),
            answer,
        })
    }

    #[tokio::test]
    async fn presigned_links_are_reused_within_a_window() {
        let signer = UrlSigner::new(b"s", "http://x", None, 3600);
        let links = ResultLinks::presigned(signer, fake(Ok(true)));
        let first = links.url("a/b.png", 1_000_000).await;
        assert_eq!(first, "https://s3/a/b.png?ttl=3600&n=0");
        assert_eq!(links.url("a/b.png", 1_000_019).await, first);
        assert_eq!(
            links.url("c/d.png", 1_000_019).await,
            "https://s3/c/d.png?ttl=3600&n=1"
        );
        // The next minute: signed afresh.
        assert_eq!(
            links.url("a/b.png", 1_000_020).await,
            "https://s3/a/b.png?ttl=3600&n=2"
        );
        // Short lifetimes are never reused.
        let short =
            ResultLinks::presigned(UrlSigner::new(b"s", "http://x", None, 5), fake(Ok(true)));
        assert_ne!(short.url("a", 10).await, short.url("a", 10).await);
    }

    #[tokio::test]
    async fn presigning_falls_back_to_easel_links() {
        for answer in [Err(()), Ok(false)] {
            let signer = UrlSigner::new(b"s", "http://x", None, 3600);
            let links = ResultLinks::presigned(signer, fake(answer));
            let url = links.url("a/b.png", 1_000_000).await;
            assert!(
                url.starts_with("http://x/v1/files/a/b.png?expires="),
                "{url}"
            );
        }
        let public = UrlSigner::new(b"s", "http://x", Some("https://cdn.example.com"), 3600);
        let links = ResultLinks::presigned(public, fake(Ok(true)));
        assert_eq!(
            links.url("a/b.png", 0).await,
            "https://cdn.example.com/a/b.png"
        );
    }
}
