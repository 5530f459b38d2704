//! Keys into the store and from the store into the pool.
//!
//! Owns: what a key is registered with ([`ProviderKeySpec`], also the command line's
//! arguments), sealing and storing it ([`add_provider_key`]), and [`KeyPool::reload`], which
//! opens the sealed records and keeps each surviving key's run-time state. Must not touch:
//! selection or health rules.

use std::collections::HashMap;
use std::fmt;

use super::{KeyEntry, KeyPool, KeyPoolError, PoolKey, ProjectEntry};
use crate::base::secret::{fingerprint, CryptoError, Sealer};
use crate::store::{NewProviderKey, ProviderKeyRecord, Store, StoreError};

/// What an upstream key is registered with; also the arguments of `easel add-provider-key`
/// (flattened into each command that takes a key), so the fields are described once.
#[derive(Clone, clap::Args)]
pub struct ProviderKeySpec {
    /// Provider the key is for (one of this build's providers that take keys).
    pub provider: String,
    /// The upstream key itself (stored encrypted; never shown again).
    pub key: String,
    /// Requests per minute the key may send.
    pub rpm: u32,
    /// Calls the key may have in flight at once.
    pub concurrency: u32,
    /// Base URL of the upstream (official endpoint or a relay).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Higher goes first.
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// Cloud project the key belongs to (keys of one project share its quota).
    #[arg(long)]
    pub project: Option<String>,
}

impl fmt::Debug for ProviderKeySpec {
    // The key never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderKeySpec")
            .field("provider", &self.provider)
            .field("key", &"****")
            .field("rpm", &self.rpm)
            .field("concurrency", &self.concurrency)
            .field("endpoint", &self.endpoint)
            .field("priority", &self.priority)
            .field("project", &self.project)
            .finish()
    }
}

/// Seals and stores an upstream key. `Conflict` if the same key is already registered.
pub async fn add_provider_key(
    store: &dyn Store,
    sealer: &Sealer,
    spec: ProviderKeySpec,
) -> Result<ProviderKeyRecord, StoreError> {
    let key = spec.key.trim();
    store
        .provider_key_add(NewProviderKey {
            id: format!("pk_{}", ulid::Ulid::new().to_string().to_lowercase()),
            provider: spec.provider,
            secret_sealed: sealer.seal(key),
            fingerprint: fingerprint(key),
            rpm_limit: spec.rpm,
            concurrency_limit: spec.concurrency,
            endpoint: spec.endpoint,
            priority: spec.priority,
            project: spec.project,
        })
        .await
}

impl PoolKey {
    /// Opens a stored record with the master key. An empty endpoint or project is none.
    pub fn open(record: &ProviderKeyRecord, sealer: &Sealer) -> Result<PoolKey, CryptoError> {
        Ok(PoolKey {
            id: record.id.clone(),
            provider: record.provider.clone(),
            secret: sealer.open(&record.secret_sealed)?,
            base_url: record.endpoint.clone().filter(|u| !u.trim().is_empty()),
            rpm: record.rpm_limit,
            concurrency: record.concurrency_limit,
            priority: record.priority,
            project: record.project.clone().filter(|p| !p.trim().is_empty()),
            enabled: record.enabled,
        })
    }
}

/// What [`KeyPool::reload`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Keys in the pool now.
    pub keys: usize,
    /// Records left out, with why (a secret that does not open, a zero limit).
    pub skipped: Vec<(String, String)>,
}

impl KeyPool {
    /// Reads every provider key from the store into the pool (see [`KeyPool::reload`]).
    pub async fn load(&self) -> Result<ReloadSummary, KeyPoolError> {
        let records = self.store.provider_key_list().await?;
        Ok(self.reload(&records))
    }

    /// Replaces the pool's keys with `records`. A key that is still there (same id, same
    /// fingerprint) keeps its run-time state: breaker, cool-down, in-flight leases, counters.
    /// The record's `enabled` flag wins: the store is where operators change it. A record
    /// whose secret does not open (wrong master key) is left out and reported, not fatal.
    pub fn reload(&self, records: &[ProviderKeyRecord]) -> ReloadSummary {
        let mut skipped = Vec::new();
        let mut opened = Vec::with_capacity(records.len());
        for record in records {
            if record.rpm_limit == 0 || record.concurrency_limit == 0 {
                skipped.push((record.id.clone(), "rpm and concurrency must be > 0".into()));
                continue;
            }
            let key = match PoolKey::open(record, &self.sealer) {
                Ok(key) => key,
                Err(e) => {
                    tracing::error!(key_id = %record.id, fingerprint = %record.fingerprint,
                        error = %e, "provider key left out of the pool");
                    skipped.push((record.id.clone(), e.to_string()));
                    continue;
                }
            };
            opened.push((key, record.fingerprint.clone(), record.last_error.clone()));
        }

        let mut inner = self.lock();
        let mut old = std::mem::take(&mut inner.keys);
        for (key, fingerprint, stored_error) in opened {
            let entry = match old.remove(&key.id) {
                // A new secret under an old id is a new key: it starts clean.
                Some(mut entry) if entry.fingerprint == fingerprint => {
                    let was_enabled = entry.key.enabled;
                    entry.key = key;
                    entry.breaker.set_config(self.config.breaker);
                    if entry.key.enabled && !was_enabled {
                        entry.revive();
                    } else if !entry.key.enabled {
                        // For a disabled key the stored reason is the truth: none means an
                        // operator disabled it, and the scheduled probe must leave it alone
                        // even if this process saw upstream errors on it before.
                        entry.last_error = stored_error;
                    }
                    entry
                }
                _ => KeyEntry::new(key, fingerprint, stored_error, &self.config),
            };
            inner.keys.insert(entry.key.id.clone(), entry);
        }
        let old_projects = std::mem::take(&mut inner.projects);
        let mut projects: HashMap<String, ProjectEntry> = HashMap::new();
        for entry in inner.keys.values() {
            if let Some(name) = entry.key.project_key() {
                let parked_until = old_projects.get(&name).and_then(|p| p.parked_until);
                let project = projects.entry(name).or_insert(ProjectEntry {
                    rpm: 0,
                    parked_until,
                });
                project.rpm = project.rpm.max(entry.key.rpm);
            }
        }
        inner.projects = projects;
        ReloadSummary {
            keys: inner.keys.len(),
            skipped,
        }
    }
}
