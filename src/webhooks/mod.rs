//! Webhooks: tells a tenant's receiver when its jobs change, signed, at least once.
//!
//! Owns: delivery, signing, retries, the SSRF rules for receivers, and the management of a
//! tenant's endpoint and secrets. Must not touch: job state. The outbox rows it sends are
//! written by the store in the transaction of each status change (see migration
//! `0003_webhooks.sql`); the [`dispatcher`] only reads their snapshot of the event and
//! records its attempts, so a slow or broken receiver can never hold a job back.
//!
//! The path of one event: a status change inserts a job event → the outbox trigger inserts a
//! `webhook_deliveries` row (terminal statuses, or all of them if the tenant subscribed to
//! `all`; to the job's `webhookUrl`, else the tenant's URL) → a dispatcher claims it with a
//! lease → POSTs the contract payload with `X-Signature` and the Standard Webhooks headers
//! ([`signing`]) to the address it checked ([`target`]) → records the attempt: 2xx ends it,
//! 410 Gone disables the endpoint, anything else is retried on the Standard Webhooks schedule
//! with jitter (and never sooner than a `Retry-After`), until the last attempt fails it.

pub mod dispatcher;
pub mod signing;
pub mod target;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::clock::now_millis;
use crate::base::secret::Secret;
use crate::base::secret::{fingerprint, Sealer};
use crate::base::webhook::{SealedSecret, TenantWebhook, WebhookEvents, WebhookSet};
use crate::store::{Store, StoreError};
use target::TargetGuard;

/// `[webhooks]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct WebhooksConfig {
    /// Timeout of one attempt, connection included.
    pub timeout_secs: u64,
    /// Attempts in flight at once per worker process.
    pub concurrency: u32,
    /// Attempts in flight at once to one URL, across all processes.
    pub per_endpoint_concurrency: u32,
    /// How often an idle dispatcher looks for due deliveries.
    pub poll_ms: u64,
    /// Delays before the 2nd, 3rd, ... attempt; the first is immediate. The default is the
    /// Standard Webhooks schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
    pub retry_schedule_secs: Vec<f64>,
    /// Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter].
    pub jitter: f64,
    /// A receiver's `Retry-After` is honoured up to this long.
    pub max_retry_after_secs: u64,
    /// After a secret rotation the previous secret keeps signing this long.
    pub rotation_overlap_secs: u64,
    /// Private networks receivers may live in (e.g. `10.0.0.0/8`, `127.0.0.0/8` in tests).
    pub allow_networks: Vec<String>,
    /// How long the delivery log keeps a delivery after it ended (succeeded, failed or
    /// disabled); the maintenance pass deletes older ones. Pending deliveries are kept.
    pub retention_days: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_secs: 15,
            concurrency: 32,
            per_endpoint_concurrency: 4,
            poll_ms: 500,
            retry_schedule_secs: vec![
                5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0,
            ],
            jitter: 0.1,
            max_retry_after_secs: 86400,
            rotation_overlap_secs: 86400,
            allow_networks: Vec::new(),
            retention_days: 7,
        }
    }
}

impl WebhooksConfig {
    /// The first problem found, with the key it concerns.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.timeout_secs == 0 || self.timeout_secs > 300 {
            return Err(("webhooks.timeout_secs", "must be between 1 and 300".into()));
        }
        if self.concurrency == 0 {
            return Err(("webhooks.concurrency", "must be at least 1".into()));
        }
        if self.per_endpoint_concurrency == 0 {
            return Err((
                "webhooks.per_endpoint_concurrency",
                "must be at least 1".into(),
            ));
        }
        if self.poll_ms == 0 {
            return Err(("webhooks.poll_ms", "must be at least 1".into()));
        }
        if self
            .retry_schedule_secs
            .iter()
            .any(|d| !d.is_finite() || *d < 0.0 || *d > 30.0 * 86400.0)
        {
            return Err((
                "webhooks.retry_schedule_secs",
                "every delay must be between 0 and 30 days".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(("webhooks.jitter", "must be at least 0 and below 1".into()));
        }
        TargetGuard::new(&self.allow_networks).map_err(|p| ("webhooks.allow_networks", p))?;
        if !(1..=36500).contains(&self.retention_days) {
            return Err((
                "webhooks.retention_days",
                "must be between 1 and 36500".into(),
            ));
        }
        Ok(())
    }

    /// Attempts in all: the first one and one per scheduled delay.
    pub fn max_attempts(&self) -> u32 {
        1 + self.retry_schedule_secs.len() as u32
    }

    /// How long an ended delivery stays in the log.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days.saturating_mul(86400))
    }

    pub fn rotation_overlap(&self) -> Duration {
        Duration::from_secs(self.rotation_overlap_secs)
    }
}

/// Why an endpoint could not be set or rotated.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The URL is refused (malformed, not http(s), or a forbidden address).
    #[error("{0}")]
    InvalidUrl(String),
    /// No such tenant (set), or no endpoint yet (rotate).
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ManageError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ManageError::NotFound,
            other => ManageError::Store(other),
        }
    }
}

/// A new secret: in clear (to show once) and sealed (to store).
fn new_secret(sealer: &Sealer) -> (Secret, SealedSecret) {
    let secret = signing::generate_secret();
    let sealed = SealedSecret {
        sealed: sealer.seal(secret.expose()),
        fingerprint: fingerprint(secret.expose()),
    };
    (secret, sealed)
}

/// Sets the tenant's webhook URL (or none: per-job URLs only) and event filter, enabling the
/// endpoint again. Returns the endpoint and, when this created its secret, the secret in
/// clear (shown once, never stored in clear).
pub async fn set_endpoint(
    store: &dyn Store,
    sealer: &Sealer,
    guard: &TargetGuard,
    tenant_id: &str,
    url: Option<&str>,
    events: WebhookEvents,
) -> Result<(TenantWebhook, Option<Secret>), ManageError> {
    let url = match url {
        Some(raw) => Some(
            guard
                .precheck(raw)
                .map_err(|e| ManageError::InvalidUrl(e.message))?
                .to_string(),
        ),
        None => None,
    };
    let (secret, sealed) = new_secret(sealer);
    let set = WebhookSet {
        url,
        events,
        secret_if_missing: sealed,
    };
    let (webhook, created) = store.webhook_set(tenant_id, set).await?;
    Ok((webhook, created.then_some(secret)))
}

/// Rotates the tenant's signing secret: the new one signs from now on; the old one keeps
/// signing (beside it) for `overlap`. Returns the endpoint and the new secret in clear.
pub async fn rotate_secret(
    store: &dyn Store,
    sealer: &Sealer,
    tenant_id: &str,
    overlap: Duration,
) -> Result<(TenantWebhook, Secret), ManageError> {
    let (secret, sealed) = new_secret(sealer);
    let until = now_millis().saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(0));
    let webhook = store
        .webhook_rotate_secret(tenant_id, sealed, until)
        .await?;
    Ok((webhook, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_follow_the_standard_schedule() {
        let c = WebhooksConfig::default();
        c.validate().expect("valid");
        assert_eq!(c.max_attempts(), 10);
        let bad = WebhooksConfig {
            jitter: 1.5,
            ..WebhooksConfig::default()
        };
        assert_eq!(bad.validate().expect_err("jitter").0, "webhooks.jitter");
        let bad = WebhooksConfig {
            retry_schedule_secs: vec![-1.0],
            ..WebhooksConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = WebhooksConfig {
            allow_networks: vec!["x".into()],
            ..WebhooksConfig::default()
        };
        assert_eq!(
            bad.validate().expect_err("net").0,
            "webhooks.allow_networks"
        );
        assert_eq!(c.retention(), Duration::from_secs(7 * 86400));
        let bad = WebhooksConfig {
            retention_days: 0,
            ..WebhooksConfig::default()
        };
        assert_eq!(
            bad.validate().expect_err("retention").0,
            "webhooks.retention_days"
        );
    }
}
