//! `easel-bench limiter`: the limiter's decisions per second, for `bench/limits.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::runtime;

/// `easel-bench limiter [--redis URL] [--seconds S] [--concurrency C]`: GCRA decisions per
/// second through the `Limiter` trait over 10,000 keys (T = 10 ms, burst 20, as the anchor's
/// bare Lua script), from C concurrent tasks on 2 runtime threads.
pub fn run(args: &[String]) -> anyhow::Result<()> {
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
    runtime()?.block_on(async move {
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
