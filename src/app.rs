//! The process's shared parts, built once from [`Config`]: store, object store, link signer,
//! providers, authenticator, the wake-up signal between API and worker, the event bus, and
//! this process's identity as a node (its id, and the live node count its heartbeats keep).
//!
//! Part of the composition root: it builds each part's dependencies (the worker's
//! [`App::worker_deps`], the webhook dispatcher) and hands them in, so nothing below it needs
//! to know [`App`]. Only `api`, `server` and `cli` import it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use tokio::sync::Notify;

use crate::accounts::auth::Authenticator;
use crate::accounts::keys;
use crate::accounts::tenancy::TenantResolver;
use crate::accounts::users::{Accounts, AccountsDeps};
use crate::base::clock::now_millis;
use crate::base::redact::redact_url;
use crate::base::secret::{read_or_create_secret_file, Sealer};
use crate::config::Config;
use crate::events::{EventBus, LocalBus, RedisBus};
use crate::jobs::followups::Followers;
use crate::jobs::gate::Gate;
use crate::jobs::input_image::InputFetcher;
use crate::jobs::worker::{DirectStart, WorkerDeps};
use crate::keypool::{add_provider_key, KeyPool, KeyPoolConfig, ProviderKeySpec};
use crate::limits::{FailoverConfig, FailoverLimiter, Limiter, LiveNodes, MemoryLimiter, NODE_TTL};
use crate::providers::Registry;
use crate::storage::recent::RecentObjects;
use crate::storage::urls::{ResultLinks, UrlSigner};
use crate::storage::{ObjectStore, ObjectStoreBackend, StorageKind};
use crate::store::postgres::{PgSettings, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::StoreError;
use crate::store::{NewTenant, Store, Tenant};
use crate::webhooks::dispatcher::Dispatcher;

/// The process's parts behind one pointer: every request clones its `App` (axum's `State`),
/// and cloning [`Parts`] itself (3 KB, with the accounts' token rules and the link signer's
/// keys) copied and allocated on every request.
#[derive(Clone)]
pub struct App(Arc<Parts>);

impl std::ops::Deref for App {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.0
    }
}

/// Changing a part (a test swapping the providers before the server starts) copies the parts
/// first if another clone shares them: clones never see each other's changes, as before.
impl std::ops::DerefMut for App {
    fn deref_mut(&mut self) -> &mut Parts {
        Arc::make_mut(&mut self.0)
    }
}

#[derive(Clone)]
pub struct Parts {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub objects: Arc<dyn ObjectStore>,
    /// Makes the result URLs clients get (public, presigned or Easel-signed).
    pub urls: ResultLinks,
    pub providers: Registry,
    pub auth: Authenticator,
    pub sealer: Sealer,
    pub limiter: Arc<dyn Limiter>,
    /// Upstream keys: selection, limits, breakers.
    pub keys: Arc<KeyPool>,
    /// Fetches `inputImageUrl`s with the SSRF rules.
    pub inputs: Arc<InputFetcher>,
    /// The image library (uploads, and the images jobs take as inputs).
    pub images: crate::uploads::Library,
    /// Submits poke this so an idle worker in the same process claims at once.
    pub wake: Arc<Notify>,
    /// This process's worker, which takes a job at its submit when it has room (set by
    /// [`crate::server::run`] with the worker role and `worker.dispatch_on_submit`).
    pub direct_start: Option<DirectStart>,
    /// Committed status changes are announced here; live event streams listen.
    pub events: Arc<dyn EventBus>,
    /// The editor sockets' share of the bus: one subscription routing each session's notices.
    pub session_hub: crate::events::Topics,
    /// Calls waiting on one job (the OpenAI facade): one subscription routing by job id.
    pub job_watch: crate::events::JobWatch,
    /// This process in the `nodes` table (`node_<ulid>`, new at every start).
    pub node_id: Arc<str>,
    /// Live nodes as last counted from the heartbeats ([`crate::server`] keeps it current);
    /// the fallback limiter divides every limit by it while Redis is unreachable.
    pub live_nodes: Arc<LiveNodes>,
    /// End users: sign-in, sessions, tokens.
    pub accounts: Accounts,
    /// The tenant of a consumer request before sign-in (host name, else the default).
    pub tenancy: TenantResolver,
    /// What a job costs and who pays it (cached tenant prices).
    pub pricing: Arc<crate::ledger::pricing::Pricing>,
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

/// The image store named by `storage.kind`. An S3 bucket that does not answer at start is
/// reported loudly but is not fatal: the service may come up after Easel, and a job whose
/// images cannot be stored is retried.
/// Either way, what this process stores is kept in memory for a moment ([`RecentObjects`]).
async fn open_objects(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(Arc::new(RecentObjects::new(open_backend(config).await?)))
}

async fn open_backend(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    match config.storage.kind {
        StorageKind::Local => Ok(Arc::new(
            ObjectStoreBackend::local(&config.storage_path()).context("opening image folder")?,
        )),
        StorageKind::S3 => {
            let s3 = &config.storage.s3;
            let backend = ObjectStoreBackend::s3(s3)?;
            let endpoint = s3.endpoint.as_deref().unwrap_or("AWS S3");
            let bucket = s3.bucket.as_deref().unwrap_or_default();
            match backend.check().await {
                Ok(()) => tracing::info!(endpoint, bucket, "object storage: S3 bucket answers"),
                Err(e) => tracing::error!(
                    endpoint,
                    bucket,
                    error = %e,
                    "object storage: the S3 bucket does not answer; check storage.s3.endpoint, \
                     storage.s3.bucket and the access key (storing results fails until it does)"
                ),
            }
            Ok(Arc::new(backend))
        }
    }
}

/// In memory on one node; in Redis when `REDIS_URL` is set, so limits hold across nodes,
/// with each node's share in memory while Redis is unreachable ([`FailoverLimiter`]).
///
/// A Redis that does not answer at start does not stop the process: it starts degraded (an
/// error in the log, `/health` says `degraded`) and moves to Redis as soon as it answers. A
/// gateway that cannot start while its limiter backend is briefly away is a worse outage than
/// per-node limits for a while, and the process says loudly which one it is in. Only a
/// malformed `REDIS_URL` is fatal.
async fn open_limiter(
    config: &Config,
    store: &dyn Store,
    live_nodes: &Arc<LiveNodes>,
) -> anyhow::Result<Arc<dyn Limiter>> {
    let Some(url) = &config.redis.url else {
        return Ok(Arc::new(MemoryLimiter::new()));
    };
    // The nodes already running, and this one (its first heartbeat comes when it serves), so
    // a fallback before then already divides by the right count.
    let since = now_millis() - NODE_TTL.as_millis() as i64;
    match store.nodes_live(since).await {
        Ok(others) => live_nodes.set(others.saturating_add(1)),
        Err(e) => tracing::warn!(error = %e, "cannot count live nodes yet"),
    }
    let limiter = FailoverLimiter::connect(
        url.expose(),
        config.redis.prefix.clone(),
        live_nodes.clone(),
        FailoverConfig::default(),
    )
    .await
    .context("REDIS_URL")?;
    Ok(Arc::new(limiter))
}

/// One process's bus, or every node's through Redis pub/sub when `REDIS_URL` is set. The Redis
/// bus connects in the background (and keeps reconnecting), so an unreachable Redis does not
/// stop the start: live streams then fall back to their periodic re-read of the events table.
fn open_bus(config: &Config) -> anyhow::Result<Arc<dyn EventBus>> {
    match &config.redis.url {
        Some(url) => {
            let bus = RedisBus::start(url.expose(), &config.redis.prefix).context("REDIS_URL")?;
            Ok(Arc::new(bus))
        }
        None => Ok(Arc::new(LocalBus::new())),
    }
}

/// The end-user service, with its token secret from `users.jwt_secret` or `<data_dir>/jwt.key`.
pub fn open_accounts(
    config: &Config,
    store: &Arc<dyn Store>,
    sealer: &Sealer,
    limiter: &Arc<dyn Limiter>,
) -> anyhow::Result<Accounts> {
    let jwt_secret = match &config.users.jwt_secret {
        Some(secret) => secret.expose().to_owned(),
        None => read_or_create_secret_file(
            &config.data_dir.join("jwt.key"),
            crate::accounts::tokens::generate_secret,
        )
        .context("reading jwt.key")?,
    };
    Accounts::new(AccountsDeps {
        store: store.clone(),
        sealer: sealer.clone(),
        limiter: limiter.clone(),
        jwt_secret: jwt_secret.into_bytes(),
        users: config.users.clone(),
        wechat: config.wechat.clone(),
    })
    .map_err(|e| anyhow::anyhow!("users: {e}"))
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data folder {}", config.data_dir.display()))?;
        let store = open_store(&config).await?;
        let objects = open_objects(&config).await?;
        let signing_secret = match &config.storage.signing_secret {
            Some(secret) => secret.expose().to_owned(),
            None => read_or_create_secret_file(&config.data_dir.join("url-signing.key"), || {
                let bytes: [u8; 32] = rand::random();
                base64::engine::general_purpose::STANDARD.encode(bytes)
            })
            .context("reading url-signing.key")?,
        };
        let signer = UrlSigner::new(
            signing_secret.as_bytes(),
            &config.public_url(),
            config.storage.public_base_url.as_deref(),
            config.storage.url_ttl_secs,
        );
        let urls = match config.storage.kind {
            StorageKind::S3 if config.storage.s3.presign => {
                ResultLinks::presigned(signer, objects.clone())
            }
            _ => ResultLinks::signed(signer),
        };
        let sealer = Sealer::from_env(&config.data_dir)?;
        let live_nodes = Arc::new(LiveNodes::new());
        let limiter = open_limiter(&config, store.as_ref(), &live_nodes).await?;
        let events = open_bus(&config)?;
        // The midjourney provider's notifyHook is a route of this server.
        let mut providers = config.providers.clone();
        providers.midjourney = providers.midjourney.with_notify_url(&config.public_url());
        let registry = Registry::build(&providers).map_err(anyhow::Error::msg)?;
        let imported = import_env_keys(store.as_ref(), &sealer, &registry).await?;
        if imported.added > 0 {
            tracing::info!(
                imported = imported.added,
                "provider keys imported from the origin's environment variables"
            );
        }
        let keys = Arc::new(KeyPool::new(
            limiter.clone(),
            store.clone(),
            sealer.clone(),
            KeyPoolConfig::default(),
        ));
        let loaded = keys.load().await.context("loading provider keys")?;
        for (id, why) in &loaded.skipped {
            tracing::warn!(key = %id, reason = %why, "provider key skipped");
        }
        let providers = registry
            .choose_default(config.providers.default.as_deref(), |p| {
                keys.enabled_keys(p) > 0
            })
            .map_err(anyhow::Error::msg)?;
        let inputs =
            Arc::new(InputFetcher::new(config.inputs.clone()).map_err(anyhow::Error::msg)?);
        let accounts = open_accounts(&config, &store, &sealer, &limiter)?;
        let tenancy = TenantResolver::new(store.clone(), config.users.default_tenant.clone());
        let images = crate::uploads::Library::new(
            store.clone(),
            objects.clone(),
            urls.clone(),
            config.uploads.clone(),
        );
        let providers = photo_workflow(providers, &config, &store, &events, &images)?;
        Ok(App(Arc::new(Parts {
            accounts,
            tenancy,
            images,
            auth: Authenticator::new(store.clone()),
            pricing: Arc::new(crate::ledger::pricing::Pricing::new(store.clone())),
            config: Arc::new(config),
            store,
            objects,
            urls,
            providers,
            sealer,
            limiter,
            keys,
            inputs,
            wake: Arc::new(Notify::new()),
            direct_start: None,
            session_hub: crate::sessions::hub::start(events.as_ref()),
            job_watch: crate::events::Topics::jobs(events.as_ref()),
            events,
            node_id: format!("node_{}", ulid::Ulid::new().to_string().to_lowercase()).into(),
            live_nodes,
        })))
    }

    /// The worker's share of the process's parts.
    pub fn worker_deps(&self) -> WorkerDeps {
        WorkerDeps {
            store: self.store.clone(),
            objects: self.objects.clone(),
            providers: self.providers.clone(),
            config: self.config.worker.clone(),
            inputs: self.inputs.clone(),
            images: self.images.clone(),
            gate: Gate::new(self.limiter.clone(), &self.config.limits),
            events: self.events.clone(),
            keys: self.keys.clone(),
            wake: self.wake.clone(),
            awaiting_keys: Arc::default(),
            followers: self.job_followers(),
        }
    }

    /// The capabilities told when their jobs end (`jobs::followups`): each registers here
    /// with what it needs of this process.
    pub fn job_followers(&self) -> Followers {
        Followers::default()
            .with(Arc::new(crate::sessions::follower::EditorFollower {
                sessions: crate::sessions::Sessions::new(
                    self.store.clone(),
                    self.events.clone(),
                    self.config.editor.clone(),
                ),
                images: self.images.clone(),
                objects: self.objects.clone(),
            }))
            .with(Arc::new(crate::photo::follower::PhotoFollower::new(
                self.store.clone(),
            )))
            .with(Arc::new(crate::mj_tasks::follower::MjTaskFollower(
                self.mj_tasks(),
            )))
    }

    /// The `/mj` facade's tasks: their views and notifyHook calls.
    pub fn mj_tasks(&self) -> crate::mj_tasks::MjTasks {
        crate::mj_tasks::MjTasks {
            store: self.store.clone(),
            urls: self.urls.clone(),
            images: self.images.clone(),
            events: self.events.clone(),
        }
    }

    /// The webhook dispatcher, on this process's store, bus and result links.
    pub fn webhook_dispatcher(&self) -> Result<Dispatcher, String> {
        Dispatcher::new(
            self.store.clone(),
            self.sealer.clone(),
            self.urls.clone(),
            self.config.webhooks.clone(),
            Some(self.events.clone()),
        )
    }
}

/// The registry with the photo app's `workflow` provider when a task type runs on an n8n
/// workflow (`[photo.<type>] workflow_url`).
fn photo_workflow(
    providers: Registry,
    config: &Config,
    store: &Arc<dyn Store>,
    events: &Arc<dyn EventBus>,
    images: &crate::uploads::Library,
) -> anyhow::Result<Registry> {
    if !config.photo.uses_workflow() {
        return Ok(providers);
    }
    let workflow = crate::photo::workflow::WorkflowProvider::new(
        store.clone(),
        events.clone(),
        images.clone(),
        config.photo.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(providers.with(Arc::new(workflow)))
}

/// What `import_env_keys` did.
#[derive(Debug, Default)]
pub struct ImportedKeys {
    pub added: usize,
    /// Variables whose key was already registered.
    pub already_registered: Vec<String>,
}

/// Stores the keys in the origin's environment variables of every provider that names some
/// ([`crate::providers::Provider::env_key_prefix`]: `GEMINI_API_KEY_1..N`), at 60 RPM and 2
/// at once as the origin's `init`, skipping ones already registered.
pub async fn import_env_keys(
    store: &dyn Store,
    sealer: &Sealer,
    providers: &Registry,
) -> anyhow::Result<ImportedKeys> {
    let mut done = ImportedKeys::default();
    for provider in providers.keyed() {
        if let Some(prefix) = provider.env_key_prefix() {
            import_prefixed_keys(store, sealer, provider.name(), prefix, &mut done).await?;
        }
    }
    Ok(done)
}

/// The keys in `{prefix}1`, `{prefix}2`, ... up to the first unset one.
async fn import_prefixed_keys(
    store: &dyn Store,
    sealer: &Sealer,
    provider: &str,
    prefix: &str,
    done: &mut ImportedKeys,
) -> anyhow::Result<()> {
    for n in 1..=256 {
        let var = format!("{prefix}{n}");
        let Ok(key) = std::env::var(&var) else {
            break;
        };
        if key.trim().is_empty() {
            continue;
        }
        let spec = ProviderKeySpec {
            provider: provider.to_owned(),
            key,
            rpm: 60,
            concurrency: 2,
            endpoint: None,
            priority: 0,
            project: None,
        };
        match add_provider_key(store, sealer, spec).await {
            Ok(_) => done.added += 1,
            Err(StoreError::Conflict(_)) => done.already_registered.push(var),
            Err(e) => return Err(anyhow::anyhow!("{var}: {e}")),
        }
    }
    Ok(())
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
                burst: None,
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
