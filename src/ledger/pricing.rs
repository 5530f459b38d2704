//! What a job costs and which account pays it.
//!
//! A price is credits per image for an (operation, mode, provider), from the tenant's own
//! rules (`*` matches any field; the most specific wins) or else the default, 1 credit per
//! image, as the origins charge (a photo task and an editor generation cost 1 credit per
//! image; a Midjourney call costs 1 token). Who pays: an end user pays from their account, an
//! app key from its token account, and the job API charges the tenant's own account only when
//! the tenant turned prepaid billing on (otherwise it is free, as the origin job API is).
//!
//! The rules and the prepaid flag are read through a short cache: a submit does not read
//! them from the store every time, and a change applies within [`CACHE_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::base::ledger::{best_rule, AccountRef, Charge, PriceRule};
use crate::store::{Store, StoreResult};

/// How long a tenant's prices are trusted before they are read again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// Credits per image when no rule matches.
pub const DEFAULT_CREDITS_PER_IMAGE: i64 = 1;

/// Who a job is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payer {
    /// The job API: the tenant itself (free unless prepaid).
    Tenant,
    /// A signed-in end user of a consumer app.
    EndUser { user_id: String },
    /// A Midjourney app key (its API key id).
    AppKey { api_key_id: String },
}

/// What is being priced.
#[derive(Debug, Clone, Copy)]
pub struct Priced<'a> {
    pub operation: &'a str,
    pub mode: &'a str,
    pub provider: &'a str,
    /// Images asked for (a Midjourney call counts as one).
    pub images: u32,
}

#[derive(Debug)]
struct TenantPrices {
    read_at: Instant,
    prepaid: bool,
    rules: Arc<[PriceRule]>,
}

/// Prices with a short per-tenant cache.
pub struct Pricing {
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<String, TenantPrices>>,
    ttl: Duration,
}

impl Pricing {
    pub fn new(store: Arc<dyn Store>) -> Pricing {
        Pricing::with_ttl(store, CACHE_TTL)
    }

    /// A cache of `ttl` (tests use zero to see every change at once).
    pub fn with_ttl(store: Arc<dyn Store>, ttl: Duration) -> Pricing {
        Pricing {
            store,
            cache: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The charge for a job, or `None` when it is free.
    pub async fn charge(
        &self,
        tenant_id: &str,
        payer: &Payer,
        priced: Priced<'_>,
    ) -> StoreResult<Option<Charge>> {
        let (prepaid, rules) = self.tenant(tenant_id).await?;
        let account = match payer {
            Payer::Tenant if !prepaid => return Ok(None),
            Payer::Tenant => AccountRef::tenant(tenant_id),
            Payer::EndUser { user_id } => AccountRef::user(tenant_id, user_id),
            Payer::AppKey { api_key_id } => AccountRef::app_key(tenant_id, api_key_id),
        };
        let amount = price(&rules, priced);
        Ok((amount > 0).then_some(Charge { account, amount }))
    }

    /// Forgets a tenant's cached prices (after a change made through this process).
    pub fn forget(&self, tenant_id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(tenant_id);
        }
    }

    async fn tenant(&self, tenant_id: &str) -> StoreResult<(bool, Arc<[PriceRule]>)> {
        if let Ok(cache) = self.cache.lock() {
            if let Some(t) = cache.get(tenant_id) {
                if t.read_at.elapsed() < self.ttl {
                    return Ok((t.prepaid, t.rules.clone()));
                }
            }
        }
        let prepaid = self.store.billing_get(tenant_id).await?.prepaid;
        let rules: Arc<[PriceRule]> = self.store.price_rules(tenant_id).await?.into();
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                tenant_id.to_owned(),
                TenantPrices {
                    read_at: Instant::now(),
                    prepaid,
                    rules: rules.clone(),
                },
            );
        }
        Ok((prepaid, rules))
    }
}

/// Credits for `priced` under `rules` (the default when none matches).
pub fn price(rules: &[PriceRule], priced: Priced<'_>) -> i64 {
    let per_image = best_rule(rules, priced.operation, priced.mode, priced.provider)
        .map_or(DEFAULT_CREDITS_PER_IMAGE, |r| r.credits);
    per_image.saturating_mul(i64::from(priced.images.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_is_per_image_with_the_default_of_one() {
        let priced = |images| Priced {
            operation: "generate",
            mode: "final",
            provider: "gemini",
            images,
        };
        assert_eq!(price(&[], priced(1)), 1);
        assert_eq!(price(&[], priced(4)), 4);
        let rules = [PriceRule {
            operation: "generate".into(),
            mode: "*".into(),
            provider: "*".into(),
            credits: 3,
        }];
        assert_eq!(price(&rules, priced(2)), 6);
        let free = [PriceRule {
            operation: "*".into(),
            mode: "*".into(),
            provider: "*".into(),
            credits: 0,
        }];
        assert_eq!(price(&free, priced(2)), 0);
    }
}
