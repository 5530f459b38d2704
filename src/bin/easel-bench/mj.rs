//! The `/mj` facade against the job API, in the same run on the local renderer at 0 ms (every
//! role in this process, SQLite):
//!
//! 1. Chains per second over `--connections` clients for `--seconds`, in two rounds (MJ
//!    first, then plain first, so neither always runs on the disk state the other left): an
//!    MJ chain is `/mj/submit/imagine` (four images and Easel's grid) then U1 through
//!    `/mj/submit/action`, each fetched until it succeeds; a plain chain does the same image
//!    work through `/v1/images/generate`: four images (`n: 4`, no grid), then the upscale of
//!    the first (`operation: upscale`, `parentJobId`, `parentIndex: 1`), each read until it
//!    succeeds. The closing line gives the ratio mj / plain: what the grid and the MJ
//!    bookkeeping cost; each round's line also gives the reads of a task or job per chain.
//!    Six seconds of warm-up (both modes, three times) come first: the file system's cold start
//!    would otherwise slow whichever round runs first.
//! 2. The facade's added latency, one client, `--samples` calls each: `/mj/submit/imagine`
//!    against `/v1/images/generate`, and `/mj/task/{id}/fetch` against `/v1/jobs/{id}` on
//!    finished work; p50 and p99 of each and of the difference.
//!
//! Usage: `easel-bench mj [--seconds S] [--connections C] [--samples N]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::app::{create_tenant, App};
use serde_json::{json, Value};

use crate::common::{bench_config, remove_or_keep, runtime, tempfile_dir, RunningServer};

struct Args {
    seconds: u64,
    connections: u64,
    samples: usize,
}

fn parse_args(raw: &[String]) -> Args {
    let mut args = Args {
        seconds: 5,
        connections: 16,
        samples: 300,
    };
    for pair in raw.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok());
        match (pair[0].as_str(), value) {
            ("--seconds", Some(v)) => args.seconds = v,
            ("--connections", Some(v)) => args.connections = v.max(1),
            ("--samples", Some(v)) => args.samples = v.max(1) as usize,
            _ => {
                eprintln!("usage: easel-bench mj [--seconds S] [--connections C] [--samples N]");
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

/// How often a waiting client looks again.
const POLL: Duration = Duration::from_millis(5);

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    /// Reads of a task or job while waiting for it to end.
    polls: Arc<AtomicU64>,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => r.json().await.ok(),
            Ok(r) => {
                eprintln!("{path} answered {}", r.status());
                None
            }
            Err(e) => {
                eprintln!("{path} failed: {e}");
                None
            }
        }
    }

    /// An MJ submit's task id (code 1 or 22).
    async fn mj_submit(&self, route: &str, body: Value) -> Option<String> {
        let reply = self
            .call(
                reqwest::Method::POST,
                &format!("/mj/submit/{route}"),
                Some(body),
            )
            .await?;
        match reply["code"].as_u64() {
            Some(1 | 22) => reply["result"].as_str().map(str::to_owned),
            _ => {
                eprintln!("/mj/submit/{route}: {reply}");
                None
            }
        }
    }

    /// Fetches the task until it ends; the task when it succeeded.
    async fn mj_done(&self, id: &str) -> Option<Value> {
        loop {
            self.polls.fetch_add(1, Ordering::Relaxed);
            let task = self
                .call(reqwest::Method::GET, &format!("/mj/task/{id}/fetch"), None)
                .await?;
            match task["status"].as_str() {
                Some("SUCCESS") => return Some(task),
                Some("FAILURE") => return None,
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    async fn job_submit(&self, body: Value) -> Option<String> {
        let reply = self
            .call(reqwest::Method::POST, "/v1/images/generate", Some(body))
            .await?;
        reply["jobId"].as_str().map(str::to_owned)
    }

    async fn job_done(&self, id: &str) -> bool {
        loop {
            self.polls.fetch_add(1, Ordering::Relaxed);
            let Some(job) = self
                .call(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
                .await
            else {
                return false;
            };
            match job["status"].as_str() {
                Some("SUCCEEDED") => return true,
                Some("FAILED" | "CANCELED") => return false,
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Imagine, then U1 on its grid.
    async fn mj_chain(&self) -> bool {
        let imagine = json!({"prompt": "a watercolor lighthouse at dusk"});
        let Some(id) = self.mj_submit("imagine", imagine).await else {
            return false;
        };
        let Some(grid) = self.mj_done(&id).await else {
            return false;
        };
        let hash = grid["properties"]["messageHash"].as_str().unwrap_or("");
        let action = json!({"taskId": id, "customId": format!("MJ::JOB::upsample::1::{hash}")});
        let Some(u1) = self.mj_submit("action", action).await else {
            return false;
        };
        self.mj_done(&u1).await.is_some()
    }

    /// Four images, then the upscale of the first: the imagine and U1's image work.
    async fn plain_chain(&self) -> bool {
        let four = json!({"prompt": "a watercolor lighthouse at dusk", "mode": "final", "n": 4});
        let Some(id) = self.job_submit(four).await else {
            return false;
        };
        if !self.job_done(&id).await {
            return false;
        }
        let upscale = json!({"prompt": "a watercolor lighthouse at dusk", "mode": "final",
                             "operation": "upscale:subtle:2x", "parentJobId": id,
                             "parentIndex": 1});
        let Some(id) = self.job_submit(upscale).await else {
            return false;
        };
        self.job_done(&id).await
    }
}

/// Chains per second over `connections` clients for `duration`, and reads per chain.
async fn chains(client: &Client, mj: bool, connections: u64, duration: Duration) -> (f64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let polls_before = client.polls.load(Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, done) = (client.clone(), done.clone());
        clients.spawn(async move {
            while Instant::now() < deadline {
                let ok = if mj {
                    client.mj_chain().await
                } else {
                    client.plain_chain().await
                };
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let done = done.load(Ordering::Relaxed) as f64;
    let polls = (client.polls.load(Ordering::Relaxed) - polls_before) as f64;
    (
        done / started.elapsed().as_secs_f64(),
        polls / done.max(1.0),
    )
}

/// The p50 and p99 of `samples`, in milliseconds.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or(0.0)
    };
    (at(0.50), at(0.99))
}

async fn timed<F, T>(call: F) -> (f64, T)
where
    F: std::future::Future<Output = T>,
{
    let started = Instant::now();
    let out = call.await;
    (started.elapsed().as_secs_f64() * 1000.0, out)
}

/// Latencies of the facade's submit and fetch against the job API's, one client.
async fn latencies(client: &Client, samples: usize) -> anyhow::Result<()> {
    let (mut mj_submit, mut job_submit) = (Vec::new(), Vec::new());
    let (mut tasks, mut jobs) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let imagine = json!({"prompt": "a watercolor lighthouse at dusk"});
        let (ms, id) = timed(client.mj_submit("imagine", imagine)).await;
        mj_submit.push(ms);
        tasks.extend(id);
        // The same job through the job API: four images and their grid.
        let grid = json!({"prompt": "a watercolor lighthouse at dusk", "mode": "final",
                          "n": 4, "grid": true});
        let (ms, id) = timed(client.job_submit(grid)).await;
        job_submit.push(ms);
        jobs.extend(id);
    }
    for (task, job) in tasks.iter().zip(&jobs) {
        client.mj_done(task).await;
        client.job_done(job).await;
    }
    let (mut mj_fetch, mut job_get) = (Vec::new(), Vec::new());
    for (task, job) in tasks.iter().zip(&jobs) {
        let path = format!("/mj/task/{task}/fetch");
        mj_fetch.push(
            timed(client.call(reqwest::Method::GET, &path, None))
                .await
                .0,
        );
        let path = format!("/v1/jobs/{job}");
        job_get.push(
            timed(client.call(reqwest::Method::GET, &path, None))
                .await
                .0,
        );
    }
    for (what, mj, plain) in [
        ("submit", mj_submit, job_submit),
        ("read", mj_fetch, job_get),
    ] {
        let added: Vec<f64> = mj.iter().zip(&plain).map(|(m, p)| m - p).collect();
        let (m50, m99) = percentiles(mj);
        let (p50, p99) = percentiles(plain);
        let (a50, a99) = percentiles(added);
        println!(
            "RESULT mode=mj-latency call={what} samples={samples} mj_p50_ms={m50:.2} \
             mj_p99_ms={m99:.2} jobs_p50_ms={p50:.2} jobs_p99_ms={p99:.2} \
             added_p50_ms={a50:.2} added_p99_ms={a99:.2}"
        );
    }
    Ok(())
}

async fn run_in(args: Args) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let (config, listener) = bench_config(&dir).await?;
    let app = App::build(config).await?;
    let tenant = create_tenant(app.store.as_ref(), "mj", 1_000_000_000, 10_000, None).await?;
    let client = Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.connections as usize)
            .build()?,
        base: format!("http://{}", listener.local_addr()?),
        key: tenant.api_key,
        polls: Arc::default(),
    };
    let server = RunningServer::start(&app, listener).await;
    let c = args.connections;
    // Warm-up: connections, prepared statements, and the file system: ext4 creates the first
    // few thousand files of a new folder slowly (0.4-0.9 ms each here, 0.04 once warm), which
    // the first measured round paid alone after a 2 s warm-up (its rate 0.5-0.9 of the same
    // mode's in round 2). Both modes, three times, so neither warms only its own path.
    for _ in 0..3 {
        chains(&client, true, c, Duration::from_secs(1)).await;
        chains(&client, false, c, Duration::from_secs(1)).await;
    }
    let seconds = Duration::from_secs(args.seconds);
    let (mut mj, mut plain) = (Vec::new(), Vec::new());
    for round in 1..=2 {
        let ((m, mj_polls), (p, plain_polls)) = if round == 1 {
            let m = chains(&client, true, c, seconds).await;
            (m, chains(&client, false, c, seconds).await)
        } else {
            let p = chains(&client, false, c, seconds).await;
            (chains(&client, true, c, seconds).await, p)
        };
        println!(
            "RESULT mode=mj-chains round={round} c={c} mj_chains_per_s={m:.1} \
             plain_chains_per_s={p:.1} mj_reads_per_chain={mj_polls:.1} \
             plain_reads_per_chain={plain_polls:.1}"
        );
        mj.push(m);
        plain.push(p);
    }
    let (m, p) = (
        mj.iter().sum::<f64>() / 2.0,
        plain.iter().sum::<f64>() / 2.0,
    );
    println!(
        "RESULT mode=mj-chains c={c} mj_chains_per_s={m:.1} plain_chains_per_s={p:.1} \
         ratio={:.3}",
        m / p
    );
    latencies(&client, args.samples).await?;
    server.stop().await;
    drop(app);
    remove_or_keep(&dir);
    Ok(())
}
