//! `easel-bench claim`: claims per second on PostgreSQL through `Store::job_claim`, for
//! `bench/pg_claim.sh`, which runs the anchor's bare `SKIP LOCKED` pgbench script beside it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::app::create_tenant;

use crate::common::runtime;

/// `easel-bench claim`: what one claim costs on PostgreSQL.
///
/// Fills `--jobs` QUEUED jobs over `--tenants` tenants (job i to tenant i mod T, as the
/// anchor's rows), through `Store::job_submit` from 16 tasks, in a schema of its own; then
/// `VACUUM ANALYZE` and `CHECKPOINT`, as the anchor does before its run. Then `--workers`
/// claimers call `Store::job_claim(batch)` in a loop, each on its own pooled connection, on 2
/// runtime threads, for `--seconds` or until the queue is empty. The tenants' concurrency
/// limits are set above N so they never stop a claim. Reports claims (jobs) per second and
/// the latency of one `job_claim` call. The schema is dropped at the end.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    use easel::base::clock::now_millis;
    use easel::base::job::{new_job_id, NewJob};
    use easel::store::postgres::{PgSettings, PgStore};
    use easel::store::Store;

    let mut url = None;
    let mut keep = false;
    let (mut jobs, mut workers, mut batch, mut tenants, mut seconds) =
        (100_000u64, 8usize, 1u32, 100u64, 10u64);
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--database-url" => url = Some(value),
            "--jobs" => jobs = value.parse()?,
            "--workers" => workers = value.parse()?,
            "--batch" => batch = value.parse()?,
            "--tenants" => tenants = value.parse()?,
            "--seconds" => seconds = value.parse()?,
            "--keep-schema" => keep = value == "yes",
            other => anyhow::bail!(
                "unknown option {other}; usage: easel-bench claim --database-url URL [--jobs N] \
                 [--workers W] [--batch B] [--tenants T] [--seconds S] [--keep-schema yes]"
            ),
        }
    }
    let url = url.ok_or_else(|| anyhow::anyhow!("claim needs --database-url postgres://..."))?;
    anyhow::ensure!(
        workers > 0 && batch > 0 && tenants > 0,
        "counts must be positive"
    );
    const FILLERS: usize = 16;
    runtime()?.block_on(async move {
        let schema = format!("easel_bench_claim_{}", std::process::id());
        let settings = PgSettings {
            max_connections: (workers.max(FILLERS) + 1) as u32,
            ..PgSettings::default()
        };
        let store = Arc::new(PgStore::connect_with_schema(&url, &schema, &settings).await?);
        // The fill is set-up, not the measurement: its commits need not wait for the disk.
        let mut fill_url = url::Url::parse(&url)?;
        fill_url
            .query_pairs_mut()
            .append_pair("options", "-c synchronous_commit=off");
        let filler =
            Arc::new(PgStore::connect_with_schema(fill_url.as_str(), &schema, &settings).await?);
        let result = claim_bench_in(
            store.clone(),
            filler,
            jobs,
            workers,
            batch,
            tenants,
            seconds,
        )
        .await;
        if keep {
            eprintln!("schema {schema} kept");
        } else if let Err(e) = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(store.pool())
            .await
        {
            eprintln!("could not drop schema {schema}: {e}");
        }
        result
    })?;
    return Ok(());

    async fn claim_bench_in(
        store: Arc<PgStore>,
        filler: Arc<PgStore>,
        jobs: u64,
        workers: usize,
        batch: u32,
        tenants: u64,
        seconds: u64,
    ) -> anyhow::Result<()> {
        let limit = u32::try_from(jobs).unwrap_or(u32::MAX).max(1);
        let mut tenant_ids = Vec::new();
        for t in 0..tenants {
            let created = create_tenant(
                store.as_ref(),
                &format!("bench-{t}"),
                1_000_000_000,
                limit,
                None,
            )
            .await?;
            tenant_ids.push(created.tenant.id);
        }
        let tenant_ids = Arc::new(tenant_ids);
        let filled = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let mut fillers = tokio::task::JoinSet::new();
        for _ in 0..FILLERS {
            let (store, next, tenant_ids) = (filler.clone(), next.clone(), tenant_ids.clone());
            fillers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs {
                        return anyhow::Ok(());
                    }
                    let now = now_millis();
                    store
                        .job_submit(NewJob {
                            id: new_job_id(),
                            tenant_id: tenant_ids[(i % tenant_ids.len() as u64) as usize].clone(),
                            prompt: "a watercolor painting of a lighthouse at dusk, volumetric \
                                     light, highly detailed"
                                .into(),
                            mode: easel::base::job::Mode::Draft,
                            input_image_url: None,
                            params: Default::default(),
                            provider: "local".into(),
                            max_attempts: 3,
                            created_at: now,
                            cancel_at: None,
                            deadline_at: now + 86_400_000,
                            idempotency: None,
                            webhook_url: None,
                            charge: None,
                            follow_up: None,
                        })
                        .await?;
                }
            });
        }
        while let Some(done) = fillers.join_next().await {
            done??;
        }
        let fill_secs = filled.elapsed().as_secs_f64();
        drop(filler);
        println!(
            "fill: {jobs} jobs through Store::job_submit (16 tasks, synchronous_commit=off) in \
             {fill_secs:.1} s: {:.0} jobs/s",
            jobs as f64 / fill_secs
        );
        for sql in [
            "VACUUM ANALYZE jobs",
            "VACUUM ANALYZE tenants",
            "CHECKPOINT",
        ] {
            sqlx::query(sql).execute(store.pool()).await?;
        }

        let claimed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let stop_at = started + Duration::from_secs(seconds);
        let mut claimers = tokio::task::JoinSet::new();
        for w in 0..workers {
            let (store, claimed) = (store.clone(), claimed.clone());
            claimers.spawn(async move {
                let worker = format!("wrk_bench_{w}");
                let lease = Duration::from_secs(3600);
                let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
                let mut empty = 0;
                while Instant::now() < stop_at && claimed.load(Ordering::Relaxed) < jobs {
                    let t = Instant::now();
                    let got = store.job_claim(&worker, batch, lease).await?;
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                    if got.is_empty() {
                        // Only when every other claimer holds the tenants with work, or at the
                        // very end: a few tries, then this claimer is done.
                        empty += 1;
                        if empty >= 20 {
                            break;
                        }
                        continue;
                    }
                    empty = 0;
                    claimed.fetch_add(got.len() as u64, Ordering::Relaxed);
                }
                anyhow::Ok(hist)
            });
        }
        let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
        while let Some(h) = claimers.join_next().await {
            all.add(h??)?;
        }
        let secs = started.elapsed().as_secs_f64();
        let claimed = claimed.load(Ordering::Relaxed);
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'RUNNING'")
            .fetch_one(store.pool())
            .await?;
        anyhow::ensure!(
            running as u64 == claimed,
            "{claimed} claims counted but {running} jobs RUNNING"
        );
        println!(
            "RESULT easel_claim workers={workers} batch={batch} tenants={tenants} claimed={claimed} \
             seconds={secs:.2} claims_per_s={:.0} calls={} call_p50_ms={:.3} call_p99_ms={:.3}",
            claimed as f64 / secs,
            all.len(),
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0
        );
        Ok(())
    }
}
