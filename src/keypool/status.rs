//! What admins and `/metrics` see of each key: its limits, breaker, cool-down, parking, last
//! error and counters. Never the secret. The `/metrics` gauges are set from here
//! ([`record_metrics`]): telemetry takes plain labels and numbers and knows no key pool.

use std::cmp::Reverse;

use serde::Serialize;

use super::breaker::BreakerState;
use super::{key_limit_key, KeyPool, KeyPoolError, PoolKey};
use crate::base::clock::Millis;
use crate::telemetry::{self, UpstreamKeyGauges};

/// A key's state for admins. Never the secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStatus {
    pub id: String,
    pub provider: String,
    pub fingerprint: String,
    pub priority: i32,
    pub project: Option<String>,
    pub rpm: u32,
    pub concurrency: u32,
    pub enabled: bool,
    pub breaker: BreakerState,
    /// While open: when the breaker lets a probe through (Unix ms).
    pub breaker_open_until: Option<Millis>,
    /// Outcomes and failures in the breaker's current window.
    pub window_requests: u32,
    pub window_failures: u32,
    /// Permits held in the limiter (all processes).
    pub in_flight: u32,
    /// Cooling down after a 429 until (Unix ms).
    pub cooldown_until: Option<Millis>,
    /// The key's project (or the key) is parked for its daily quota until (Unix ms).
    pub parked_until: Option<Millis>,
    pub last_error: Option<String>,
    /// Calls handed out since this process loaded the key, and how they ended.
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub rate_limited: u64,
}

impl KeyStatus {
    /// Whether the key takes calls at `now`: enabled, breaker not open, not cooling down or
    /// parked.
    pub fn usable_at(&self, now: Millis) -> bool {
        let after_now = |until: Option<Millis>| until.is_some_and(|t| t > now);
        self.enabled
            && self.breaker != BreakerState::Open
            && !after_now(self.cooldown_until)
            && !after_now(self.parked_until)
    }
}

/// Sets the key gauges from a pool snapshot (taken when `/metrics` is scraped).
pub fn record_metrics(keys: &[KeyStatus], now: Millis) {
    for key in keys {
        telemetry::upstream_key(UpstreamKeyGauges {
            key_id: &key.id,
            provider: &key.provider,
            in_flight: key.in_flight,
            usable: key.usable_at(now),
            breaker: key.breaker.gauge_level(),
        });
    }
}

impl KeyPool {
    /// Enabled keys of `provider` (whatever their state): zero means jobs for it can never
    /// get a key until one is added or enabled.
    pub fn enabled_keys(&self, provider: &str) -> usize {
        self.lock()
            .keys
            .values()
            .filter(|e| e.key.provider == provider && e.key.enabled)
            .count()
    }

    /// A copy of one key, secret included (for a `test-provider-key` command); `None` if the
    /// pool does not hold it.
    pub fn key(&self, key_id: &str) -> Option<PoolKey> {
        self.lock().keys.get(key_id).map(|e| e.key.clone())
    }

    /// Every key's state for admins, by provider then priority (highest first). Never the
    /// secret.
    pub async fn snapshot(&self) -> Result<Vec<KeyStatus>, KeyPoolError> {
        let mut statuses = {
            let now = self.now();
            let inner = self.lock();
            let mut statuses: Vec<KeyStatus> = inner
                .keys
                .values()
                .map(|e| {
                    let project_park = e
                        .key
                        .project_key()
                        .and_then(|p| inner.projects.get(&p))
                        .and_then(|p| p.parked_until);
                    let parked = e.parked_until.max(project_park);
                    let (window_requests, window_failures) = e.breaker.window_counts(now);
                    KeyStatus {
                        id: e.key.id.clone(),
                        provider: e.key.provider.clone(),
                        fingerprint: e.fingerprint.clone(),
                        priority: e.key.priority,
                        project: e.key.project.clone(),
                        rpm: e.key.rpm,
                        concurrency: e.key.concurrency,
                        enabled: e.key.enabled,
                        breaker: e.breaker.state(now),
                        breaker_open_until: self.wall_if_future(e.breaker.open_until(), now),
                        window_requests,
                        window_failures,
                        in_flight: 0,
                        cooldown_until: self.wall_if_future(e.cooldown_until, now),
                        parked_until: self.wall_if_future(parked, now),
                        last_error: e.last_error.clone(),
                        requests: e.counts.requests,
                        successes: e.counts.successes,
                        failures: e.counts.failures,
                        rate_limited: e.counts.rate_limited,
                    }
                })
                .collect();
            statuses.sort_by(|a, b| {
                (&a.provider, Reverse(a.priority), &a.id).cmp(&(
                    &b.provider,
                    Reverse(b.priority),
                    &b.id,
                ))
            });
            statuses
        };
        for status in &mut statuses {
            status.in_flight = self.limiter.in_use(&key_limit_key(&status.id)).await?;
        }
        Ok(statuses)
    }
}
