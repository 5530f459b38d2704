//! The origin's admin commands: migrate, init, reset, show-keys, create-tenant,
//! add-provider-key. (Webhook commands are in `webhooks.rs`.)

use anyhow::{bail, Context};

use crate::app::{create_tenant as make_tenant, open_store};
use crate::base::redact::redact_url;
use crate::base::secret::Sealer;
use crate::config::Config;
use crate::keypool::add_provider_key as add_provider_key_to;
use crate::keypool::probe::probe_key;
use crate::keypool::{PoolKey, ProviderKeySpec};
use crate::providers::Registry;

pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    open_store(config).await?;
    println!(
        "database is up to date: {}",
        redact_url(&config.database_url())
    );
    Ok(())
}

pub async fn reset(config: &Config, confirmed: bool) -> anyhow::Result<()> {
    if !confirmed {
        bail!("reset deletes all data; run `easel reset yes` (or `--yes`) to confirm");
    }
    open_store(config)
        .await?
        .reset()
        .await
        .context("deleting data")?;
    println!("all data deleted");
    Ok(())
}

pub async fn show_keys(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let tenants = store.tenant_list().await?;
    println!("Tenants ({}):", tenants.len());
    for t in &tenants {
        println!(
            "  {}  {:<24} rpm={:<6} concurrency={}",
            t.id, t.name, t.rpm_limit, t.concurrency_limit
        );
    }
    let keys = store.provider_key_list().await?;
    println!("Provider keys ({}):", keys.len());
    for k in &keys {
        println!(
            "  {}  {:<8} {}  rpm={:<6} concurrency={:<4} priority={:<3} project={} endpoint={} {}",
            k.id,
            k.provider,
            k.fingerprint,
            k.rpm_limit,
            k.concurrency_limit,
            k.priority,
            k.project.as_deref().unwrap_or("-"),
            k.endpoint.as_deref().unwrap_or("default"),
            if k.enabled { "enabled" } else { "DISABLED" },
        );
        if let Some(why) = &k.last_error {
            println!("      last error: {why}");
        }
    }
    Ok(())
}

/// A tenant's limits as the command line gives them; `None` keeps what there is (the
/// configured default for a new tenant).
pub struct LimitArgs {
    pub rpm: Option<u32>,
    pub concurrency: Option<u32>,
    pub burst: Option<BurstArg>,
}

pub enum BurstArg {
    Set(u32),
    /// Back to `limits.tenant_burst`.
    Default,
}

fn check_limits(limits: &LimitArgs) -> anyhow::Result<()> {
    if limits.rpm == Some(0) || limits.concurrency == Some(0) {
        bail!("RPM and CONCURRENCY must be at least 1");
    }
    if matches!(limits.burst, Some(BurstArg::Set(0))) {
        bail!("--burst must be at least 1");
    }
    Ok(())
}

fn show_limits(config: &Config, tenant: &crate::store::Tenant) -> String {
    let burst = match tenant.burst {
        Some(b) => b.to_string(),
        None => format!("{} (default)", config.limits.tenant_burst),
    };
    format!(
        "rpm={} concurrency={} burst={burst}",
        tenant.rpm_limit, tenant.concurrency_limit
    )
}

pub async fn create_tenant(
    config: &Config,
    name: &str,
    limits: LimitArgs,
    webhook: Option<(String, crate::base::webhook::WebhookEvents)>,
) -> anyhow::Result<()> {
    let name = name.trim();
    if name.is_empty() {
        bail!("tenant name must not be empty");
    }
    check_limits(&limits)?;
    let rpm = limits.rpm.unwrap_or(config.limits.tenant_rpm);
    let concurrency = limits
        .concurrency
        .unwrap_or(config.limits.tenant_concurrency);
    if let Some((url, _)) = &webhook {
        // Refuse a bad URL before the tenant exists, not after.
        crate::webhooks::target::TargetGuard::new(&config.webhooks.allow_networks)
            .map_err(anyhow::Error::msg)?
            .precheck(url)
            .map_err(|e| anyhow::anyhow!("--webhook-url refused: {e}"))?;
    }
    let store = open_store(config).await?;
    let mut created = make_tenant(store.as_ref(), name, rpm, concurrency, None).await?;
    if let Some(BurstArg::Set(burst)) = limits.burst {
        created.tenant = store
            .tenant_update_limits(&created.tenant.id, rpm, concurrency, Some(burst))
            .await?;
    }
    println!(
        "tenant created: {} ({})",
        created.tenant.name, created.tenant.id
    );
    println!("  {}", show_limits(config, &created.tenant));
    println!("  API key (shown once, store it now): {}", created.api_key);
    if let Some((url, events)) = webhook {
        super::webhooks::set_webhook_on(config, store.as_ref(), &created.tenant.id, &url, events)
            .await?;
    }
    Ok(())
}

pub async fn set_tenant_limits(
    config: &Config,
    tenant_id: &str,
    limits: LimitArgs,
) -> anyhow::Result<()> {
    check_limits(&limits)?;
    let store = open_store(config).await?;
    let current = store
        .tenant_get(tenant_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant_id}"))?;
    let burst = match limits.burst {
        None => current.burst,
        Some(BurstArg::Set(n)) => Some(n),
        Some(BurstArg::Default) => None,
    };
    let tenant = store
        .tenant_update_limits(
            tenant_id,
            limits.rpm.unwrap_or(current.rpm_limit),
            limits.concurrency.unwrap_or(current.concurrency_limit),
            burst,
        )
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => anyhow::anyhow!("no tenant {tenant_id}"),
            other => anyhow::anyhow!(other),
        })?;
    println!(
        "tenant {} ({}): {}",
        tenant.name,
        tenant.id,
        show_limits(config, &tenant)
    );
    Ok(())
}

/// This build's providers: the command line accepts exactly the ones that take keys.
fn providers(config: &Config) -> anyhow::Result<Registry> {
    Registry::build(&config.providers).map_err(anyhow::Error::msg)
}

pub async fn add_provider_key(config: Config, args: ProviderKeySpec) -> anyhow::Result<()> {
    let provider = args.provider.to_lowercase();
    let registry = providers(&config)?;
    let known: Vec<&str> = registry.keyed().map(|p| p.name()).collect();
    if !known.contains(&provider.as_str()) {
        bail!(
            "unknown provider '{}': expected one of {}",
            args.provider,
            known.join(", ")
        );
    }
    if args.key.trim().is_empty() {
        bail!("the key must not be empty");
    }
    if args.rpm == 0 || args.concurrency == 0 {
        bail!("RPM and CONCURRENCY must be at least 1");
    }
    if let Some(endpoint) = &args.endpoint {
        let parsed = url::Url::parse(endpoint).context("--endpoint is not a valid URL")?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--endpoint must be an http or https URL");
        }
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let sealer = Sealer::from_env(&config.data_dir)?;
    let store = open_store(&config).await?;
    let spec = ProviderKeySpec {
        provider: provider.clone(),
        ..args
    };
    let record = add_provider_key_to(store.as_ref(), &sealer, spec)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                anyhow::anyhow!("this {provider} key is already registered")
            }
            other => anyhow::anyhow!(other),
        })?;
    println!(
        "provider key added: {} {} {} rpm={} concurrency={} priority={}",
        record.id,
        record.provider,
        record.fingerprint,
        record.rpm_limit,
        record.concurrency_limit,
        record.priority
    );
    Ok(())
}

/// `init`: a test tenant (with TEST_API_KEY if set) and the GEMINI_API_KEY_1..N keys.
pub async fn init(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let fixed = config
        .auth
        .test_api_key
        .as_ref()
        .map(|k| k.expose().to_owned());
    let exists = match &fixed {
        Some(key) => store
            .api_key_find(&crate::accounts::keys::hash_key(key))
            .await?
            .is_some(),
        None => false,
    };
    if exists {
        println!("test tenant already exists (TEST_API_KEY)");
    } else {
        let created = make_tenant(
            store.as_ref(),
            "test",
            config.limits.tenant_rpm,
            config.limits.tenant_concurrency,
            fixed.as_deref(),
        )
        .await?;
        println!("test tenant created: {}", created.tenant.id);
        if fixed.is_none() {
            println!("  API key (shown once, store it now): {}", created.api_key);
        }
    }
    drop(store);
    std::fs::create_dir_all(&config.data_dir)?;
    let sealer = Sealer::from_env(&config.data_dir)?;
    let store = open_store(&config).await?;
    let imported =
        crate::app::import_env_keys(store.as_ref(), &sealer, &providers(&config)?).await?;
    for name in &imported.already_registered {
        println!("  {name}: this key is already registered");
    }
    let added = imported.added;
    println!("init done: {added} provider key(s) added");
    Ok(())
}

/// `test-provider-key`: a free upstream call with the key; enables it on success. Running
/// servers pick the change up at their next key refresh.
pub async fn test_provider_key(config: &Config, key_id: &str) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let record = store
        .provider_key_list()
        .await?
        .into_iter()
        .find(|k| k.id == key_id)
        .ok_or_else(|| anyhow::anyhow!("no provider key {key_id}"))?;
    let sealer = Sealer::from_env(&config.data_dir)?;
    let key = PoolKey::open(&record, &sealer)?;
    match probe_key(&providers(config)?, &key).await {
        Ok(()) => {
            store.provider_key_set_enabled(key_id, true, None).await?;
            println!("{key_id} ({}): OK, enabled", record.fingerprint);
            Ok(())
        }
        Err(why) => bail!("{key_id} ({}): {why}", record.fingerprint),
    }
}
