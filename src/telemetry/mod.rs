//! Prometheus metrics: the process-wide recorder, the text `GET /metrics` serves, and the
//! name, labels and help of every metric Easel exports, kept here so they stay consistent.
//!
//! Owns: metric names and labels, and the recorder (the `metrics` crate's facade, rendered
//! by `metrics-exporter-prometheus`). Must not touch: any decision. Recording never changes
//! what Easel does, and a process without the recorder (a CLI command) records into nothing.
//! Labels never carry a tenant, a prompt or a secret: routes are their templates, keys their
//! ids.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds, from a fast HTTP answer to a slow upstream image.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once per process: every later call, such as a second `App` in a
/// test, shares it). `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            gauge!("easel_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

/// The Prometheus text exposition of every metric recorded so far.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

fn describe() {
    describe_gauge!(
        "easel_build_info",
        "Always 1; the version label is Easel's."
    );
    describe_counter!(
        "easel_http_requests_total",
        "HTTP requests answered, by method, route template and status."
    );
    describe_histogram!(
        "easel_http_request_duration_seconds",
        "Time to answer an HTTP request (streams: to their first byte), by route template."
    );
    describe_counter!(
        "easel_jobs_submitted_total",
        "Submits by outcome: created, or duplicate (an idempotent repeat)."
    );
    describe_gauge!(
        "easel_jobs_open",
        "Unfinished jobs of every tenant (all processes), by status: queued, retrying, \
         running. The queue's depth, read from the store at scrape time."
    );
    describe_counter!(
        "easel_jobs_claimed_total",
        "Jobs claimed by this process's workers."
    );
    describe_histogram!(
        "easel_job_claim_duration_seconds",
        "Time of one claim call to the store."
    );
    describe_counter!(
        "easel_job_attempts_total",
        "Attempts ended, by provider and result: succeeded, retrying, failed."
    );
    describe_histogram!(
        "easel_job_attempt_duration_seconds",
        "From an attempt's claim to its result written, by provider."
    );
    describe_counter!(
        "easel_jobs_recovered_total",
        "Jobs the maintenance pass changed, by what: rescued (lease lost), expired \
         (deadline), canceled (Cancel-After)."
    );
    describe_counter!(
        "easel_upstream_calls_total",
        "Provider calls, by provider and outcome: success, retryable, final, \
         content_blocked, key_rejected."
    );
    describe_histogram!(
        "easel_upstream_call_duration_seconds",
        "Time of one provider call, by provider."
    );
    describe_gauge!(
        "easel_upstream_key_in_flight",
        "Calls holding each upstream key (every process), by key id and provider."
    );
    describe_gauge!(
        "easel_upstream_key_usable",
        "1 while a key takes calls: enabled, breaker not open, not cooling down or parked."
    );
    describe_gauge!(
        "easel_upstream_key_breaker",
        "Each key's breaker: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(
        "easel_limiter_degraded",
        "1 while this node's limits run on its share in memory because Redis is unreachable."
    );
    describe_counter!(
        "easel_webhook_attempts_total",
        "Webhook delivery attempts, by outcome: delivered, retrying, failed, gone."
    );
    describe_histogram!(
        "easel_webhook_attempt_duration_seconds",
        "Time of one webhook POST."
    );
}

pub fn http_request(method: String, route: String, status: u16, elapsed: Duration) {
    counter!("easel_http_requests_total", "method" => method.clone(), "route" => route.clone(),
        "status" => status.to_string())
    .increment(1);
    histogram!("easel_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
}

/// `outcome`: `created` or `duplicate`.
pub fn job_submitted(outcome: &'static str) {
    counter!("easel_jobs_submitted_total", "outcome" => outcome).increment(1);
}

pub fn jobs_claimed(count: usize, elapsed: Duration) {
    counter!("easel_jobs_claimed_total").increment(count as u64);
    histogram!("easel_job_claim_duration_seconds").record(elapsed.as_secs_f64());
}

/// A job claimed by its own submit (`worker.dispatch_on_submit`): a claim, and counted apart.
pub fn job_claimed_at_submit() {
    counter!("easel_jobs_claimed_total").increment(1);
    counter!("easel_jobs_claimed_at_submit_total").increment(1);
}

/// `result`: `succeeded`, `retrying` or `failed`.
pub fn attempt_ended(provider: &str, result: &'static str, elapsed: Duration) {
    let (counter, histogram) = (
        "easel_job_attempts_total",
        "easel_job_attempt_duration_seconds",
    );
    per_provider(counter, histogram, provider, ("result", result), elapsed);
}

/// One event of `provider`: its counter by `provider` and `outcome`, its time by `provider`.
fn per_provider(
    counter: &'static str,
    histogram: &'static str,
    provider: &str,
    outcome: (&'static str, &'static str),
    elapsed: Duration,
) {
    let provider = provider.to_owned();
    counter!(counter, "provider" => provider.clone(), outcome.0 => outcome.1).increment(1);
    histogram!(histogram, "provider" => provider).record(elapsed.as_secs_f64());
}

pub fn jobs_recovered(rescued: u64, expired: u64, canceled: u64) {
    for (what, n) in [
        ("rescued", rescued),
        ("expired", expired),
        ("canceled", canceled),
    ] {
        if n > 0 {
            counter!("easel_jobs_recovered_total", "what" => what).increment(n);
        }
    }
}

/// `outcome`: `success`, `retryable`, `final`, `content_blocked` or `key_rejected`.
pub fn upstream_call(provider: &str, outcome: &'static str, elapsed: Duration) {
    let (counter, histogram) = (
        "easel_upstream_calls_total",
        "easel_upstream_call_duration_seconds",
    );
    per_provider(counter, histogram, provider, ("outcome", outcome), elapsed);
}

/// One upstream key's gauges, as the key pool judged it when `/metrics` was scraped.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamKeyGauges<'a> {
    pub key_id: &'a str,
    pub provider: &'a str,
    /// Calls holding the key (every process).
    pub in_flight: u32,
    /// Enabled, breaker not open, not cooling down or parked.
    pub usable: bool,
    /// The breaker: 0 closed, 1 half-open, 2 open.
    pub breaker: u8,
}

/// Sets one key's gauges.
pub fn upstream_key(key: UpstreamKeyGauges<'_>) {
    let labels = [
        ("key", key.key_id.to_owned()),
        ("provider", key.provider.to_owned()),
    ];
    gauge!("easel_upstream_key_in_flight", &labels).set(f64::from(key.in_flight));
    gauge!("easel_upstream_key_usable", &labels).set(if key.usable { 1.0 } else { 0.0 });
    gauge!("easel_upstream_key_breaker", &labels).set(f64::from(key.breaker));
}

/// Sets the queue-depth gauges from the store's counts (taken when `/metrics` is scraped):
/// `(status label, open jobs in it)`.
pub fn open_jobs(counts: [(&'static str, u64); 3]) {
    for (status, count) in counts {
        gauge!("easel_jobs_open", "status" => status).set(count as f64);
    }
}

pub fn limiter_degraded(degraded: bool) {
    gauge!("easel_limiter_degraded").set(if degraded { 1.0 } else { 0.0 });
}

/// `outcome`: `delivered`, `retrying`, `failed` or `gone`.
pub fn webhook_attempt(outcome: &'static str, elapsed: Duration) {
    counter!("easel_webhook_attempts_total", "outcome" => outcome).increment(1);
    histogram!("easel_webhook_attempt_duration_seconds").record(elapsed.as_secs_f64());
}
