//! The upstream key pool: selection, limits, breakers, cool-downs, parking and persistence.
//!
//! Keys are stored sealed in a real SQLite store and loaded the way the server loads them.
//! Where timing matters the pool and its `MemoryLimiter` share one `ManualClock`, so minutes
//! of traffic run in milliseconds; the concurrency test and the fake-Gemini test run on real
//! time.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use easel::base::clock::ManualClock;
use easel::base::clock::Millis;
use easel::base::job::Mode;
use easel::base::secret::{fingerprint, Sealer};
use easel::keypool::breaker::BreakerState;
use easel::keypool::{KeyLease, KeyPool, KeyPoolConfig, Outcome};
use easel::limits::{Limiter, MemoryLimiter};
use easel::providers::gemini::{GeminiConfig, GeminiProvider};
use easel::providers::{GenerateRequest, Provider};
use easel::store::sqlite::SqliteStore;
use easel::store::{NewProviderKey, Store};
use easel::testing::fake_gemini::{FakeGemini, FaultKind};

/// 2026-11-10 12:00 UTC (04:00 at UTC-8): the wall time at the manual clock's zero.
const NOON_UTC: Millis = 1_794_312_000_000;
const HOUR_MS: Millis = 3_600_000;
const LEASE: Duration = Duration::from_secs(300);
const GEMINI: &str = "gemini";

/// One key to create.
#[derive(Clone)]
struct Spec {
    id: &'static str,
    rpm: u32,
    concurrency: u32,
    priority: i32,
    project: Option<&'static str>,
    endpoint: Option<String>,
}

fn spec(id: &'static str) -> Spec {
    Spec {
        id,
        rpm: 60_000,
        concurrency: 10,
        priority: 0,
        project: None,
        endpoint: None,
    }
}

impl Spec {
    fn rpm(mut self, rpm: u32) -> Spec {
        self.rpm = rpm;
        self
    }
    fn concurrency(mut self, concurrency: u32) -> Spec {
        self.concurrency = concurrency;
        self
    }
    fn priority(mut self, priority: i32) -> Spec {
        self.priority = priority;
        self
    }
    fn project(mut self, project: &'static str) -> Spec {
        self.project = Some(project);
        self
    }
}

/// A secret shaped like a real key, unique per key id, so a leak is easy to spot.
fn secret_of(id: &str) -> String {
    format!("AIzaSyTEST-{id}-0123456789abcdefghij")
}

struct Fixture {
    pool: Arc<KeyPool>,
    clock: Arc<ManualClock>,
    limiter: Arc<MemoryLimiter>,
    db: PathBuf,
    sealer: Sealer,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn add_keys(store: &dyn Store, sealer: &Sealer, keys: &[Spec]) {
    for k in keys {
        let secret = secret_of(k.id);
        store
            .provider_key_add(NewProviderKey {
                id: k.id.into(),
                provider: GEMINI.into(),
                secret_sealed: sealer.seal(&secret),
                fingerprint: fingerprint(&secret),
                rpm_limit: k.rpm,
                concurrency_limit: k.concurrency,
                endpoint: k.endpoint.clone(),
                priority: k.priority,
                project: k.project.map(str::to_owned),
            })
            .await
            .expect("add key");
    }
}

/// A pool on a manual clock over `keys`, loaded from a fresh SQLite store.
async fn fixture(keys: &[Spec]) -> Fixture {
    fixture_with(keys, KeyPoolConfig::default()).await
}

async fn fixture_with(keys: &[Spec], config: KeyPoolConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("easel.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).expect("open store"));
    let sealer = Sealer::load(None, dir.path()).expect("sealer");
    add_keys(store.as_ref(), &sealer, keys).await;
    let clock = Arc::new(ManualClock::new());
    let limiter = Arc::new(MemoryLimiter::with_clock(clock.clone()));
    let pool = KeyPool::with_clock(
        limiter.clone(),
        store.clone(),
        sealer.clone(),
        config,
        clock.clone(),
        NOON_UTC,
    );
    let summary = pool.load().await.expect("load");
    assert_eq!(summary.keys, keys.len());
    assert!(summary.skipped.is_empty());
    Fixture {
        pool: Arc::new(pool),
        clock,
        limiter,
        db,
        sealer,
        store,
        _dir: dir,
    }
}

impl Fixture {
    async fn acquire(&self) -> Option<KeyLease> {
        self.pool.acquire(GEMINI, LEASE).await.expect("acquire")
    }

    async fn acquire_id(&self) -> Option<String> {
        let lease = self.acquire().await?;
        let id = lease.key_id.clone();
        self.pool
            .report(lease, Outcome::Success)
            .await
            .expect("report");
        Some(id)
    }

    async fn report(&self, lease: KeyLease, outcome: Outcome) {
        self.pool.report(lease, outcome).await.expect("report");
    }

    async fn status(&self, id: &str) -> easel::keypool::KeyStatus {
        self.pool
            .snapshot()
            .await
            .expect("snapshot")
            .into_iter()
            .find(|s| s.id == id)
            .expect("key in snapshot")
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    fn wall_now(&self) -> Millis {
        NOON_UTC + self.clock.now().as_millis() as Millis
    }
}

fn failure() -> Outcome {
    Outcome::Failure {
        error: "UPSTREAM_UNAVAILABLE: 503 overloaded".into(),
        retry_after: None,
    }
}

/// The most events in any window of `window` starting at an event.
fn max_in_window(times: &[Duration], window: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

// ---- selection ----

#[tokio::test]
async fn thousand_acquisitions_spread_evenly_over_equal_keys() {
    let f = fixture(&[spec("a").rpm(600), spec("b").rpm(600), spec("c").rpm(600)]).await;
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut outstanding: VecDeque<KeyLease> = VecDeque::new();
    let mut acquired = 0;
    let mut steps = 0;
    // Three keys at 600 RPM take one call per 100 ms each; offering one every 40 ms with up to
    // three calls in flight mixes rate refusals, load and recency into the choice.
    while acquired < 1000 {
        steps += 1;
        assert!(steps < 100_000, "the pool stopped handing out keys");
        f.advance(Duration::from_millis(40));
        if let Some(lease) = f.acquire().await {
            *counts.entry(lease.key_id.clone()).or_default() += 1;
            outstanding.push_back(lease);
            acquired += 1;
        }
        if outstanding.len() >= 3 {
            let lease = outstanding.pop_front().expect("lease");
            f.report(lease, Outcome::Success).await;
        }
    }
    let even = 1000.0 / 3.0;
    for id in ["a", "b", "c"] {
        let n = f64::from(counts[id]);
        assert!(
            (n - even).abs() <= even * 0.10,
            "key {id} got {n} of 1000: {counts:?}"
        );
    }
}

#[tokio::test]
async fn higher_priority_first_lower_only_when_it_is_full() {
    let f = fixture(&[
        spec("high").priority(10).concurrency(2),
        spec("low").priority(0).concurrency(2),
    ])
    .await;
    let step = Duration::from_millis(10);
    let a = f.acquire().await.expect("a");
    f.advance(step);
    let b = f.acquire().await.expect("b");
    f.advance(step);
    assert_eq!((a.key_id.as_str(), b.key_id.as_str()), ("high", "high"));
    let c = f.acquire().await.expect("c");
    assert_eq!(c.key_id, "low");
    f.report(a, Outcome::Success).await;
    f.advance(step);
    let d = f.acquire().await.expect("d");
    assert_eq!(d.key_id, "high", "a freed high-priority slot is used first");
    for lease in [b, c, d] {
        f.report(lease, Outcome::Success).await;
    }
    // Sequential traffic never touches the low key while the high one has room.
    for _ in 0..50 {
        f.advance(step);
        assert_eq!(f.acquire_id().await.as_deref(), Some("high"));
    }
    // Over its rate counts as full too: the low key takes the overflow.
    assert_eq!(f.acquire_id().await.as_deref(), Some("low"));
}

#[tokio::test]
async fn among_equals_the_least_loaded_relative_to_concurrency() {
    let f = fixture(&[spec("small").concurrency(2), spec("big").concurrency(6)]).await;
    let mut held = Vec::new();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..8 {
        f.advance(Duration::from_millis(10));
        let lease = f.acquire().await.expect("free slot");
        *counts.entry(lease.key_id.clone()).or_default() += 1;
        held.push(lease);
    }
    // Filled in proportion to concurrency: 2 + 6.
    assert_eq!(counts["small"], 2);
    assert_eq!(counts["big"], 6);
    assert!(f.acquire().await.is_none());
    for lease in held {
        f.report(lease, Outcome::Success).await;
    }
}

#[tokio::test]
async fn none_when_every_key_is_busy() {
    let f = fixture(&[spec("a").concurrency(1), spec("b").concurrency(1)]).await;
    let a = f.acquire().await.expect("first");
    f.advance(Duration::from_millis(10));
    let b = f.acquire().await.expect("second");
    f.advance(Duration::from_millis(10));
    assert!(f.acquire().await.is_none(), "both keys are full");
    assert!(f.pool.acquire("openai", LEASE).await.unwrap().is_none());
    let freed = a.key_id.clone();
    f.report(a, Outcome::Success).await;
    let again = f.acquire().await.expect("a slot was freed");
    assert_eq!(again.key_id, freed);
    f.report(again, Outcome::Success).await;
    f.report(b, Outcome::Success).await;
}

/// A worker waiting for a free key is woken by the key's report, not by its next poll, and a
/// report made before it starts waiting is not lost.
#[tokio::test]
async fn a_report_wakes_a_waiter_for_a_free_key() {
    let f = fixture(&[spec("a").concurrency(1)]).await;
    let a = f.acquire().await.expect("the only slot");
    let waiter = {
        let pool = f.pool.clone();
        tokio::spawn(async move { pool.key_released().await })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "no key was handed back yet");
    f.report(a, Outcome::Success).await;
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken by the report")
        .expect("waiter task");
    f.advance(Duration::from_secs(1));
    let b = f.acquire().await.expect("free again");
    f.report(b, Outcome::Success).await;
    tokio::time::timeout(Duration::from_secs(5), f.pool.key_released())
        .await
        .expect("a report before the wait still counts");
}

/// An RPM above what the limiter can count (one per microsecond, 60,000,000) means "no rate
/// limit": such a key is held to the limiter's fastest rate, not refused, and it does not make
/// the pool fail for the other keys.
#[tokio::test]
async fn a_key_with_an_rpm_above_the_limiters_resolution_is_usable() {
    let f = fixture(&[
        spec("huge").rpm(1_000_000_000).priority(1),
        spec("max").rpm(u32::MAX),
        spec("normal"),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let lease = f.acquire().await.expect("a key");
        held.push(lease);
        f.advance(Duration::from_millis(1));
    }
    let mut ids: Vec<&str> = held.iter().map(|l| l.key_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["huge", "huge", "huge"]);
    for lease in held {
        f.report(lease, Outcome::Success).await;
    }
    let f = fixture(&[spec("max").rpm(u32::MAX).project("p")]).await;
    assert_eq!(f.acquire_id().await.as_deref(), Some("max"));
}

// ---- limits ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_never_exceeded_under_fifty_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("easel.db")).expect("store"));
    let sealer = Sealer::load(None, dir.path()).expect("sealer");
    let keys = [
        spec("a").concurrency(2).rpm(1_000_000),
        spec("b").concurrency(3).rpm(1_000_000),
        spec("c").concurrency(5).rpm(1_000_000),
    ];
    add_keys(store.as_ref(), &sealer, &keys).await;
    let limiter: Arc<dyn Limiter> = Arc::new(MemoryLimiter::new());
    let pool = Arc::new(KeyPool::new(
        limiter,
        store,
        sealer,
        KeyPoolConfig::default(),
    ));
    pool.load().await.expect("load");

    let limits: HashMap<&str, u32> = [("a", 2), ("b", 3), ("c", 5)].into();
    let live: Arc<HashMap<String, AtomicU32>> = Arc::new(
        ["a", "b", "c"]
            .iter()
            .map(|k| (k.to_string(), AtomicU32::new(0)))
            .collect(),
    );
    let peak: Arc<HashMap<String, AtomicU32>> = Arc::new(
        ["a", "b", "c"]
            .iter()
            .map(|k| (k.to_string(), AtomicU32::new(0)))
            .collect(),
    );
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (pool, live, peak) = (pool.clone(), live.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let lease = loop {
                    match pool.acquire(GEMINI, LEASE).await.expect("acquire") {
                        Some(lease) => break lease,
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                };
                let now = live[&lease.key_id].fetch_add(1, Ordering::SeqCst) + 1;
                peak[&lease.key_id].fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                live[&lease.key_id].fetch_sub(1, Ordering::SeqCst);
                pool.report(lease, Outcome::Success).await.expect("report");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let snapshot = pool.snapshot().await.expect("snapshot");
    let total: u64 = snapshot.iter().map(|s| s.successes).sum();
    assert_eq!(total, 500);
    for (id, limit) in limits {
        let seen = peak[id].load(Ordering::SeqCst);
        assert!(seen <= limit, "key {id}: {seen} in flight, limit {limit}");
        assert!(seen >= 1, "key {id} was never used");
    }
    assert!(snapshot.iter().all(|s| s.in_flight == 0));
}

#[tokio::test]
async fn a_key_never_exceeds_its_rpm_in_any_minute() {
    let f = fixture(&[spec("a").rpm(30).concurrency(100)]).await;
    let mut times = Vec::new();
    // Five minutes of eager callers: a few tries every 100 ms.
    for _ in 0..3000 {
        f.advance(Duration::from_millis(100));
        for _ in 0..3 {
            if let Some(id) = f.acquire_id().await {
                assert_eq!(id, "a");
                times.push(f.clock.now());
            }
        }
    }
    assert!(max_in_window(&times, Duration::from_secs(60)) <= 30);
    // And the budget is used, not just respected: 30 a minute for 5 minutes.
    assert!(times.len() >= 148, "only {} calls", times.len());
}

#[tokio::test]
async fn keys_of_one_project_share_one_budget() {
    // Two keys of one project at 60 RPM each (and a third, slower one): the project may
    // send 60 a minute in total (the largest of its keys' RPMs), not 60 + 60 + 30.
    let f = fixture(&[
        spec("p1").rpm(60).project("proj"),
        spec("p2").rpm(60).project("proj"),
        spec("p3").rpm(30).project("proj"),
        spec("solo").rpm(60).priority(-1),
    ])
    .await;
    let mut project_times = Vec::new();
    let mut per_key: HashMap<String, u32> = HashMap::new();
    for _ in 0..3000 {
        f.advance(Duration::from_millis(100));
        while let Some(id) = f.acquire_id().await {
            *per_key.entry(id.clone()).or_default() += 1;
            if id != "solo" {
                project_times.push(f.clock.now());
            }
        }
    }
    assert!(max_in_window(&project_times, Duration::from_secs(60)) <= 60);
    assert!(project_times.len() >= 295, "{per_key:?}");
    assert!(project_times.len() <= 301, "{per_key:?}");
    // The budget is spread over the project's keys.
    for id in ["p1", "p2", "p3"] {
        assert!(per_key[id] >= 60, "{per_key:?}");
    }
    // A key outside the project has its own rate and takes what the project cannot.
    assert!(per_key["solo"] >= 295, "{per_key:?}");
}

// ---- health ----

#[tokio::test]
async fn a_broken_key_opens_its_breaker_then_a_probe_closes_it() {
    let f = fixture(&[spec("ok1"), spec("ok2"), spec("bad")]).await;
    let step = Duration::from_millis(100);
    let mut bad_calls = 0;
    for _ in 0..90 {
        f.advance(step);
        let lease = f.acquire().await.expect("a key is free");
        if lease.key_id == "bad" {
            bad_calls += 1;
            f.report(lease, failure()).await;
        } else {
            f.report(lease, Outcome::Success).await;
        }
    }
    // Ten failures of ten (the breaker's minimum) open it; nothing reaches the key after.
    assert_eq!(bad_calls, 10);
    let bad = f.status("bad").await;
    assert_eq!(bad.breaker, BreakerState::Open);
    assert_eq!(bad.failures, 10);
    assert!(bad.enabled, "an open breaker is not a disabled key");
    assert!(bad
        .last_error
        .as_deref()
        .unwrap()
        .contains("UPSTREAM_UNAVAILABLE"));
    assert_eq!(f.status("ok1").await.breaker, BreakerState::Closed);

    // After the 30 s cool-down the next call to reach it is a single probe.
    f.advance(Duration::from_secs(30));
    assert_eq!(f.status("bad").await.breaker, BreakerState::HalfOpen);
    let mut probe = None;
    let mut others = Vec::new();
    for _ in 0..3 {
        f.advance(Duration::from_millis(10));
        let lease = f.acquire().await.expect("lease");
        if lease.key_id == "bad" {
            assert!(lease.is_probe());
            assert!(probe.is_none(), "one probe at a time");
            probe = Some(lease);
        } else {
            others.push(lease);
        }
    }
    let probe = probe.expect("the half-open key was probed");
    // While the probe is out, more traffic goes elsewhere.
    for _ in 0..5 {
        f.advance(Duration::from_millis(10));
        let lease = f.acquire().await.expect("lease");
        assert_ne!(lease.key_id, "bad");
        f.report(lease, Outcome::Success).await;
    }
    f.report(probe, Outcome::Success).await;
    for lease in others {
        f.report(lease, Outcome::Success).await;
    }
    assert_eq!(f.status("bad").await.breaker, BreakerState::Closed);
    // Healthy again: it gets its share.
    let mut used = 0;
    for _ in 0..30 {
        f.advance(step);
        if f.acquire_id().await.as_deref() == Some("bad") {
            used += 1;
        }
    }
    assert_eq!(used, 10);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker() {
    let f = fixture(&[spec("bad")]).await;
    for _ in 0..10 {
        f.advance(Duration::from_millis(100));
        let lease = f.acquire().await.expect("lease");
        f.report(lease, failure()).await;
    }
    assert!(f.acquire().await.is_none(), "open: no key at all");
    f.advance(Duration::from_secs(30));
    let probe = f.acquire().await.expect("probe");
    assert!(probe.is_probe());
    assert!(f.acquire().await.is_none(), "one probe at a time");
    f.report(probe, failure()).await;
    assert_eq!(f.status("bad").await.breaker, BreakerState::Open);
    f.advance(Duration::from_secs(29));
    assert!(f.acquire().await.is_none());
    f.advance(Duration::from_secs(1));
    assert!(f.acquire().await.expect("next probe").is_probe());
}

#[tokio::test]
async fn a_429_cools_the_key_down_for_retry_after_and_never_opens_the_breaker() {
    let f = fixture(&[spec("main").priority(1), spec("spare")]).await;
    let lease = f.acquire().await.expect("lease");
    assert_eq!(lease.key_id, "main");
    f.report(
        lease,
        Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
        },
    )
    .await;
    let status = f.status("main").await;
    assert_eq!(status.cooldown_until, Some(f.wall_now() + 7_000));
    assert_eq!(status.breaker, BreakerState::Closed);
    f.advance(Duration::from_millis(6_990));
    assert_eq!(f.acquire_id().await.as_deref(), Some("spare"));
    f.advance(Duration::from_millis(10));
    assert_eq!(f.acquire_id().await.as_deref(), Some("main"));

    // Any number of 429s only slows the key down: the breaker never counts them.
    for _ in 0..40 {
        f.advance(Duration::from_secs(1));
        let lease = f.acquire().await.expect("lease");
        assert_eq!(lease.key_id, "main");
        f.report(
            lease,
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(1)),
            },
        )
        .await;
    }
    let status = f.status("main").await;
    assert_eq!(status.breaker, BreakerState::Closed);
    assert_eq!((status.rate_limited, status.failures), (41, 0));
    assert_eq!(
        status.window_requests, 1,
        "only the one success is in the window"
    );
}

#[tokio::test]
async fn a_429_without_retry_after_cools_down_longer_each_time_in_a_row() {
    let f = fixture(&[spec("k")]).await;
    for expected in [5, 10, 20] {
        let lease = f.acquire().await.expect("lease");
        f.report(lease, Outcome::RateLimited { retry_after: None })
            .await;
        f.advance(Duration::from_secs(expected) - Duration::from_millis(1));
        assert!(f.acquire().await.is_none(), "cooling down for {expected} s");
        f.advance(Duration::from_millis(1));
    }
    // A success ends the streak: the next 429 waits the base 5 s again.
    assert!(f.acquire_id().await.is_some());
    f.advance(Duration::from_secs(1));
    let lease = f.acquire().await.expect("lease");
    f.report(lease, Outcome::RateLimited { retry_after: None })
        .await;
    f.advance(Duration::from_secs(5));
    assert!(f.acquire().await.is_some());
}

#[tokio::test]
async fn a_rejected_key_is_disabled_persistently_and_enable_brings_it_back() {
    let f = fixture(&[spec("k1").priority(1), spec("k2")]).await;
    let lease = f.acquire().await.expect("lease");
    assert_eq!(lease.key_id, "k1");
    f.report(
        lease,
        Outcome::KeyRejected {
            message: "upstream key rejected: 403 PERMISSION_DENIED".into(),
        },
    )
    .await;
    let status = f.status("k1").await;
    assert!(!status.enabled);
    assert!(status.last_error.as_deref().unwrap().contains("403"));
    // The job moves to another key.
    for _ in 0..5 {
        f.advance(Duration::from_millis(10));
        assert_eq!(f.acquire_id().await.as_deref(), Some("k2"));
    }
    assert_eq!(f.pool.enabled_keys(GEMINI), 1);

    // Persisted: a store opened afresh, and a pool loaded from it, see the key disabled.
    let reopened: Arc<dyn Store> = Arc::new(SqliteStore::open(&f.db).expect("reopen"));
    let record = reopened
        .provider_key_list()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == "k1")
        .unwrap();
    assert!(!record.enabled);
    assert!(record.last_error.as_deref().unwrap().contains("403"));
    let fresh = KeyPool::new(
        Arc::new(MemoryLimiter::new()),
        reopened.clone(),
        f.sealer.clone(),
        KeyPoolConfig::default(),
    );
    fresh.load().await.unwrap();
    let shown = fresh.snapshot().await.unwrap();
    let k1 = shown.iter().find(|s| s.id == "k1").unwrap();
    assert!(!k1.enabled);
    assert!(k1.last_error.as_deref().unwrap().contains("403"));

    // Re-enabled at run time, no restart: used again at once, and persisted.
    f.pool.enable("k1").await.expect("enable");
    f.advance(Duration::from_millis(10));
    assert_eq!(f.acquire_id().await.as_deref(), Some("k1"));
    let record = reopened
        .provider_key_list()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == "k1")
        .unwrap();
    assert!(record.enabled);
    assert_eq!(record.last_error, None);
    assert!(f.pool.enable("nope").await.is_err());
}

#[tokio::test]
async fn the_scheduled_probe_re_enables_only_keys_the_pool_disabled() {
    let f = fixture(&[spec("rejected"), spec("revoked"), spec("by_hand")]).await;
    for id in ["rejected", "revoked"] {
        // Take keys until the one wanted comes up (the others go back untouched).
        loop {
            f.advance(Duration::from_millis(10));
            let lease = f.acquire().await.expect("lease");
            if lease.key_id == id {
                let message = format!("upstream key rejected: 401 for {id}");
                f.report(lease, Outcome::KeyRejected { message }).await;
                break;
            }
            f.report(lease, Outcome::Success).await;
        }
    }
    f.pool.disable("by_hand").await.expect("disable");
    assert_eq!(f.pool.enabled_keys(GEMINI), 0);
    // An operator's disable through the store (another process: the CLI) reaches the pool at
    // its next reload, and counts as an operator's even after upstream errors on the key.
    add_keys(f.store.as_ref(), &f.sealer, &[spec("cli_off")]).await;
    f.pool.load().await.expect("reload");
    f.advance(Duration::from_millis(10));
    let lease = f.acquire().await.expect("lease");
    assert_eq!(lease.key_id, "cli_off");
    f.report(lease, failure()).await;
    f.store
        .provider_key_set_enabled("cli_off", false, None)
        .await
        .expect("disable in the store");
    f.pool.load().await.expect("reload");
    assert!(!f.status("cli_off").await.enabled);
    assert_eq!(f.pool.enabled_keys(GEMINI), 0);

    let probed = std::sync::Mutex::new(Vec::new());
    let reports = f
        .pool
        .probe_disabled(|key| {
            probed.lock().unwrap().push(key.id.clone());
            // The probe gets the real secret to call the upstream with.
            let passes = key.id == "rejected" && key.secret == secret_of("rejected");
            async move { passes }
        })
        .await
        .expect("probe");
    assert_eq!(*probed.lock().unwrap(), vec!["rejected", "revoked"]);
    let enabled: Vec<(&str, bool)> = reports
        .iter()
        .map(|r| (r.key_id.as_str(), r.enabled))
        .collect();
    assert_eq!(enabled, vec![("rejected", true), ("revoked", false)]);
    assert!(f.status("rejected").await.enabled);
    assert!(!f.status("revoked").await.enabled);
    assert!(!f.status("by_hand").await.enabled);
    f.advance(Duration::from_millis(10));
    assert_eq!(f.acquire_id().await.as_deref(), Some("rejected"));
}

#[tokio::test]
async fn a_daily_quota_parks_the_whole_project_until_midnight_pacific() {
    let f = fixture(&[
        spec("p1").priority(2).project("proj"),
        spec("p2").priority(2).project("proj"),
        spec("other").priority(0).project("elsewhere"),
    ])
    .await;
    let lease = f.acquire().await.expect("lease");
    assert!(lease.key_id.starts_with('p'));
    f.report(lease, Outcome::DailyQuotaExhausted).await;
    // It is 04:00 at UTC-8: both keys of the project wait 20 hours for midnight there.
    let midnight_pacific = NOON_UTC + 20 * HOUR_MS;
    for id in ["p1", "p2"] {
        let status = f.status(id).await;
        assert_eq!(status.parked_until, Some(midnight_pacific), "{id}");
        assert_eq!(status.breaker, BreakerState::Closed);
    }
    assert_eq!(f.status("other").await.parked_until, None);
    f.advance(Duration::from_secs(1));
    assert_eq!(f.acquire_id().await.as_deref(), Some("other"));
    f.advance(Duration::from_secs(20 * 3600 - 2));
    assert_eq!(f.acquire_id().await.as_deref(), Some("other"));
    f.advance(Duration::from_secs(1));
    let back = f.acquire_id().await.expect("lease");
    assert!(
        back.starts_with('p'),
        "the project is back at the reset: {back}"
    );
}

#[tokio::test]
async fn a_daily_quota_on_a_key_without_project_parks_only_that_key() {
    let f = fixture(&[spec("lone").priority(1), spec("other")]).await;
    let lease = f.acquire().await.expect("lease");
    assert_eq!(lease.key_id, "lone");
    f.report(lease, Outcome::DailyQuotaExhausted).await;
    assert_eq!(
        f.status("lone").await.parked_until,
        Some(NOON_UTC + 20 * HOUR_MS)
    );
    assert_eq!(f.acquire_id().await.as_deref(), Some("other"));
}

#[tokio::test]
async fn final_errors_and_content_blocks_leave_the_key_alone() {
    let f = fixture(&[spec("k")]).await;
    for _ in 0..20 {
        f.advance(Duration::from_millis(10));
        let lease = f.acquire().await.expect("lease");
        f.report(lease, Outcome::Neutral).await;
    }
    let status = f.status("k").await;
    assert_eq!(status.breaker, BreakerState::Closed);
    assert_eq!(
        (status.requests, status.successes, status.failures),
        (20, 0, 0)
    );
    assert_eq!(status.cooldown_until, None);
    assert_eq!(status.last_error, None);
}

// ---- run-time changes and visibility ----

#[tokio::test]
async fn reload_keeps_the_state_of_keys_that_remain() {
    let f = fixture(&[spec("bad"), spec("good")]).await;
    // Open the bad key's breaker and hold a lease on the good one.
    for _ in 0..10 {
        f.advance(Duration::from_millis(10));
        let lease = f.acquire().await.expect("lease");
        if lease.key_id == "bad" {
            f.report(lease, failure()).await;
        } else {
            f.report(lease, Outcome::Success).await;
        }
    }
    while f.status("bad").await.breaker != BreakerState::Open {
        f.advance(Duration::from_millis(10));
        let lease = f.acquire().await.expect("lease");
        let outcome = if lease.key_id == "bad" {
            failure()
        } else {
            Outcome::Success
        };
        f.report(lease, outcome).await;
    }
    let held = f.acquire().await.expect("lease");
    assert_eq!(held.key_id, "good");
    let before = f.status("good").await;

    add_keys(f.store.as_ref(), &f.sealer, &[spec("new")]).await;
    let summary = f.pool.load().await.expect("reload");
    assert_eq!(summary.keys, 3);
    assert_eq!(f.status("bad").await.breaker, BreakerState::Open);
    let after = f.status("good").await;
    assert_eq!(after.requests, before.requests);
    assert_eq!(after.in_flight, 1);
    f.report(held, Outcome::Success).await;
    assert_eq!(f.status("good").await.successes, before.successes + 1);
    assert_eq!(f.status("new").await.requests, 0);

    // A record whose secret no longer opens is left out and reported, not fatal.
    let mut records = f.store.provider_key_list().await.unwrap();
    records[0].secret_sealed = vec![0; 40];
    let broken = records[0].id.clone();
    let summary = f.pool.reload(&records);
    assert_eq!(summary.keys, 2);
    assert_eq!(summary.skipped.len(), 1);
    assert_eq!(summary.skipped[0].0, broken);
}

#[tokio::test]
async fn the_secret_never_shows_in_debug_or_snapshot() {
    let f = fixture(&[spec("k1").project("proj"), spec("k2")]).await;
    let secrets = [secret_of("k1"), secret_of("k2")];
    let lease = f.acquire().await.expect("lease");
    // The credential does carry it, for the provider call.
    assert!(secrets.contains(&lease.credential.secret));
    let mut shown = format!("{lease:?} {:?} {:?}", f.pool, f.pool.key("k1").unwrap());
    // An upstream that echoes the key back in an error does not get it into the state.
    let echoed = format!("400 API key {} not valid", lease.credential.secret);
    f.report(
        lease,
        Outcome::Failure {
            error: echoed,
            retry_after: None,
        },
    )
    .await;
    let snapshot = f.pool.snapshot().await.unwrap();
    shown.push_str(&format!("{snapshot:?}"));
    shown.push_str(&serde_json::to_string(&snapshot).unwrap());
    for secret in &secrets {
        assert!(!shown.contains(secret.as_str()), "secret leaked: {shown}");
    }
    assert!(shown.contains("sha256:"), "fingerprints are shown");
    let json = serde_json::to_value(&snapshot).unwrap();
    assert!(json[0].get("inFlight").is_some() && json[0].get("breaker").is_some());
}

#[tokio::test]
async fn snapshot_shows_in_flight_from_the_limiter() {
    let f = fixture(&[spec("k").concurrency(3)]).await;
    let a = f.acquire().await.expect("a");
    f.advance(Duration::from_millis(10));
    let b = f.acquire().await.expect("b");
    let status = f.status("k").await;
    assert_eq!(status.in_flight, 2);
    assert_eq!(f.limiter.in_use("key:k").await.unwrap(), 2);
    assert_eq!(status.requests, 2);
    f.report(a, Outcome::Success).await;
    f.report(b, Outcome::Success).await;
    assert_eq!(f.status("k").await.in_flight, 0);
    // An abandoned lease stops counting when it expires.
    f.advance(Duration::from_millis(10));
    let lost = f.acquire().await;
    assert!(lost.is_some());
    std::mem::drop(lost);
    assert_eq!(f.status("k").await.in_flight, 1);
    f.advance(LEASE);
    assert_eq!(f.status("k").await.in_flight, 0);
    assert!(f.acquire().await.is_some());
}

#[tokio::test]
async fn renew_keeps_a_long_call_counted_and_its_probe_slot() {
    let f = fixture(&[spec("k").concurrency(1)]).await;
    let short = Duration::from_secs(10);
    let lease = f.pool.acquire(GEMINI, short).await.unwrap().expect("lease");
    f.advance(Duration::from_secs(8));
    assert!(f.pool.renew(&lease, short).await.unwrap());
    f.advance(Duration::from_secs(8));
    assert_eq!(f.status("k").await.in_flight, 1);
    assert!(f.acquire().await.is_none(), "still held");
    f.advance(Duration::from_secs(2));
    assert_eq!(f.status("k").await.in_flight, 0);
    assert!(!f.pool.renew(&lease, short).await.unwrap(), "expired");
    f.report(lease, Outcome::Success).await;

    // A renewed probe keeps the half-open slot past its first lease.
    // (Nine failures and the success above make ten outcomes at 90 %: open.)
    for _ in 0..9 {
        f.advance(Duration::from_millis(10));
        let lease = f.acquire().await.expect("lease");
        f.report(lease, failure()).await;
    }
    assert_eq!(f.status("k").await.breaker, BreakerState::Open);
    f.advance(Duration::from_secs(30));
    let probe = f.pool.acquire(GEMINI, short).await.unwrap().expect("probe");
    assert!(probe.is_probe());
    f.advance(Duration::from_secs(8));
    assert!(f.pool.renew(&probe, short).await.unwrap());
    f.advance(Duration::from_secs(8));
    assert!(f.acquire().await.is_none(), "the probe is still out");
    f.report(probe, Outcome::Success).await;
    assert_eq!(f.status("k").await.breaker, BreakerState::Closed);
}

// ---- with the real provider against the fake Gemini upstream ----

#[tokio::test]
async fn with_fake_gemini_traffic_moves_off_broken_and_rejected_keys() {
    let fake = FakeGemini::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("easel.db")).expect("store"));
    let sealer = Sealer::load(None, dir.path()).expect("sealer");
    let with_fake = |s: Spec| Spec {
        endpoint: Some(fake.base_url.clone()),
        ..s
    };
    add_keys(
        store.as_ref(),
        &sealer,
        &[
            with_fake(spec("good1")),
            with_fake(spec("good2")),
            with_fake(spec("broken")),
            with_fake(spec("revoked")),
        ],
    )
    .await;
    fake.set_fault(&secret_of("broken"), FaultKind::ServerError(500));
    fake.set_fault(&secret_of("revoked"), FaultKind::Unauthorized);
    let pool = KeyPool::new(
        Arc::new(MemoryLimiter::new()),
        store.clone(),
        sealer,
        KeyPoolConfig::default(),
    );
    pool.load().await.expect("load");
    let provider = GeminiProvider::new(GeminiConfig {
        timeout_secs: 5,
        base_url: "http://127.0.0.1:9".into(),
        ..GeminiConfig::default()
    })
    .expect("provider");
    let request = GenerateRequest {
        job_id: "job".into(),
        prompt: "a lighthouse at dusk".into(),
        mode: Mode::Draft,
        input_image: None,
        seed: None,
        n: 1,
        aspect_ratio: None,
        image_size: None,
        extra: Default::default(),
    };
    let mut succeeded = 0;
    let mut calls = 0;
    while succeeded < 60 {
        calls += 1;
        assert!(calls < 200, "too many calls");
        // Sequential calls never fill a key, but real time may not have earned the next rate
        // token yet: wait for it rather than fail.
        let lease = loop {
            match pool.acquire(GEMINI, LEASE).await.expect("acquire") {
                Some(lease) => break lease,
                None => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
        let result = provider.generate(&request, Some(&lease.credential)).await;
        if result.is_ok() {
            succeeded += 1;
        }
        pool.report(lease, Outcome::of(&result))
            .await
            .expect("report");
    }
    // The rejected key was called once and disabled; the broken one until its breaker opened.
    assert_eq!(fake.stats(&secret_of("revoked")).requests, 1);
    assert_eq!(fake.stats(&secret_of("broken")).requests, 10);
    let snapshot = pool.snapshot().await.expect("snapshot");
    let by_id: HashMap<&str, _> = snapshot.iter().map(|s| (s.id.as_str(), s)).collect();
    assert!(!by_id["revoked"].enabled);
    assert_eq!(by_id["broken"].breaker, BreakerState::Open);
    assert_eq!(by_id["good1"].successes + by_id["good2"].successes, 60);
    let record = store
        .provider_key_list()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == "revoked")
        .unwrap();
    assert!(!record.enabled);
    let stored_error = record.last_error.unwrap();
    assert!(!stored_error.contains(&secret_of("revoked")));
}
