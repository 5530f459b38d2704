//! Configuration: defaults that run, then `easel.toml`, then the origin's environment names
//! (`PORT`, `DATABASE_URL`, ...), then `EASEL_*` variables (`EASEL_SERVER__PORT`), then flags.
//!
//! Owns: the top-level [`Config`] that gathers every section, the loading of its layers (with
//! the origin's environment names), the `[server]`, `[database]` and `[redis]` sections, and
//! the checks no section can make alone. Every other section lives with the module that owns
//! it, with its defaults and its checks (`[worker]` in `jobs::worker`, `[limits]` in `limits`,
//! `[storage]` in `storage::config`, `[providers]` in `providers`, `[auth]`, `[users]` and
//! `[wechat]` in `accounts`, `[inputs]` in `jobs::input_image`, `[webhooks]` in `webhooks`);
//! those modules never import this one. A bad value fails at start and names its key. Secrets are [`Secret`]s, whose
//! `Debug` never prints them.

pub mod midjourney;
pub mod openai_api;
pub mod origins;

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::accounts::config::{UsersConfig, WechatConfig};
use crate::accounts::AuthConfig;
use crate::base::redact::redact_url;
use crate::base::secret::Secret;
use crate::base::settings::{at_least_one, Invalid};
use crate::jobs::input_image::InputImageConfig;
use crate::jobs::worker::WorkerConfig;
use crate::limits::LimitsConfig;
use crate::providers::ProvidersConfig;
use crate::storage::config::r2_endpoint;
use crate::storage::{StorageConfig, StorageKind};
use crate::webhooks::WebhooksConfig;

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
    pub inputs: InputImageConfig,
    /// Webhook delivery (timeouts, concurrency, retry schedule, SSRF allow-list).
    pub webhooks: WebhooksConfig,
    /// The OpenAI-compatible images API (model routing, wait bound).
    pub openai_api: openai_api::OpenAiApiConfig,
    /// End users: tokens, password hashing, sign-in limits.
    pub users: UsersConfig,
    /// The default tenant's WeChat mini-program (sign-in).
    pub wechat: WechatConfig,
    /// The image library: upload limits and what is made of each image.
    pub uploads: crate::uploads::UploadsConfig,
    /// The editor's sessions (`[editor]`: earlier turns a generating message sends).
    pub editor: crate::sessions::EditorConfig,
    /// The photo app: each task type's provider and model.
    pub photo: crate::photo::PhotoConfig,
    /// The Midjourney API seed's routes (provider, banned words, bot secret).
    pub midjourney: midjourney::MidjourneyConfig,
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
    /// Origins whose pages may call the API from a browser: `"*"` (default), or a list (or a
    /// comma-separated string) of origins like `http://localhost:5173`. Origin name:
    /// `CORS_ORIGIN` (the editor origin's).
    #[serde(deserialize_with = "origins::one_or_many")]
    pub cors_origins: Vec<String>,
    /// Reverse proxies (addresses or networks, e.g. `10.0.0.0/8`) whose `X-Forwarded-For`
    /// names the client; from any other peer the TCP address is the client.
    pub trusted_proxies: Vec<String>,
}

impl ServerConfig {
    /// [`ServerConfig::trusted_proxies`] parsed; an error names the bad entry.
    pub fn proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an address or network"))
            })
            .collect()
    }
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
            openai_api: Default::default(),
            users: Default::default(),
            wechat: Default::default(),
            uploads: Default::default(),
            editor: Default::default(),
            photo: Default::default(),
            midjourney: Default::default(),
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
            cors_origins: vec!["*".into()],
            trusted_proxies: Vec::new(),
        }
    }
}

/// The origin's environment names and the keys they set.
const ORIGIN_ENV: &[(&str, &str)] = &[
    ("PORT", "server.port"),
    ("CORS_ORIGIN", "server.cors_origins"),
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
    ("RATE_LIMIT_WINDOW_MS", "users.request_window_ms"),
    ("RATE_LIMIT_MAX_REQUESTS", "users.requests_per_window"),
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
    "users.jwt_secret",
    "wechat.app_id",
    "wechat.app_secret",
    "photo.workflow_secret",
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

    /// The database's own checks, then each section's (the first problem found).
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_database()
            .and_then(|()| {
                origins::check_origins(&self.server.cors_origins)
                    .map_err(|problem| ("server.cors_origins", problem))
            })
            .and_then(|()| self.worker.validate())
            .and_then(|()| self.limits.validate())
            .and_then(|()| self.providers.validate())
            .and_then(|()| self.storage.validate())
            .and_then(|()| self.inputs.validate())
            .and_then(|()| self.webhooks.validate())
            .and_then(|()| self.openai_api.validate())
            .and_then(|()| self.users.validate())
            .and_then(|()| self.wechat.validate())
            .and_then(|()| self.photo.validate())
            .and_then(|()| {
                self.server
                    .proxies()
                    .map(drop)
                    .map_err(|problem| ("server.trusted_proxies", problem))
            })
            .map_err(|(key, problem)| ConfigError::Invalid { key, problem })
    }

    fn validate_database(&self) -> Result<(), Invalid> {
        at_least_one([
            (
                "database.max_connections",
                self.database.max_connections.into(),
            ),
            (
                "database.acquire_timeout_secs",
                self.database.acquire_timeout_secs,
            ),
        ])
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
}
