//! [`MemoryLimiter`]: the one-node limiter, all state in one mutex-guarded map.
//!
//! Every operation is a few map look-ups under a `std::sync::Mutex` that is never held across
//! an `.await`, so one lock is simpler than sharding and fast enough for a gateway whose calls
//! are image generations. Time comes from a [`Clock`], so tests move it without sleeping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::base::clock::{Clock, SystemClock};

use super::gcra::Gcra;
use super::{
    lease_micros, merge_specs, new_permit_id, LimitError, Limiter, Permit, PermitSpec,
    RateDecision, RateQuota,
};

/// Sweep the whole state once per this many operations, so keys that are never touched again
/// do not pile up; per-key pruning handles the keys in use.
const SWEEP_EVERY: u64 = 1024;

#[derive(Default)]
struct State {
    /// Rate key -> `tat` in microseconds.
    rates: HashMap<String, u64>,
    /// Permit key -> permit id -> expiry in microseconds.
    permits: HashMap<String, HashMap<String, u64>>,
    ops: u64,
}

impl State {
    /// Drops state that no longer matters (a past `tat` equals no entry, an expired permit no
    /// longer counts), now and then.
    fn tick(&mut self, now: u64) {
        self.ops += 1;
        if self.ops % SWEEP_EVERY == 0 {
            self.rates.retain(|_, tat| *tat > now);
            self.permits.retain(|_, held| {
                held.retain(|_, expiry| *expiry > now);
                !held.is_empty()
            });
        }
    }

    /// The live permits of `key`, expired ones removed.
    fn live(&mut self, key: &str, now: u64) -> usize {
        match self.permits.get_mut(key) {
            Some(held) => {
                held.retain(|_, expiry| *expiry > now);
                held.len()
            }
            None => 0,
        }
    }

    fn remove(&mut self, permit: &Permit) {
        for key in &permit.keys {
            if let Some(held) = self.permits.get_mut(key) {
                held.remove(&permit.id);
                if held.is_empty() {
                    self.permits.remove(key);
                }
            }
        }
    }
}

/// Limits for one node.
pub struct MemoryLimiter {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl MemoryLimiter {
    pub fn new() -> MemoryLimiter {
        MemoryLimiter::with_clock(Arc::new(SystemClock::new()))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> MemoryLimiter {
        MemoryLimiter {
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// The state and the time, read under the lock so operations are ordered like their clock
    /// readings.
    fn lock(&self) -> (MutexGuard<'_, State>, u64) {
        // A panic while holding the lock cannot leave a half-made decision behind (each
        // update is a single insert or remove), so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now_micros();
        state.tick(now);
        (state, now)
    }
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter::new()
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn rate_acquire(
        &self,
        key: &str,
        quota: RateQuota,
        cost: u32,
    ) -> Result<RateDecision, LimitError> {
        let gcra = Gcra::new(quota)?;
        gcra.check_cost(cost)?;
        let (mut state, now) = self.lock();
        let step = gcra.acquire(state.rates.get(key).copied(), now, cost)?;
        if step.write {
            state.rates.insert(key.to_string(), step.tat);
        }
        Ok(gcra.decision(now, step, cost))
    }

    async fn rate_peek(&self, key: &str, quota: RateQuota) -> Result<RateDecision, LimitError> {
        let gcra = Gcra::new(quota)?;
        let (state, now) = self.lock();
        let step = gcra.peek(state.rates.get(key).copied(), now);
        Ok(gcra.decision(now, step, 1))
    }

    async fn permits_acquire(
        &self,
        specs: &[PermitSpec],
        lease: Duration,
    ) -> Result<Option<Permit>, LimitError> {
        let lease = lease_micros(lease)?;
        let specs = merge_specs(specs);
        let (mut state, now) = self.lock();
        for (key, limit) in &specs {
            if state.live(key, now) >= *limit as usize {
                return Ok(None);
            }
        }
        let permit = Permit {
            id: new_permit_id(),
            keys: specs.into_iter().map(|(key, _)| key).collect(),
        };
        let expiry = now.saturating_add(lease);
        for key in &permit.keys {
            state
                .permits
                .entry(key.clone())
                .or_default()
                .insert(permit.id.clone(), expiry);
        }
        Ok(Some(permit))
    }

    async fn permit_renew(&self, permit: &Permit, lease: Duration) -> Result<bool, LimitError> {
        let lease = lease_micros(lease)?;
        let (mut state, now) = self.lock();
        let intact = permit.keys.iter().all(|key| {
            state
                .permits
                .get(key)
                .and_then(|held| held.get(&permit.id))
                .is_some_and(|expiry| *expiry > now)
        });
        if !intact {
            state.remove(permit);
            return Ok(false);
        }
        let expiry = now.saturating_add(lease);
        for key in &permit.keys {
            if let Some(slot) = state
                .permits
                .get_mut(key)
                .and_then(|held| held.get_mut(&permit.id))
            {
                *slot = expiry;
            }
        }
        Ok(true)
    }

    async fn permit_release(&self, permit: &Permit) -> Result<(), LimitError> {
        let (mut state, _) = self.lock();
        state.remove(permit);
        Ok(())
    }

    async fn in_use(&self, key: &str) -> Result<u32, LimitError> {
        let (mut state, now) = self.lock();
        Ok(state.live(key, now) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::ManualClock;

    #[tokio::test]
    async fn sweep_forgets_idle_keys() {
        let clock = Arc::new(ManualClock::new());
        let limiter = MemoryLimiter::with_clock(clock.clone());
        let quota = RateQuota::with_burst(60, 2);
        for i in 0..100 {
            limiter
                .rate_acquire(&format!("k{i}"), quota, 1)
                .await
                .unwrap();
        }
        let spec = [PermitSpec::new("p", 10)];
        let permit = limiter
            .permits_acquire(&spec, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        clock.advance(Duration::from_secs(2));
        for _ in 0..SWEEP_EVERY {
            limiter.rate_peek("other", quota).await.unwrap();
        }
        {
            let state = limiter.state.lock().unwrap();
            assert!(state.rates.is_empty());
            assert!(state.permits.is_empty());
        }
        assert!(!limiter
            .permit_renew(&permit, Duration::from_secs(1))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn clock_going_backwards_keeps_permits_and_rates_sane() {
        let clock = Arc::new(ManualClock::new());
        clock.set(Duration::from_secs(100));
        let limiter = MemoryLimiter::with_clock(clock.clone());
        let quota = RateQuota::per_minute(60);
        assert!(limiter.rate_acquire("r", quota, 1).await.unwrap().allowed);
        let spec = [PermitSpec::new("p", 1)];
        let permit = limiter
            .permits_acquire(&spec, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        clock.set(Duration::from_secs(10));
        let d = limiter.rate_acquire("r", quota, 1).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        // The permit still counts (its lease looks longer, never shorter).
        assert_eq!(limiter.in_use("p").await.unwrap(), 1);
        assert!(limiter
            .permit_renew(&permit, Duration::from_secs(1))
            .await
            .unwrap());
    }
}
