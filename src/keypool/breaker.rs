//! A circuit breaker for one upstream key: pure state, no I/O, no clock of its own.
//!
//! Owns: the decision "may a request go to this key now?" from the key's recent health, and the
//! Closed → Open → HalfOpen → Closed cycle. Time is passed in by the caller as microseconds on
//! a monotonic clock ([`Clock`](crate::base::clock::Clock)), so tests move it by
//! hand. Must not touch: limits, the store, providers, or what counts as a failure; the key
//! pool ([`super::health`]) decides that and calls [`Breaker::record_success`] /
//! [`Breaker::record_failure`] / [`Breaker::release`].
//!
//! Rules:
//! * **Closed**: every outcome goes into a sliding time window (default 60 s). The breaker opens
//!   when the window holds at least `min_requests` outcomes (default 10) AND the failure rate
//!   reaches `failure_rate` (default 50 %). The minimum is what keeps one 5xx (or one unlucky
//!   minute at low traffic) from taking a key out: a rate over two requests means nothing.
//! * **Open**: nothing is admitted for `cooldown` (default 30 s).
//! * **HalfOpen** (after the cool-down): exactly one probe at a time. Its success closes the
//!   breaker with an empty window; its failure opens it again for another cool-down. A probe
//!   whose holder never reports frees its slot when the lease given to [`Breaker::admit`]
//!   runs out, so a lost task cannot wedge a key half-open forever.
//!
//! Every admission carries the breaker's generation (bumped at every state change and every
//! probe). A report from an older generation is ignored: requests that were in flight when the
//! breaker opened must not extend the cool-down with their late failures, nor close it with a
//! late success that predates the outage.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

/// Tuning of a [`Breaker`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// How far back outcomes count.
    pub window: Duration,
    /// Failure share (0 < rate <= 1) at or above which the breaker opens.
    pub failure_rate: f64,
    /// Outcomes the window must hold before the rate is judged at all.
    pub min_requests: u32,
    /// How long an open breaker refuses everything before it lets a probe through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(60),
            failure_rate: 0.5,
            min_requests: 10,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// The state as shown to admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `easel_upstream_key_breaker` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge_level(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// The ticket of one admitted request; hand it back with the request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    generation: u64,
    probe: bool,
}

impl Admission {
    /// Whether this request is the half-open probe that decides the breaker's fate.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    Open {
        until: u64,
    },
    /// `probe_until`: the lease end of the probe in flight, `None` when the slot is free.
    HalfOpen {
        probe_until: Option<u64>,
    },
}

/// One key's breaker. Times are microseconds on the caller's monotonic clock.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    generation: u64,
    /// Outcomes in the window while closed: (time, failed). Only admitted requests are
    /// recorded and the key's own RPM limits those, so this stays as small as one window of
    /// the key's traffic.
    outcomes: VecDeque<(u64, bool)>,
    failures: u32,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: State::Closed,
            generation: 0,
            outcomes: VecDeque::new(),
            failures: 0,
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Changes the tuning (a reload) without forgetting the state.
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    /// The state at `now`: an open breaker whose cool-down is over reads as half-open, which
    /// is what it becomes at the next [`Breaker::admit`].
    pub fn state(&self, now: u64) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// While open: when the cool-down ends.
    pub fn open_until(&self) -> Option<u64> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Outcomes and failures in the window at `now` (closed breakers only; 0 otherwise).
    pub fn window_counts(&self, now: u64) -> (u32, u32) {
        let (mut total, mut failed) = (0, 0);
        for &(_, fail) in self
            .outcomes
            .iter()
            .filter(|(at, _)| self.in_window(*at, now))
        {
            total += 1;
            failed += u32::from(fail);
        }
        (total, failed)
    }

    /// Whether [`Breaker::admit`] would let a request through at `now`, without changing
    /// anything.
    pub fn would_admit(&self, now: u64) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } => now >= until,
            State::HalfOpen { probe_until } => probe_until.is_none_or(|t| now >= t),
        }
    }

    /// Lets one request through if the state allows it. In half-open that request is the
    /// probe, and the slot stays taken until its outcome is reported or `lease` runs out.
    pub fn admit(&mut self, now: u64, lease: Duration) -> Option<Admission> {
        match self.state {
            State::Closed => Some(Admission {
                generation: self.generation,
                probe: false,
            }),
            State::Open { until } if now < until => None,
            State::HalfOpen {
                probe_until: Some(t),
            } if now < t => None,
            State::Open { .. } | State::HalfOpen { .. } => {
                // A new generation per probe: an abandoned probe that reports late is stale.
                self.generation += 1;
                self.state = State::HalfOpen {
                    probe_until: Some(now.saturating_add(micros(lease))),
                };
                Some(Admission {
                    generation: self.generation,
                    probe: true,
                })
            }
        }
    }

    /// Extends the probe slot of `admission` to `lease` from `now` (its holder renewed).
    pub fn extend(&mut self, admission: Admission, now: u64, lease: Duration) {
        if self.is_current_probe(admission) {
            self.state = State::HalfOpen {
                probe_until: Some(now.saturating_add(micros(lease))),
            };
        }
    }

    /// The request succeeded. Returns the new state if this changed it.
    pub fn record_success(&mut self, now: u64, admission: Admission) -> Option<BreakerState> {
        if admission.generation != self.generation {
            return None;
        }
        match self.state {
            State::Closed => {
                self.push(now, false);
                None
            }
            State::HalfOpen { .. } if admission.probe => {
                self.close();
                Some(BreakerState::Closed)
            }
            _ => None,
        }
    }

    /// The request failed in a way that says the key (or its upstream) is unhealthy. Returns
    /// the new state if this changed it.
    pub fn record_failure(&mut self, now: u64, admission: Admission) -> Option<BreakerState> {
        if admission.generation != self.generation {
            return None;
        }
        match self.state {
            State::Closed => {
                self.push(now, true);
                let (total, failed) = (self.outcomes.len() as u32, self.failures);
                let min = self.config.min_requests.max(1);
                if total >= min && f64::from(failed) >= self.config.failure_rate * f64::from(total)
                {
                    self.open(now);
                    return Some(BreakerState::Open);
                }
                None
            }
            State::HalfOpen { .. } if admission.probe => {
                self.open(now);
                Some(BreakerState::Open)
            }
            _ => None,
        }
    }

    /// The request ended without saying anything about the key's health (it was never sent,
    /// was rate-limited, or failed for reasons of its own): a probe gives its slot back so the
    /// next request can probe; otherwise nothing changes.
    pub fn release(&mut self, admission: Admission) {
        if self.is_current_probe(admission) {
            self.state = State::HalfOpen { probe_until: None };
        }
    }

    /// Back to closed with an empty window (the key was re-enabled by hand or by a probe).
    pub fn reset(&mut self) {
        self.close();
    }

    fn is_current_probe(&self, admission: Admission) -> bool {
        admission.probe
            && admission.generation == self.generation
            && matches!(self.state, State::HalfOpen { .. })
    }

    fn open(&mut self, now: u64) {
        self.generation += 1;
        self.state = State::Open {
            until: now.saturating_add(micros(self.config.cooldown)),
        };
        self.clear();
    }

    fn close(&mut self) {
        self.generation += 1;
        self.state = State::Closed;
        self.clear();
    }

    fn clear(&mut self) {
        self.outcomes.clear();
        self.failures = 0;
    }

    /// An outcome at `at` still counts at `now`: the window is the last `window` before now.
    fn in_window(&self, at: u64, now: u64) -> bool {
        now.saturating_sub(at) < micros(self.config.window)
    }

    fn push(&mut self, now: u64, failed: bool) {
        self.outcomes.push_back((now, failed));
        self.failures += u32::from(failed);
        // Outcomes arrive in clock order (reports are stamped when they arrive), so the old
        // ones are all at the front.
        while let Some(&(at, fail)) = self.outcomes.front() {
            if self.in_window(at, now) {
                break;
            }
            self.outcomes.pop_front();
            self.failures -= u32::from(fail);
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;
    const LEASE: Duration = Duration::from_secs(120);

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig::default())
    }

    /// Admits one request at `now` and records its outcome.
    fn run(b: &mut Breaker, now: u64, fail: bool) -> Option<BreakerState> {
        let a = b.admit(now, LEASE).expect("admitted");
        if fail {
            b.record_failure(now, a)
        } else {
            b.record_success(now, a)
        }
    }

    #[test]
    fn single_failure_never_opens() {
        let mut b = breaker();
        assert_eq!(run(&mut b, 0, true), None);
        assert_eq!(b.state(0), BreakerState::Closed);
        // Nine failures in a row: still under min_requests.
        for i in 1..9 {
            assert_eq!(run(&mut b, i * SEC, true), None);
        }
        assert_eq!(b.window_counts(9 * SEC), (9, 9));
        assert_eq!(b.state(9 * SEC), BreakerState::Closed);
    }

    #[test]
    fn opens_at_the_failure_rate_with_enough_requests() {
        let mut b = breaker();
        // 5 successes, then failures: at 10 outcomes with 5 failures the rate reaches 50 %.
        for i in 0..5 {
            run(&mut b, i * SEC, false);
        }
        for i in 5..9 {
            assert_eq!(run(&mut b, i * SEC, true), None);
        }
        assert_eq!(run(&mut b, 9 * SEC, true), Some(BreakerState::Open));
        assert_eq!(b.state(9 * SEC), BreakerState::Open);
        assert!(b.admit(10 * SEC, LEASE).is_none());
        assert_eq!(b.open_until(), Some(39 * SEC));
    }

    #[test]
    fn low_failure_rate_stays_closed() {
        let mut b = breaker();
        // 4 failures in every 10 for a long time: 40 % < 50 % (the successes come first in
        // each ten, so the running rate never touches 50 % on the way).
        for i in 0..200u64 {
            assert_eq!(run(&mut b, i * SEC / 2, i % 10 >= 6), None);
        }
        assert_eq!(b.state(100 * SEC), BreakerState::Closed);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let mut b = breaker();
        for i in 0..9 {
            run(&mut b, i * SEC, true);
        }
        // 61 s later the nine failures are gone; one more failure is one of one.
        assert_eq!(run(&mut b, 70 * SEC, true), None);
        assert_eq!(b.window_counts(70 * SEC), (1, 1));
        assert_eq!(b.state(70 * SEC), BreakerState::Closed);
    }

    #[test]
    fn half_open_after_cooldown_lets_exactly_one_probe() {
        let mut b = breaker();
        for i in 0..10 {
            run(&mut b, i, true);
        }
        assert_eq!(b.state(9), BreakerState::Open);
        assert!(!b.would_admit(9 + 29 * SEC));
        assert_eq!(b.state(9 + 30 * SEC), BreakerState::HalfOpen);
        assert!(b.would_admit(9 + 30 * SEC));
        let probe = b.admit(9 + 30 * SEC, LEASE).expect("probe");
        assert!(probe.is_probe());
        assert!(!b.would_admit(9 + 30 * SEC));
        assert!(b.admit(9 + 31 * SEC, LEASE).is_none());
        assert_eq!(b.state(9 + 31 * SEC), BreakerState::HalfOpen);
    }

    #[test]
    fn probe_success_closes_with_an_empty_window() {
        let mut b = breaker();
        for i in 0..10 {
            run(&mut b, i, true);
        }
        let t = 40 * SEC;
        let probe = b.admit(t, LEASE).expect("probe");
        assert_eq!(b.record_success(t, probe), Some(BreakerState::Closed));
        assert_eq!(b.state(t), BreakerState::Closed);
        assert_eq!(b.window_counts(t), (0, 0));
        // A fresh window: one failure does not reopen it.
        assert_eq!(run(&mut b, t + 1, true), None);
        assert!(b.admit(t + 2, LEASE).is_some());
    }

    #[test]
    fn probe_failure_reopens_for_another_cooldown() {
        let mut b = breaker();
        for i in 0..10 {
            run(&mut b, i, true);
        }
        let t = 40 * SEC;
        let probe = b.admit(t, LEASE).expect("probe");
        assert_eq!(b.record_failure(t, probe), Some(BreakerState::Open));
        assert_eq!(b.open_until(), Some(t + 30 * SEC));
        assert!(b.admit(t + 29 * SEC, LEASE).is_none());
        assert!(b.admit(t + 30 * SEC, LEASE).expect("probe").is_probe());
    }

    #[test]
    fn released_probe_frees_the_slot() {
        let mut b = breaker();
        for i in 0..10 {
            run(&mut b, i, true);
        }
        let t = 40 * SEC;
        let probe = b.admit(t, LEASE).expect("probe");
        b.release(probe);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        let next = b.admit(t, LEASE).expect("second probe");
        assert!(next.is_probe());
        // The released probe's late report is stale: it decides nothing.
        assert_eq!(b.record_success(t, probe), None);
        assert_eq!(b.state(t), BreakerState::HalfOpen);
        assert_eq!(b.record_success(t, next), Some(BreakerState::Closed));
    }

    #[test]
    fn abandoned_probe_frees_the_slot_after_its_lease() {
        let mut b = breaker();
        for i in 0..10 {
            run(&mut b, i, true);
        }
        let t = 40 * SEC;
        let lost = b.admit(t, Duration::from_secs(5)).expect("probe");
        assert!(b.admit(t + 4 * SEC, LEASE).is_none());
        let next = b.admit(t + 5 * SEC, LEASE).expect("new probe");
        // The lost probe's late failure does not reopen the breaker.
        assert_eq!(b.record_failure(t + 6 * SEC, lost), None);
        assert_eq!(
            b.record_success(t + 6 * SEC, next),
            Some(BreakerState::Closed)
        );
    }

    #[test]
    fn extend_keeps_the_probe_slot() {
        let mut b = breaker();
        for i in 0..10 {
            run(&mut b, i, true);
        }
        let t = 40 * SEC;
        let probe = b.admit(t, Duration::from_secs(5)).expect("probe");
        b.extend(probe, t + 4 * SEC, Duration::from_secs(5));
        assert!(b.admit(t + 8 * SEC, LEASE).is_none());
        assert!(b.admit(t + 9 * SEC, LEASE).is_some());
    }

    #[test]
    fn late_reports_from_before_the_opening_are_ignored() {
        let mut b = breaker();
        let in_flight: Vec<Admission> = (0..5).map(|_| b.admit(0, LEASE).unwrap()).collect();
        for i in 0..10 {
            run(&mut b, i, true);
        }
        assert_eq!(b.open_until(), Some(9 + 30 * SEC));
        // Failures of requests sent before the opening do not push the cool-down out...
        for a in &in_flight[..3] {
            assert_eq!(b.record_failure(20 * SEC, *a), None);
        }
        assert_eq!(b.open_until(), Some(9 + 30 * SEC));
        // ...and their successes do not close the breaker, open or half-open.
        assert_eq!(b.record_success(20 * SEC, in_flight[3]), None);
        let _probe = b.admit(40 * SEC, LEASE).unwrap();
        assert_eq!(b.record_success(40 * SEC, in_flight[4]), None);
        assert_eq!(b.state(40 * SEC), BreakerState::HalfOpen);
    }

    #[test]
    fn reset_closes() {
        let mut b = breaker();
        for i in 0..10 {
            run(&mut b, i, true);
        }
        b.reset();
        assert_eq!(b.state(10), BreakerState::Closed);
        assert_eq!(b.window_counts(10), (0, 0));
    }

    #[test]
    fn custom_config() {
        let mut b = Breaker::new(BreakerConfig {
            window: Duration::from_secs(10),
            failure_rate: 1.0,
            min_requests: 3,
            cooldown: Duration::from_secs(1),
        });
        run(&mut b, 0, true);
        run(&mut b, 1, false);
        run(&mut b, 2, true);
        assert_eq!(b.state(3), BreakerState::Closed);
        // 10 s later all three have left the window; then three failures out of three.
        run(&mut b, 10 * SEC + 2, true);
        run(&mut b, 10 * SEC + 3, true);
        assert_eq!(b.state(10 * SEC + 3), BreakerState::Closed);
        assert_eq!(run(&mut b, 10 * SEC + 4, true), Some(BreakerState::Open));
        assert!(b.admit(11 * SEC + 4, LEASE).unwrap().is_probe());
    }
}
