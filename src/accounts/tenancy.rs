//! Which tenant a consumer request belongs to before sign-in: the tenant that claims the
//! request's host name, else the default tenant (`users.default_tenant`, an id or a name, or
//! the oldest tenant). Both answers are cached briefly, so a changed claim is seen within
//! seconds on every node.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{Store, StoreError, Tenant};

const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 10_000;

/// Host → (claiming tenant, when looked up).
type HostCache = HashMap<String, (Option<String>, Instant)>;

#[derive(Clone)]
pub struct TenantResolver {
    store: Arc<dyn Store>,
    configured_default: Option<String>,
    hosts: Arc<RwLock<HostCache>>,
    default: Arc<RwLock<Option<(String, Instant)>>>,
}

/// A host name as claimed and looked up: lowercase, no port, no trailing dot. `None` when it
/// is not a plausible host name.
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name.to_owned()
        }
        _ => host,
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'));
    valid.then_some(host)
}

/// Host names as a tenant claims them: normalised, each once; an error names a bad one.
pub fn parse_hosts(hosts: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for host in hosts {
        let normal = normalize_host(host).ok_or_else(|| format!("{host:?} is not a host name"))?;
        if !out.contains(&normal) {
            out.push(normal);
        }
    }
    Ok(out)
}

impl TenantResolver {
    pub fn new(store: Arc<dyn Store>, configured_default: Option<String>) -> TenantResolver {
        TenantResolver {
            store,
            configured_default,
            hosts: Arc::new(RwLock::new(HashMap::new())),
            default: Arc::new(RwLock::new(None)),
        }
    }

    /// The tenant for a request with this `Host` header.
    pub async fn for_host(&self, host: Option<&str>) -> Result<String, StoreError> {
        if let Some(host) = host.and_then(normalize_host) {
            if let Some(tenant) = self.claimed_by(&host).await? {
                return Ok(tenant);
            }
        }
        self.default_tenant().await
    }

    /// The default tenant's id; `NotFound` when there is no tenant at all.
    pub async fn default_tenant(&self) -> Result<String, StoreError> {
        if let Ok(cached) = self.default.read() {
            if let Some((id, at)) = cached.as_ref() {
                if at.elapsed() < CACHE_TTL {
                    return Ok(id.clone());
                }
            }
        }
        let tenants = self.store.tenant_list().await?;
        let chosen: Option<&Tenant> = match &self.configured_default {
            Some(wanted) => tenants
                .iter()
                .find(|t| &t.id == wanted || &t.name == wanted),
            None => tenants.first(),
        };
        let id = chosen.map(|t| t.id.clone()).ok_or(StoreError::NotFound)?;
        if let Ok(mut cached) = self.default.write() {
            *cached = Some((id.clone(), Instant::now()));
        }
        Ok(id)
    }

    /// Forgets cached host claims (they changed in this process).
    pub fn forget_hosts(&self) {
        if let Ok(mut hosts) = self.hosts.write() {
            hosts.clear();
        }
    }

    /// The tenant claiming this `Host` header's name, if any.
    pub async fn claimed(&self, host: &str) -> Result<Option<String>, StoreError> {
        match normalize_host(host) {
            Some(host) => self.claimed_by(&host).await,
            None => Ok(None),
        }
    }

    async fn claimed_by(&self, host: &str) -> Result<Option<String>, StoreError> {
        if let Ok(hosts) = self.hosts.read() {
            if let Some((tenant, at)) = hosts.get(host) {
                if at.elapsed() < CACHE_TTL {
                    return Ok(tenant.clone());
                }
            }
        }
        let tenant = self.store.tenant_by_host(host).await?;
        if let Ok(mut hosts) = self.hosts.write() {
            if hosts.len() >= CACHE_MAX {
                hosts.clear();
            }
            hosts.insert(host.to_owned(), (tenant.clone(), Instant::now()));
        }
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(
            normalize_host("Photo.Example.COM:8443").as_deref(),
            Some("photo.example.com")
        );
        assert_eq!(normalize_host("a.example.").as_deref(), Some("a.example"));
        assert_eq!(normalize_host("bad host"), None);
        assert_eq!(normalize_host(""), None);
    }
}
