//! Brute-force protection for sign-in, on the shared [`Limiter`] (so it holds across nodes when
//! the limiter lives in Redis).
//!
//! Failed sign-ins are counted per account and per client address; a success counts nothing.
//! Per account, tiers of GCRA quotas make the wait grow: after `account_failures` failures one
//! try a minute, after twice as many one every 5 minutes, after four times as many one every
//! 30 minutes (each tier charges a failure its own cost against a one-per-minute rate). Per
//! address, `address_failures` per window. Attempts on one account are also serialised (a
//! one-slot permit), so parallel guesses cannot all pass the check before the first failure
//! is counted.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::config::UsersConfig;
use crate::limits::{Limiter, Permit, PermitSpec, RateQuota};

/// One GCRA quota and what one failure costs in it.
#[derive(Debug, Clone, Copy)]
struct Tier {
    quota: RateQuota,
    cost: u32,
}

/// How long a sign-in attempt holds its account's slot at most (a crashed attempt frees it).
const ATTEMPT_LEASE: Duration = Duration::from_secs(30);
/// How long an attempt waits for another attempt on the same account to finish, and how
/// often it looks.
const BUSY_WAIT: Duration = Duration::from_secs(3);
const BUSY_POLL: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct SignInGuard {
    limiter: Arc<dyn Limiter>,
    account_tiers: Vec<Tier>,
    address_tier: Tier,
}

/// A sign-in attempt that may go ahead; give it back with [`SignInGuard::finish`].
pub struct Attempt {
    account: String,
    address: String,
    permit: Option<Permit>,
}

impl SignInGuard {
    pub fn new(limiter: Arc<dyn Limiter>, config: &UsersConfig) -> SignInGuard {
        let free = config.account_failures.max(1);
        let tier = |cost: u32, failures: u32| Tier {
            quota: RateQuota::with_burst(1, cost.saturating_mul(failures)),
            cost,
        };
        let window_secs = config.address_window().as_secs().max(1);
        let per_minute = (u64::from(config.address_failures) * 60 / window_secs).max(1);
        SignInGuard {
            limiter,
            account_tiers: vec![tier(1, free), tier(5, free * 2), tier(30, free * 4)],
            address_tier: Tier {
                quota: RateQuota::with_burst(
                    u32::try_from(per_minute).unwrap_or(u32::MAX),
                    config.address_failures.max(1),
                ),
                cost: 1,
            },
        }
    }

    /// Lets an attempt on `account` (tenant and login name) from `address` go ahead, or says
    /// how long to wait. A limiter that does not answer lets it go ahead (logged).
    pub async fn begin(
        &self,
        tenant_id: &str,
        login: &str,
        address: &str,
    ) -> Result<Attempt, Duration> {
        let digest = hex::encode(&Sha256::digest(format!("{tenant_id}\n{login}"))[..12]);
        let attempt = Attempt {
            account: format!("signin:acct:{digest}"),
            address: format!("signin:addr:{address}"),
            permit: None,
        };
        let wait = self.wait_for(&attempt).await;
        if !wait.is_zero() {
            return Err(wait);
        }
        let slot = [PermitSpec::new(format!("{}:busy", attempt.account), 1)];
        // Another attempt on this account is being checked: wait for it (a password check
        // takes milliseconds), then look again, since it may have failed.
        let give_up = tokio::time::Instant::now() + BUSY_WAIT;
        loop {
            match self.limiter.permits_acquire(&slot, ATTEMPT_LEASE).await {
                Ok(Some(permit)) => {
                    let attempt = Attempt {
                        permit: Some(permit),
                        ..attempt
                    };
                    let wait = self.wait_for(&attempt).await;
                    if wait.is_zero() {
                        return Ok(attempt);
                    }
                    self.finish(attempt, false).await;
                    return Err(wait);
                }
                Ok(None) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(BUSY_POLL).await;
                }
                Ok(None) => return Err(Duration::from_secs(1)),
                Err(e) => {
                    tracing::warn!(error = %e, "limiter unavailable; sign-in attempt not serialised");
                    return Ok(attempt);
                }
            }
        }
    }

    /// Ends an attempt; a failure is counted against its account and address.
    pub async fn finish(&self, attempt: Attempt, failed: bool) {
        if failed {
            self.charge(&attempt.address, self.address_tier).await;
            for (n, tier) in self.account_tiers.iter().enumerate() {
                self.charge(&format!("{}:{n}", attempt.account), *tier)
                    .await;
            }
        }
        if let Some(permit) = attempt.permit {
            if let Err(e) = self.limiter.permit_release(&permit).await {
                tracing::warn!(error = %e, "sign-in slot not released; it ends with its lease");
            }
        }
    }

    /// How long until one more failure of this attempt's account and address fits.
    async fn wait_for(&self, attempt: &Attempt) -> Duration {
        let mut wait = self.wait(&attempt.address, self.address_tier).await;
        for (n, tier) in self.account_tiers.iter().enumerate() {
            wait = wait.max(self.wait(&format!("{}:{n}", attempt.account), *tier).await);
        }
        wait
    }

    /// How long until one more failure fits in `tier` (zero: now).
    async fn wait(&self, key: &str, tier: Tier) -> Duration {
        let decision = match self.limiter.rate_peek(key, tier.quota).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "limiter unavailable; sign-in not limited");
                return Duration::ZERO;
            }
        };
        let Ok(interval) = tier.quota.interval() else {
            return Duration::ZERO;
        };
        // Room for `cost` more units once the key's debt (`reset_after`) has drained to
        // `(burst - cost)` intervals.
        let room = interval * tier.quota.burst.saturating_sub(tier.cost);
        decision.reset_after.saturating_sub(room)
    }

    async fn charge(&self, key: &str, tier: Tier) {
        if let Err(e) = self.limiter.rate_acquire(key, tier.quota, tier.cost).await {
            tracing::warn!(error = %e, "limiter unavailable; failed sign-in not counted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::ManualClock;
    use crate::limits::MemoryLimiter;

    #[tokio::test]
    async fn five_failures_then_a_growing_wait_per_account_only() {
        let clock = Arc::new(ManualClock::new());
        let limiter: Arc<dyn Limiter> = Arc::new(MemoryLimiter::with_clock(clock.clone()));
        let guard = SignInGuard::new(limiter, &UsersConfig::default());
        for _ in 0..5 {
            let attempt = guard
                .begin("t", "a@x.io", "1.2.3.4")
                .await
                .expect("allowed");
            guard.finish(attempt, true).await;
        }
        let wait = guard
            .begin("t", "a@x.io", "1.2.3.4")
            .await
            .err()
            .expect("locked");
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        // Another account from the same address still signs in.
        let other = guard
            .begin("t", "b@x.io", "1.2.3.4")
            .await
            .expect("other account");
        guard.finish(other, false).await;
        // Keep failing after each wait: the wait grows past a minute.
        let mut longest = Duration::ZERO;
        for _ in 0..15 {
            loop {
                match guard.begin("t", "a@x.io", "1.2.3.4").await {
                    Ok(attempt) => {
                        guard.finish(attempt, true).await;
                        break;
                    }
                    Err(wait) => {
                        longest = longest.max(wait);
                        clock.advance(wait);
                    }
                }
            }
        }
        assert!(longest >= Duration::from_secs(250), "{longest:?}");
    }
}
