//! The process's shared parts, built once from [`Config`]: store, object store, link signer,
//! providers, authenticator and the wake-up signal between API and worker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use tokio::sync::Notify;

use crate::accounts::auth::Authenticator;
use crate::accounts::crypto::{read_or_create_secret_file, Sealer};
use crate::accounts::keys;
use crate::config::{redact_url, Config};
use crate::limits::{Limiter, MemoryLimiter, RedisLimiter};
use crate::providers::Registry;
use crate::storage::urls::UrlSigner;
use crate::storage::{ObjectStore, ObjectStoreBackend};
use crate::store::postgres::{PgSettings, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{NewTenant, Store, Tenant};

#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub objects: Arc<dyn ObjectStore>,
    pub urls: UrlSigner,
    pub providers: Registry,
    pub auth: Authenticator,
    pub sealer: Sealer,
    pub limiter: Arc<dyn Limiter>,
    /// Submits poke this so an idle worker in the same process claims at once.
    pub wake: Arc<Notify>,
}

/// Opens the store named by the database URL (`sqlite://` or `postgres://`), bringing its
/// schema up to date.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database_url();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        let store = SqliteStore::open(std::path::Path::new(path))
            .with_context(|| format!("opening SQLite database {path}"))?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let settings = PgSettings {
            max_connections: config.database.max_connections,
            acquire_timeout: Duration::from_secs(config.database.acquire_timeout_secs),
        };
        let store = PgStore::open(&url, &settings)
            .await
            .with_context(|| format!("opening PostgreSQL database {}", redact_url(&url)))?;
        return Ok(Arc::new(store));
    }
    bail!(
        "database.url: unsupported scheme {} (expected sqlite://... or postgres://...)",
        redact_url(&url)
    )
}

/// In memory on one node; in Redis when `REDIS_URL` is set, so limits hold across nodes.
async fn open_limiter(config: &Config) -> anyhow::Result<Arc<dyn Limiter>> {
    match &config.redis.url {
        Some(url) => {
            let limiter = RedisLimiter::connect(url.expose(), config.redis.prefix.clone())
                .await
                .context("connecting to Redis (REDIS_URL)")?;
            Ok(Arc::new(limiter))
        }
        None => Ok(Arc::new(MemoryLimiter::new())),
    }
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data folder {}", config.data_dir.display()))?;
        let store = open_store(&config).await?;
        let objects: Arc<dyn ObjectStore> = Arc::new(
            ObjectStoreBackend::local(&config.storage_path()).context("opening image folder")?,
        );
        let signing_secret = match &config.storage.signing_secret {
            Some(secret) => secret.expose().to_owned(),
            None => read_or_create_secret_file(&config.data_dir.join("url-signing.key"), || {
                let bytes: [u8; 32] = rand::random();
                base64::engine::general_purpose::STANDARD.encode(bytes)
            })
            .context("reading url-signing.key")?,
        };
        let urls = UrlSigner::new(
            signing_secret.as_bytes(),
            &config.public_url(),
            config.storage.public_base_url.as_deref(),
            config.storage.url_ttl_secs,
        );
        let master_key = std::env::var("EASEL_MASTER_KEY").ok();
        let sealer = Sealer::load(master_key.as_deref(), &config.data_dir)?;
        let providers = Registry::local_only(config.providers.local.clone());
        let limiter = open_limiter(&config).await?;
        Ok(App {
            auth: Authenticator::new(store.clone()),
            config: Arc::new(config),
            store,
            objects,
            urls,
            providers,
            sealer,
            limiter,
            wake: Arc::new(Notify::new()),
        })
    }
}

/// A tenant created by `create_tenant`, with its key in plain text (shown once).
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub api_key: String,
}

/// Creates a tenant and its first API key (random, or `fixed_key` if given).
pub async fn create_tenant(
    store: &dyn Store,
    name: &str,
    rpm_limit: u32,
    concurrency_limit: u32,
    fixed_key: Option<&str>,
) -> anyhow::Result<CreatedTenant> {
    let issued = match fixed_key {
        Some(key) => keys::from_plaintext(key.to_owned()),
        None => keys::issue(),
    };
    let tenant = store
        .tenant_create(
            NewTenant {
                id: format!("ten_{}", ulid::Ulid::new().to_string().to_lowercase()),
                name: name.to_owned(),
                rpm_limit,
                concurrency_limit,
            },
            issued.record,
        )
        .await
        .context("creating tenant")?;
    Ok(CreatedTenant {
        tenant,
        api_key: issued.plaintext,
    })
}

/// At first start on an empty database: a default tenant, keyed by `TEST_API_KEY` if set.
/// Returns the new key when one was made (to print once).
pub async fn ensure_default_tenant(app: &App) -> anyhow::Result<Option<CreatedTenant>> {
    if !app.store.tenant_list().await?.is_empty() {
        return Ok(None);
    }
    let fixed = app.config.auth.test_api_key.as_ref().map(|s| s.expose());
    let created = create_tenant(
        app.store.as_ref(),
        "default",
        app.config.limits.tenant_rpm,
        app.config.limits.tenant_concurrency,
        fixed,
    )
    .await?;
    Ok(Some(created))
}
