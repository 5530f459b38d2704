//! Traffic control: request rates and concurrency permits behind one [`Limiter`] trait.
//!
//! Owns: the rate decision for a key (GCRA, one stored value per key, exact, O(1)) and leased
//! concurrency permits taken all-or-nothing across several tiers (global, tenant, provider
//! key). Two implementations give the same answers and pass one conformance suite
//! (`tests/limits.rs`): [`MemoryLimiter`] for one node (the default) and [`RedisLimiter`]
//! across nodes (atomic Lua scripts, Redis' own clock). Also the `[limits]` configuration
//! section ([`LimitsConfig`]) and what counts as a live node ([`NODE_TTL`], [`LiveNodes`]).
//! Must not touch: the store, jobs, HTTP. Callers turn a [`RateDecision`] into a 429 and its
//! headers, and decide what a job does while it waits for a permit (it stays queued). What to
//! do when the backend is down ([`LimitError::Unavailable`]) is the caller's policy too.
//!
//! Permits are leases: a permit that is neither renewed nor released stops counting when its
//! lease ends, so a crashed process never leaks a slot (a counter that is incremented and
//! decremented does, the first time a process dies in between).

pub mod failover;
pub mod gcra;
pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::base::settings::{at_least_one, Invalid};

pub use self::redis::RedisLimiter;
pub use failover::{FailoverConfig, FailoverLimiter, LiveNodes, HEARTBEAT_EVERY, NODE_TTL};
pub use memory::MemoryLimiter;

/// `[limits]` in the configuration: the global limits (enforced by the workers' gate) and
/// the rate and concurrency a new tenant gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Origin name: `GLOBAL_RPM_LIMIT`.
    pub global_rpm: u32,
    /// Origin name: `GLOBAL_CONCURRENCY_LIMIT`.
    pub global_concurrency: u32,
    pub tenant_rpm: u32,
    pub tenant_concurrency: u32,
    /// Submits a tenant may send at once, for tenants without a burst of their own (see the
    /// README's "Limits": the burst and the RPM together never let more than the RPM through
    /// in any 60 s window).
    pub tenant_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            global_rpm: 1000,
            global_concurrency: 200,
            tenant_rpm: 60,
            tenant_concurrency: 5,
            tenant_burst: 10,
        }
    }
}

impl LimitsConfig {
    /// The first problem found, with the key it concerns.
    pub fn validate(&self) -> Result<(), Invalid> {
        at_least_one([
            ("limits.global_rpm", self.global_rpm.into()),
            ("limits.global_concurrency", self.global_concurrency.into()),
            ("limits.tenant_rpm", self.tenant_rpm.into()),
            ("limits.tenant_concurrency", self.tenant_concurrency.into()),
            ("limits.tenant_burst", self.tenant_burst.into()),
        ])
    }
}

/// A request rate: `per_minute` sustained, up to `burst` at once.
///
/// Units are request costs (usually 1 per request). With the emission interval
/// `T = 60 s / per_minute` (rounded up to a whole microsecond, which can only make the limit
/// stricter) and `B = burst`, every key is guaranteed:
///
/// * at most `B` units admitted at the same instant;
/// * in any time window of length `W`, fewer than `W / T + B` units admitted; so in any
///   60 s window at most `per_minute + burst - 1` ([`RateQuota::window_max`]);
/// * the bound is tight: a client that sends as fast as it is allowed gets `B` at once and
///   then one every `T`, and a denied request costs nothing.
///
/// So `burst = 1` ([`RateQuota::per_minute`]) means "never more than `per_minute` in any
/// 60 s window" but also evenly spaced requests; [`RateQuota::capped`] keeps a hard per-window
/// cap while allowing bursts, by lowering the sustained rate to make room for them.
/// The fastest rate a limiter counts: one unit per microsecond. Limits configured above it
/// (keys or tenants given a huge RPM to mean "no rate limit") must be held to it with
/// [`RateQuota::per_minute_clamped`]; a quota above it is refused as invalid.
pub const MAX_PER_MINUTE: u32 = 60_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateQuota {
    /// Sustained rate; one unit is earned back every `60 s / per_minute`.
    pub per_minute: u32,
    /// Most units admitted at once (>= 1).
    pub burst: u32,
}

impl RateQuota {
    /// `n` per minute, evenly spaced, no burst: at most `n` in any 60 s window.
    pub const fn per_minute(n: u32) -> RateQuota {
        RateQuota {
            per_minute: n,
            burst: 1,
        }
    }

    /// As [`RateQuota::per_minute`], with `n` held to [`MAX_PER_MINUTE`]: for limits that
    /// come from configuration, where a number beyond what the limiter can count means
    /// "unlimited", not "invalid".
    pub const fn per_minute_clamped(n: u32) -> RateQuota {
        RateQuota::per_minute(if n > MAX_PER_MINUTE {
            MAX_PER_MINUTE
        } else {
            n
        })
    }

    /// `per_minute` sustained with bursts of up to `burst`; at most
    /// `per_minute + burst - 1` in any 60 s window.
    pub const fn with_burst(per_minute: u32, burst: u32) -> RateQuota {
        RateQuota { per_minute, burst }
    }

    /// At most `max` in any 60 s window and up to `burst` at once; the sustained rate is
    /// `max - burst + 1` per minute. `None` if `burst` is 0 or larger than `max`.
    pub const fn capped(max: u32, burst: u32) -> Option<RateQuota> {
        if burst == 0 || burst > max {
            return None;
        }
        Some(RateQuota {
            per_minute: max - burst + 1,
            burst,
        })
    }

    /// The most units admitted in any 60 s window: `per_minute + burst - 1`.
    pub fn window_max(&self) -> u64 {
        (self.per_minute as u64 + self.burst as u64).saturating_sub(1)
    }

    /// The emission interval `T` as used (rounded up to a microsecond); an error for an
    /// invalid quota.
    pub fn interval(&self) -> Result<Duration, LimitError> {
        gcra::Gcra::new(*self).map(|g| Duration::from_micros(g.interval_micros()))
    }
}

/// The answer to one rate request, with what the IETF `RateLimit` / `RateLimit-Policy` and
/// `Retry-After` headers need: e.g. `RateLimit-Policy: "tenant";q=<per_minute>;w=60`,
/// `RateLimit: "tenant";r=<remaining>;t=<reset_after, seconds rounded up>` and, when denied,
/// `Retry-After: <retry_after, seconds rounded up>` (rounding up so a client that waits that
/// long is admitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// The burst size: the most units that can be admitted at once; `remaining` counts down
    /// from it.
    pub limit: u32,
    /// Units that could be admitted right now, after this decision.
    pub remaining: u32,
    /// Time until `remaining` is back to `limit` if the key stays idle.
    pub reset_after: Duration,
    /// When denied: the wait after which this same request would be admitted, if nothing else
    /// is admitted for the key in between. `None` when allowed.
    pub retry_after: Option<Duration>,
}

/// One tier of a permit request: a slot in `key`, which holds at most `limit` permits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PermitSpec {
    pub key: String,
    pub limit: u32,
}

impl PermitSpec {
    pub fn new(key: impl Into<String>, limit: u32) -> PermitSpec {
        PermitSpec {
            key: key.into(),
            limit,
        }
    }
}

/// A leased slot in each of `keys`, taken together and given back together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Permit {
    /// Unique per acquire (a ULID).
    pub id: String,
    /// The keys it holds a slot in, each once, in the order first asked for.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The backend (Redis) failed or did not answer in time. For a permit acquire this does
    /// not prove nothing was taken; anything taken ends with its lease.
    #[error("limiter backend unavailable: {0}")]
    Unavailable(String),
    /// A quota, cost or lease that can never work (a bug or bad configuration, not load).
    #[error("invalid limit request: {0}")]
    Invalid(String),
}

/// What a limiter that is not enforcing its limits across nodes right now says about itself
/// (see [`Limiter::degraded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degraded {
    /// What decides instead: `"memory-fallback"` (each node its share, in memory).
    pub mode: &'static str,
    /// When the limiter fell back.
    pub since: SystemTime,
    /// The live nodes every limit is divided by now.
    pub live_nodes: u32,
    /// Times this limiter has fallen back since the process started (this time included).
    pub fallbacks: u64,
    /// Calls answered by the fallback since the process started.
    pub fallback_decisions: u64,
}

/// Rate and concurrency decisions. Implementations are atomic per call: concurrent callers,
/// in one process or many, never together exceed a quota or a permit limit.
#[async_trait]
pub trait Limiter: Send + Sync {
    /// Takes `cost` units from `key` under `quota` if they fit now; a denied request takes
    /// nothing. `cost` 0 always succeeds and changes nothing; `cost > quota.burst` can never
    /// fit and is [`LimitError::Invalid`].
    async fn rate_acquire(
        &self,
        key: &str,
        quota: RateQuota,
        cost: u32,
    ) -> Result<RateDecision, LimitError>;

    /// The state of `key` without taking anything: `allowed` tells whether a request of cost 1
    /// would be admitted now (and `retry_after` when it would not).
    async fn rate_peek(&self, key: &str, quota: RateQuota) -> Result<RateDecision, LimitError>;

    /// One slot in every spec's key, or none at all (`Ok(None)`: some tier is full). A key
    /// named twice is taken once, under the smaller limit. No specs gives a permit with no
    /// keys. The permit stops counting after `lease` unless renewed.
    async fn permits_acquire(
        &self,
        specs: &[PermitSpec],
        lease: Duration,
    ) -> Result<Option<Permit>, LimitError>;

    /// Extends every slot of `permit` to `lease` from now. `false` if any of its slots had
    /// already expired or been released: the permit is then gone as a whole (what was left of
    /// it is released) and its holder must stop or acquire again.
    async fn permit_renew(&self, permit: &Permit, lease: Duration) -> Result<bool, LimitError>;

    /// Gives the slots back; releasing twice, or after expiry, is harmless.
    async fn permit_release(&self, permit: &Permit) -> Result<(), LimitError>;

    /// Live (unexpired, unreleased) permits holding a slot in `key`.
    async fn in_use(&self, key: &str) -> Result<u32, LimitError>;

    /// `Some` while the limiter answers from a per-node fallback instead of its shared
    /// backend, so limits hold only approximately across nodes (`/health` reports
    /// `degraded`). Limiters without a fallback are never degraded.
    fn degraded(&self) -> Option<Degraded> {
        None
    }
}

/// Leases and rate spans stay below this, so every time value (microseconds since the Unix
/// epoch plus a span) is an exact integer in the doubles of Redis' Lua (2^53) for a century.
pub(crate) const MAX_SPAN_MICROS: u64 = 1 << 50;

/// A lease in whole microseconds, rounded up; zero or absurdly long leases are refused.
pub(crate) fn lease_micros(lease: Duration) -> Result<u64, LimitError> {
    let us = lease.as_nanos().div_ceil(1000);
    if us == 0 || us > MAX_SPAN_MICROS as u128 {
        return Err(LimitError::Invalid(format!(
            "lease must be between 1 µs and {MAX_SPAN_MICROS} µs, got {lease:?}"
        )));
    }
    Ok(us as u64)
}

/// The specs with each key once (smallest limit wins), in first-seen order, so both backends
/// treat a repeated key the same way.
pub(crate) fn merge_specs(specs: &[PermitSpec]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = Vec::with_capacity(specs.len());
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(specs.len());
    for spec in specs {
        match index.get(spec.key.as_str()) {
            Some(&i) => out[i].1 = out[i].1.min(spec.limit),
            None => {
                index.insert(&spec.key, out.len());
                out.push((spec.key.clone(), spec.limit));
            }
        }
    }
    out
}

pub(crate) fn new_permit_id() -> String {
    ulid::Ulid::new().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_constructors_and_window_max() {
        assert_eq!(RateQuota::per_minute(60).window_max(), 60);
        assert_eq!(RateQuota::with_burst(60, 10).window_max(), 69);
        let capped = RateQuota::capped(60, 10).unwrap();
        assert_eq!(capped, RateQuota::with_burst(51, 10));
        assert_eq!(capped.window_max(), 60);
        assert_eq!(RateQuota::capped(5, 6), None);
        assert_eq!(RateQuota::capped(5, 0), None);
        assert_eq!(
            RateQuota::per_minute(7).interval().unwrap(),
            Duration::from_micros(8_571_429)
        );
    }

    #[test]
    fn merge_specs_dedups_with_smallest_limit() {
        let specs = [
            PermitSpec::new("g", 5),
            PermitSpec::new("t", 3),
            PermitSpec::new("g", 2),
        ];
        assert_eq!(
            merge_specs(&specs),
            vec![("g".to_string(), 2), ("t".to_string(), 3)]
        );
    }

    #[test]
    fn lease_bounds() {
        assert!(lease_micros(Duration::ZERO).is_err());
        assert_eq!(lease_micros(Duration::from_nanos(1)).unwrap(), 1);
        assert_eq!(lease_micros(Duration::from_millis(200)).unwrap(), 200_000);
        assert!(lease_micros(Duration::from_secs(u64::MAX / 2)).is_err());
    }
}
