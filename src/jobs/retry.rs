//! When to try a failed attempt again: exponential backoff with full jitter, never sooner
//! than an upstream `Retry-After`.

use std::time::Duration;

use rand::Rng;

/// The delay before the attempt after `attempt` (1-based) failed.
pub fn backoff(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
    let ceiling = exp.min(max);
    // Full jitter spreads a burst of failures so they do not all return at once.
    let jittered =
        Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling.as_millis() as u64));
    match retry_after {
        Some(floor) => jittered.max(floor),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..200 {
            assert!(backoff(1, base, max, None) <= base);
            assert!(backoff(3, base, max, None) <= base * 4);
            assert!(backoff(30, base, max, None) <= max);
            assert!(backoff(1, base, max, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        }
        // Jitter: not every draw is the same.
        let draws: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(4, base, max, None)).collect();
        assert!(draws.len() > 5);
    }
}
