//! Webhook admin commands: `set-webhook`, `rotate-webhook-secret`, and the `--webhook-url` of
//! `create-tenant`. A secret is printed once, when it is created; never stored in clear.

use anyhow::{bail, Context};

use crate::base::secret::Sealer;
use crate::base::webhook::WebhookEvents;
use crate::config::Config;
use crate::store::Store;
use crate::webhooks::target::{redact, TargetGuard};
use crate::webhooks::{rotate_secret, set_endpoint, ManageError};

fn sealer(config: &Config) -> anyhow::Result<Sealer> {
    std::fs::create_dir_all(&config.data_dir)?;
    Ok(Sealer::load(
        std::env::var("EASEL_MASTER_KEY").ok().as_deref(),
        &config.data_dir,
    )?)
}

pub fn parse_events(raw: &str) -> anyhow::Result<WebhookEvents> {
    WebhookEvents::parse(raw)
        .ok_or_else(|| anyhow::anyhow!("--events '{raw}' is not one of: terminal, all"))
}

fn explain(err: ManageError, tenant_id: &str) -> anyhow::Error {
    match err {
        ManageError::InvalidUrl(message) => anyhow::anyhow!("URL refused: {message}"),
        ManageError::NotFound => anyhow::anyhow!("no tenant {tenant_id}"),
        ManageError::Store(e) => anyhow::anyhow!(e),
    }
}

/// Sets the tenant's webhook and prints what was done (and the secret, if it was created).
pub async fn set_webhook_on(
    config: &Config,
    store: &dyn Store,
    tenant_id: &str,
    url: &str,
    events: WebhookEvents,
) -> anyhow::Result<()> {
    let guard = TargetGuard::new(&config.webhooks.allow_networks).map_err(anyhow::Error::msg)?;
    let sealer = sealer(config)?;
    let (webhook, secret) = set_endpoint(store, &sealer, &guard, tenant_id, Some(url), events)
        .await
        .map_err(|e| explain(e, tenant_id))?;
    println!(
        "webhook set: {} events={}",
        redact(webhook.url.as_deref().unwrap_or("-")),
        webhook.events.as_str()
    );
    match secret {
        Some(secret) => println!(
            "  signing secret (shown once, store it now): {}",
            secret.expose()
        ),
        None => println!(
            "  signing secret unchanged ({}); `rotate-webhook-secret` makes a new one",
            webhook.secret.fingerprint
        ),
    }
    Ok(())
}

pub async fn set_webhook(
    config: &Config,
    tenant_id: &str,
    url: &str,
    events: &str,
) -> anyhow::Result<()> {
    let events = parse_events(events)?;
    let store = crate::app::open_store(config).await?;
    set_webhook_on(config, store.as_ref(), tenant_id, url, events).await
}

pub async fn rotate(
    config: &Config,
    tenant_id: &str,
    overlap_secs: Option<u64>,
) -> anyhow::Result<()> {
    let overlap = match overlap_secs {
        Some(secs) if secs > 7 * 24 * 3600 => bail!("--overlap-secs must be at most 7 days"),
        Some(secs) => std::time::Duration::from_secs(secs),
        None => config.webhooks.rotation_overlap(),
    };
    let sealer = sealer(config)?;
    let store = crate::app::open_store(config).await?;
    let (webhook, secret) = rotate_secret(store.as_ref(), &sealer, tenant_id, overlap)
        .await
        .map_err(|e| match e {
            ManageError::NotFound => anyhow::anyhow!(
                "tenant {tenant_id} has no webhook yet: run `easel set-webhook {tenant_id} URL`"
            ),
            other => explain(other, tenant_id),
        })
        .context("rotating the webhook secret")?;
    println!(
        "webhook secret rotated for {tenant_id}: new {}",
        webhook.secret.fingerprint
    );
    if let Some(prev) = &webhook.prev_secret {
        println!(
            "  the previous secret ({}) keeps signing for {} s",
            prev.fingerprint,
            overlap.as_secs()
        );
    }
    println!(
        "  signing secret (shown once, store it now): {}",
        secret.expose()
    );
    Ok(())
}
