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

/// A string that never reaches a log line or a `Debug` print.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Folder for images. Default: `<data_dir>/objects`.
    pub path: Option<PathBuf>,
    /// When set, result URLs are `<public_base_url>/<key>` instead of signed links.
    pub public_base_url: Option<String>,
    /// Lifetime of a signed result link.
    pub url_ttl_secs: u64,
    /// HMAC secret for signed links. Default: generated into `<data_dir>/url-signing.key`.
    pub signing_secret: Option<Secret>,
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
            url_ttl_secs: 3600,
            signing_secret: None,
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
];

/// Settings given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub data_dir: Option<PathBuf>,
    pub port: Option<u16>,
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
            figment = figment.merge(Env::raw().only(&[var]).map(move |_| (*key).into()));
        }
        let figment = figment
            .merge(Env::prefixed("EASEL_").split("__"))
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
        crate::jobs::input_image::InputFetcher::new(self.inputs.clone()).map_err(|problem| {
            ConfigError::Invalid {
                key: "inputs.allow_networks",
                problem,
            }
        })?;
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
}
