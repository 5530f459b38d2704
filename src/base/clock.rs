//! Time: wall-clock milliseconds as every stored timestamp, their contract format, the
//! [`WallClock`] the store engines stamp them with, and the monotonic [`Clock`] that limiters,
//! breakers and the key pool read, so tests move time instead of sleeping.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Milliseconds since the Unix epoch; every timestamp in the store is one of these.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// `after` past `now`, saturating.
pub fn millis_after(now: Millis, after: Duration) -> Millis {
    now.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 UTC with milliseconds, as the contract wants (`2026-01-26T09:36:16.288Z`).
pub fn format_millis(ms: Millis) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Wall-clock time as the store engines stamp and compare it: Unix epoch milliseconds.
///
/// A trait of its own rather than a method of [`Clock`]: stored timestamps are compared with
/// other processes' and with times clients gave (deadlines, `Cancel-After`), so they must be
/// epoch milliseconds, while [`Clock`] counts microseconds from an arbitrary origin and is set
/// backwards by tests of a failover; one manual clock for both would tie the two together.
pub trait WallClock: Send + Sync {
    fn now_millis(&self) -> Millis;
}

/// The real wall clock ([`now_millis`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemWallClock;

impl SystemWallClock {
    /// The shared form the store engines take.
    pub fn shared() -> Arc<dyn WallClock> {
        Arc::new(SystemWallClock)
    }
}

impl WallClock for SystemWallClock {
    fn now_millis(&self) -> Millis {
        now_millis()
    }
}

/// A wall clock that moves only when told to (tests): the store sees time pass without a
/// test sleeping.
#[derive(Debug)]
pub struct ManualWallClock {
    millis: AtomicI64,
}

impl ManualWallClock {
    /// Stopped at `start`.
    pub fn new(start: Millis) -> ManualWallClock {
        ManualWallClock {
            millis: AtomicI64::new(start),
        }
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }

    pub fn set(&self, at: Millis) {
        self.millis.store(at, Ordering::SeqCst);
    }
}

impl WallClock for ManualWallClock {
    fn now_millis(&self) -> Millis {
        self.millis.load(Ordering::SeqCst)
    }
}

/// A monotonic time source in microseconds since an arbitrary origin.
pub trait Clock: Send + Sync {
    fn now_micros(&self) -> u64;
}

/// Real time from [`Instant`], starting at 0 when created.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now_micros(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    micros: AtomicU64,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    pub fn advance(&self, by: Duration) {
        self.micros
            .fetch_add(by.as_micros() as u64, Ordering::SeqCst);
    }

    /// Sets the time, also backwards (a failover to a node with another clock).
    pub fn set(&self, since_origin: Duration) {
        self.micros
            .store(since_origin.as_micros() as u64, Ordering::SeqCst);
    }

    pub fn now(&self) -> Duration {
        Duration::from_micros(self.now_micros())
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> u64 {
        self.micros.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        assert_eq!(format_millis(1_769_420_176_288), "2026-01-26T09:36:16.288Z");
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_manual_wall_clock_moves_only_when_told() {
        let clock = ManualWallClock::new(1_000);
        assert_eq!(clock.now_millis(), 1_000);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now_millis(), 1_250);
        clock.set(900);
        assert_eq!(clock.now_millis(), 900);
        let system = SystemWallClock::shared();
        let before = now_millis();
        assert!(system.now_millis() >= before);
    }
}
