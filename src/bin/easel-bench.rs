//! End-to-end benchmark: Easel in this process (API + worker, SQLite WAL with durable
//! commits, the local renderer at 0 ms and 8x8 px) and an HTTP load generator beside it on
//! the same cores.
//!
//! Phase 1 (throughput): submit `--jobs` jobs over `--connections` connections as fast as
//! they are accepted, and time first submit to last SUCCEEDED.
//! Phase 2 (overhead): submit at `--rate` jobs/s (below saturation) and report Easel's own
//! time from submit to SUCCEEDED visible (`finished_at - created_at` of each job), p50/p99.
//! RSS is sampled idle and under load. Usage: `easel-bench [--jobs N] [--connections C]
//! [--rate R] [--seconds S]`.
//!
//! `easel-bench stats DB_PATH` instead waits until every job in that database has ended and
//! prints jobs/s from first submit to last SUCCEEDED and the submit-to-SUCCEEDED p50/p99; the
//! `bench/e2e.sh` script uses it after driving a separate `easel serve` with wrk.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::app::{create_tenant, App};
use easel::config::Config;
use easel::server::{self, Roles};
use tokio_util::sync::CancellationToken;

struct Args {
    jobs: u64,
    connections: u64,
    rate: u64,
    seconds: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        jobs: 20_000,
        connections: 64,
        rate: 1000,
        seconds: 5,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--jobs", Some(v)) => args.jobs = v,
            ("--connections", Some(v)) => args.connections = v,
            ("--rate", Some(v)) => args.rate = v,
            ("--seconds", Some(v)) => args.seconds = v,
            _ => {
                eprintln!(
                    "usage: easel-bench [--jobs N] [--connections C] [--rate R] [--seconds S]"
                );
                std::process::exit(2);
            }
        }
    }
    args
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("limiter") {
        return limiter_bench(&argv[2..]);
    }
    if argv.get(1).map(String::as_str) == Some("gemini") {
        return gemini_bench(&argv[2..]);
    }
    if argv.get(1).map(String::as_str) == Some("stats") {
        let path = argv
            .get(2)
            .ok_or_else(|| anyhow::anyhow!("usage: easel-bench stats DB_PATH"))?;
        return stats_only(std::path::Path::new(path));
    }
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let mut config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    config.server.host = "127.0.0.1".into();
    config.worker.concurrency = 256;
    config.worker.poll_ms = 50;
    // The origin's global defaults (1000 RPM) would be the bottleneck, not Easel.
    config.limits.global_rpm = 1_000_000_000;
    config.limits.global_concurrency = 100_000;
    config.providers.local.draft_size = 8;
    config.providers.local.final_size = 8;
    config.providers.local.delay_ms = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    config.server.port = addr.port();
    let db_path = dir.join("easel.db");
    let app = App::build(config).await?;
    let tenant = create_tenant(app.store.as_ref(), "bench", 1_000_000_000, 1_000_000, None).await?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(server::run(
        app.clone(),
        Roles::ALL,
        Some(listener),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_kb();

    let peak = Arc::new(AtomicU64::new(idle));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kb(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections as usize)
        .build()?;

    // Phase 1: throughput.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..args.connections {
        let (http, base, key, next, total) = (
            http.clone(),
            base.clone(),
            tenant.api_key.clone(),
            next.clone(),
            args.jobs,
        );
        senders.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                submit(&http, &base, &key).await;
            }
        }));
    }
    for s in senders {
        s.await?;
    }
    let submitted_in = started.elapsed();
    wait_all_done(&db_path, args.jobs).await?;
    let done_in = started.elapsed();
    let stats = phase_stats(&db_path, 0)?;
    println!(
        "throughput: {} jobs, accepted in {:.2} s ({:.0}/s), all SUCCEEDED in {:.2} s: {:.0} jobs/s end to end",
        args.jobs,
        submitted_in.as_secs_f64(),
        args.jobs as f64 / submitted_in.as_secs_f64(),
        done_in.as_secs_f64(),
        args.jobs as f64 / done_in.as_secs_f64()
    );
    println!(
        "  (submit to SUCCEEDED under saturation, queueing included) p50 {} ms, p99 {} ms",
        stats.0, stats.1
    );
    let peak_phase1 = peak.load(Ordering::Relaxed);

    // Phase 2: overhead at a steady rate below saturation.
    let from_seq = max_seq(&db_path)?;
    let total = args.rate * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    for _ in 0..total {
        ticker.tick().await;
        let (http, base, key) = (http.clone(), base.clone(), tenant.api_key.clone());
        inflight.spawn(async move { submit(&http, &base, &key).await });
    }
    while inflight.join_next().await.is_some() {}
    wait_all_done(&db_path, args.jobs + total).await?;
    let (p50, p99, n) = phase_stats(&db_path, from_seq)?;
    println!(
        "overhead at {} jobs/s for {} s ({n} jobs): submit to SUCCEEDED visible p50 {p50} ms, p99 {p99} ms",
        args.rate, args.seconds
    );
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    println!(
        "RSS: idle {} MB, peak under load {} MB (phase 1 peak {} MB; includes the in-process load generator)",
        idle / 1024,
        peak.load(Ordering::Relaxed) / 1024,
        peak_phase1 / 1024
    );
    stop.cancel();
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `easel-bench limiter [--redis URL] [--seconds S] [--concurrency C]`: GCRA decisions per
/// second through the `Limiter` trait over 10,000 keys (T = 10 ms, burst 20, as the anchor's
/// bare Lua script), from C concurrent tasks on 2 runtime threads.
fn limiter_bench(args: &[String]) -> anyhow::Result<()> {
    use easel::limits::{Limiter, MemoryLimiter, RateQuota, RedisLimiter};
    let mut redis = None;
    let (mut seconds, mut concurrency) = (5u64, 50usize);
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--redis" => redis = Some(value),
            "--seconds" => seconds = value.parse()?,
            "--concurrency" => concurrency = value.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let limiter: Arc<dyn Limiter> = match &redis {
            Some(url) => {
                Arc::new(RedisLimiter::connect(url, format!("bench{}:", std::process::id())).await?)
            }
            None => Arc::new(MemoryLimiter::new()),
        };
        let quota = RateQuota::with_burst(6000, 20); // T = 10 ms, burst 20
        let stop_at = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..concurrency {
            let limiter = limiter.clone();
            tasks.spawn(async move {
                let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                let mut key = worker as u64 * 7919;
                while Instant::now() < stop_at {
                    key = (key * 6364136223846793005 + 1442695040888963407) % 10_000;
                    let started = Instant::now();
                    let _ = limiter.rate_acquire(&format!("rl:{key}"), quota, 1).await;
                    let _ = hist.record(started.elapsed().as_nanos() as u64);
                }
                hist
            });
        }
        let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
        while let Some(h) = tasks.join_next().await {
            all.add(h?)?;
        }
        println!(
            "RESULT limiter={} decisions_per_s={:.0} p50_us={:.1} p99_us={:.1}",
            if redis.is_some() { "redis" } else { "memory" },
            all.len() as f64 / seconds as f64,
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0
        );
        anyhow::Ok(())
    })
}

/// `easel-bench gemini [--keys 8] [--per-key 4] [--latency-ms 1000] [--jobs 1000]`: jobs
/// through the real Gemini provider and key pool against the in-process fake Gemini. Reports
/// jobs/s against the keys' bound (keys x per-key / latency) and Easel's added time per job:
/// RUNNING to SUCCEEDED minus the upstream's latency, p50/p99.
fn gemini_bench(args: &[String]) -> anyhow::Result<()> {
    let (mut keys, mut per_key, mut latency_ms, mut jobs) = (8u32, 4u32, 1000u64, 1000u64);
    for pair in args.chunks(2) {
        let value: u64 = pair.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        match pair[0].as_str() {
            "--keys" => keys = value as u32,
            "--per-key" => per_key = value as u32,
            "--latency-ms" => latency_ms = value,
            "--jobs" => jobs = value,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        use easel::testing::fake_gemini::{FakeGemini, Fault};
        let fake = FakeGemini::start().await;
        let dir = tempfile_dir()?;
        let mut config = Config { data_dir: dir.clone(), ..Config::default() };
        config.server.host = "127.0.0.1".into();
        config.worker.concurrency = keys * per_key * 2;
        config.limits.global_rpm = 10_000_000;
        config.limits.global_concurrency = 100_000;
        config.providers.default = Some("gemini".into());
        config.providers.gemini.base_url = fake.base_url.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        config.server.port = addr.port();
        let app = App::build(config).await?;
        for k in 0..keys {
            let key = format!("bench-key-{k}");
            fake.set_fault(&key, Fault::latency(Duration::from_millis(latency_ms)));
            let spec = easel::app::ProviderKeySpec {
                provider: "gemini".into(),
                key,
                rpm: 1_000_000,
                concurrency: per_key,
                endpoint: None,
                priority: 0,
                project: None,
            };
            easel::app::add_provider_key(app.store.as_ref(), &app.sealer, spec).await?;
        }
        app.keys.load().await?;
        let tenant = create_tenant(app.store.as_ref(), "bench", 1_000_000_000, 1_000_000, None).await?;
        let stop = CancellationToken::new();
        let server = tokio::spawn(server::run(app.clone(), Roles::ALL, Some(listener), stop.clone()));
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        let started = Instant::now();
        let mut submits = tokio::task::JoinSet::new();
        for _ in 0..jobs {
            let (http, base, key) = (http.clone(), base.clone(), tenant.api_key.clone());
            submits.spawn(async move { submit(&http, &base, &key).await });
        }
        while submits.join_next().await.is_some() {}
        let db = dir.join("easel.db");
        wait_all_done(&db, jobs).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let bound = f64::from(keys * per_key) * 1000.0 / latency_ms as f64;
        let conn = open_db(&db)?;
        let mut stmt = conn.prepare(
            "SELECT s.at - r.at FROM job_events s JOIN job_events r
               ON r.job_id = s.job_id AND r.status = 'RUNNING'
             WHERE s.status = 'SUCCEEDED' ORDER BY 1",
        )?;
        let spans: Vec<i64> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let added: Vec<i64> = spans.iter().map(|s| s - latency_ms as i64).collect();
        let pick = |q: f64| added.get(((added.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        println!(
            "RESULT keys={keys} per_key={per_key} latency_ms={latency_ms} jobs={jobs} jobs_per_s={:.1} bound_per_s={bound:.1} ratio={:.3} added_p50_ms={} added_p99_ms={}",
            jobs as f64 / elapsed,
            jobs as f64 / elapsed / bound,
            pick(0.5),
            pick(0.99)
        );
        stop.cancel();
        let _ = server.await;
        let _ = std::fs::remove_dir_all(&dir);
        anyhow::Ok(())
    })
}

/// Reports on a database another process filled.
fn stats_only(path: &std::path::Path) -> anyhow::Result<()> {
    let conn = open_db(path)?;
    let total: u64 = conn.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(wait_all_done(path, total))?;
    let (first, last): (i64, i64) = conn.query_row(
        "SELECT min(created_at), max(finished_at) FROM jobs",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (p50, p99, n) = phase_stats(path, 0)?;
    let secs = ((last - first).max(1)) as f64 / 1000.0;
    println!(
        "RESULT jobs={n} e2e_jobs_per_s={:.0} span_s={secs:.2} submit_to_succeeded_p50_ms={p50} p99_ms={p99}",
        n as f64 / secs
    );
    Ok(())
}

async fn submit(http: &reqwest::Client, base: &str, key: &str) {
    let response = http
        .post(format!("{base}/v1/images/generate"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(r#"{"prompt":"a watercolor lighthouse at dusk","mode":"draft"}"#)
        .send()
        .await;
    match response {
        Ok(r) if r.status() == 202 => {}
        Ok(r) => eprintln!("submit answered {}", r.status()),
        Err(e) => eprintln!("submit failed: {e}"),
    }
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("easel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn open_db(path: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    Ok(rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}

async fn wait_all_done(path: &std::path::Path, expected: u64) -> anyhow::Result<()> {
    let conn = open_db(path)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: u64 = conn.query_row(
            "SELECT count(*) FROM jobs WHERE status IN ('SUCCEEDED','FAILED','CANCELED')",
            [],
            |r| r.get(0),
        )?;
        if done >= expected {
            let failed: u64 = conn.query_row(
                "SELECT count(*) FROM jobs WHERE status <> 'SUCCEEDED'",
                [],
                |r| r.get(0),
            )?;
            anyhow::ensure!(failed == 0, "{failed} jobs did not succeed");
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {expected} jobs done after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn max_seq(path: &std::path::Path) -> anyhow::Result<i64> {
    Ok(open_db(path)?.query_row("SELECT coalesce(max(seq), 0) FROM jobs", [], |r| r.get(0))?)
}

/// p50 and p99 of `finished_at - created_at` (ms) for jobs after `from_seq`, and their count.
fn phase_stats(path: &std::path::Path, from_seq: i64) -> anyhow::Result<(i64, i64, usize)> {
    let conn = open_db(path)?;
    let mut stmt =
        conn.prepare("SELECT finished_at - created_at FROM jobs WHERE seq > ?1 ORDER BY 1")?;
    let values: Vec<i64> = stmt
        .query_map([from_seq], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let pick = |q: f64| {
        values
            .get(((values.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok((pick(0.5), pick(0.99), values.len()))
}
