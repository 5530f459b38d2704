//! The pool of upstream keys: which key a provider call uses, and what each call's outcome
//! does to that key's health.
//!
//! Owns: the keys of every provider (opened from their sealed records), their run-time state
//! (circuit breaker, cool-down after a 429, daily-quota parking of a Cloud project, last error,
//! counters), the choice of a key for one call, the persisted `enabled` flag of a key the
//! upstream rejected, and the scheduled re-test of such keys through their provider's probe.
//! Must not touch: jobs, HTTP, provider wire formats, or retries: the worker asks
//! [`KeyPool::acquire`] for a key, hands the credential to the provider, and reports the
//! classified result with [`KeyPool::report`]. When no key is free the answer is `None` and
//! the job stays queued; the pool never fails a job. It knows no provider by name: what a
//! provider can do and how its keys are probed come from [`crate::providers`].
//!
//! Floor 3 (see `src/lib.rs`): imports `base`, the engines (`store`, `limits`, `telemetry`)
//! and `providers`; never `jobs`, `accounts`, `api`, `app`, `config` or `server`.
//!
//! The parts, by concern:
//! * [`selection`]: which key a call gets ([`KeyPool::acquire`]), and the free slots a worker
//!   sizes its claims by.
//! * [`health`]: what an outcome does to a key ([`KeyPool::report`]): cool-downs, daily-quota
//!   parking, disabling; and an operator's enable / disable.
//! * [`breaker`]: the per-key circuit breaker the health rules feed.
//! * [`loading`]: keys into the store ([`loading::add_provider_key`]) and from it into the pool
//!   ([`KeyPool::load`]), keeping each key's run-time state across reloads.
//! * [`status`]: what admins and `/metrics` see of each key (never its secret).
//! * [`probe`]: re-testing disabled keys with their provider's cheap probe call.
//!
//! Health state (breakers, cool-downs, parking, counters) lives in this process. Across nodes
//! each process learns it from its own calls; the limits themselves are shared through the
//! limiter, and disabling a key is shared through the store.
//!
//! A [`KeyLease`] that is dropped without a report leaks nothing for long: its permit, its
//! place in the in-flight count and any half-open probe slot all end with the lease.

pub mod breaker;
pub mod health;
pub mod loading;
pub mod probe;
pub mod selection;
pub mod status;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::base::clock::{now_millis, Millis};
use crate::base::clock::{Clock, SystemClock};
use crate::base::secret::Sealer;
use crate::limits::{LimitError, Limiter};
use crate::providers::UpstreamCredential;
use crate::store::{Store, StoreError};
use breaker::{Breaker, BreakerConfig};

pub use health::{DailyReset, Outcome};
pub use loading::{add_provider_key, ProviderKeySpec, ReloadSummary};
pub use probe::ProbeReport;
pub use selection::KeyLease;
pub use status::KeyStatus;

/// The limiter key of a provider key's concurrency permits and of its own rate.
pub fn key_limit_key(key_id: &str) -> String {
    format!("key:{key_id}")
}

/// The limiter key of the rate a Cloud project's keys share.
pub fn project_rate_key(provider: &str, project: &str) -> String {
    format!("project:{provider}:{project}")
}

/// One upstream key, opened. The secret never reaches `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct PoolKey {
    pub id: String,
    pub provider: String,
    pub secret: String,
    /// The key's own endpoint (a relay, a test fake); `None` means the provider's default.
    pub base_url: Option<String>,
    pub rpm: u32,
    pub concurrency: u32,
    /// Higher goes first.
    pub priority: i32,
    /// The Cloud project whose quota the key draws on.
    pub project: Option<String>,
    pub enabled: bool,
}

impl fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolKey")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("secret", &"****")
            .field("base_url", &self.base_url)
            .field("rpm", &self.rpm)
            .field("concurrency", &self.concurrency)
            .field("priority", &self.priority)
            .field("project", &self.project)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl PoolKey {
    /// The credential a provider call needs. An empty base URL tells the provider to use its
    /// configured default.
    pub fn credential(&self) -> UpstreamCredential {
        UpstreamCredential {
            key_id: self.id.clone(),
            secret: self.secret.clone(),
            base_url: self.base_url.clone().unwrap_or_default(),
        }
    }

    fn project_key(&self) -> Option<String> {
        self.project
            .as_deref()
            .map(|project| project_rate_key(&self.provider, project))
    }
}

/// Tuning of a [`KeyPool`].
#[derive(Debug, Clone)]
pub struct KeyPoolConfig {
    pub breaker: BreakerConfig,
    /// Cool-down after a 429 that names no `Retry-After`; doubles with each consecutive one.
    pub rate_limited_cooldown: Duration,
    /// The longest cool-down, whatever the upstream asks for (a daily quota parks instead).
    pub max_cooldown: Duration,
    pub daily_reset: DailyReset,
}

impl Default for KeyPoolConfig {
    fn default() -> Self {
        KeyPoolConfig {
            breaker: BreakerConfig::default(),
            rate_limited_cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(10 * 60),
            daily_reset: DailyReset::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyPoolError {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("no such provider key in the pool: {0}")]
    UnknownKey(String),
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    requests: u64,
    successes: u64,
    failures: u64,
    rate_limited: u64,
}

struct KeyEntry {
    key: PoolKey,
    fingerprint: String,
    breaker: Breaker,
    /// Monotonic microseconds.
    cooldown_until: Option<u64>,
    /// Daily-quota parking of a key without a project (projects park in `ProjectEntry`).
    parked_until: Option<u64>,
    /// Consecutive 429s without `Retry-After`, for the doubling cool-down.
    rate_limited_streak: u32,
    last_error: Option<String>,
    /// The pool's pick counter when this key was last handed out (least recently used).
    last_pick: u64,
    /// This process's leases on the key: permit id -> lease end.
    leases: HashMap<String, u64>,
    counts: Counts,
}

impl KeyEntry {
    fn new(
        key: PoolKey,
        fingerprint: String,
        last_error: Option<String>,
        config: &KeyPoolConfig,
    ) -> Self {
        KeyEntry {
            key,
            fingerprint,
            breaker: Breaker::new(config.breaker),
            cooldown_until: None,
            parked_until: None,
            rate_limited_streak: 0,
            last_error,
            last_pick: 0,
            leases: HashMap::new(),
            counts: Counts::default(),
        }
    }

    fn in_flight(&mut self, now: u64) -> u32 {
        self.leases.retain(|_, until| *until > now);
        u32::try_from(self.leases.len()).unwrap_or(u32::MAX)
    }
}

struct ProjectEntry {
    /// The shared budget: the largest RPM among the project's keys.
    rpm: u32,
    parked_until: Option<u64>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, KeyEntry>,
    projects: HashMap<String, ProjectEntry>,
    picks: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The pool. Share it behind an `Arc`; every method takes `&self`.
pub struct KeyPool {
    limiter: Arc<dyn Limiter>,
    store: Arc<dyn Store>,
    sealer: Sealer,
    config: KeyPoolConfig,
    clock: Arc<dyn Clock>,
    /// Unix milliseconds at the clock's zero: turns monotonic times into wall times for the
    /// daily reset and for admins.
    wall_at_zero: Millis,
    inner: Mutex<Inner>,
    /// Signalled whenever a call hands its key back, so a worker waiting for a free key
    /// claims at once instead of at its next poll.
    released: tokio::sync::Notify,
}

impl fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.lock().keys.len();
        f.debug_struct("KeyPool")
            .field("keys", &keys)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KeyPool {
    /// An empty pool on real time; fill it with [`KeyPool::load`] or [`KeyPool::reload`].
    pub fn new(
        limiter: Arc<dyn Limiter>,
        store: Arc<dyn Store>,
        sealer: Sealer,
        config: KeyPoolConfig,
    ) -> KeyPool {
        KeyPool::with_clock(
            limiter,
            store,
            sealer,
            config,
            Arc::new(SystemClock::new()),
            now_millis(),
        )
    }

    /// An empty pool on `clock`, whose zero is the wall time `wall_at_zero` (Unix ms). Tests
    /// share one `ManualClock` between this and a `MemoryLimiter`.
    pub fn with_clock(
        limiter: Arc<dyn Limiter>,
        store: Arc<dyn Store>,
        sealer: Sealer,
        config: KeyPoolConfig,
        clock: Arc<dyn Clock>,
        wall_at_zero: Millis,
    ) -> KeyPool {
        KeyPool {
            limiter,
            store,
            sealer,
            config,
            clock,
            wall_at_zero,
            inner: Mutex::new(Inner::default()),
            released: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update under this lock is a handful of field writes that cannot panic halfway
        // in a way that matters, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> u64 {
        self.clock.now_micros()
    }

    fn wall(&self, at: u64) -> Millis {
        self.wall_at_zero
            .saturating_add(i64::try_from(at / 1000).unwrap_or(i64::MAX))
    }

    /// A future monotonic time as wall time; `None` if it has passed.
    fn wall_if_future(&self, at: Option<u64>, now: u64) -> Option<Millis> {
        at.filter(|t| *t > now).map(|t| self.wall(t))
    }

    /// Returns when a key is handed back (at once if one was since the last call returned).
    pub async fn key_released(&self) {
        self.released.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_key_debug_hides_the_secret() {
        let key = PoolKey {
            id: "pk_1".into(),
            provider: "gemini".into(),
            secret: "AIza-very-secret".into(),
            base_url: None,
            rpm: 1,
            concurrency: 1,
            priority: 0,
            project: None,
            enabled: true,
        };
        let shown = format!("{key:?} {:?}", key.credential());
        assert!(!shown.contains("AIza-very-secret"), "{shown}");
        assert!(shown.contains("pk_1"));
    }
}
