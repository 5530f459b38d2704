//! Configuration: defaults that run, then `easel.toml`, then the origin's environment names
//! (`PORT`, `DATABASE_URL`, ...), then `EASEL_*` variables (`EASEL_SERVER__PORT`), then flags.
//!
//! Owns: every setting, its default and its validation. A bad value fails at start and names
//! its key. Secrets are [`Secret`]s, whose `Debug` never prints them.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::base::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Where the SQLite database, images and generated secrets live by default.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub worker: WorkerConfig,
    pub limits: LimitsConfig,
    pub storage: StorageConfig,
    pub providers: ProvidersConfig,
    pub auth: AuthConfig,
    pub redis: RedisConfig,
    /// Fetching of `inputImageUrl` (size, timeout, SSRF allow-list).
    pub inputs: crate::jobs::input_image::InputImageConfig,
    /// Webhook delivery (timeouts, concurrency, retry schedule, SSRF allow-list).
    pub webhooks: crate::webhooks::WebhooksConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// Origin name: `REDIS_URL`. When set, limits live in Redis and hold across nodes (each
    /// node's share in memory while Redis is unreachable), and job events fan out through
    /// Redis pub/sub.
    pub url: Option<Secret>,
    /// Prefix of every Redis key Easel writes, and of its pub/sub channel (`<prefix>events`).
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            prefix: "easel:".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    pub host: String,
    /// Origin name: `PORT`.
    pub port: u16,
    /// The address clients reach this server at; used in signed result links.
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub max_prompt_chars: usize,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl_hours: u64,
    /// A second port serving only `GET /health` and `GET /metrics`, in any role: how worker
    /// processes, which serve no API, are scraped.
    pub ops_port: Option<u16>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// Origin name: `DATABASE_URL`. Default: `sqlite://<data_dir>/easel.db`; a
    /// `postgres://` (or `postgresql://`) URL selects PostgreSQL.
    pub url: Option<String>,
    /// PostgreSQL: connections in the pool of each process (the LISTEN wake-up listener
    /// holds one more of its own). SQLite ignores it.
    pub max_connections: u32,
    /// PostgreSQL: how long a query waits for a free pooled connection before it fails
    /// as unavailable.
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: 10,
            acquire_timeout_secs: 10,
        }
    }
}

/// The URL may carry a password: `Debug` shows it redacted.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .finish()
    }
}

/// A database URL fit for a log line or an error: its password (in the user part or a
/// `password=` query parameter) replaced by `****`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        // Not a URL we can take apart: show only its scheme, if any.
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://****"),
            None => "****".to_owned(),
        };
    };
    let has_password_param = parsed
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"));
    if parsed.password().is_none() && !has_password_param {
        return url.to_owned();
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("****"));
    }
    if has_password_param {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "****".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Jobs run at once by one worker process. Origin name: `WORKER_CONCURRENCY`.
    pub concurrency: u32,
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
    /// Safety-net poll when no wake-up arrives.
    pub poll_ms: u64,
    pub max_attempts: u32,
    /// A job still unfinished this long after submit fails with `JOB_TIMEOUT`.
    pub job_timeout_secs: u64,
    /// On shutdown, how long running jobs may take before they are put back in the queue.
    pub shutdown_grace_secs: u64,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How often the maintenance pass (lease rescue, Cancel-After, deadlines) runs.
    pub maintenance_ms: u64,
    /// How often provider keys are re-read from the database (keys added by the CLI).
    pub key_refresh_ms: u64,
    /// How often keys disabled by an upstream rejection are re-tested.
    pub key_probe_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Origin name: `GLOBAL_RPM_LIMIT`.
    pub global_rpm: u32,
    /// Origin name: `GLOBAL_CONCURRENCY_LIMIT`.
    pub global_concurrency: u32,
    pub tenant_rpm: u32,
    pub tenant_concurrency: u32,
}

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

/// Cloudflare R2's S3 endpoint for an account.
fn r2_endpoint(account_id: &str) -> String {
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
fn check_endpoint(key: &'static str, endpoint: &str, allow_http: bool) -> Result<(), ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid { key, problem };
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
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: &str| ConfigError::Invalid {
            key,
            problem: problem.to_owned(),
        };
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProvidersConfig {
    /// Provider used for new jobs. Default: `local` unless another provider is configured.
    pub default: Option<String>,
    pub local: LocalProviderConfig,
    pub gemini: crate::providers::gemini::GeminiConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalProviderConfig {
    pub draft_size: u32,
    pub final_size: u32,
    /// Simulated upstream latency on top of the render itself.
    pub delay_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Origin name: `TEST_API_KEY`. Used as the default tenant's key on first start.
    pub test_api_key: Option<Secret>,
    /// Bearer token for the admin API (`/admin/v1/...`); the admin API is off without it.
    pub admin_token: Option<Secret>,
    /// Bearer token `GET /metrics` asks for; without it the metrics are open (they carry no
    /// tenant, prompt or secret, only counts, route templates and upstream key ids).
    pub metrics_token: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            worker: WorkerConfig::default(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            providers: ProvidersConfig::default(),
            auth: AuthConfig::default(),
            redis: RedisConfig::default(),
            inputs: Default::default(),
            webhooks: Default::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 3000,
            public_url: None,
            max_body_bytes: 256 * 1024,
            max_prompt_chars: 4000,
            idempotency_ttl_hours: 24,
            ops_port: None,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 50,
            lease_ms: 30_000,
            heartbeat_ms: 10_000,
            poll_ms: 500,
            max_attempts: 3,
            job_timeout_secs: 600,
            shutdown_grace_secs: 30,
            retry_base_ms: 1000,
            retry_max_ms: 60_000,
            maintenance_ms: 1000,
            key_refresh_ms: 30_000,
            key_probe_secs: 300,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            global_rpm: 1000,
            global_concurrency: 200,
            tenant_rpm: 60,
            tenant_concurrency: 5,
        }
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

impl Default for LocalProviderConfig {
    fn default() -> Self {
        LocalProviderConfig {
            draft_size: 512,
            final_size: 1024,
            delay_ms: 0,
        }
    }
}

/// The origin's environment names and the keys they set.
const ORIGIN_ENV: &[(&str, &str)] = &[
    ("PORT", "server.port"),
    ("DATABASE_URL", "database.url"),
    ("REDIS_URL", "redis.url"),
    ("TEST_API_KEY", "auth.test_api_key"),
    ("WORKER_CONCURRENCY", "worker.concurrency"),
    ("GLOBAL_RPM_LIMIT", "limits.global_rpm"),
    ("GLOBAL_CONCURRENCY_LIMIT", "limits.global_concurrency"),
    ("R2_ACCESS_KEY_ID", "storage.s3.access_key_id"),
    ("R2_SECRET_ACCESS_KEY", "storage.s3.secret_access_key"),
    ("R2_BUCKET_NAME", "storage.s3.bucket"),
    ("R2_PUBLIC_BASE_URL", "storage.public_base_url"),
    // R2_ACCOUNT_ID sets storage.s3.endpoint (see `origin_derived`).
];

/// Keys whose environment values are taken as written. Figment reads `12345` or `true` in a
/// variable as a number or a boolean, which a string key then refuses (and `0123` would lose
/// its zero); credentials and bucket names can look like that.
const STRING_KEYS: &[&str] = &[
    "storage.s3.bucket",
    "storage.s3.region",
    "storage.s3.access_key_id",
    "storage.s3.secret_access_key",
    "storage.signing_secret",
    "auth.test_api_key",
    "auth.admin_token",
    "auth.metrics_token",
];

/// The `EASEL_*` variables of [`STRING_KEYS`], as strings; merged over `Env::prefixed`.
fn easel_env_strings() -> Figment {
    let mut figment = Figment::new();
    for key in STRING_KEYS {
        let var = format!("EASEL_{}", key.replace('.', "__").to_uppercase());
        if let Ok(value) = std::env::var(&var) {
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    figment
}

/// Origin variables whose value is not copied as it is: `R2_ACCOUNT_ID` becomes the R2
/// endpoint, and `R2_BUCKET_NAME` selects S3 storage. Same layer as [`ORIGIN_ENV`].
fn origin_derived() -> Result<Figment, ConfigError> {
    let mut figment = Figment::new();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(account) = var("R2_ACCOUNT_ID") {
        let account = account.trim();
        if !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ConfigError::Invalid {
                key: "R2_ACCOUNT_ID",
                problem: "must be the account id (letters and digits only)".into(),
            });
        }
        figment = figment.merge(Serialized::default(
            "storage.s3.endpoint",
            r2_endpoint(account),
        ));
    }
    if var("R2_BUCKET_NAME").is_some() {
        figment = figment.merge(Serialized::default("storage.kind", StorageKind::S3));
    }
    Ok(figment)
}

/// Settings given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub data_dir: Option<PathBuf>,
    pub port: Option<u16>,
    pub ops_port: Option<u16>,
    pub database_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Config {
    /// Loads the layers in order. `file` is the TOML file to read (default `easel.toml`
    /// in the working directory, read only if present).
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> Result<Config, ConfigError> {
        let toml_path = file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("easel.toml"));
        if file.is_some() && !toml_path.exists() {
            return Err(ConfigError::Load(format!(
                "config file {} not found",
                toml_path.display()
            )));
        }
        let mut figment =
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::file(&toml_path));
        for (var, key) in ORIGIN_ENV {
            // An empty variable (`R2_BUCKET_NAME=` in a copied .env file) counts as unset.
            match std::env::var(var) {
                Ok(v) if v.trim().is_empty() => continue,
                Ok(v) if STRING_KEYS.contains(key) => {
                    figment = figment.merge(Serialized::default(key, v));
                    continue;
                }
                _ => {}
            }
            figment = figment.merge(Env::raw().only(&[var]).map(move |_| (*key).into()));
        }
        let figment = figment
            .merge(origin_derived()?)
            .merge(Env::prefixed("EASEL_").split("__"))
            .merge(easel_env_strings())
            .merge(flags_figment(flags));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("database.max_connections", self.database.max_connections),
            ("worker.concurrency", self.worker.concurrency),
            ("worker.max_attempts", self.worker.max_attempts),
            ("limits.global_rpm", self.limits.global_rpm),
            ("limits.global_concurrency", self.limits.global_concurrency),
            ("limits.tenant_rpm", self.limits.tenant_rpm),
            ("limits.tenant_concurrency", self.limits.tenant_concurrency),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    problem: "must be at least 1".into(),
                });
            }
        }
        if self.database.acquire_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "database.acquire_timeout_secs",
                problem: "must be at least 1".into(),
            });
        }
        if self.worker.heartbeat_ms == 0 || self.worker.heartbeat_ms >= self.worker.lease_ms {
            return Err(ConfigError::Invalid {
                key: "worker.heartbeat_ms",
                problem: "must be at least 1 and shorter than worker.lease_ms".into(),
            });
        }
        for (key, size) in [
            (
                "providers.local.draft_size",
                self.providers.local.draft_size,
            ),
            (
                "providers.local.final_size",
                self.providers.local.final_size,
            ),
        ] {
            if !(8..=4096).contains(&size) {
                return Err(ConfigError::Invalid {
                    key,
                    problem: "must be between 8 and 4096".into(),
                });
            }
        }
        self.providers
            .gemini
            .validate()
            .map_err(|problem| ConfigError::Invalid {
                key: "providers.gemini",
                problem,
            })?;
        self.storage.validate()?;
        crate::jobs::input_image::InputFetcher::new(self.inputs.clone()).map_err(|problem| {
            ConfigError::Invalid {
                key: "inputs.allow_networks",
                problem,
            }
        })?;
        self.webhooks
            .validate()
            .map_err(|(key, problem)| ConfigError::Invalid { key, problem })?;
        Ok(())
    }

    /// The database URL, defaulting to SQLite in the data folder.
    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("easel.db").display()))
    }

    pub fn storage_path(&self) -> PathBuf {
        self.storage
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("objects"))
    }

    /// The base URL clients use to reach this server.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = match self.server.host.as_str() {
                    "0.0.0.0" | "::" | "[::]" => "localhost",
                    other => other,
                };
                format!("http://{host}:{}", self.server.port)
            }
        }
    }
}

fn flags_figment(flags: &FlagOverrides) -> Figment {
    let mut figment = Figment::new();
    if let Some(dir) = &flags.data_dir {
        figment = figment.merge(Serialized::default("data_dir", dir));
    }
    if let Some(port) = flags.port {
        figment = figment.merge(Serialized::default("server.port", port));
    }
    if let Some(port) = flags.ops_port {
        figment = figment.merge(Serialized::default("server.ops_port", port));
    }
    if let Some(url) = &flags.database_url {
        figment = figment.merge(Serialized::default("database.url", url));
    }
    figment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_origin() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert_eq!(c.server.port, 3000);
        assert_eq!(c.worker.concurrency, 50);
        assert_eq!(c.limits.global_rpm, 1000);
        assert_eq!(c.limits.global_concurrency, 200);
        assert_eq!((c.limits.tenant_rpm, c.limits.tenant_concurrency), (60, 5));
    }

    #[test]
    fn example_file_matches_the_defaults() {
        let example: Config = Figment::from(Toml::string(include_str!("../easel.example.toml")))
            .extract()
            .expect("example parses");
        let defaults = Config::default();
        assert_eq!(
            serde_json::to_value(&example).expect("json"),
            serde_json::to_value(&defaults).expect("json")
        );
    }

    #[test]
    fn database_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://easel:s3cret@db.example.com:5432/easel"),
            "postgres://easel:****@db.example.com:5432/easel"
        );
        let query = redact_url("postgresql://db/easel?user=easel&password=s3cret&sslmode=require");
        assert!(
            !query.contains("s3cret") && query.contains("sslmode=require"),
            "{query}"
        );
        assert_eq!(
            redact_url("sqlite://./data/easel.db"),
            "sqlite://./data/easel.db"
        );
        assert!(!redact_url("postgres://u:s3cret@[bad").contains("s3cret"));
        let config = DatabaseConfig {
            url: Some("postgres://easel:s3cret@db/easel".into()),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn secret_debug_hides_value() {
        let s = Secret::new("img_supersecret");
        assert_eq!(format!("{s:?}"), "****");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "easel.toml",
                "[server]\nport = 4000\n[worker]\nconcurrency = 7\n",
            )?;
            let c = Config::load(None, &FlagOverrides::default()).expect("load");
            assert_eq!((c.server.port, c.worker.concurrency), (4000, 7));
            jail.set_env("PORT", "4100");
            jail.set_env("WORKER_CONCURRENCY", "9");
            let c = Config::load(None, &FlagOverrides::default()).expect("load");
            assert_eq!((c.server.port, c.worker.concurrency), (4100, 9));
            jail.set_env("EASEL_SERVER__PORT", "4200");
            let c = Config::load(None, &FlagOverrides::default()).expect("load");
            assert_eq!(c.server.port, 4200);
            let flags = FlagOverrides {
                port: Some(4300),
                ..Default::default()
            };
            let c = Config::load(None, &flags).expect("load");
            assert_eq!(c.server.port, 4300);
            jail.set_env("EASEL_WORKER__CONCURRENCY", "0");
            let err = Config::load(None, &flags).expect_err("zero concurrency");
            assert!(err.to_string().contains("worker.concurrency"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn r2_variables_select_s3_storage() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("R2_ACCOUNT_ID", "0123abcd");
            jail.set_env("R2_ACCESS_KEY_ID", "0042");
            jail.set_env("R2_SECRET_ACCESS_KEY", "r2-secret-value");
            jail.set_env("R2_BUCKET_NAME", "easel-images");
            jail.set_env("R2_PUBLIC_BASE_URL", "https://img.example.com");
            let c = Config::load(None, &FlagOverrides::default()).expect("load");
            assert_eq!(c.storage.kind, StorageKind::S3);
            let s3 = &c.storage.s3;
            assert_eq!(
                s3.endpoint.as_deref(),
                Some("https://0123abcd.r2.cloudflarestorage.com")
            );
            assert_eq!(s3.bucket.as_deref(), Some("easel-images"));
            assert_eq!(s3.access_key_id.as_deref(), Some("0042"));
            assert_eq!(
                s3.secret_access_key.as_ref().map(Secret::expose),
                Some("r2-secret-value")
            );
            assert_eq!(s3.region(), "auto");
            assert_eq!(
                c.storage.public_base_url.as_deref(),
                Some("https://img.example.com")
            );
            assert!(!format!("{c:?}").contains("r2-secret-value"));
            // EASEL_* wins over the origin names.
            jail.set_env("EASEL_STORAGE__S3__REGION", "eu");
            let c = Config::load(None, &FlagOverrides::default()).expect("load");
            assert_eq!(c.storage.s3.region(), "eu");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn empty_origin_variables_count_as_unset() {
        figment::Jail::expect_with(|jail| {
            for var in [
                "R2_ACCOUNT_ID",
                "R2_ACCESS_KEY_ID",
                "R2_SECRET_ACCESS_KEY",
                "R2_BUCKET_NAME",
                "R2_PUBLIC_BASE_URL",
            ] {
                jail.set_env(var, "");
            }
            let c = Config::load(None, &FlagOverrides::default()).expect("load");
            assert_eq!(c.storage.kind, StorageKind::Local);
            assert!(c.storage.s3.endpoint.is_none() && c.storage.public_base_url.is_none());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn generic_s3_settings_from_easel_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EASEL_STORAGE__KIND", "s3");
            jail.set_env("EASEL_STORAGE__S3__ENDPOINT", "http://127.0.0.1:9000");
            jail.set_env("EASEL_STORAGE__S3__BUCKET", "images");
            // Digits only: still a string, leading zero kept.
            jail.set_env("EASEL_STORAGE__S3__ACCESS_KEY_ID", "012345");
            jail.set_env("EASEL_STORAGE__S3__SECRET_ACCESS_KEY", "minio-secret");
            jail.set_env("EASEL_STORAGE__S3__PATH_STYLE", "true");
            let err = Config::load(None, &FlagOverrides::default()).expect_err("http");
            assert!(err.to_string().contains("storage.s3.endpoint"), "{err}");
            assert!(err.to_string().contains("allow_http"), "{err}");
            jail.set_env("EASEL_STORAGE__S3__ALLOW_HTTP", "true");
            let c = Config::load(None, &FlagOverrides::default()).expect("load");
            assert_eq!(c.storage.kind, StorageKind::S3);
            assert!(c.storage.s3.allow_http && c.storage.s3.path_style);
            assert_eq!(c.storage.s3.region(), "us-east-1");
            assert_eq!(c.storage.s3.access_key_id.as_deref(), Some("012345"));
            Ok(())
        });
    }

    #[test]
    fn bad_storage_settings_name_their_key_and_hide_secrets() {
        let s3 = |tweak: &dyn Fn(&mut S3Settings)| {
            let mut c = Config::default();
            c.storage.kind = StorageKind::S3;
            c.storage.s3 = S3Settings {
                endpoint: Some("https://s3.example.com".into()),
                bucket: Some("images".into()),
                access_key_id: Some("id".into()),
                secret_access_key: Some(Secret::new("hidden-secret")),
                ..Default::default()
            };
            tweak(&mut c.storage.s3);
            c.validate().map_err(|e| e.to_string())
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
        let mut c = Config::default();
        c.storage.s3.bucket = Some("images".into());
        let err = c.validate().expect_err("bucket without kind");
        assert!(err.to_string().contains("storage.kind"), "{err}");
        let mut c = Config::default();
        c.storage.public_base_url = Some("cdn.example.com".into());
        let err = c.validate().expect_err("relative base");
        assert!(err.to_string().contains("storage.public_base_url"), "{err}");
        let mut c = Config::default();
        c.storage.kind = StorageKind::S3;
        c.storage.s3.bucket = Some("images".into());
        c.storage.url_ttl_secs = MAX_PRESIGNED_TTL_SECS + 1;
        let err = c.validate().expect_err("ttl");
        assert!(err.to_string().contains("storage.url_ttl_secs"), "{err}");
        c.storage.public_base_url = Some("https://cdn.example.com".into());
        c.validate().expect("public links do not expire");
    }
}
