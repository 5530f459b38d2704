//! Authenticates tenant API keys with a cache, so the hot path costs no database round trip.
//!
//! The cache maps the key's SHA-256 to its tenant. Entries live for a short TTL so a revoked
//! key or a changed limit is seen within that time on every node.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::keys::hash_key;
use crate::store::{Store, StoreError, Tenant};

const CACHE_TTL: Duration = Duration::from_secs(5);
/// Past this many entries the cache is cleared rather than grown without bound.
const CACHE_MAX: usize = 100_000;

/// Key hash -> (tenant, when it was cached).
type KeyCache = HashMap<[u8; 32], (Tenant, Instant)>;

#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: Arc<RwLock<KeyCache>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Authenticator {
        Authenticator {
            store,
            cache: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// The tenant owning `presented`, or `None` if no live key matches.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Tenant>, StoreError> {
        let hash = hash_key(presented);
        if let Some(tenant) = self.cached(&hash) {
            return Ok(Some(tenant));
        }
        let Some(record) = self.store.api_key_find(&hash).await? else {
            return Ok(None);
        };
        // The store matched by hash; compare again in constant time before trusting it.
        if !bool::from(record.key_hash.ct_eq(&hash)) {
            return Ok(None);
        }
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(hash, (record.tenant.clone(), Instant::now()));
        }
        Ok(Some(record.tenant))
    }

    /// Forgets cached entries of a tenant (its limits changed in this process).
    pub fn forget_tenant(&self, tenant_id: &str) {
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, (tenant, _)| tenant.id != tenant_id);
        }
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Tenant> {
        let cache = self.cache.read().ok()?;
        let (tenant, at) = cache.get(hash)?;
        (at.elapsed() < CACHE_TTL).then(|| tenant.clone())
    }
}
