//! The `[storage]` configuration section: where result images are kept (a local folder or an
//! S3-compatible bucket), how result links are made, and the section's validation.
//!
//! Owns: [`StorageConfig`], [`S3Settings`], their defaults and checks. A bad value is refused
//! with the key it concerns; the configuration loader reports it. Must not touch: the loader
//! itself (layers, environment names), which lives in `config`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::base::secret::Secret;
use crate::base::settings::Invalid;

/// Where result images are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A folder on this machine (`storage.path`): one node only.
    #[default]
    Local,
    /// An S3-compatible bucket (`storage.s3`): AWS S3, Cloudflare R2, MinIO, Aliyun OSS, ...
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// `local` (default) or `s3`. Setting `R2_BUCKET_NAME` selects `s3`.
    pub kind: StorageKind,
    /// Folder for images when `kind = "local"`. Default: `<data_dir>/objects`.
    pub path: Option<PathBuf>,
    /// Origin name: `R2_PUBLIC_BASE_URL`. When set, result URLs are
    /// `<public_base_url>/<key>` instead of expiring links.
    pub public_base_url: Option<String>,
    /// Lifetime of an expiring result link (Easel-signed or S3-presigned).
    pub url_ttl_secs: u64,
    /// HMAC secret for Easel-signed links. Default: generated into `<data_dir>/url-signing.key`.
    pub signing_secret: Option<Secret>,
    /// The bucket when `kind = "s3"`.
    pub s3: S3Settings,
}

/// An S3-compatible bucket. The origin's `R2_*` variables fill it in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Settings {
    /// Service URL, e.g. `https://<account>.r2.cloudflarestorage.com` (from `R2_ACCOUNT_ID`)
    /// or `http://minio:9000`. Default: AWS S3 in `region`.
    pub endpoint: Option<String>,
    /// Origin name: `R2_BUCKET_NAME`.
    pub bucket: Option<String>,
    /// Default: `auto` on Cloudflare R2, otherwise `us-east-1`.
    pub region: Option<String>,
    /// Origin name: `R2_ACCESS_KEY_ID`. Without a key pair, credentials come from the
    /// environment (instance role, web identity).
    pub access_key_id: Option<String>,
    /// Origin name: `R2_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<Secret>,
    /// Permit a plain `http://` endpoint (MinIO or a test server on a private network).
    pub allow_http: bool,
    /// `true`: `<endpoint>/<bucket>/<key>` (MinIO, most test servers); `false`:
    /// `<bucket>.<endpoint host>/<key>` (virtual-hosted: AWS, R2, Aliyun OSS).
    pub path_style: bool,
    /// Result URLs are presigned GET links to the bucket (unless `storage.public_base_url`
    /// is set). `false`: Easel's own signed `/v1/files/...` links, which Easel serves from
    /// the bucket, for buckets clients cannot reach.
    pub presign: bool,
    /// The endpoint written into presigned links when clients reach the service at another
    /// address than Easel does (e.g. `http://localhost:9000` for MinIO in docker compose).
    /// Default: `endpoint`.
    pub public_endpoint: Option<String>,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            bucket: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            path_style: false,
            presign: true,
            public_endpoint: None,
        }
    }
}

/// Cloudflare R2's S3 endpoint for an account (`R2_ACCOUNT_ID`).
pub fn r2_endpoint(account_id: &str) -> String {
    format!("https://{account_id}.r2.cloudflarestorage.com")
}

impl S3Settings {
    /// The signing region: `region`, else `auto` on R2, else `us-east-1`.
    pub fn region(&self) -> String {
        if let Some(region) = self.region.as_deref().filter(|r| !r.trim().is_empty()) {
            return region.trim().to_owned();
        }
        let on_r2 = self
            .endpoint
            .as_deref()
            .and_then(|e| url::Url::parse(e).ok())
            .and_then(|u| {
                u.host_str()
                    .map(|h| h.ends_with(".r2.cloudflarestorage.com"))
            })
            .unwrap_or(false);
        if on_r2 { "auto" } else { "us-east-1" }.to_owned()
    }
}

/// An S3 service URL: http(s), a host, no path or query; plain http only if allowed.
fn check_endpoint(key: &'static str, endpoint: &str, allow_http: bool) -> Result<(), Invalid> {
    let invalid = |problem: String| (key, problem);
    let parsed = url::Url::parse(endpoint).map_err(|e| {
        invalid(format!(
            "is not a URL ({e}); e.g. https://<account>.r2.cloudflarestorage.com"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid(
            "must be an http:// or https:// URL with a host".into(),
        ));
    }
    if parsed.query().is_some() || !matches!(parsed.path(), "" | "/") {
        return Err(invalid(
            "must be the service's base URL, without a path or query (the bucket goes in storage.s3.bucket)".into(),
        ));
    }
    if parsed.scheme() == "http" && !allow_http {
        return Err(invalid(
            "is plain http://; set storage.s3.allow_http = true to permit it".into(),
        ));
    }
    Ok(())
}

/// SigV4 presigned URLs live at most a week.
pub const MAX_PRESIGNED_TTL_SECS: u64 = 7 * 24 * 3600;

impl StorageConfig {
    /// The first problem found, with the key it concerns.
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key: &'static str, problem: &str| (key, problem.to_owned());
        if self.url_ttl_secs == 0 {
            return Err(invalid("storage.url_ttl_secs", "must be at least 1"));
        }
        if let Some(base) = &self.public_base_url {
            let ok = url::Url::parse(base)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(invalid(
                    "storage.public_base_url",
                    "must be an http:// or https:// URL (R2_PUBLIC_BASE_URL)",
                ));
            }
        }
        let s3 = &self.s3;
        if self.kind == StorageKind::Local {
            if s3.bucket.is_some() {
                return Err(invalid(
                    "storage.kind",
                    "is \"local\" but storage.s3.bucket is set; set storage.kind = \"s3\" \
                     (EASEL_STORAGE__KIND=s3) to use the bucket, or remove the bucket",
                ));
            }
            return Ok(());
        }
        let Some(bucket) = s3.bucket.as_deref() else {
            return Err(invalid(
                "storage.s3.bucket",
                "is required when storage.kind = \"s3\" (EASEL_STORAGE__S3__BUCKET or R2_BUCKET_NAME)",
            ));
        };
        // The S3 naming rules (AWS, R2, MinIO and OSS share them).
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !bucket_ok {
            return Err(invalid(
                "storage.s3.bucket",
                "must be 3 to 63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit",
            ));
        }
        for (key, endpoint) in [
            ("storage.s3.endpoint", &s3.endpoint),
            ("storage.s3.public_endpoint", &s3.public_endpoint),
        ] {
            if let Some(endpoint) = endpoint.as_deref() {
                check_endpoint(key, endpoint, s3.allow_http)?;
            }
        }
        let ip_endpoint = [&s3.endpoint, &s3.public_endpoint].into_iter().any(|e| {
            e.as_deref()
                .and_then(|e| url::Url::parse(e).ok())
                .is_some_and(|u| matches!(u.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))))
        });
        if ip_endpoint && !s3.path_style {
            return Err(invalid(
                "storage.s3.path_style",
                "must be true for an endpoint given as an IP address (virtual-hosted requests put the bucket in the host name)",
            ));
        }
        if s3.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(invalid("storage.s3.region", "must not be empty"));
        }
        let key_id = s3.access_key_id.as_deref();
        let secret = s3.secret_access_key.as_ref().map(Secret::expose);
        match (key_id, secret) {
            (Some(""), _) => {
                return Err(invalid(
                    "storage.s3.access_key_id",
                    "is empty (R2_ACCESS_KEY_ID)",
                ))
            }
            (_, Some("")) => {
                return Err(invalid(
                    "storage.s3.secret_access_key",
                    "is empty (R2_SECRET_ACCESS_KEY)",
                ))
            }
            (Some(_), None) => {
                return Err(invalid(
                    "storage.s3.secret_access_key",
                    "is required with storage.s3.access_key_id (R2_SECRET_ACCESS_KEY)",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "storage.s3.access_key_id",
                    "is required with storage.s3.secret_access_key (R2_ACCESS_KEY_ID)",
                ))
            }
            _ => {}
        }
        if self.public_base_url.is_none()
            && s3.presign
            && self.url_ttl_secs > MAX_PRESIGNED_TTL_SECS
        {
            return Err(invalid(
                "storage.url_ttl_secs",
                "presigned S3 links last at most 604800 s (7 days); lower it or set storage.public_base_url",
            ));
        }
        Ok(())
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: None,
            public_base_url: None,
            kind: StorageKind::Local,
            url_ttl_secs: 3600,
            signing_secret: None,
            s3: S3Settings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error as the configuration loader shows it.
    fn shown((key, problem): Invalid) -> String {
        format!("{key}: {problem}")
    }

    #[test]
    fn bad_storage_settings_name_their_key_and_hide_secrets() {
        let s3 = |tweak: &dyn Fn(&mut S3Settings)| {
            let mut c = StorageConfig {
                kind: StorageKind::S3,
                s3: S3Settings {
                    endpoint: Some("https://s3.example.com".into()),
                    bucket: Some("images".into()),
                    access_key_id: Some("id".into()),
                    secret_access_key: Some(Secret::new("hidden-secret")),
                    ..Default::default()
                },
                ..Default::default()
            };
            tweak(&mut c.s3);
            c.validate().map_err(shown)
        };
        s3(&|_| {}).expect("valid");
        type Tweak<'a> = &'a dyn Fn(&mut S3Settings);
        let cases: [(Tweak, &str); 9] = [
            (
                &|s| s.endpoint = Some("https://10.0.0.5:9000".into()),
                "storage.s3.path_style",
            ),
            (
                &|s| s.public_endpoint = Some("https://cdn.example.com/x?y".into()),
                "storage.s3.public_endpoint",
            ),
            (&|s| s.bucket = None, "storage.s3.bucket"),
            (
                &|s| s.bucket = Some("Bad_Bucket".into()),
                "storage.s3.bucket",
            ),
            (
                &|s| s.endpoint = Some("not a url".into()),
                "storage.s3.endpoint",
            ),
            (
                &|s| s.endpoint = Some("https://s3.example.com/images".into()),
                "storage.s3.endpoint",
            ),
            (&|s| s.access_key_id = None, "storage.s3.access_key_id"),
            (
                &|s| s.secret_access_key = None,
                "storage.s3.secret_access_key",
            ),
            (&|s| s.region = Some(" ".into()), "storage.s3.region"),
        ];
        for (tweak, key) in cases {
            let err = s3(tweak).expect_err(key);
            assert!(err.contains(key), "{err}");
            assert!(!err.contains("hidden-secret"), "{err}");
        }
        let mut c = StorageConfig::default();
        c.s3.bucket = Some("images".into());
        let err = c
            .validate()
            .map_err(shown)
            .expect_err("bucket without kind");
        assert!(err.contains("storage.kind"), "{err}");
        let c = StorageConfig {
            public_base_url: Some("cdn.example.com".into()),
            ..Default::default()
        };
        let err = c.validate().map_err(shown).expect_err("relative base");
        assert!(err.contains("storage.public_base_url"), "{err}");
        let mut c = StorageConfig {
            kind: StorageKind::S3,
            url_ttl_secs: MAX_PRESIGNED_TTL_SECS + 1,
            ..Default::default()
        };
        c.s3.bucket = Some("images".into());
        let err = c.validate().map_err(shown).expect_err("ttl");
        assert!(err.contains("storage.url_ttl_secs"), "{err}");
        c.public_base_url = Some("https://cdn.example.com".into());
        c.validate().expect("public links do not expire");
    }
}
