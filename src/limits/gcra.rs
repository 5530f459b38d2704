//! The generic cell rate algorithm, as pure arithmetic on microseconds (no clock, no I/O), so
//! the memory limiter runs it directly and the Redis limiter turns its script's raw answer into
//! the same [`RateDecision`].
//!
//! State per key: one number, the theoretical arrival time `tat` (when the key would be idle
//! again). With emission interval `T` and burst `B`, a request of cost `c` at time `now` is
//! admitted iff `max(tat, now) + c*T <= now + B*T`, and then `tat` becomes `max(tat, now) + c*T`.
//!
//! Why at most `W/T + B` (exclusive) in any window `[t0, t0 + W)`: at `t0`, `tat >= t0` after
//! the `max`; each admitted unit in the window adds `T`, so after `n` units `tat >= t0 + n*T`,
//! and the admission condition keeps `tat <= now + B*T < t0 + W + B*T`. Hence `n < W/T + B`.
//! (The clamp in [`Gcra::normalize`] never fires while time moves forward, as a stored `tat`
//! is at most `B*T` ahead of the time it was written.)

use std::time::Duration;

use super::{LimitError, RateDecision, RateQuota, MAX_SPAN_MICROS};

const MICROS_PER_MINUTE: u64 = 60_000_000;

/// A validated quota in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval: u64,
    burst: u32,
    span: u64,
}

/// The outcome of one step: whether it was admitted and the key's `tat` afterwards, which the
/// backend stores when `write` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub allowed: bool,
    pub tat: u64,
    /// Admitted with a cost, or the stored `tat` was clamped (see [`Gcra::normalize`]).
    pub write: bool,
}

impl Gcra {
    pub fn new(quota: RateQuota) -> Result<Gcra, LimitError> {
        if quota.per_minute == 0 || quota.burst == 0 {
            return Err(LimitError::Invalid(format!(
                "rate quota needs per_minute >= 1 and burst >= 1, got {quota:?}"
            )));
        }
        if quota.per_minute as u64 > MICROS_PER_MINUTE {
            return Err(LimitError::Invalid(format!(
                "rate quota above one per microsecond: {quota:?}"
            )));
        }
        // Rounding up only makes the limiter stricter, so the documented bounds still hold.
        let interval = MICROS_PER_MINUTE.div_ceil(quota.per_minute as u64);
        let span = interval * quota.burst as u64;
        if span > MAX_SPAN_MICROS {
            return Err(LimitError::Invalid(format!(
                "rate quota burst spans more than {MAX_SPAN_MICROS} µs: {quota:?}"
            )));
        }
        Ok(Gcra {
            interval,
            burst: quota.burst,
            span,
        })
    }

    /// `T` in microseconds.
    pub fn interval_micros(&self) -> u64 {
        self.interval
    }

    /// `B*T` in microseconds: how far ahead of `now` the `tat` may run.
    pub fn span_micros(&self) -> u64 {
        self.span
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// A cost that can ever fit.
    pub fn check_cost(&self, cost: u32) -> Result<(), LimitError> {
        if cost > self.burst {
            return Err(LimitError::Invalid(format!(
                "cost {cost} exceeds burst {}; it could never be admitted",
                self.burst
            )));
        }
        Ok(())
    }

    /// The stored `tat` brought into `[now, now + B*T]`. Below: the key is idle (a past `tat`
    /// means a full bucket). Above: only possible if the clock went backwards (or the burst
    /// was lowered); a drained bucket is the strictest state this quota allows, so clamping
    /// never admits more, and it bounds the lockout to `B*T` instead of the clock's jump.
    pub fn normalize(&self, tat: Option<u64>, now: u64) -> u64 {
        tat.unwrap_or(now)
            .max(now)
            .min(now.saturating_add(self.span))
    }

    /// Tries to take `cost` units at `now`.
    pub fn acquire(&self, stored: Option<u64>, now: u64, cost: u32) -> Result<Step, LimitError> {
        self.check_cost(cost)?;
        let tat = self.normalize(stored, now);
        // The clamp must be kept, or the key stays drained until the clock catches up.
        let clamped = stored.is_some_and(|s| s > tat);
        let new_tat = tat + cost as u64 * self.interval;
        Ok(if new_tat <= now.saturating_add(self.span) {
            Step {
                allowed: true,
                tat: new_tat,
                write: cost > 0 || clamped,
            }
        } else {
            Step {
                allowed: false,
                tat,
                write: clamped,
            }
        })
    }

    /// Whether one unit would be admitted at `now`, taking nothing (never writes).
    pub fn peek(&self, stored: Option<u64>, now: u64) -> Step {
        let tat = self.normalize(stored, now);
        Step {
            allowed: tat + self.interval <= now.saturating_add(self.span),
            tat,
            write: false,
        }
    }

    /// The decision for a step taken at `now` for `cost` units (1 for a peek). Saturating
    /// arithmetic, because the step may come from a Redis script rather than from this code.
    pub fn decision(&self, now: u64, step: Step, cost: u32) -> RateDecision {
        let horizon = now.saturating_add(self.span);
        let remaining = (horizon.saturating_sub(step.tat) / self.interval).min(self.burst as u64);
        let retry_after = (!step.allowed).then(|| {
            let ready_at = (step.tat + cost as u64 * self.interval).saturating_sub(self.span);
            Duration::from_micros(ready_at.saturating_sub(now))
        });
        RateDecision {
            allowed: step.allowed,
            limit: self.burst,
            remaining: remaining as u32,
            reset_after: Duration::from_micros(step.tat.saturating_sub(now)),
            retry_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    /// Runs `acquire` and stores the new `tat` when admitted, like a backend does.
    fn take(g: &Gcra, tat: &mut Option<u64>, now: u64, cost: u32) -> RateDecision {
        let step = g.acquire(*tat, now, cost).unwrap();
        if step.write {
            *tat = Some(step.tat);
        }
        g.decision(now, step, cost)
    }

    #[test]
    fn burst_then_deny_with_exact_retry_after() {
        let g = Gcra::new(RateQuota::with_burst(60, 3)).unwrap();
        let mut tat = None;
        let now = 1_000 * SEC;
        for left in [2, 1, 0] {
            let d = take(&g, &mut tat, now, 1);
            assert!(d.allowed);
            assert_eq!((d.limit, d.remaining), (3, left));
            assert_eq!(d.retry_after, None);
        }
        let d = take(&g, &mut tat, now, 1);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(d.reset_after, Duration::from_secs(3));
        // One microsecond early is still too early; exactly on time is admitted.
        assert!(!take(&g, &mut tat, now + SEC - 1, 1).allowed);
        assert!(take(&g, &mut tat, now + SEC, 1).allowed);
        assert!(!take(&g, &mut tat, now + SEC, 1).allowed);
    }

    #[test]
    fn steady_rate_after_burst_is_one_per_interval() {
        let g = Gcra::new(RateQuota::with_burst(120, 2)).unwrap(); // T = 0.5 s
        let mut tat = None;
        let mut admitted = Vec::new();
        // Someone knocking every 10 ms for 10 s.
        for i in 0..1000u64 {
            let now = i * 10_000;
            if take(&g, &mut tat, now, 1).allowed {
                admitted.push(now);
            }
        }
        // Burst of 2 at 0 (two knocks 10 ms apart both fit), then one every 0.5 s.
        assert_eq!(admitted[0], 0);
        assert_eq!(admitted[1], 10_000);
        for w in admitted[2..].windows(2) {
            assert_eq!(w[1] - w[0], 500_000);
        }
        assert_eq!(admitted.len(), 2 + 19);
    }

    #[test]
    fn any_window_holds_at_most_per_minute_plus_burst_minus_one() {
        let quota = RateQuota::with_burst(10, 3);
        let g = Gcra::new(quota).unwrap();
        let mut tat = None;
        let mut admitted = Vec::new();
        // Irregular knocking (a simple LCG) over 5 minutes, sometimes several per instant.
        let mut x: u64 = 12345;
        let mut now = 0u64;
        while now < 300 * SEC {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            now += (x >> 33) % (2 * SEC);
            for _ in 0..(x >> 60) + 1 {
                if take(&g, &mut tat, now, 1).allowed {
                    admitted.push(now);
                }
            }
        }
        let max_in_window = max_in_any_window(&admitted, 60 * SEC);
        assert!(
            max_in_window as u64 <= quota.window_max(),
            "{max_in_window}"
        );

        // Hammering every millisecond reaches the bound exactly.
        let mut tat = None;
        let mut admitted = Vec::new();
        for ms in 0..180_000u64 {
            if take(&g, &mut tat, ms * 1000, 1).allowed {
                admitted.push(ms * 1000);
            }
        }
        assert_eq!(
            max_in_any_window(&admitted, 60 * SEC) as u64,
            quota.window_max()
        );
    }

    fn max_in_any_window(times: &[u64], window: u64) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[test]
    fn cost_above_one() {
        let g = Gcra::new(RateQuota::with_burst(60, 5)).unwrap();
        let mut tat = None;
        let d = take(&g, &mut tat, 0, 3);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        assert_eq!(d.reset_after, Duration::from_secs(3));
        let d = take(&g, &mut tat, 0, 3);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 2);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        assert!(take(&g, &mut tat, 0, 2).allowed);
        assert!(matches!(g.acquire(None, 0, 6), Err(LimitError::Invalid(_))));
        // Cost 0 is always admitted and changes nothing.
        let d = take(&g, &mut tat, 0, 0);
        assert!(d.allowed);
        assert_eq!((d.remaining, tat), (0, Some(5 * SEC)));
    }

    #[test]
    fn peek_takes_nothing() {
        let g = Gcra::new(RateQuota::with_burst(60, 2)).unwrap();
        let step = g.peek(None, 0);
        let d = g.decision(0, step, 1);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_after), (2, Duration::ZERO));
        let mut tat = None;
        take(&g, &mut tat, 0, 2);
        let d = g.decision(0, g.peek(tat, 0), 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(tat, Some(2 * SEC));
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let g = Gcra::new(RateQuota::with_burst(60, 3)).unwrap();
        let mut tat = None;
        let now = 3_600 * SEC;
        for _ in 0..3 {
            assert!(take(&g, &mut tat, now, 1).allowed);
        }
        // The clock jumps back an hour (Redis failover to a node with another clock): no
        // panic, nothing extra admitted, and the wait is at most one burst's worth.
        let back = now - 3_600 * SEC;
        let d = take(&g, &mut tat, back, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
        assert!(d.reset_after <= Duration::from_secs(3));
        assert!(take(&g, &mut tat, back + SEC, 1).allowed);
        assert!(!take(&g, &mut tat, back + SEC, 1).allowed);
        // Even from time zero with a far-future tat.
        let d = take(&g, &mut Some(u64::MAX / 2), 0, 1);
        assert!(!d.allowed);
    }

    #[test]
    fn invalid_quotas() {
        for q in [
            RateQuota::with_burst(0, 1),
            RateQuota::with_burst(1, 0),
            RateQuota::with_burst(60_000_001, 1),
            RateQuota::with_burst(1, u32::MAX),
        ] {
            assert!(matches!(Gcra::new(q), Err(LimitError::Invalid(_))), "{q:?}");
        }
        assert!(Gcra::new(RateQuota::with_burst(60_000_000, 1000)).is_ok());
    }
}
