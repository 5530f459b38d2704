//! `easel-bench webhooks [--jobs N] [--connections C] [--per-endpoint P] [--concurrency D]
//! [--database-url URL]`: webhook deliveries end to end. Easel runs in this process (API,
//! worker and webhook dispatcher; SQLite by default, or an empty database at `--database-url`;
//! the local renderer at 0 ms and 8x8 px) beside a receiver (axum on 127.0.0.1, allow-listed
//! as the webhook tests do) that answers 200 at once. One tenant's webhook points at the
//! receiver; `--jobs` jobs are submitted over `--connections` connections, and the run ends
//! when every job's terminal delivery has been received and the outbox has nothing pending or
//! in flight. The dispatcher runs with the defaults of `[webhooks]` unless `--per-endpoint`
//! (`per_endpoint_concurrency`: one receiver gets at most this many attempts at once, so it
//! bounds this benchmark) or `--concurrency` is given. With `EASEL_BENCH_KEEP` set, the data
//! folder is kept.
//!
//! Reports deliveries/s (first job end to last delivery received), the lag from a job's end
//! (`finished_at`) to its delivery's arrival at the receiver, p50/p99, and checks that the
//! receiver got exactly one delivery per job: distinct `eventId`s equal to the jobs, each
//! job heard once, duplicates (the same `eventId` again: at least once allows them) counted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use easel::app::{create_tenant, App};
use easel::base::clock::{now_millis, Millis};
use easel::base::job::JobStatus;
use easel::base::webhook::WebhookEvents;
use easel::webhooks::target::TargetGuard;

use crate::common::RunningServer;
use crate::common::{bench_config, runtime, submit_all, tempfile_dir};

const USAGE: &str = "usage: easel-bench webhooks [--jobs N] [--connections C] \
     [--per-endpoint P] [--concurrency D] [--database-url URL]";

struct Args {
    jobs: u64,
    connections: u64,
    per_endpoint: Option<u32>,
    concurrency: Option<u32>,
    database_url: Option<String>,
}

fn parse_args(raw: &[String]) -> anyhow::Result<Args> {
    let mut args = Args {
        jobs: 5000,
        connections: 64,
        per_endpoint: None,
        concurrency: None,
        database_url: None,
    };
    for pair in raw.chunks(2) {
        let value = pair.get(1).ok_or_else(|| anyhow::anyhow!(USAGE))?;
        let number = || value.parse::<u64>().map_err(|_| anyhow::anyhow!(USAGE));
        match pair[0].as_str() {
            "--jobs" => args.jobs = number()?,
            "--connections" => args.connections = number()?.max(1),
            "--per-endpoint" => args.per_endpoint = Some(number()?.clamp(1, 10_000) as u32),
            "--concurrency" => args.concurrency = Some(number()?.clamp(1, 10_000) as u32),
            "--database-url" => args.database_url = Some(value.clone()),
            _ => anyhow::bail!(USAGE),
        }
    }
    anyhow::ensure!(args.jobs > 0, USAGE);
    Ok(args)
}

/// One POST as the receiver saw it.
struct Receipt {
    event_id: String,
    job_id: String,
    status: String,
    at: Millis,
}

#[derive(Default)]
struct Receiver {
    receipts: Mutex<Vec<Receipt>>,
    /// Distinct event ids heard so far, for the wait (duplicates are counted at the end).
    distinct: Mutex<HashSet<String>>,
    heard: AtomicU64,
}

async fn receive(State(receiver): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let at = now_millis();
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let field = |name: &str| json[name].as_str().unwrap_or_default().to_owned();
    let receipt = Receipt {
        event_id: field("eventId"),
        job_id: field("jobId"),
        status: field("status"),
        at,
    };
    if receiver
        .distinct
        .lock()
        .expect("lock")
        .insert(receipt.event_id.clone())
    {
        receiver.heard.fetch_add(1, Ordering::Relaxed);
    }
    receiver.receipts.lock().expect("lock").push(receipt);
    StatusCode::OK
}

/// Submits one job and returns its id.
fn percentile(sorted: &[i64], q: f64) -> i64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0)
}

pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let args = parse_args(argv)?;
    runtime()?.block_on(run_in(args))
}

async fn run_in(args: Args) -> anyhow::Result<()> {
    // The receiver first: its address goes into the tenant's webhook.
    let receiver = Arc::new(Receiver::default());
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", hook_listener.local_addr()?);
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let receiver_task = tokio::spawn(async move { axum::serve(hook_listener, router).await });

    let dir = tempfile_dir()?;
    let (mut config, listener) = bench_config(&dir).await?;
    config.database.url = args.database_url.clone();
    // The receiver is on loopback, which the SSRF guard refuses unless allow-listed.
    config.webhooks.allow_networks = vec!["127.0.0.0/8".into()];
    if let Some(p) = args.per_endpoint {
        config.webhooks.per_endpoint_concurrency = p;
    }
    if let Some(d) = args.concurrency {
        config.webhooks.concurrency = d;
    }
    let addr = listener.local_addr()?;
    let webhooks_config = config.webhooks.clone();
    let app = App::build(config).await?;
    let tenant = create_tenant(app.store.as_ref(), "bench", 1_000_000_000, 1_000_000, None).await?;
    let guard = TargetGuard::new(&webhooks_config.allow_networks).map_err(anyhow::Error::msg)?;
    easel::webhooks::set_endpoint(
        app.store.as_ref(),
        &app.sealer,
        &guard,
        &tenant.tenant.id,
        Some(&hook_url),
        WebhookEvents::Terminal,
    )
    .await
    .map_err(|e| anyhow::anyhow!("setting the webhook: {e}"))?;
    let server = RunningServer::start(&app, listener).await;

    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections as usize)
        .build()?;
    let started = Instant::now();
    let job_ids = submit_all(&http, &base, &tenant.api_key, args.jobs, args.connections).await;
    let submitted_in = started.elapsed();
    anyhow::ensure!(
        job_ids.len() as u64 == args.jobs,
        "only {} of {} submits were accepted",
        job_ids.len(),
        args.jobs
    );

    // Every job's delivery heard, then nothing left in the outbox (no retry on its way).
    let deadline = Instant::now() + Duration::from_secs(600);
    while receiver.heard.load(Ordering::Relaxed) < args.jobs {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} deliveries received after 600 s",
            receiver.heard.load(Ordering::Relaxed),
            args.jobs
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let heard_in = started.elapsed();
    while app.store.webhook_next_due_at().await?.is_some() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the outbox still has work after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A late duplicate (an attempt whose result was not recorded) would be in flight now.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Each job's end, from the store.
    let mut finished_at: HashMap<String, Millis> = HashMap::with_capacity(job_ids.len());
    for id in &job_ids {
        let job = app
            .store
            .job_get(&tenant.tenant.id, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("job {id} vanished"))?;
        anyhow::ensure!(
            job.status == JobStatus::Succeeded,
            "job {id} ended {:?}",
            job.status
        );
        let end = job
            .finished_at
            .ok_or_else(|| anyhow::anyhow!("job {id} has no finished_at"))?;
        finished_at.insert(id.clone(), end);
    }
    server.stop().await;
    receiver_task.abort();

    let receipts = std::mem::take(&mut *receiver.receipts.lock().expect("lock"));
    let total = receipts.len();
    let mut first_by_event: HashMap<&str, &Receipt> = HashMap::new();
    for r in &receipts {
        first_by_event
            .entry(r.event_id.as_str())
            .and_modify(|seen| {
                if r.at < seen.at {
                    *seen = r;
                }
            })
            .or_insert(r);
    }
    let distinct = first_by_event.len();
    let duplicates = total - distinct;
    let mut per_job: HashMap<&str, usize> = HashMap::new();
    for r in first_by_event.values() {
        *per_job.entry(r.job_id.as_str()).or_default() += 1;
    }
    let jobs_heard = per_job.len();
    let jobs_heard_twice = per_job.values().filter(|n| **n > 1).count();
    let unknown = first_by_event
        .values()
        .filter(|r| !finished_at.contains_key(&r.job_id) || r.status != "SUCCEEDED")
        .count();
    let mut lags: Vec<i64> = first_by_event
        .values()
        .filter_map(|r| finished_at.get(&r.job_id).map(|end| r.at - end))
        .collect();
    lags.sort_unstable();
    let first_end = finished_at.values().copied().min().unwrap_or(0);
    let last_end = finished_at.values().copied().max().unwrap_or(0);
    let last_heard = first_by_event.values().map(|r| r.at).max().unwrap_or(0);
    let span_s = ((last_heard - first_end).max(1)) as f64 / 1000.0;
    let jobs_span_s = ((last_end - first_end).max(1)) as f64 / 1000.0;
    let exact = distinct as u64 == args.jobs
        && jobs_heard as u64 == args.jobs
        && jobs_heard_twice == 0
        && unknown == 0;
    println!(
        "webhooks: {} jobs accepted in {:.2} s; every delivery received {:.2} s after the first submit",
        args.jobs,
        submitted_in.as_secs_f64(),
        heard_in.as_secs_f64()
    );
    println!(
        "  jobs ended over {jobs_span_s:.2} s ({:.0} jobs/s); deliveries over {span_s:.2} s from the first job end: {:.0} deliveries/s",
        args.jobs as f64 / jobs_span_s,
        distinct as f64 / span_s
    );
    println!(
        "  job end to delivery received: p50 {} ms, p99 {} ms, max {} ms",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(0)
    );
    println!(
        "  receiver: {total} POSTs, {distinct} distinct eventIds, {duplicates} duplicates, {jobs_heard} jobs heard, {jobs_heard_twice} jobs with two events, {unknown} unexpected"
    );
    let engine = if args.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "RESULT webhooks engine={engine} jobs={} connections={} per_endpoint={} concurrency={} deliveries_per_s={:.0} span_s={span_s:.2} jobs_per_s={:.0} lag_p50_ms={} lag_p99_ms={} received={total} distinct={distinct} duplicates={duplicates} exactly_one_per_job={exact}",
        args.jobs,
        args.connections,
        webhooks_config.per_endpoint_concurrency,
        webhooks_config.concurrency,
        distinct as f64 / span_s,
        args.jobs as f64 / jobs_span_s,
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
    );
    if std::env::var_os("EASEL_BENCH_KEEP").is_some() {
        println!("data kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    anyhow::ensure!(
        exact,
        "the receiver did not get exactly one delivery per job"
    );
    Ok(())
}
