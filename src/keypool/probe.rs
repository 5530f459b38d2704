//! Re-testing keys the pool disabled itself, through their provider's own probe.
//!
//! Owns: which keys are re-tested (disabled with a `last_error`: an upstream refused them; keys
//! an operator disabled are left alone) and enabling those that pass. Must not touch: how a
//! key is probed: that is each provider's [`Provider::probe`](crate::providers::Provider::probe)
//! (a cheap upstream call that spends no image quota).

use std::future::Future;

use super::{KeyPool, KeyPoolError, PoolKey};
use crate::providers::{ProviderError, Registry};

/// One key re-tested by [`KeyPool::probe_disabled`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub key_id: String,
    /// The probe passed and the key is enabled again.
    pub enabled: bool,
}

impl KeyPool {
    /// Re-tests the keys the pool disabled itself (a `last_error` is set) with `probe`, one
    /// at a time, and enables each that passes. Meant for a scheduled task; `probe` should be
    /// a cheap upstream call (listing models) that spends no image quota.
    pub async fn probe_disabled<F, Fut>(&self, probe: F) -> Result<Vec<ProbeReport>, KeyPoolError>
    where
        F: Fn(&PoolKey) -> Fut,
        Fut: Future<Output = bool>,
    {
        let disabled: Vec<PoolKey> = {
            let inner = self.lock();
            let mut keys: Vec<PoolKey> = inner
                .keys
                .values()
                .filter(|e| !e.key.enabled && e.last_error.is_some())
                .map(|e| e.key.clone())
                .collect();
            keys.sort_by(|a, b| a.id.cmp(&b.id));
            keys
        };
        let mut reports = Vec::with_capacity(disabled.len());
        for key in disabled {
            let passed = probe(&key).await;
            if passed {
                self.enable(&key.id).await?;
            }
            reports.push(ProbeReport {
                key_id: key.id,
                enabled: passed,
            });
        }
        Ok(reports)
    }
}

/// Asks the key's own provider whether the upstream accepts the key.
pub async fn probe_key(providers: &Registry, key: &PoolKey) -> Result<(), ProviderError> {
    let provider = providers
        .get(&key.provider)
        .ok_or_else(|| ProviderError::Final {
            code: crate::base::job_errors::INVALID_REQUEST.into(),
            message: format!("no provider '{}' in this build", key.provider),
        })?;
    provider.probe(&key.credential()).await
}

/// [`KeyPool::probe_disabled`] with each key's provider's own probe: what the scheduled task
/// runs.
pub async fn probe_disabled_keys(
    pool: &KeyPool,
    providers: &Registry,
) -> Result<Vec<ProbeReport>, KeyPoolError> {
    pool.probe_disabled(|key| {
        let key = key.clone();
        async move { probe_key(providers, &key).await.is_ok() }
    })
    .await
}
