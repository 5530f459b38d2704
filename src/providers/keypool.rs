//! The pool of upstream keys: which key a provider call uses, and what each call's outcome
//! does to that key's health.
//!
//! Owns: the keys of every provider (opened from their sealed records), their run-time state
//! (circuit breaker, cool-down after a 429, daily-quota parking of a Cloud project, last error,
//! counters), the choice of a key for one call, and the persisted `enabled` flag of a key the
//! upstream rejected. Must not touch: jobs, HTTP, provider wire formats, or retries: the
//! worker asks [`KeyPool::acquire`] for a key, hands the credential to the provider, and
//! reports the classified result with [`KeyPool::report`]. When no key is free the answer is
//! `None` and the job stays queued; the pool never fails a job.
//!
//! # Selection
//! Candidates are the provider's enabled keys whose breaker admits a request, that are not
//! cooling down after a 429, and whose project is not parked. Highest priority first; among
//! equals the least loaded (in flight / concurrency); ties by least recently picked. For each
//! candidate in that order the pool peeks at the key's rate (and its project's), takes a
//! concurrency permit `key:<id>` from the [`Limiter`] (limit = the key's concurrency, leased),
//! then a rate token on `key:<id>` (the key's RPM) and, for a key with a project, on
//! `project:<provider>:<project>`. A refused rate gives the permit back and the next candidate
//! is tried. The limiter enforces the limits across processes; the ordering (load, recency) is
//! this process's view only, which is all a heuristic needs.
//!
//! Tokens are taken only after a peek said they were there, so a refused rate normally costs
//! nothing. Between the peek and the take another caller can win the race; then the key's token
//! (taken first) is spent without a request. That over-count only ever makes the pool send
//! less than the limits allow, never more, and it is not worth a lock around the limiter.
//! Rates are `RateQuota::per_minute(rpm)`: evenly spaced, never more than `rpm` in any 60 s
//! window.
//!
//! # Policy
//! * **Project budget.** Google meters quotas per Cloud project, not per key, so all keys of
//!   one `project` share one rate `project:<provider>:<project>` whose RPM is the LARGEST RPM
//!   configured among that project's keys (enabled or not: the project's quota does not change
//!   when one of its keys is switched off). Not the sum: adding a second key to a project adds
//!   concurrency and failover, never rate. Each key's own RPM still applies as well.
//! * **429 (`UPSTREAM_RATE_LIMITED`)** is a rate signal, not a health signal: the key cools
//!   down for the upstream's `Retry-After` (or 5 s, doubling with each consecutive 429 that
//!   carries none, up to `max_cooldown`) and the breaker does not count it. So no number of
//!   429s opens a breaker; they only slow the key down.
//! * **Daily quota (`UPSTREAM_QUOTA_EXHAUSTED_DAILY`)** parks the key's whole project (or the
//!   key alone if it has none) until the next daily reset: midnight Pacific time, which is
//!   when Google resets per-day quotas. The offset is fixed (UTC-8 by default, configurable):
//!   under daylight saving time that unparks one hour late, which is the safe side. A daily
//!   429 within a grace period after the reset parks only until the grace ends, so a reset
//!   that lands a little late upstream does not cost a whole day.
//! * **5xx, timeouts, connection errors, malformed bodies** are failures for the breaker (and
//!   a `Retry-After` on them is honoured as a cool-down too).
//! * **Key rejected (401/403)** disables the key at once, in memory and in the store
//!   (`enabled = false`, `last_error` = the reason). [`KeyPool::enable`] brings it back without
//!   a restart, and [`KeyPool::probe_disabled`] re-tests the keys the pool disabled itself
//!   (keys an operator disabled, with no `last_error`, are left alone).
//! * **Final errors and content blocks** are the request's fault and say nothing about the key.
//!
//! Health state (breakers, cool-downs, parking, counters) lives in this process. Across nodes
//! each process learns it from its own calls; the limits themselves are shared through the
//! limiter, and disabling a key is shared through the store.
//!
//! A [`KeyLease`] that is dropped without a report leaks nothing for long: its permit, its
//! place in the in-flight count and any half-open probe slot all end with the lease.

use std::cmp::{Ordering, Reverse};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use super::breaker::{Admission, Breaker, BreakerConfig, BreakerState};
use super::gemini::codes;
use super::{ProviderError, UpstreamCredential};
use crate::base::clock::{now_millis, Millis};
use crate::base::clock::{Clock, SystemClock};
use crate::base::secret::Sealer;
use crate::limits::{LimitError, Limiter, Permit, PermitSpec, RateQuota};
use crate::store::{ProviderKeyRecord, Store, StoreError};

/// The limiter key of a provider key's concurrency permits and of its own rate.
pub fn key_limit_key(key_id: &str) -> String {
    format!("key:{key_id}")
}

/// The limiter key of the rate a Cloud project's keys share.
pub fn project_rate_key(provider: &str, project: &str) -> String {
    format!("project:{provider}:{project}")
}

/// Longest error text kept per key (upstream messages can be long).
const MAX_ERROR_CHARS: usize = 500;

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

/// When per-day upstream quotas reset, as a fixed offset from UTC and an hour of that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyReset {
    /// Minutes east of UTC; Google resets at midnight Pacific time: -480 (UTC-8).
    pub utc_offset_minutes: i32,
    /// Hour of the local day at which the reset happens (0-23).
    pub hour: u32,
    /// A daily-quota 429 this soon after a reset parks only until the grace ends.
    pub grace: Duration,
}

impl Default for DailyReset {
    fn default() -> Self {
        DailyReset {
            utc_offset_minutes: -8 * 60,
            hour: 0,
            grace: Duration::from_secs(10 * 60),
        }
    }
}

impl DailyReset {
    /// Until when (Unix milliseconds) a project whose daily quota ran out at `now` is parked.
    pub fn park_until(&self, now: Millis) -> Millis {
        const DAY: i64 = 86_400_000;
        let shift =
            i64::from(self.utc_offset_minutes) * 60_000 - i64::from(self.hour.min(23)) * 3_600_000;
        let since_reset = (now + shift).rem_euclid(DAY);
        let grace = i64::try_from(self.grace.as_millis())
            .unwrap_or(DAY)
            .min(DAY);
        let last_reset = now - since_reset;
        if since_reset < grace {
            last_reset + grace
        } else {
            last_reset + DAY
        }
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

/// What one provider call said about the key it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// 429 on a short-term rate: cool down, not a health failure.
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// 429 on a per-day quota: park the project until the daily reset.
    DailyQuotaExhausted,
    /// 5xx, timeout, connection error, malformed body: counts against the breaker.
    Failure {
        error: String,
        retry_after: Option<Duration>,
    },
    /// 401/403: disable the key.
    KeyRejected {
        message: String,
    },
    /// The request's own fault (bad request, safety block): nothing about the key.
    Neutral,
}

impl Outcome {
    /// Classifies a provider error by its kind and its stable `code`.
    pub fn from_error(err: &ProviderError) -> Outcome {
        match err {
            ProviderError::Retryable { code, .. } if code == codes::QUOTA_EXHAUSTED_DAILY => {
                Outcome::DailyQuotaExhausted
            }
            ProviderError::Retryable {
                code, retry_after, ..
            } if code == codes::RATE_LIMITED => Outcome::RateLimited {
                retry_after: *retry_after,
            },
            ProviderError::Retryable { retry_after, .. } => Outcome::Failure {
                error: err.to_string(),
                retry_after: *retry_after,
            },
            ProviderError::KeyRejected { .. } => Outcome::KeyRejected {
                message: err.to_string(),
            },
            ProviderError::Final { .. } | ProviderError::ContentBlocked { .. } => Outcome::Neutral,
        }
    }

    /// The outcome of a finished provider call.
    pub fn of<T>(result: &Result<T, ProviderError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(err) => Outcome::from_error(err),
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

/// One key taken for one provider call. Give it back with [`KeyPool::report`].
#[derive(Debug)]
pub struct KeyLease {
    pub key_id: String,
    pub provider: String,
    pub credential: UpstreamCredential,
    /// The concurrency slot held in the limiter.
    pub permit: Permit,
    admission: Admission,
}

impl KeyLease {
    /// Whether this call is the half-open probe of the key's breaker.
    pub fn is_probe(&self) -> bool {
        self.admission.is_probe()
    }
}

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

/// What [`KeyPool::reload`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Keys in the pool now.
    pub keys: usize,
    /// Records left out, with why (a secret that does not open, a zero limit).
    pub skipped: Vec<(String, String)>,
}

/// One key re-tested by [`KeyPool::probe_disabled`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub key_id: String,
    /// The probe passed and the key is enabled again.
    pub enabled: bool,
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

    fn cool_down(&mut self, until: u64) {
        self.cooldown_until = Some(self.cooldown_until.map_or(until, |t| t.max(until)));
    }

    /// Back to a clean, enabled key (operator or probe re-enabled it).
    fn revive(&mut self) {
        self.key.enabled = true;
        self.last_error = None;
        self.breaker.reset();
        self.cooldown_until = None;
        self.rate_limited_streak = 0;
    }

    fn set_error(&mut self, error: &str) {
        self.last_error = Some(scrub(error, &self.key.secret));
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

/// An error text safe to keep and show: bounded, and without the secret should an upstream
/// have echoed it back.
fn scrub(error: &str, secret: &str) -> String {
    let cleaned = if secret.is_empty() {
        error.to_owned()
    } else {
        error.replace(secret, "****")
    };
    match cleaned.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &cleaned[..cut]),
        None => cleaned,
    }
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
            let secret = match self.sealer.open(&record.secret_sealed) {
                Ok(secret) => secret,
                Err(e) => {
                    tracing::error!(key_id = %record.id, fingerprint = %record.fingerprint,
                        error = %e, "provider key left out of the pool");
                    skipped.push((record.id.clone(), e.to_string()));
                    continue;
                }
            };
            let key = PoolKey {
                id: record.id.clone(),
                provider: record.provider.clone(),
                secret,
                base_url: record.endpoint.clone().filter(|u| !u.trim().is_empty()),
                rpm: record.rpm_limit,
                concurrency: record.concurrency_limit,
                priority: record.priority,
                project: record.project.clone().filter(|p| !p.trim().is_empty()),
                enabled: record.enabled,
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

    /// Enabled keys of `provider` (whatever their state): zero means jobs for it can never
    /// get a key until one is added or enabled.
    pub fn enabled_keys(&self, provider: &str) -> usize {
        self.lock()
            .keys
            .values()
            .filter(|e| e.key.provider == provider && e.key.enabled)
            .count()
    }

    /// Returns when a key is handed back (at once if one was since the last call returned).
    pub async fn key_released(&self) {
        self.released.notified().await
    }

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

    /// A copy of one key, secret included (for a `test-provider-key` command); `None` if the
    /// pool does not hold it.
    pub fn key(&self, key_id: &str) -> Option<PoolKey> {
        self.lock().keys.get(key_id).map(|e| e.key.clone())
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

    /// Gives the key back with what the call said about it (see the module docs for what each
    /// outcome does). The permit is always released, whatever else fails. An error here is
    /// about bookkeeping (the limiter or the store), never about the job.
    pub async fn report(&self, lease: KeyLease, outcome: Outcome) -> Result<(), KeyPoolError> {
        let released = self.limiter.permit_release(&lease.permit).await;
        self.released.notify_one();
        let disable = {
            let now = self.now();
            let wall_now = self.wall(now);
            let mut inner = self.lock();
            self.apply(&mut inner, &lease, outcome, now, wall_now)
        };
        if let Some(reason) = disable {
            self.store
                .provider_key_set_enabled(&lease.key_id, false, Some(&reason))
                .await?;
        }
        released?;
        Ok(())
    }

    /// Applies one outcome under the lock; returns the reason to persist if the key was
    /// disabled.
    fn apply(
        &self,
        inner: &mut Inner,
        lease: &KeyLease,
        outcome: Outcome,
        now: u64,
        wall_now: Millis,
    ) -> Option<String> {
        let config = &self.config;
        let entry = inner.keys.get_mut(&lease.key_id)?;
        entry.leases.remove(&lease.permit.id);
        let admission = lease.admission;
        let mut park = None;
        let mut disabled = None;
        match outcome {
            Outcome::Success => {
                entry.counts.successes += 1;
                entry.rate_limited_streak = 0;
                if entry.breaker.record_success(now, admission) == Some(BreakerState::Closed) {
                    tracing::info!(key_id = %entry.key.id, "provider key breaker closed");
                }
            }
            Outcome::RateLimited { retry_after } => {
                entry.counts.rate_limited += 1;
                entry.rate_limited_streak = entry.rate_limited_streak.saturating_add(1);
                let wait = retry_after
                    .unwrap_or_else(|| {
                        let doublings = (entry.rate_limited_streak - 1).min(16);
                        config.rate_limited_cooldown.saturating_mul(1 << doublings)
                    })
                    .min(config.max_cooldown);
                entry.cool_down(now.saturating_add(micros(wait)));
                entry.set_error(&format!(
                    "{}: rate limited upstream, cooling down for {:.1} s",
                    codes::RATE_LIMITED,
                    wait.as_secs_f64()
                ));
                entry.breaker.release(admission);
            }
            Outcome::DailyQuotaExhausted => {
                entry.counts.rate_limited += 1;
                let until_wall = config.daily_reset.park_until(wall_now);
                let wait_ms = u64::try_from(until_wall.saturating_sub(wall_now)).unwrap_or(0);
                let until = now.saturating_add(wait_ms.saturating_mul(1000));
                entry.set_error(&format!(
                    "{}: daily quota exhausted, parked until the daily reset",
                    codes::QUOTA_EXHAUSTED_DAILY
                ));
                entry.breaker.release(admission);
                match entry.key.project_key() {
                    Some(project) => park = Some((project, until)),
                    None => entry.parked_until = Some(entry.parked_until.unwrap_or(0).max(until)),
                }
                tracing::warn!(key_id = %entry.key.id, project = ?entry.key.project,
                    until_ms = until_wall, "daily quota exhausted; parked");
            }
            Outcome::Failure { error, retry_after } => {
                entry.counts.failures += 1;
                entry.set_error(&error);
                if let Some(wait) = retry_after {
                    entry.cool_down(now.saturating_add(micros(wait.min(config.max_cooldown))));
                }
                if entry.breaker.record_failure(now, admission) == Some(BreakerState::Open) {
                    tracing::warn!(key_id = %entry.key.id, fingerprint = %entry.fingerprint,
                        "provider key breaker opened");
                }
            }
            Outcome::KeyRejected { message } => {
                entry.counts.failures += 1;
                entry.key.enabled = false;
                entry.set_error(&message);
                entry.breaker.release(admission);
                tracing::warn!(key_id = %entry.key.id, fingerprint = %entry.fingerprint,
                    "provider key rejected upstream; disabled");
                disabled = entry.last_error.clone();
            }
            Outcome::Neutral => entry.breaker.release(admission),
        }
        if let Some((project, until)) = park {
            if let Some(p) = inner.projects.get_mut(&project) {
                p.parked_until = Some(p.parked_until.unwrap_or(0).max(until));
            }
        }
        disabled
    }

    /// Enables a key again, now and in the store, with a clean breaker and no cool-down.
    pub async fn enable(&self, key_id: &str) -> Result<(), KeyPoolError> {
        if !self.lock().keys.contains_key(key_id) {
            return Err(KeyPoolError::UnknownKey(key_id.to_owned()));
        }
        // The store first: if it fails, nothing changed and the operator can retry.
        self.store
            .provider_key_set_enabled(key_id, true, None)
            .await?;
        if let Some(entry) = self.lock().keys.get_mut(key_id) {
            entry.revive();
        }
        tracing::info!(key_id, "provider key enabled");
        Ok(())
    }

    /// Disables a key by hand, now and in the store. With no `last_error`, the scheduled probe
    /// leaves it disabled.
    pub async fn disable(&self, key_id: &str) -> Result<(), KeyPoolError> {
        if !self.lock().keys.contains_key(key_id) {
            return Err(KeyPoolError::UnknownKey(key_id.to_owned()));
        }
        self.store
            .provider_key_set_enabled(key_id, false, None)
            .await?;
        if let Some(entry) = self.lock().keys.get_mut(key_id) {
            entry.key.enabled = false;
            entry.last_error = None;
        }
        tracing::info!(key_id, "provider key disabled by an operator");
        Ok(())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn daily_reset_is_midnight_pacific_with_grace() {
        let reset = DailyReset::default();
        // 2026-11-10 12:00 UTC is 04:00 at UTC-8: parked until 2026-11-11 08:00 UTC.
        let noon_utc: Millis = 1_794_312_000_000;
        assert_eq!(noon_utc % (24 * HOUR), 12 * HOUR);
        assert_eq!(reset.park_until(noon_utc), noon_utc + 20 * HOUR);
        // One millisecond before the reset: parked for that millisecond.
        let before = noon_utc - 4 * HOUR - 1;
        assert_eq!(reset.park_until(before), noon_utc - 4 * HOUR);
        // Just after the reset: only until the grace ends, then a whole day again.
        let after = noon_utc - 4 * HOUR + 1000;
        assert_eq!(reset.park_until(after), noon_utc - 4 * HOUR + 10 * 60_000);
        let later = noon_utc - 4 * HOUR + 10 * 60_000;
        assert_eq!(reset.park_until(later), noon_utc + 20 * HOUR);
        // A configured reset hour and offset (UTC+1, 03:00).
        let custom = DailyReset {
            utc_offset_minutes: 60,
            hour: 3,
            grace: Duration::ZERO,
        };
        // 12:00 UTC = 13:00 local; the next 03:00 local is 02:00 UTC tomorrow.
        assert_eq!(custom.park_until(noon_utc), noon_utc + 14 * HOUR);
    }

    #[test]
    fn outcomes_from_provider_errors() {
        let retryable = |code: &str, retry_after| ProviderError::Retryable {
            code: code.into(),
            message: "m".into(),
            retry_after,
        };
        let five = Some(Duration::from_secs(5));
        assert_eq!(
            Outcome::from_error(&retryable(codes::RATE_LIMITED, five)),
            Outcome::RateLimited { retry_after: five }
        );
        assert_eq!(
            Outcome::from_error(&retryable(codes::QUOTA_EXHAUSTED_DAILY, five)),
            Outcome::DailyQuotaExhausted
        );
        assert!(matches!(
            Outcome::from_error(&retryable(codes::UNAVAILABLE, None)),
            Outcome::Failure {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            Outcome::from_error(&ProviderError::KeyRejected {
                message: "403".into()
            }),
            Outcome::KeyRejected { .. }
        ));
        assert_eq!(
            Outcome::from_error(&ProviderError::ContentBlocked {
                reason: "SAFETY".into()
            }),
            Outcome::Neutral
        );
        assert_eq!(
            Outcome::from_error(&ProviderError::Final {
                code: codes::BAD_REQUEST.into(),
                message: "m".into()
            }),
            Outcome::Neutral
        );
        assert_eq!(Outcome::of::<()>(&Ok(())), Outcome::Success);
    }

    #[test]
    fn load_ordering_is_relative_to_concurrency() {
        // 1 of 4 is less loaded than 1 of 2; 2 of 4 equals 1 of 2.
        assert_eq!(compare_load(1, 4, 1, 2), Ordering::Less);
        assert_eq!(compare_load(2, 4, 1, 2), Ordering::Equal);
        assert_eq!(compare_load(0, 1, 0, 9), Ordering::Equal);
    }

    #[test]
    fn scrub_removes_the_secret_and_bounds_length() {
        assert_eq!(
            scrub("bad key AIzaXYZ here", "AIzaXYZ"),
            "bad key **** here"
        );
        let long = "é".repeat(MAX_ERROR_CHARS + 10);
        assert_eq!(scrub(&long, "").chars().count(), MAX_ERROR_CHARS + 1);
    }

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
