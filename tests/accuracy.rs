//! Limit accuracy over a real minute: a tenant driven at 2.5x its limits against the fake
//! upstream. The upstream never sees more than the key's concurrency at once nor more than
//! its RPM in any 60 s window, and the tenant still gets at least 95% of its allowance.

mod common;

use std::time::{Duration, Instant};

use easel::testing::fake_gemini::{FakeGemini, Fault};
use serde_json::json;

/// The upstream key's limits.
const RPM: u32 = 120;
const CONCURRENCY: u32 = 2;
/// The tenant may submit twice what the key can run, so work queues and the key's limits are
/// what protect the upstream.
const TENANT_RPM: u32 = 240;
const RUN: Duration = Duration::from_secs(66);

#[tokio::test]
async fn limits_hold_over_a_minute_at_two_and_a_half_times_the_rate() {
    let fake = FakeGemini::start().await;
    // Each call takes 0.9 s: at 120 RPM (one start every 0.5 s) two overlap most of the
    // time, so the concurrency limit of 2 is reached while the rate is what binds.
    fake.set_fault("key", Fault::latency(Duration::from_millis(900)));
    let base = fake.base_url.clone();
    let app = common::spawn_app_with(
        move |c| {
            c.providers.default = Some("gemini".into());
            c.providers.gemini.base_url = base;
        },
        easel::server::Roles::ALL,
    )
    .await;
    app.add_gemini_key("key", RPM, CONCURRENCY).await;
    let (_, key) = app.new_tenant("driven", TENANT_RPM, 10).await;

    // Drive at 2.5x the tenant's RPM for the whole run.
    let interval = Duration::from_secs_f64(60.0 / (f64::from(TENANT_RPM) * 2.5));
    let started = Instant::now();
    let mut accepted = 0u32;
    let mut refused = 0u32;
    let mut ticker = tokio::time::interval(interval);
    while started.elapsed() < RUN {
        ticker.tick().await;
        let r = app
            .submit_as(&key, json!({"prompt": "steady", "mode": "draft"}), None)
            .await;
        match r.status().as_u16() {
            202 => accepted += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowance = f64::from(TENANT_RPM) * elapsed / 60.0;
    assert!(
        refused > 0,
        "the tenant was never throttled at 2.5x its rate"
    );
    assert!(
        f64::from(accepted) >= 0.95 * allowance,
        "accepted {accepted} of an allowance of {allowance:.0}"
    );
    assert!(
        f64::from(accepted) <= allowance + 1.0,
        "accepted {accepted}, more than the allowance of {allowance:.0}"
    );

    let stats = fake.stats("key");
    assert!(
        stats.max_in_flight <= CONCURRENCY,
        "upstream saw {} at once",
        stats.max_in_flight
    );
    let window_max = stats.max_in_window(Duration::from_secs(60));
    assert!(
        window_max <= RPM as usize,
        "upstream saw {window_max} calls in one 60 s window"
    );
    // The key was kept busy: its rate, not Easel, was the bottleneck.
    assert!(
        stats.requests as f64 >= 0.9 * f64::from(RPM) * (elapsed - 2.0) / 60.0,
        "upstream saw only {} calls in {elapsed:.0} s",
        stats.requests
    );
    app.shutdown().await;
}
