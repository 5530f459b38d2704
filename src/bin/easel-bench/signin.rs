//! `easel-bench signin`: email + password sign-ins per second over HTTP with the configured
//! argon2id parameters, and the memory the process uses while `--connections` sign in at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{rss_kb, runtime, tempfile_dir, RunningServer};

/// `easel-bench signin [--seconds S] [--connections C] [--users U] [--memory-kib M]
/// [--iterations T] [--hashes H]`: C clients sign in (successfully, so no brute-force limit
/// applies) as U users for S seconds. M and T default to `users.argon2_*` defaults; H is
/// `users.max_concurrent_hashes` (0: the number of CPUs).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut config = easel::config::Config {
        data_dir: tempfile_dir()?,
        ..Default::default()
    };
    let (mut seconds, mut connections, mut users) = (10u64, 16usize, 64usize);
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--seconds" => seconds = value.parse()?,
            "--connections" => connections = value.parse()?,
            "--users" => users = value.parse()?,
            "--memory-kib" => config.users.argon2_memory_kib = value.parse()?,
            "--iterations" => config.users.argon2_iterations = value.parse()?,
            "--hashes" => config.users.max_concurrent_hashes = value.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    config.server.host = "127.0.0.1".into();
    // The load comes from one address; only the sign-in cost is measured here.
    config.users.requests_per_window = 1_000_000_000;
    runtime()?.block_on(measure(config, seconds, connections, users.max(1)))
}

async fn measure(
    config: easel::config::Config,
    seconds: u64,
    connections: usize,
    users: usize,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (memory_kib, iterations) = (
        config.users.argon2_memory_kib,
        config.users.argon2_iterations,
    );
    let parallelism = config.users.argon2_parallelism;
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let app = easel::app::App::build(config).await?;
    easel::app::create_tenant(app.store.as_ref(), "bench", 1_000_000, 50, None).await?;
    let server = RunningServer::start(&app, listener).await;
    let http = reqwest::Client::new();
    for n in 0..users {
        let body = serde_json::json!({"email": format!("u{n}@bench.example"),
                                      "username": format!("user{n}"), "password": "bench-password"});
        let response = http
            .post(format!("{base}/api/auth/register"))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 201,
            "register answered {}",
            response.status()
        );
    }
    let rss_before = rss_kb();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            while Instant::now() < stop_at {
                peak.fetch_max(rss_kb(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..connections {
        let (http, base) = (http.clone(), base.clone());
        tasks.spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let mut failed = 0u64;
            let mut n = client;
            while Instant::now() < stop_at {
                let body = serde_json::json!({"email": format!("u{}@bench.example", n % users),
                                              "password": "bench-password"});
                let started = Instant::now();
                let response = http
                    .post(format!("{base}/api/auth/login"))
                    .json(&body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 200 => {
                        let _ = hist.record(started.elapsed().as_micros() as u64);
                    }
                    _ => failed += 1,
                }
                n += connections;
            }
            (hist, failed)
        });
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (hist, f) = done?;
        all.add(hist)?;
        failed += f;
    }
    let _ = sampler.await;
    server.stop().await;
    // After the sign-ins, so its threads' allocations are not in their RSS figures.
    let bare = bare_verifies_per_s(memory_kib, iterations, parallelism, threads, seconds)?;
    println!(
        "RESULT signin logins_per_s={:.1} p50_ms={:.1} p99_ms={:.1} failed={failed} \
         connections={connections} argon2_memory_kib={memory_kib} argon2_iterations={iterations} \
         rss_before_kb={rss_before} rss_peak_kb={} rss_growth_kb={}\n\
         RESULT bare_argon2 verifies_per_s={bare:.1} threads={threads} ratio_signin_over_bare={:.2}",
        all.len() as f64 / seconds as f64,
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
        peak.load(Ordering::Relaxed),
        peak.load(Ordering::Relaxed).saturating_sub(rss_before),
        all.len() as f64 / seconds as f64 / bare,
    );
    Ok(())
}

/// The baseline: argon2id verifies per second with the same parameters, one thread per core
/// and nothing else (no HTTP, no store, no tokens).
fn bare_verifies_per_s(
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
    threads: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
    let params = argon2::Params::new(memory_kib, iterations, parallelism, None)
        .map_err(|e| anyhow::anyhow!("argon2 params: {e}"))?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"bench-salt-16byt").map_err(|e| anyhow::anyhow!("{e}"))?;
    let stored = hasher
        .hash_password(b"bench-password", &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let done = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let Ok(parsed) = PasswordHash::new(&stored) else {
                    return;
                };
                while Instant::now() < stop_at {
                    if hasher.verify_password(b"bench-password", &parsed).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    Ok(done.load(Ordering::Relaxed) as f64 / seconds as f64)
}
