//! `easel-bench fake-gemini`: the fake Gemini upstream as a process of its own, for
//! `bench/scale.sh`.

use std::time::Duration;

use crate::common::runtime;

/// `easel-bench fake-gemini`: the fake upstream as a process of its own. Prints
/// `fake_gemini base_url=...` once it listens; at SIGINT/SIGTERM prints one `RESULT` line per
/// key named with `--keys` (requests, most in flight at once) and exits.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    use easel::testing::fake_gemini::{FakeGemini, Fault};
    let (mut latency_ms, mut keys) = (0u64, Vec::new());
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--latency-ms" => latency_ms = value.parse()?,
            "--keys" => keys = value.split(',').map(str::to_owned).collect(),
            other => anyhow::bail!(
                "unknown option {other}; usage: easel-bench fake-gemini [--latency-ms MS] [--keys K1,K2]"
            ),
        }
    }
    runtime()?.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let fake = FakeGemini::try_start().await?;
        fake.set_default_fault(Fault::latency(Duration::from_millis(latency_ms)));
        println!("fake_gemini base_url={}", fake.base_url);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        for key in &keys {
            let stats = fake.stats(key);
            println!(
                "RESULT fake_gemini key={key} requests={} max_in_flight={}",
                stats.requests, stats.max_in_flight
            );
        }
        println!(
            "RESULT fake_gemini total_requests={}",
            fake.total_requests()
        );
        anyhow::Ok(())
    })
}
