//! `easel-bench gemini`: end to end through the Gemini provider, the key pool and a fake
//! upstream with a fixed latency; Easel's added time per job.

use std::time::{Duration, Instant};

use easel::app::{create_tenant, App};
use easel::config::Config;

use crate::common::RunningServer;
use crate::common::{open_db, remove_or_keep, runtime, submit_prompt, tempfile_dir, wait_all_done};

/// `easel-bench gemini [--keys 8] [--per-key 4] [--latency-ms 1000] [--jobs 1000]`: jobs
/// through the real Gemini provider and key pool against the in-process fake Gemini. Reports
/// jobs/s against the keys' bound (keys x per-key / latency) and Easel's added time per job,
/// p50/p99: from the fake's answer being ready to SUCCEEDED committed (`finished_at`), which
/// is what the issue asks; and RUNNING to SUCCEEDED minus the upstream's latency, which also
/// counts the claim, the key pick and the request on the way out.
pub fn run(args: &[String]) -> anyhow::Result<()> {
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
    runtime()?.block_on(async move {
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
        // EASEL_BENCH_OBJECTS puts the images elsewhere (e.g. on tmpfs) to tell Easel's own
        // time from the disk's file creation; the database stays on the disk either way.
        if let Some(objects) = std::env::var_os("EASEL_BENCH_OBJECTS") {
            config.storage.path = Some(objects.into());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        config.server.port = addr.port();
        let app = App::build(config).await?;
        for k in 0..keys {
            let key = format!("bench-key-{k}");
            fake.set_fault(&key, Fault::latency(Duration::from_millis(latency_ms)));
            let spec = easel::keypool::ProviderKeySpec {
                provider: "gemini".into(),
                key,
                rpm: 1_000_000,
                concurrency: per_key,
                endpoint: None,
                priority: 0,
                project: None,
            };
            easel::keypool::add_provider_key(app.store.as_ref(), &app.sealer, spec).await?;
        }
        app.keys.load().await?;
        let tenant = create_tenant(app.store.as_ref(), "bench", 1_000_000_000, 1_000_000, None).await?;
        let server = RunningServer::start(&app, listener).await;
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        let started = Instant::now();
        let mut submits = tokio::task::JoinSet::new();
        fake.record_answers();
        for i in 0..jobs {
            let (http, base, key) = (http.clone(), base.clone(), tenant.api_key.clone());
            submits.spawn(async move {
                submit_prompt(&http, &base, &key, &format!("bench job {i}")).await
            });
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
        let mut running_to_done: Vec<i64> = spans.iter().map(|s| s - latency_ms as i64).collect();
        let mut stmt = conn.prepare("SELECT prompt, finished_at FROM jobs WHERE status = 'SUCCEEDED'")?;
        let finished: Vec<(String, i64)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let mut answered_to_done: Vec<i64> = finished
            .iter()
            .filter_map(|(prompt, done)| Some(done - fake.answered_at(prompt)?))
            .collect();
        anyhow::ensure!(answered_to_done.len() as u64 == jobs, "the fake did not answer every job");
        let (a50, a99) = percentiles(&mut answered_to_done);
        let (r50, r99) = percentiles(&mut running_to_done);
        println!(
            "RESULT keys={keys} per_key={per_key} latency_ms={latency_ms} jobs={jobs} jobs_per_s={:.1} bound_per_s={bound:.1} ratio={:.3} added_p50_ms={a50} added_p99_ms={a99} running_to_succeeded_minus_latency_p50_ms={r50} p99_ms={r99}",
            jobs as f64 / elapsed,
            jobs as f64 / elapsed / bound,
        );
        server.stop().await;
        remove_or_keep(&dir);
        anyhow::Ok(())
    })
}

/// p50 and p99 of `values` (sorted in place).
fn percentiles(values: &mut [i64]) -> (i64, i64) {
    values.sort_unstable();
    let pick = |q: f64| {
        values
            .get(((values.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    (pick(0.5), pick(0.99))
}
