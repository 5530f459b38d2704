//! The `Limiter` conformance suite: every test runs unchanged against `MemoryLimiter` (manual
//! clock, so time moves without sleeping and timings are checked to the microsecond) and
//! against `RedisLimiter` (real time, Redis' clock) when `EASEL_TEST_REDIS_URL` is set.
//!
//! Real-time checks are made exact where the backend allows and otherwise bounded by the time
//! the test itself measured, so they hold on a loaded machine instead of hoping for margins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::limits::{
    LimitError, Limiter, MemoryLimiter, Permit, PermitSpec, RateQuota, RedisLimiter,
};

use easel::base::clock::ManualClock;

/// One backend under test.
struct Harness {
    /// Two handles on the same limits: for Redis two connections, like two nodes.
    a: Arc<dyn Limiter>,
    b: Arc<dyn Limiter>,
    /// Set for the memory backend: time moves only by `advance`.
    clock: Option<Arc<ManualClock>>,
    started: Instant,
    /// Time scale of the steady-state test: `T = unit`. Memory runs real minutes on its manual
    /// clock; Redis runs compressed (5 ms) so the whole run takes 0.6 s.
    unit: Duration,
}

impl Harness {
    fn memory() -> Harness {
        let clock = Arc::new(ManualClock::new());
        // Start away from zero, like a real clock would be.
        clock.set(Duration::from_secs(1_000_000));
        let limiter: Arc<dyn Limiter> = Arc::new(MemoryLimiter::with_clock(clock.clone()));
        Harness {
            a: limiter.clone(),
            b: limiter,
            clock: Some(clock),
            started: Instant::now(),
            unit: Duration::from_secs(1),
        }
    }

    async fn redis() -> Option<Harness> {
        let url = std::env::var("EASEL_TEST_REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        // A fresh prefix per test, so tests run in parallel on one Redis.
        let prefix = format!("easel-test:{}:", ulid::Ulid::new());
        let a = RedisLimiter::connect(&url, prefix.clone())
            .await
            .expect("connect to EASEL_TEST_REDIS_URL");
        let b = RedisLimiter::connect(&url, prefix)
            .await
            .expect("connect to EASEL_TEST_REDIS_URL");
        Some(Harness {
            a: Arc::new(a),
            b: Arc::new(b),
            clock: None,
            started: Instant::now(),
            unit: Duration::from_millis(5),
        })
    }

    fn exact(&self) -> bool {
        self.clock.is_some()
    }

    /// Lets time pass: the manual clock moves, or the test sleeps.
    async fn advance(&self, by: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(by),
            None => tokio::time::sleep(by).await,
        }
    }

    /// Time since the harness started, on the clock the backend uses (or, for Redis, an upper
    /// bound of it measured here).
    fn now(&self) -> Duration {
        match &self.clock {
            Some(clock) => clock.now() - Duration::from_secs(1_000_000),
            None => self.started.elapsed(),
        }
    }

    /// Slack for durations the backend computed since `since`: 0 on the manual clock, the
    /// elapsed time (plus rounding) on real time.
    fn slack(&self, since: Duration) -> Duration {
        if self.exact() {
            Duration::ZERO
        } else {
            self.now() - since + Duration::from_millis(1)
        }
    }
}

fn assert_close(actual: Duration, expected: Duration, slack: Duration, what: &str) {
    assert!(
        actual <= expected && actual + slack >= expected,
        "{what}: {actual:?} not within {slack:?} below {expected:?}"
    );
}

// ---- rates ----

async fn rate_burst_then_deny_with_retry_after(h: Harness) {
    let quota = RateQuota::with_burst(120, 3);
    let t = Duration::from_millis(500);
    assert_eq!(quota.interval().unwrap(), t);
    let start = h.now();
    for left in [2, 1, 0] {
        let d = h.a.rate_acquire("k", quota, 1).await.unwrap();
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining, d.retry_after), (3, left, None));
    }
    let d = h.b.rate_acquire("k", quota, 1).await.unwrap();
    assert!(!d.allowed, "a second node sees the same key");
    assert_eq!((d.limit, d.remaining), (3, 0));
    let retry = d.retry_after.expect("retry_after when denied");
    assert_close(retry, t, h.slack(start), "retry_after");
    assert_close(d.reset_after, 3 * t, h.slack(start), "reset_after");

    if h.exact() {
        h.advance(retry - Duration::from_micros(1)).await;
        assert!(!h.a.rate_acquire("k", quota, 1).await.unwrap().allowed);
        h.advance(Duration::from_micros(1)).await;
    } else {
        h.advance(retry + Duration::from_millis(5)).await;
    }
    assert!(h.a.rate_acquire("k", quota, 1).await.unwrap().allowed);
    let d = h.b.rate_acquire("k", quota, 1).await.unwrap();
    assert!(!d.allowed);
    assert!(d.retry_after.unwrap() <= t);
}

async fn rate_values_cost_and_peek(h: Harness) {
    // T = 60 s: nothing refills during the test, even on real time.
    let quota = RateQuota::with_burst(1, 5);
    let t = Duration::from_secs(60);
    let start = h.now();

    let d = h.a.rate_peek("k", quota).await.unwrap();
    assert!(d.allowed);
    assert_eq!(
        (d.limit, d.remaining, d.reset_after),
        (5, 5, Duration::ZERO)
    );

    let d = h.a.rate_acquire("k", quota, 2).await.unwrap();
    assert!(d.allowed);
    assert_eq!((d.limit, d.remaining), (5, 3));
    assert_close(d.reset_after, 2 * t, h.slack(start), "reset_after after 2");

    let d = h.b.rate_acquire("k", quota, 3).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);
    assert_close(d.reset_after, 5 * t, h.slack(start), "reset_after after 5");

    let d = h.a.rate_acquire("k", quota, 2).await.unwrap();
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
    assert_close(
        d.retry_after.unwrap(),
        2 * t,
        h.slack(start),
        "retry_after cost 2",
    );

    // A peek takes nothing and answers for one unit.
    let d = h.b.rate_peek("k", quota).await.unwrap();
    assert!(!d.allowed);
    assert_close(
        d.retry_after.unwrap(),
        t,
        h.slack(start),
        "peek retry_after",
    );
    assert_close(d.reset_after, 5 * t, h.slack(start), "peek reset_after");

    // Cost 0 is always admitted and changes nothing.
    let d = h.a.rate_acquire("k", quota, 0).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 0);

    // Keys are independent.
    let d = h.a.rate_acquire("other", quota, 1).await.unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 4));
}

async fn rate_invalid_requests(h: Harness) {
    for quota in [RateQuota::with_burst(0, 1), RateQuota::with_burst(10, 0)] {
        let e = h.a.rate_acquire("k", quota, 1).await.unwrap_err();
        assert!(matches!(e, LimitError::Invalid(_)), "{quota:?}: {e}");
        let e = h.a.rate_peek("k", quota).await.unwrap_err();
        assert!(matches!(e, LimitError::Invalid(_)), "{quota:?}: {e}");
    }
    let e =
        h.a.rate_acquire("k", RateQuota::with_burst(10, 3), 4)
            .await
            .unwrap_err();
    assert!(matches!(e, LimitError::Invalid(_)), "{e}");
    let e =
        h.a.permits_acquire(&[PermitSpec::new("p", 1)], Duration::ZERO)
            .await
            .unwrap_err();
    assert!(matches!(e, LimitError::Invalid(_)), "{e}");
}

/// Knocks as fast as the step allows for 120 `T`, from both handles, and checks every window of
/// 60 `T` against `per_minute + burst - 1` (on the memory backend `T` is 1 s, so these are
/// real minutes).
async fn rate_steady_state_never_exceeds_guarantee(h: Harness) {
    let t = h.unit;
    let burst = 4;
    let quota = RateQuota::with_burst(
        (Duration::from_secs(60).as_micros() / t.as_micros()) as u32,
        burst,
    );
    let window = 60 * t;
    let run = 120 * t;
    let step = t / 4;
    // Each admission: (sent, answered) on the harness clock.
    let mut admitted: Vec<(Duration, Duration)> = Vec::new();
    let mut flip = false;
    let begin = h.now();
    while h.now() - begin < run {
        for _ in 0..2 {
            flip = !flip;
            let limiter = if flip { &h.a } else { &h.b };
            let sent = h.now();
            let d = limiter.rate_acquire("k", quota, 1).await.unwrap();
            if d.allowed {
                admitted.push((sent, h.now()));
            }
        }
        h.advance(step).await;
    }
    let elapsed = h.now() - begin;
    let bound = quota.window_max() as usize;

    // Redis decided each admission somewhere in [sent, answered], so admissions answered
    // within one window were decided within `window + rtt`: the bound widens by that much.
    let rtt = admitted
        .iter()
        .map(|(s, r)| *r - *s)
        .max()
        .unwrap_or_default();
    let worst = max_in_window(&admitted, window);
    let allowed_in_window = if h.exact() {
        bound
    } else {
        ((window + rtt).as_micros().div_ceil(t.as_micros())) as usize + burst as usize - 1
    };
    assert!(
        worst <= allowed_in_window,
        "{worst} admitted in one window of {window:?}, guarantee {allowed_in_window}"
    );
    // Over the whole run: fewer than elapsed/T + burst.
    let total_bound = (elapsed.as_micros() / t.as_micros()) as usize + burst as usize;
    assert!(
        admitted.len() <= total_bound,
        "{} > {total_bound}",
        admitted.len()
    );
    if h.exact() {
        // Tight: a burst, then exactly one per T.
        assert_eq!(worst, bound);
        assert_eq!(admitted.len(), total_bound - 1);
    } else {
        // Live: nearly everything the quota allows is admitted.
        assert!(
            admitted.len() * 10 >= total_bound * 7,
            "{} of {total_bound}",
            admitted.len()
        );
    }
}

/// The most admissions answered within one half-open window of length `window`.
fn max_in_window(admitted: &[(Duration, Duration)], window: Duration) -> usize {
    let times: Vec<Duration> = admitted.iter().map(|(_, r)| *r).collect();
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

async fn rate_concurrent_acquires_are_atomic(h: Harness) {
    let quota = RateQuota::with_burst(1, 10);
    let allowed = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let limiter = if i % 2 == 0 { h.a.clone() } else { h.b.clone() };
        let allowed = allowed.clone();
        tasks.push(tokio::spawn(async move {
            if limiter.rate_acquire("k", quota, 1).await.unwrap().allowed {
                allowed.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(allowed.load(Ordering::SeqCst), 10);
}

// ---- permits ----

async fn permits_all_or_nothing_across_tiers(h: Harness) {
    let lease = Duration::from_secs(30);
    let tier = |tenant: &str| {
        vec![
            PermitSpec::new("global", 3),
            PermitSpec::new(format!("tenant:{tenant}"), 1),
            PermitSpec::new("provider:k1", 2),
        ]
    };
    let first =
        h.a.permits_acquire(&tier("a"), lease)
            .await
            .unwrap()
            .expect("first");
    assert_eq!(first.keys, ["global", "tenant:a", "provider:k1"]);

    // Tenant a is full: nothing is taken from the other tiers.
    assert!(h
        .b
        .permits_acquire(&tier("a"), lease)
        .await
        .unwrap()
        .is_none());
    assert_eq!(h.a.in_use("global").await.unwrap(), 1);
    assert_eq!(h.a.in_use("provider:k1").await.unwrap(), 1);

    let second =
        h.b.permits_acquire(&tier("b"), lease)
            .await
            .unwrap()
            .expect("second");
    // Now the provider key is full (2): tenant c is blocked by it and takes nothing.
    assert!(h
        .a
        .permits_acquire(&tier("c"), lease)
        .await
        .unwrap()
        .is_none());
    assert_eq!(h.a.in_use("global").await.unwrap(), 2);
    assert_eq!(h.a.in_use("tenant:c").await.unwrap(), 0);
    assert_eq!(h.a.in_use("provider:k1").await.unwrap(), 2);

    h.a.permit_release(&first).await.unwrap();
    assert_eq!(h.b.in_use("global").await.unwrap(), 1);
    assert_eq!(h.b.in_use("tenant:a").await.unwrap(), 0);
    assert_eq!(h.b.in_use("provider:k1").await.unwrap(), 1);
    let third =
        h.a.permits_acquire(&tier("c"), lease)
            .await
            .unwrap()
            .expect("third");
    assert_ne!(third.id, second.id);

    // A key named twice takes one slot, under the smaller limit.
    let twice = [PermitSpec::new("dup", 2), PermitSpec::new("dup", 1)];
    let p =
        h.a.permits_acquire(&twice, lease)
            .await
            .unwrap()
            .expect("dup");
    assert_eq!(p.keys, ["dup"]);
    assert_eq!(h.a.in_use("dup").await.unwrap(), 1);
    assert!(h.a.permits_acquire(&twice, lease).await.unwrap().is_none());

    // A zero limit never admits; no specs is a permit for nothing.
    assert!(h
        .a
        .permits_acquire(&[PermitSpec::new("off", 0)], lease)
        .await
        .unwrap()
        .is_none());
    let empty =
        h.a.permits_acquire(&[], lease)
            .await
            .unwrap()
            .expect("empty");
    assert!(empty.keys.is_empty());
    assert!(h.a.permit_renew(&empty, lease).await.unwrap());
    h.a.permit_release(&empty).await.unwrap();
}

async fn release_frees_and_is_idempotent(h: Harness) {
    let lease = Duration::from_secs(30);
    let spec = [PermitSpec::new("p", 1)];
    let p =
        h.a.permits_acquire(&spec, lease)
            .await
            .unwrap()
            .expect("free");
    assert!(h.b.permits_acquire(&spec, lease).await.unwrap().is_none());
    h.b.permit_release(&p).await.unwrap(); // released from another node
    assert_eq!(h.a.in_use("p").await.unwrap(), 0);
    h.a.permit_release(&p).await.unwrap();
    assert!(
        !h.a.permit_renew(&p, lease).await.unwrap(),
        "a released permit cannot be renewed"
    );
    let q =
        h.b.permits_acquire(&spec, lease)
            .await
            .unwrap()
            .expect("freed");
    assert_eq!(h.a.in_use("p").await.unwrap(), 1);
    // Releasing the old permit again does not touch the new one.
    h.a.permit_release(&p).await.unwrap();
    assert_eq!(h.a.in_use("p").await.unwrap(), 1);
    h.a.permit_release(&q).await.unwrap();
    assert_eq!(h.a.in_use("p").await.unwrap(), 0);
}

async fn renew_extends_the_lease(h: Harness) {
    let lease = Duration::from_millis(400);
    let specs = [PermitSpec::new("p", 1), PermitSpec::new("q", 5)];
    let p =
        h.a.permits_acquire(&specs, lease)
            .await
            .unwrap()
            .expect("free");
    h.advance(Duration::from_millis(250)).await;
    assert!(h.b.permit_renew(&p, lease).await.unwrap());
    // Past the first lease, inside the renewed one.
    h.advance(Duration::from_millis(250)).await;
    assert_eq!(h.a.in_use("p").await.unwrap(), 1);
    assert_eq!(h.a.in_use("q").await.unwrap(), 1);
    assert!(h.a.permits_acquire(&specs, lease).await.unwrap().is_none());
    // Past the renewed lease: gone, and renewing no longer works.
    h.advance(Duration::from_millis(450)).await;
    assert_eq!(h.a.in_use("p").await.unwrap(), 0);
    assert!(!h.a.permit_renew(&p, lease).await.unwrap());
    assert_eq!(h.a.in_use("q").await.unwrap(), 0);
    assert!(h.a.permits_acquire(&specs, lease).await.unwrap().is_some());
}

async fn renew_fails_whole_when_one_slot_is_lost(h: Harness) {
    let lease = Duration::from_secs(30);
    let p =
        h.a.permits_acquire(&[PermitSpec::new("x", 2), PermitSpec::new("y", 2)], lease)
            .await
            .unwrap()
            .expect("free");
    // Its slot in y alone is released (as if y's slot had been reclaimed).
    let y_only = Permit {
        id: p.id.clone(),
        keys: vec!["y".into()],
    };
    h.a.permit_release(&y_only).await.unwrap();
    assert!(!h.b.permit_renew(&p, lease).await.unwrap());
    // What was left of it (x) is gone too.
    assert_eq!(h.a.in_use("x").await.unwrap(), 0);
}

/// A holder that crashes never releases: its slot comes back when the lease ends.
async fn expired_permit_frees_its_slot(h: Harness) {
    let lease = Duration::from_millis(200);
    let spec = [PermitSpec::new("global", 1), PermitSpec::new("tenant", 1)];
    let crashed =
        h.a.permits_acquire(&spec, lease)
            .await
            .unwrap()
            .expect("free");
    assert!(h.b.permits_acquire(&spec, lease).await.unwrap().is_none());
    if h.exact() {
        h.advance(lease - Duration::from_micros(1)).await;
        assert_eq!(h.b.in_use("global").await.unwrap(), 1);
        assert!(h.b.permits_acquire(&spec, lease).await.unwrap().is_none());
        h.advance(Duration::from_micros(1)).await;
    } else {
        h.advance(lease + Duration::from_millis(50)).await;
    }
    assert_eq!(h.b.in_use("global").await.unwrap(), 0);
    assert_eq!(h.b.in_use("tenant").await.unwrap(), 0);
    let next =
        h.b.permits_acquire(&spec, lease)
            .await
            .unwrap()
            .expect("reclaimed");
    assert!(!h.a.permit_renew(&crashed, lease).await.unwrap());
    // The late renew of the dead permit did not hurt the new holder.
    assert_eq!(h.b.in_use("global").await.unwrap(), 1);
    h.b.permit_release(&next).await.unwrap();
}

async fn concurrent_acquires_never_exceed_the_limit(h: Harness) {
    const GLOBAL: u32 = 5;
    const TENANT: u32 = 2;
    let lease = Duration::from_secs(30);
    let held = Arc::new(AtomicU32::new(0));
    let max_held = Arc::new(AtomicU32::new(0));
    let tenants: Arc<HashMap<u32, (AtomicU32, AtomicU32)>> = Arc::new(
        (0..3)
            .map(|t| (t, (AtomicU32::new(0), AtomicU32::new(0))))
            .collect(),
    );
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let limiter = if i % 2 == 0 { h.a.clone() } else { h.b.clone() };
        let (held, max_held, tenants) = (held.clone(), max_held.clone(), tenants.clone());
        tasks.push(tokio::spawn(async move {
            let tenant = i % 3;
            let specs = [
                PermitSpec::new("global", GLOBAL),
                PermitSpec::new(format!("tenant:{tenant}"), TENANT),
            ];
            loop {
                match limiter.permits_acquire(&specs, lease).await.unwrap() {
                    Some(permit) => {
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        max_held.fetch_max(now, Ordering::SeqCst);
                        let (t_held, t_max) = &tenants[&tenant];
                        let t_now = t_held.fetch_add(1, Ordering::SeqCst) + 1;
                        t_max.fetch_max(t_now, Ordering::SeqCst);
                        assert!(limiter.in_use("global").await.unwrap() <= GLOBAL);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        t_held.fetch_sub(1, Ordering::SeqCst);
                        held.fetch_sub(1, Ordering::SeqCst);
                        limiter.permit_release(&permit).await.unwrap();
                        return;
                    }
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }));
    }
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("every task got its permit in time");
    let max = max_held.load(Ordering::SeqCst);
    assert!((1..=GLOBAL).contains(&max), "max held {max}");
    for (tenant, (_, t_max)) in tenants.iter() {
        let t_max = t_max.load(Ordering::SeqCst);
        assert!(
            (1..=TENANT).contains(&t_max),
            "tenant {tenant}: max held {t_max}"
        );
    }
    assert_eq!(h.a.in_use("global").await.unwrap(), 0);
}

/// Says a Redis test was skipped, past libtest's capture (which only takes `eprintln!`), so the
/// note shows in a normal `cargo test` run.
fn skip_note(name: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "note: skipping redis_backend::{name}: EASEL_TEST_REDIS_URL is not set"
    );
}

/// Runs each suite function against every backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Harness::memory()).await;
                }
            )*
        }
        mod redis_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match super::Harness::redis().await {
                        Some(h) => super::$name(h).await,
                        None => super::skip_note(stringify!($name)),
                    }
                }
            )*
        }
    };
}

conformance!(
    rate_burst_then_deny_with_retry_after,
    rate_values_cost_and_peek,
    rate_invalid_requests,
    rate_steady_state_never_exceeds_guarantee,
    rate_concurrent_acquires_are_atomic,
    permits_all_or_nothing_across_tiers,
    release_frees_and_is_idempotent,
    renew_extends_the_lease,
    renew_fails_whole_when_one_slot_is_lost,
    expired_permit_frees_its_slot,
    concurrent_acquires_never_exceed_the_limit,
);
