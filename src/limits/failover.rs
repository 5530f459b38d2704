//! [`FailoverLimiter`]: limits across all nodes through Redis while it answers, and each
//! node's share of every limit, in memory, while it does not, said loudly.
//!
//! Normal mode: every call goes to a [`RedisLimiter`] (bounded by
//! [`FailoverConfig::call_timeout`]), so limits hold across every node.
//!
//! A call that fails with [`LimitError::Unavailable`] (connection refused, reset, timeout)
//! switches the limiter to **degraded** mode and is itself answered from memory. In degraded
//! mode no call waits on Redis; each is decided by a [`MemoryLimiter`] on this node with every
//! limit divided by the live nodes ([`LiveNodes`], fed from the node heartbeats in the store):
//! a rate's `per_minute` and `burst` each become `max(1, x / n)` (the burst never below the
//! request's own cost, so a request Redis would accept is not turned into an error), a
//! permit limit `max(1, limit / n)`; a limit of 0 stays 0. With every node doing the same, the
//! nodes together stay within the limit (give or take the "at least 1" when a limit is
//! smaller than the node count). Every live process counts, whatever its role, so a limit only
//! workers enforce (global concurrency) is also divided by the API-only nodes: stricter than
//! needed, never looser. Rates start afresh in memory (Redis' state is out of reach), so each
//! node may use its share's burst at once when the outage begins; the `RateLimit` header's
//! `r=` then counts down this node's share.
//!
//! Loudly: a `tracing::error!` once when the limiter falls back, a `warn!` every
//! [`FailoverConfig::warn_every`] while it stays there, an `info!` when it is back, and
//! [`Limiter::degraded`] (what `/health` reports) with counters of fallbacks and of the
//! calls answered in memory.
//!
//! A background task PINGs Redis every [`FailoverConfig::probe_every`] (1 s): a failed PING
//! also switches to degraded mode (so an idle node's `/health` is truthful too), and the first
//! PING that answers while degraded switches back. A node therefore returns to Redis within
//! about a second of Redis answering again.
//!
//! Permits across the switch:
//! - Permits this node took in Redis before the outage still run; in degraded mode they
//!   count against this node's share of their keys (the limiter remembers which Redis
//!   permits it holds and until when), so the node does not admit a full share on top of
//!   them. Renewing one while Redis is unreachable answers `true` (the holder keeps going;
//!   Redis tells the truth on the first renew after it is back); releasing one is a no-op
//!   (it ends with its lease in Redis).
//! - Permits taken in memory during the outage stay in memory: they are renewed and
//!   released there until they end, and are never copied into Redis. The trade-off: for as
//!   long as those holders run after Redis is back, Redis does not count them, so a key can
//!   briefly hold up to its limit in Redis plus what the nodes admitted in memory (at most
//!   its limit again). Copying them into Redis would close that gap but needs a forced
//!   insert past the limit and the permits' specs; letting them end (release or lease end,
//!   leases are short and renewed) keeps the switch back simple and never kills a running job.
//! - A call that timed out may still have been carried out by Redis; a permit taken that way
//!   is never handed out and frees at its lease end (as with the bare [`RedisLimiter`]).
//!
//! Must not touch: the store (the live node count is pushed in through [`LiveNodes`] by the
//! heartbeat task in `server`), HTTP, jobs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::redis::RedisLimiter;
use super::{
    lease_micros, Degraded, LimitError, Limiter, MemoryLimiter, Permit, PermitSpec, RateDecision,
    RateQuota,
};

/// Ids of permits taken in memory start with this, so renew and release find them there
/// whatever mode the limiter is in by then.
const MEMORY_PERMIT: &str = "mem-";

/// What [`Degraded::mode`] says in degraded mode.
pub const MEMORY_FALLBACK: &str = "memory-fallback";

/// How often a process records itself in the `nodes` table.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A node not heard from for this long (three heartbeats) no longer counts as live. Each node
/// stamps heartbeats with its own clock, so clocks must agree to well within this (NTP).
pub const NODE_TTL: Duration = Duration::from_secs(15);

/// The number of live nodes (heard from within [`NODE_TTL`]), as last counted from the
/// heartbeats; never below 1.
#[derive(Debug)]
pub struct LiveNodes(AtomicU32);

impl LiveNodes {
    /// Starts at 1 (this node) until the first count.
    pub fn new() -> LiveNodes {
        LiveNodes(AtomicU32::new(1))
    }

    /// Records a count; 0 (no heartbeat seen yet, this node's included) is taken as 1.
    pub fn set(&self, live: u32) {
        self.0.store(live.max(1), Ordering::Relaxed);
    }

    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }
}

impl Default for LiveNodes {
    fn default() -> Self {
        LiveNodes::new()
    }
}

/// Timings of a [`FailoverLimiter`].
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// How often Redis is PINGed, in both modes.
    pub probe_every: Duration,
    /// How often a `warn!` repeats while degraded.
    pub warn_every: Duration,
    /// The longest a Redis call (or PING, or connection attempt) may take before it counts as
    /// a failure.
    pub call_timeout: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            probe_every: Duration::from_secs(1),
            warn_every: Duration::from_secs(30),
            call_timeout: Duration::from_secs(1),
        }
    }
}

/// Redis, with each node's share in memory as the fallback. See the module docs.
pub struct FailoverLimiter {
    shared: Arc<Shared>,
    prober: tokio::task::JoinHandle<()>,
}

impl Drop for FailoverLimiter {
    fn drop(&mut self) {
        self.prober.abort();
    }
}

struct Shared {
    redis: RedisLimiter,
    memory: MemoryLimiter,
    nodes: Arc<LiveNodes>,
    config: FailoverConfig,
    /// Mirrors `outage.is_some()` for the hot path; written only under the `outage` lock.
    degraded: AtomicBool,
    outage: Mutex<Option<Outage>>,
    fallbacks: AtomicU64,
    fallback_decisions: AtomicU64,
    /// Redis permits this node holds (id -> keys, lease end), counted against its share while
    /// degraded.
    held: Mutex<Held>,
}

struct Outage {
    since: SystemTime,
    started: Instant,
    last_warn: Instant,
    decisions_before: u64,
}

#[derive(Default)]
struct Held {
    permits: HashMap<String, (Vec<String>, Instant)>,
    inserts: u64,
}

/// Forget expired entries once per this many inserts (a permit dropped without a release).
const HELD_SWEEP_EVERY: u64 = 256;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single insert, remove or swap.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `limit / nodes`, at least 1 unless the limit itself is 0.
fn share(limit: u32, nodes: u32) -> u32 {
    if limit == 0 {
        0
    } else {
        (limit / nodes.max(1)).max(1)
    }
}

/// A quota cut to one node's share; the burst stays able to hold a request of `cost` that fits
/// the whole quota.
fn share_quota(quota: RateQuota, nodes: u32, cost: u32) -> RateQuota {
    RateQuota {
        per_minute: share(quota.per_minute, nodes),
        burst: share(quota.burst, nodes).max(cost.min(quota.burst)),
    }
}

fn as_memory_permit(permit: &Permit) -> Option<Permit> {
    permit.id.strip_prefix(MEMORY_PERMIT).map(|id| Permit {
        id: id.to_owned(),
        keys: permit.keys.clone(),
    })
}

impl FailoverLimiter {
    /// Connects to `url` lazily and PINGs it once: if Redis does not answer, the limiter
    /// starts degraded (and says so) rather than failing, so a node can start during a Redis
    /// outage. Only a malformed URL is an error. Must run inside a Tokio runtime.
    pub async fn connect(
        url: &str,
        prefix: impl Into<String>,
        nodes: Arc<LiveNodes>,
        config: FailoverConfig,
    ) -> Result<FailoverLimiter, LimitError> {
        let redis = RedisLimiter::lazy(url, prefix, config.call_timeout)?;
        let limiter = FailoverLimiter::new(redis, nodes, config);
        limiter.shared.probe().await;
        Ok(limiter)
    }

    /// Wraps `redis` and starts the prober. Must run inside a Tokio runtime.
    pub fn new(
        redis: RedisLimiter,
        nodes: Arc<LiveNodes>,
        config: FailoverConfig,
    ) -> FailoverLimiter {
        let shared = Arc::new(Shared {
            redis,
            memory: MemoryLimiter::new(),
            nodes,
            config,
            degraded: AtomicBool::new(false),
            outage: Mutex::new(None),
            fallbacks: AtomicU64::new(0),
            fallback_decisions: AtomicU64::new(0),
            held: Mutex::new(Held::default()),
        });
        let prober = tokio::spawn(probe_loop(Arc::downgrade(&shared)));
        FailoverLimiter { shared, prober }
    }

    /// Whether calls are answered in memory now.
    pub fn is_degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::SeqCst)
    }
}

async fn probe_loop(shared: Weak<Shared>) {
    let every = match shared.upgrade() {
        Some(shared) => shared.config.probe_every,
        None => return,
    };
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; `connect` has just probed
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.probe().await;
    }
}

impl Shared {
    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::SeqCst)
    }

    /// One PING: back to Redis if it answers, to memory (or a periodic warning) if not.
    async fn probe(&self) {
        match self.bounded(self.redis.ping()).await {
            Ok(()) => self.recover(),
            Err(e) => {
                if !self.fall_back(&e) {
                    self.warn_if_due(&e);
                }
            }
        }
    }

    /// `fut` with the call timeout; running out of time is [`LimitError::Unavailable`].
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = Result<T, LimitError>>,
    ) -> Result<T, LimitError> {
        match tokio::time::timeout(self.config.call_timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(LimitError::Unavailable(format!(
                "no answer from Redis within {:?}",
                self.config.call_timeout
            ))),
        }
    }

    /// Asks Redis unless degraded. `Ok(None)`: answer from memory (degraded, or Redis just
    /// failed and the limiter fell back). An invalid request is an error in either mode.
    async fn via_redis<T>(
        &self,
        fut: impl Future<Output = Result<T, LimitError>>,
    ) -> Result<Option<T>, LimitError> {
        if self.is_degraded() {
            return Ok(None);
        }
        match self.bounded(fut).await {
            Ok(value) => Ok(Some(value)),
            Err(e @ LimitError::Invalid(_)) => Err(e),
            Err(e) => {
                self.fall_back(&e);
                Ok(None)
            }
        }
    }

    /// Switches to memory; `true` if this call did (and logged it), `false` if already there.
    fn fall_back(&self, cause: &LimitError) -> bool {
        let mut outage = lock(&self.outage);
        if outage.is_some() {
            return false;
        }
        let now = Instant::now();
        *outage = Some(Outage {
            since: SystemTime::now(),
            started: now,
            last_warn: now,
            decisions_before: self.fallback_decisions.load(Ordering::Relaxed),
        });
        self.degraded.store(true, Ordering::SeqCst);
        let fallbacks = self.fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
        let live_nodes = self.nodes.get();
        tracing::error!(
            cause = %cause,
            live_nodes,
            fallbacks,
            "Redis limiter unreachable: limits are NOT shared across nodes now; each node \
             enforces 1/{live_nodes} of every limit in memory until Redis answers again"
        );
        true
    }

    fn warn_if_due(&self, cause: &LimitError) {
        let mut outage = lock(&self.outage);
        let Some(outage) = outage.as_mut() else {
            return;
        };
        if outage.last_warn.elapsed() < self.config.warn_every {
            return;
        }
        outage.last_warn = Instant::now();
        let decisions = self.fallback_decisions.load(Ordering::Relaxed) - outage.decisions_before;
        tracing::warn!(
            cause = %cause,
            degraded_for = ?outage.started.elapsed(),
            live_nodes = self.nodes.get(),
            decisions,
            "Redis limiter still unreachable: limits are per node (each node its share)"
        );
    }

    fn recover(&self) {
        let mut outage = lock(&self.outage);
        let Some(ended) = outage.take() else {
            return;
        };
        self.degraded.store(false, Ordering::SeqCst);
        let decisions = self.fallback_decisions.load(Ordering::Relaxed) - ended.decisions_before;
        tracing::info!(
            degraded_for = ?ended.started.elapsed(),
            decisions,
            "Redis limiter answers again: limits hold across nodes again"
        );
    }

    /// The node count for a fallback decision, counted as one.
    fn fallback_decision(&self) -> u32 {
        self.fallback_decisions.fetch_add(1, Ordering::Relaxed);
        self.nodes.get()
    }

    fn hold(&self, permit: &Permit, lease: Duration) {
        if permit.keys.is_empty() {
            return;
        }
        let mut held = lock(&self.held);
        let now = Instant::now();
        held.inserts += 1;
        if held.inserts % HELD_SWEEP_EVERY == 0 {
            held.permits.retain(|_, (_, until)| *until > now);
        }
        held.permits
            .insert(permit.id.clone(), (permit.keys.clone(), now + lease));
    }

    fn forget(&self, permit: &Permit) {
        lock(&self.held).permits.remove(&permit.id);
    }

    /// Redis permits this node holds in `key`, unexpired by its own clock.
    fn held_in(&self, key: &str) -> u32 {
        let now = Instant::now();
        let held = lock(&self.held);
        let count = held
            .permits
            .values()
            .filter(|(keys, until)| *until > now && keys.iter().any(|k| k == key))
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

#[async_trait]
impl Limiter for FailoverLimiter {
    async fn rate_acquire(
        &self,
        key: &str,
        quota: RateQuota,
        cost: u32,
    ) -> Result<RateDecision, LimitError> {
        let s = &self.shared;
        if let Some(decision) = s.via_redis(s.redis.rate_acquire(key, quota, cost)).await? {
            return Ok(decision);
        }
        let nodes = s.fallback_decision();
        s.memory
            .rate_acquire(key, share_quota(quota, nodes, cost), cost)
            .await
    }

    async fn rate_peek(&self, key: &str, quota: RateQuota) -> Result<RateDecision, LimitError> {
        let s = &self.shared;
        if let Some(decision) = s.via_redis(s.redis.rate_peek(key, quota)).await? {
            return Ok(decision);
        }
        let nodes = s.fallback_decision();
        s.memory.rate_peek(key, share_quota(quota, nodes, 1)).await
    }

    async fn permits_acquire(
        &self,
        specs: &[PermitSpec],
        lease: Duration,
    ) -> Result<Option<Permit>, LimitError> {
        let s = &self.shared;
        if let Some(taken) = s.via_redis(s.redis.permits_acquire(specs, lease)).await? {
            if let Some(permit) = &taken {
                s.hold(permit, lease);
            }
            return Ok(taken);
        }
        let nodes = s.fallback_decision();
        // This node's share, less the Redis permits it still holds in the key.
        let shares: Vec<PermitSpec> = specs
            .iter()
            .map(|spec| {
                let limit = share(spec.limit, nodes).saturating_sub(s.held_in(&spec.key));
                PermitSpec::new(spec.key.clone(), limit)
            })
            .collect();
        let taken = s.memory.permits_acquire(&shares, lease).await?;
        Ok(taken.map(|permit| Permit {
            id: format!("{MEMORY_PERMIT}{}", permit.id),
            keys: permit.keys,
        }))
    }

    async fn permit_renew(&self, permit: &Permit, lease: Duration) -> Result<bool, LimitError> {
        let s = &self.shared;
        if let Some(local) = as_memory_permit(permit) {
            return s.memory.permit_renew(&local, lease).await;
        }
        match s.via_redis(s.redis.permit_renew(permit, lease)).await? {
            Some(true) => {
                s.hold(permit, lease);
                Ok(true)
            }
            Some(false) => {
                s.forget(permit);
                Ok(false)
            }
            None => {
                // Redis cannot say; the holder keeps its slot (and it keeps counting here).
                lease_micros(lease)?;
                s.hold(permit, lease);
                Ok(true)
            }
        }
    }

    async fn permit_release(&self, permit: &Permit) -> Result<(), LimitError> {
        let s = &self.shared;
        if let Some(local) = as_memory_permit(permit) {
            return s.memory.permit_release(&local).await;
        }
        s.forget(permit);
        // Unreachable Redis: the slot frees at its lease end there.
        s.via_redis(s.redis.permit_release(permit)).await?;
        Ok(())
    }

    /// In Redis' count, plus this node's permits still held in memory from an outage; while
    /// degraded, this node's permits only (memory and the Redis ones it holds).
    async fn in_use(&self, key: &str) -> Result<u32, LimitError> {
        let s = &self.shared;
        let local = s.memory.in_use(key).await?;
        if let Some(shared) = s.via_redis(s.redis.in_use(key)).await? {
            return Ok(shared.saturating_add(local));
        }
        s.fallback_decision();
        Ok(local.saturating_add(s.held_in(key)))
    }

    fn degraded(&self) -> Option<Degraded> {
        let s = &self.shared;
        let outage = lock(&s.outage);
        outage.as_ref().map(|outage| Degraded {
            mode: MEMORY_FALLBACK,
            since: outage.since,
            live_nodes: s.nodes.get(),
            fallbacks: s.fallbacks.load(Ordering::Relaxed),
            fallback_decisions: s.fallback_decisions.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_divide_and_never_reach_zero() {
        assert_eq!(share(10, 2), 5);
        assert_eq!(share(10, 3), 3);
        assert_eq!(share(1, 4), 1);
        assert_eq!(share(0, 4), 0);
        assert_eq!(share(7, 0), 7);
        let q = share_quota(RateQuota::with_burst(60, 3), 2, 1);
        assert_eq!(q, RateQuota::with_burst(30, 1));
        // A request of cost 3 that fits the whole quota still fits a node's share.
        let q = share_quota(RateQuota::with_burst(60, 3), 2, 3);
        assert_eq!(q, RateQuota::with_burst(30, 3));
        // A cost that never fits stays invalid (it is refused as without the fallback).
        let q = share_quota(RateQuota::with_burst(60, 3), 2, 5);
        assert_eq!(q.burst, 3);
    }

    #[test]
    fn live_nodes_is_at_least_one() {
        let nodes = LiveNodes::new();
        assert_eq!(nodes.get(), 1);
        nodes.set(0);
        assert_eq!(nodes.get(), 1);
        nodes.set(3);
        assert_eq!(nodes.get(), 3);
    }

    /// Nothing listens on port 1: the limiter starts degraded, answers every call in memory at
    /// this node's share, and says so.
    #[tokio::test]
    async fn starts_degraded_and_answers_in_memory_at_its_share() {
        let nodes = Arc::new(LiveNodes::new());
        nodes.set(2);
        let config = FailoverConfig {
            call_timeout: Duration::from_millis(300),
            ..FailoverConfig::default()
        };
        let limiter = FailoverLimiter::connect("redis://127.0.0.1:1/", "t:", nodes, config)
            .await
            .expect("a lazy connect never fails on an unreachable server");
        assert!(limiter.is_degraded());
        let lease = Duration::from_secs(10);
        let spec = [PermitSpec::new("k", 4)];
        let a = limiter.permits_acquire(&spec, lease).await.unwrap();
        let b = limiter.permits_acquire(&spec, lease).await.unwrap();
        assert!(limiter
            .permits_acquire(&spec, lease)
            .await
            .unwrap()
            .is_none());
        assert_eq!(limiter.in_use("k").await.unwrap(), 2);
        let a = a.expect("first of two");
        assert!(a.id.starts_with(MEMORY_PERMIT));
        assert!(limiter.permit_renew(&a, lease).await.unwrap());
        limiter.permit_release(&a).await.unwrap();
        assert_eq!(limiter.in_use("k").await.unwrap(), 1);
        assert!(b.is_some());
        let quota = RateQuota::with_burst(60, 4);
        let allowed = [
            limiter.rate_acquire("r", quota, 1).await.unwrap(),
            limiter.rate_acquire("r", quota, 1).await.unwrap(),
            limiter.rate_acquire("r", quota, 1).await.unwrap(),
        ];
        assert_eq!(
            allowed.map(|d| (d.allowed, d.limit)),
            [(true, 2), (true, 2), (false, 2)]
        );
        let degraded = limiter.degraded().expect("degraded");
        assert_eq!(degraded.mode, MEMORY_FALLBACK);
        assert_eq!(degraded.live_nodes, 2);
        assert_eq!(degraded.fallbacks, 1);
        assert!(degraded.fallback_decisions >= 8, "{degraded:?}");
        // Invalid requests stay errors.
        assert!(matches!(
            limiter.permits_acquire(&spec, Duration::ZERO).await,
            Err(LimitError::Invalid(_))
        ));
    }
}
