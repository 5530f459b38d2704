//! The execution gate: how many jobs a worker may start now under the global limits
//! (`limits.global_concurrency`, `limits.global_rpm`), and the leased global permit each
//! running job holds. Tenant concurrency is enforced by the claim itself; provider-key limits
//! by the key pool.
//!
//! Permits are leased in the [`Limiter`], so a crashed process's slots come back when their
//! lease ends; with `REDIS_URL` set they hold across every worker process.

use std::sync::Arc;
use std::time::Duration;

use crate::limits::{Limiter, LimitsConfig, Permit, PermitSpec, RateQuota, MAX_PER_MINUTE};

const GLOBAL_PERMITS: &str = "conc:global";
const GLOBAL_RATE: &str = "rate:global";

/// The quota for a per-minute limit: never more than `rpm` in any 60 s window, with a burst
/// of 1/20 of a minute; the sustained rate stays within 95% of the allowance.
pub fn minute_quota(rpm: u32) -> RateQuota {
    // Beyond what the limiter counts means "unlimited": held to the limiter's fastest rate.
    let rpm = rpm.min(MAX_PER_MINUTE);
    let burst = (rpm / 20).max(1);
    RateQuota::capped(rpm, burst).unwrap_or(RateQuota::per_minute(rpm.max(1)))
}

/// What the gate says before a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// Claim at most this many jobs.
    Jobs(u32),
    /// Nothing may start before this much time has passed.
    WaitFor(Duration),
}

#[derive(Clone)]
pub struct Gate {
    limiter: Arc<dyn Limiter>,
    rate: RateQuota,
    concurrency: u32,
}

impl Gate {
    pub fn new(limiter: Arc<dyn Limiter>, limits: &LimitsConfig) -> Gate {
        Gate {
            limiter,
            rate: minute_quota(limits.global_rpm),
            concurrency: limits.global_concurrency,
        }
    }

    /// How many jobs may start now, at most `wanted`. Looks without taking: the claim that
    /// follows takes the permits, one per job.
    pub async fn capacity(&self, wanted: u32) -> Capacity {
        let in_use = self.limiter.in_use(GLOBAL_PERMITS).await.unwrap_or(0);
        let free_slots = self.concurrency.saturating_sub(in_use);
        if free_slots == 0 {
            return Capacity::WaitFor(Duration::from_millis(50));
        }
        let rate = match self.limiter.rate_peek(GLOBAL_RATE, self.rate).await {
            Ok(decision) => decision,
            // The limiter is down: fall back to the concurrency bound alone.
            Err(_) => return Capacity::Jobs(wanted.min(free_slots)),
        };
        if rate.remaining == 0 {
            let wait = rate.retry_after.unwrap_or(Duration::from_millis(50));
            return Capacity::WaitFor(wait.max(Duration::from_millis(1)));
        }
        Capacity::Jobs(wanted.min(free_slots).min(rate.remaining))
    }

    /// Takes one global slot and one global rate token for a job about to start.
    /// `None` when another worker took the last one first.
    pub async fn admit(&self, lease: Duration) -> Option<GlobalTicket> {
        let spec = [PermitSpec::new(GLOBAL_PERMITS, self.concurrency)];
        let permit = match self.limiter.permits_acquire(&spec, lease).await {
            Ok(Some(permit)) => permit,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "limiter unavailable; starting the job on the local bound");
                return Some(GlobalTicket { permit: None });
            }
        };
        match self.limiter.rate_acquire(GLOBAL_RATE, self.rate, 1).await {
            Ok(decision) if !decision.allowed => {
                let _ = self.limiter.permit_release(&permit).await;
                None
            }
            _ => Some(GlobalTicket {
                permit: Some(permit),
            }),
        }
    }

    pub async fn renew(&self, ticket: &GlobalTicket, lease: Duration) {
        if let Some(permit) = &ticket.permit {
            let _ = self.limiter.permit_renew(permit, lease).await;
        }
    }

    pub async fn release(&self, ticket: GlobalTicket) {
        if let Some(permit) = &ticket.permit {
            if let Err(e) = self.limiter.permit_release(permit).await {
                tracing::warn!(error = %e, "global permit release failed; it frees at its lease end");
            }
        }
    }
}

/// A running job's global slot.
#[derive(Debug)]
pub struct GlobalTicket {
    permit: Option<Permit>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MemoryLimiter;

    fn gate(rpm: u32, concurrency: u32) -> Gate {
        let limits = LimitsConfig {
            global_rpm: rpm,
            global_concurrency: concurrency,
            ..LimitsConfig::default()
        };
        Gate::new(Arc::new(MemoryLimiter::new()), &limits)
    }

    #[tokio::test]
    async fn an_rpm_beyond_the_limiters_resolution_means_unlimited_not_invalid() {
        // Tenants and bench scripts use 1,000,000,000 RPM for "no limit"; such a quota used
        // to be refused as invalid, so every check took the limiter-failure path.
        let limiter = MemoryLimiter::new();
        for rpm in [MAX_PER_MINUTE, 1_000_000_000, u32::MAX] {
            let decision = limiter
                .rate_acquire(&format!("rate:{rpm}"), minute_quota(rpm), 1)
                .await
                .expect("a valid quota");
            assert!(decision.allowed, "{rpm}");
        }
    }

    #[tokio::test]
    async fn concurrency_bounds_and_frees() {
        let g = gate(100_000, 2);
        assert_eq!(g.capacity(10).await, Capacity::Jobs(2));
        let lease = Duration::from_secs(10);
        let a = g.admit(lease).await.expect("first");
        let _b = g.admit(lease).await.expect("second");
        assert!(g.admit(lease).await.is_none());
        assert!(matches!(g.capacity(10).await, Capacity::WaitFor(_)));
        g.release(a).await;
        assert_eq!(g.capacity(10).await, Capacity::Jobs(1));
    }

    #[tokio::test]
    async fn rate_bounds_starts() {
        let g = gate(20, 100); // burst 1: one start, then wait ~3 s
        let lease = Duration::from_secs(10);
        let t = g.admit(lease).await.expect("first");
        g.release(t).await;
        match g.capacity(5).await {
            Capacity::WaitFor(d) => assert!(
                d > Duration::from_secs(2) && d <= Duration::from_secs(3),
                "{d:?}"
            ),
            other => panic!("expected a wait, got {other:?}"),
        }
        assert!(g.admit(lease).await.is_none());
    }

    #[test]
    fn minute_quota_is_exact_and_generous() {
        for rpm in [1, 20, 60, 1000, 100_000] {
            let q = minute_quota(rpm);
            assert_eq!(q.window_max(), u64::from(rpm));
            assert!(f64::from(q.per_minute) >= 0.95 * f64::from(rpm));
        }
    }
}
