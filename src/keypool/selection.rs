//! Which key one provider call gets, and how many calls this process could still start.
//!
//! Owns: the order of candidates, the breaker admission taken under the pool's lock, the
//! permit and rate tokens taken from the limiter, and renewing a long call's permit. Must not
//! touch: what an outcome does to a key (that is [`super::health`]).
//!
//! # Selection
//! Candidates are the provider's enabled keys whose breaker admits a request, that are not
//! cooling down after a 429, and whose project is not parked. Highest priority first; among
//! equals the least loaded (in flight / concurrency); ties by least recently picked. For each
//! candidate in that order the pool peeks at the key's rate (and its project's), takes a
//! concurrency permit `key:<id>` from the [`Limiter`](crate::limits::Limiter) (limit = the key's concurrency, leased),
//! then a rate token on `key:<id>` (the key's RPM) and, for a key with a project, on
//! `project:<provider>:<project>`. A refused rate gives the permit back and the next candidate
//! is tried. The limiter enforces the limits across processes; the ordering (load, recency) is
//! this process's view only, which is all a heuristic needs.
//!
//! **Project budget.** Google meters quotas per Cloud project, not per key, so all keys of
//! one `project` share one rate `project:<provider>:<project>` whose RPM is the LARGEST RPM
//! configured among that project's keys (enabled or not: the project's quota does not change
//! when one of its keys is switched off). Not the sum: adding a second key to a project adds
//! concurrency and failover, never rate. Each key's own RPM still applies as well.
//!
//! Tokens are taken only after a peek said they were there, so a refused rate normally costs
//! nothing. Between the peek and the take another caller can win the race; then the key's token
//! (taken first) is spent without a request. That over-count only ever makes the pool send
//! less than the limits allow, never more, and it is not worth a lock around the limiter.
//! Rates are `RateQuota::per_minute(rpm)`: evenly spaced, never more than `rpm` in any 60 s
//! window.

use std::cmp::{Ordering, Reverse};
use std::collections::HashMap;
use std::time::Duration;

use super::breaker::Admission;
use super::key_limit_key;
use super::{micros, Inner, KeyEntry, KeyPool, KeyPoolError};
use crate::limits::{LimitError, Permit, PermitSpec, RateQuota};
use crate::providers::UpstreamCredential;

/// One key taken for one provider call. Give it back with [`KeyPool::report`].
#[derive(Debug)]
pub struct KeyLease {
    pub key_id: String,
    pub provider: String,
    pub credential: UpstreamCredential,
    /// The concurrency slot held in the limiter.
    pub permit: Permit,
    pub(super) admission: Admission,
}

impl KeyLease {
    /// Whether this call is the half-open probe of the key's breaker.
    pub fn is_probe(&self) -> bool {
        self.admission.is_probe()
    }
}

/// What `acquire` needs of one candidate outside the lock.
struct Candidate {
    id: String,
    rpm: u32,
    concurrency: u32,
    /// The project's rate key and shared RPM.
    project: Option<(String, u32)>,
}

impl Inner {
    fn usable(&self, entry: &KeyEntry, now: u64) -> bool {
        let project_parked = entry
            .key
            .project_key()
            .and_then(|p| self.projects.get(&p))
            .and_then(|p| p.parked_until)
            .is_some_and(|t| now < t);
        entry.key.enabled
            && !project_parked
            && entry.cooldown_until.is_none_or(|t| now >= t)
            && entry.parked_until.is_none_or(|t| now >= t)
            && entry.breaker.would_admit(now)
    }

    /// The provider's usable keys in the order they should be tried.
    fn candidates(&mut self, provider: &str, now: u64) -> Vec<Candidate> {
        let mut loads: HashMap<String, u32> = HashMap::new();
        for entry in self.keys.values_mut() {
            if entry.key.provider == provider {
                loads.insert(entry.key.id.clone(), entry.in_flight(now));
            }
        }
        let mut usable: Vec<(&KeyEntry, u32)> = self
            .keys
            .values()
            .filter(|e| e.key.provider == provider)
            .filter_map(|e| Some((e, *loads.get(&e.key.id)?)))
            // Full by this process's own leases alone: no need to ask the limiter.
            .filter(|(e, load)| *load < e.key.concurrency)
            .filter(|(e, _)| self.usable(e, now))
            .collect();
        usable.sort_by(|(a, load_a), (b, load_b)| {
            Reverse(a.key.priority)
                .cmp(&Reverse(b.key.priority))
                .then_with(|| compare_load(*load_a, a.key.concurrency, *load_b, b.key.concurrency))
                .then_with(|| a.last_pick.cmp(&b.last_pick))
                .then_with(|| a.key.id.cmp(&b.key.id))
        });
        usable
            .into_iter()
            .map(|(e, _)| Candidate {
                id: e.key.id.clone(),
                rpm: e.key.rpm,
                concurrency: e.key.concurrency,
                project: e.key.project_key().map(|p| {
                    let rpm = self.projects.get(&p).map_or(e.key.rpm, |entry| entry.rpm);
                    (p, rpm)
                }),
            })
            .collect()
    }

    /// Re-checks the key under the lock and reserves its breaker admission (the probe slot when
    /// half-open), so two callers never both probe one key.
    fn admit(&mut self, id: &str, now: u64, lease: Duration) -> Option<Admission> {
        let usable = self.keys.get(id).is_some_and(|e| self.usable(e, now));
        if !usable {
            return None;
        }
        self.keys.get_mut(id)?.breaker.admit(now, lease)
    }

    fn release_admission(&mut self, id: &str, admission: Admission) {
        if let Some(entry) = self.keys.get_mut(id) {
            entry.breaker.release(admission);
        }
    }
}

/// Least loaded first: `a / ca` against `b / cb` without floating point.
fn compare_load(a: u32, ca: u32, b: u32, cb: u32) -> Ordering {
    (u64::from(a) * u64::from(cb.max(1))).cmp(&(u64::from(b) * u64::from(ca.max(1))))
}

impl KeyPool {
    /// How many more calls this process could start on `provider`'s usable keys, counting
    /// only its own leases: an upper bound the worker uses to size its claims, so jobs wait in
    /// the queue rather than holding a claim while no key is free. `acquire` decides for real.
    pub fn free_slots(&self, provider: &str) -> u32 {
        let now = self.clock.now_micros();
        let mut inner = self.lock();
        let ids: Vec<String> = inner
            .keys
            .values()
            .filter(|e| e.key.provider == provider)
            .map(|e| e.key.id.clone())
            .collect();
        let mut free = 0u32;
        for id in ids {
            let usable = inner.keys.get(&id).is_some_and(|e| inner.usable(e, now));
            if let Some(entry) = inner.keys.get_mut(&id) {
                if usable {
                    free = free
                        .saturating_add(entry.key.concurrency.saturating_sub(entry.in_flight(now)));
                }
            }
        }
        free
    }

    /// Takes a key of `provider` for one call whose permit lasts `lease` (renew with
    /// [`KeyPool::renew`] for longer calls). `None` when no key can take a call now: every key
    /// is busy, over its rate, cooling down, parked, open or disabled. The caller keeps the
    /// job queued and asks again later.
    pub async fn acquire(
        &self,
        provider: &str,
        lease: Duration,
    ) -> Result<Option<KeyLease>, KeyPoolError> {
        let candidates = {
            let now = self.now();
            self.lock().candidates(provider, now)
        };
        for candidate in candidates {
            let admission = {
                let now = self.now();
                let admitted = self.lock().admit(&candidate.id, now, lease);
                match admitted {
                    Some(admission) => admission,
                    // Changed since the list was made (a report, a reload, another probe).
                    None => continue,
                }
            };
            let taken = self.take(&candidate, lease).await;
            let permit = match taken {
                Ok(Some(permit)) => permit,
                Ok(None) => {
                    self.lock().release_admission(&candidate.id, admission);
                    continue;
                }
                Err(e) => {
                    self.lock().release_admission(&candidate.id, admission);
                    return Err(e.into());
                }
            };
            let leased = {
                let now = self.now();
                let mut inner = self.lock();
                inner.picks += 1;
                let pick = inner.picks;
                inner.keys.get_mut(&candidate.id).map(|entry| {
                    entry.last_pick = pick;
                    entry.counts.requests += 1;
                    entry
                        .leases
                        .insert(permit.id.clone(), now.saturating_add(micros(lease)));
                    KeyLease {
                        key_id: entry.key.id.clone(),
                        provider: entry.key.provider.clone(),
                        credential: entry.key.credential(),
                        permit: permit.clone(),
                        admission,
                    }
                })
            };
            match leased {
                Some(lease) => return Ok(Some(lease)),
                // A reload removed the key while its permit was being taken.
                None => self.limiter.permit_release(&permit).await?,
            }
        }
        Ok(None)
    }

    /// Peeks, then takes the permit and the rate tokens of one candidate; `None` (and nothing
    /// held) if any of them is refused.
    async fn take(
        &self,
        candidate: &Candidate,
        lease: Duration,
    ) -> Result<Option<Permit>, LimitError> {
        let key = key_limit_key(&candidate.id);
        let key_quota = RateQuota::per_minute_clamped(candidate.rpm);
        // Peeks first, so a key over its rate neither takes a slot nor burns its project's
        // token (see the module docs for the race this leaves).
        if !self.limiter.rate_peek(&key, key_quota).await?.allowed {
            return Ok(None);
        }
        if let Some((project, rpm)) = &candidate.project {
            let quota = RateQuota::per_minute_clamped(*rpm);
            if !self.limiter.rate_peek(project, quota).await?.allowed {
                return Ok(None);
            }
        }
        let spec = [PermitSpec::new(key.clone(), candidate.concurrency)];
        let Some(permit) = self.limiter.permits_acquire(&spec, lease).await? else {
            return Ok(None);
        };
        match self.take_rates(candidate, &key, key_quota).await {
            Ok(true) => Ok(Some(permit)),
            Ok(false) => {
                self.limiter.permit_release(&permit).await?;
                Ok(None)
            }
            Err(e) => {
                // Best effort: an unreleased permit ends with its lease anyway.
                let _ = self.limiter.permit_release(&permit).await;
                Err(e)
            }
        }
    }

    /// The key's own token first: if the project's is then refused, only this key's budget
    /// loses a token, not the budget every key of the project shares.
    async fn take_rates(
        &self,
        candidate: &Candidate,
        key: &str,
        key_quota: RateQuota,
    ) -> Result<bool, LimitError> {
        if !self.limiter.rate_acquire(key, key_quota, 1).await?.allowed {
            return Ok(false);
        }
        if let Some((project, rpm)) = &candidate.project {
            let quota = RateQuota::per_minute_clamped(*rpm);
            if !self.limiter.rate_acquire(project, quota, 1).await?.allowed {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Extends the lease's permit (a long call). `false` if it had already expired: the call
    /// should stop, since its slot may be someone else's by now.
    pub async fn renew(&self, lease: &KeyLease, duration: Duration) -> Result<bool, KeyPoolError> {
        let renewed = self.limiter.permit_renew(&lease.permit, duration).await?;
        if renewed {
            let now = self.now();
            if let Some(entry) = self.lock().keys.get_mut(&lease.key_id) {
                entry.leases.insert(
                    lease.permit.id.clone(),
                    now.saturating_add(micros(duration)),
                );
                entry.breaker.extend(lease.admission, now, duration);
            }
        }
        Ok(renewed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_ordering_is_relative_to_concurrency() {
        // 1 of 4 is less loaded than 1 of 2; 2 of 4 equals 1 of 2.
        assert_eq!(compare_load(1, 4, 1, 2), Ordering::Less);
        assert_eq!(compare_load(2, 4, 1, 2), Ordering::Equal);
        assert_eq!(compare_load(0, 1, 0, 9), Ordering::Equal);
    }
}
