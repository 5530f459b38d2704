//! End to end: Easel in this process (API + worker, SQLite WAL with durable
//! commits, the local renderer at 0 ms and 8x8 px) and an HTTP load generator beside it on
//! the same cores.
//!
//! Phase 1 (throughput): submit `--jobs` jobs over `--connections` connections as fast as
//! they are accepted, and time first submit to last SUCCEEDED.
//! Phase 2 (overhead): submit at `--rate` jobs/s (below saturation) and report Easel's own
//! time from submit to SUCCEEDED visible (`finished_at - created_at` of each job), p50/p99.
//! RSS is sampled idle and under load. Usage: `easel-bench [--jobs N] [--connections C]
//! [--rate R] [--seconds S]`; with `EASEL_BENCH_KEEP` set, the data folder is kept.
//!
//! `easel-bench stats DB_PATH` instead waits until every job in that database has ended and
//! prints jobs/s from first submit to last SUCCEEDED and the submit-to-SUCCEEDED p50/p99; the
//! `bench/e2e.sh` script uses it after driving a separate `easel serve` with wrk.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::app::{create_tenant, App};
use easel::server::{self, Roles};
use tokio_util::sync::CancellationToken;

use crate::common::RunningServer;
use crate::common::{
    bench_config, max_seq, open_db, phase_stats, remove_or_keep, rss_kb, runtime, submit,
    submit_all, tempfile_dir, wait_all_done,
};

struct Args {
    jobs: u64,
    connections: u64,
    rate: u64,
    seconds: u64,
}

fn parse_args(raw: &[String]) -> Args {
    let mut args = Args {
        jobs: 20_000,
        connections: 64,
        rate: 1000,
        seconds: 5,
    };
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

pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let args = parse_args(argv);
    runtime()?.block_on(run_in(args))
}

async fn run_in(args: Args) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let (config, listener) = bench_config(&dir).await?;
    let addr = listener.local_addr()?;
    let db_path = dir.join("easel.db");
    let app = App::build(config).await?;
    let tenant = create_tenant(app.store.as_ref(), "bench", 1_000_000_000, 1_000_000, None).await?;
    let server = RunningServer::start(&app, listener).await;
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
    submit_all(&http, &base, &tenant.api_key, args.jobs, args.connections).await;
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
    server.stop().await;
    remove_or_keep(&dir);
    Ok(())
}

/// Reports on a database another process filled.
pub fn stats_only(path: &std::path::Path) -> anyhow::Result<()> {
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

/// `easel-bench drain [--jobs N]`: the worker alone, as BullMQ's "work" anchor measures it.
/// An API-only server takes `N` submits (64 connections) with no worker running; then a
/// worker starts in the same process and the backlog is timed to the last SUCCEEDED.
pub fn drain(argv: &[String]) -> anyhow::Result<()> {
    let args = parse_args(argv);
    runtime()?.block_on(async move {
        let dir = tempfile_dir()?;
        let (config, listener) = bench_config(&dir).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = App::build(config).await?;
        let tenant =
            create_tenant(app.store.as_ref(), "bench", 1_000_000_000, 1_000_000, None).await?;
        let stop = CancellationToken::new();
        let api_only = Roles {
            api: true,
            worker: false,
        };
        let api = tokio::spawn(server::run(
            app.clone(),
            api_only,
            Some(listener),
            stop.clone(),
        ));
        let http = reqwest::Client::new();
        submit_all(&http, &base, &tenant.api_key, args.jobs, 64).await;
        let started = Instant::now();
        let worker_only = Roles {
            api: false,
            worker: true,
        };
        let worker = tokio::spawn(server::run(app.clone(), worker_only, None, stop.clone()));
        wait_all_done(&dir.join("easel.db"), args.jobs).await?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "RESULT drain jobs={} seconds={secs:.2} jobs_per_s={:.0}",
            args.jobs,
            args.jobs as f64 / secs
        );
        stop.cancel();
        let _ = tokio::join!(api, worker);
        remove_or_keep(&dir);
        anyhow::Ok(())
    })
}
