//! `easel-bench sockets`: the editor's live sync on one node. U users each open one session
//! on D devices (`/ws/{sessionId}`, 2,000 sockets by default) of an `easel serve` running in a
//! child process, so the RSS the idle sockets add to it, divided by their number, is the
//! server's alone; then device 0 of a user posts a message over HTTP at R messages/s for S
//! seconds and the time until device 1 hears `message_created` is recorded (p50, p99).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{runtime, ServerProcess};

type Sent = Arc<Mutex<HashMap<String, Instant>>>;
type Latencies = Arc<Mutex<hdrhistogram::Histogram<u64>>>;

struct Options {
    users: usize,
    devices: usize,
    rate: u64,
    seconds: u64,
}

/// `easel-bench sockets [--users U] [--devices D] [--rate R] [--seconds S]`
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut o = Options {
        users: 1000,
        devices: 2,
        rate: 200,
        seconds: 10,
    };
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--users" => o.users = value.parse()?,
            "--devices" => o.devices = value.parse()?,
            "--rate" => o.rate = value.parse()?,
            "--seconds" => o.seconds = value.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(
        o.devices >= 2 && o.users >= 1,
        "need at least one user with two devices"
    );
    runtime()?.block_on(measure(o))
}

/// Consumer routes without their per-address limit, and cheap sign-ups: sign-in cost is
/// `easel-bench signin`'s subject, not this one's.
const SERVER_ENV: &[(&str, &str)] = &[
    ("EASEL_USERS__REQUESTS_PER_WINDOW", "10000000"),
    ("EASEL_USERS__ARGON2_MEMORY_KIB", "64"),
    ("EASEL_USERS__ARGON2_ITERATIONS", "1"),
];

/// Handshakes in flight at once while the sockets open.
const HANDSHAKES: usize = 64;

/// A user: token, id, session.
struct Seat {
    token: String,
    user_id: String,
    session: String,
}

async fn seat(http: &reqwest::Client, base: &str, n: usize) -> anyhow::Result<Seat> {
    let body = serde_json::json!({"email": format!("s{n}@bench.example"),
                                  "username": format!("sock{n}"), "password": "bench-password"});
    let registered: serde_json::Value = http
        .post(format!("{base}/api/auth/register"))
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let token = registered["token"].as_str().unwrap_or_default().to_owned();
    let user_id = registered["user"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let session: serde_json::Value = http
        .post(format!("{base}/api/sessions"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"title": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let session = session["session"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anyhow::ensure!(
        !token.is_empty() && !session.is_empty(),
        "setup failed for user {n}"
    );
    Ok(Seat {
        token,
        user_id,
        session,
    })
}

/// Opens a device's socket, waits for `connected`, then reads it until the run ends; device
/// 1 records each message's delivery latency.
async fn device(
    url: String,
    timed: bool,
    sent: Sent,
    latencies: Latencies,
    ready: tokio::sync::mpsc::Sender<()>,
    arriving: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    // Devices arrive at most HANDSHAKES at a time, as real ones spread over time: 2,000
    // handshakes in one instant leave the allocator's high-water mark in the idle figure.
    let turn = arriving.acquire_owned().await?;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    while let Some(Ok(frame)) = ws.next().await {
        if let Message::Text(text) = frame {
            if text.as_str().contains("\"connected\"") {
                break;
            }
        }
    }
    drop(turn);
    let _ = ready.send(()).await;
    while let Some(Ok(frame)) = ws.next().await {
        let Message::Text(text) = frame else { continue };
        if !timed {
            continue;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            continue;
        };
        if value["type"] != "message_created" {
            continue;
        }
        let marker = value["message"]["text"].as_str().unwrap_or_default();
        let started = sent.lock().ok().and_then(|mut s| s.remove(marker));
        if let (Some(started), Ok(mut h)) = (started, latencies.lock()) {
            let _ = h.record(started.elapsed().as_micros() as u64);
        }
    }
    Ok(())
}

async fn measure(o: Options) -> anyhow::Result<()> {
    let server = ServerProcess::start(SERVER_ENV).await?;
    let base = server.base.clone();
    let addr = base.trim_start_matches("http://").to_owned();
    let http = reqwest::Client::new();
    let mut seats = Vec::with_capacity(o.users);
    for n in 0..o.users {
        seats.push(seat(&http, &base, n).await?);
    }
    let sent: Sent = Arc::default();
    let latencies: Latencies = Arc::new(Mutex::new(hdrhistogram::Histogram::new(3)?));
    let sockets = o.users * o.devices;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(sockets);
    let rss_before = server.rss_kb();
    let arriving = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
    let mut readers = tokio::task::JoinSet::new();
    for s in &seats {
        for d in 0..o.devices {
            let url = format!(
                "ws://{addr}/ws/{}?userId={}&token={}",
                s.session, s.user_id, s.token
            );
            let task = device(
                url,
                d == 1,
                sent.clone(),
                latencies.clone(),
                ready_tx.clone(),
                arriving.clone(),
            );
            readers.spawn(task);
        }
    }
    for _ in 0..sockets {
        ready_rx.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = server.rss_kb();
    let per_connection_kb = rss_idle.saturating_sub(rss_before) as f64 / sockets as f64;

    let interval = Duration::from_secs_f64(1.0 / o.rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    let stop_at = Instant::now() + Duration::from_secs(o.seconds);
    let mut posts = tokio::task::JoinSet::new();
    let mut n = 0usize;
    while Instant::now() < stop_at {
        ticker.tick().await;
        let s = &seats[n % seats.len()];
        let marker = format!("m{n}");
        if let Ok(mut map) = sent.lock() {
            map.insert(marker.clone(), Instant::now());
        }
        let request = http
            .post(format!("{base}/api/sessions/{}/messages", s.session))
            .bearer_auth(&s.token)
            .json(&serde_json::json!({"role": "user", "text": marker}));
        posts.spawn(async move { request.send().await.map(|r| r.status().as_u16()) });
        n += 1;
    }
    let mut failed = 0u64;
    while let Some(done) = posts.join_next().await {
        if !matches!(done, Ok(Ok(201))) {
            failed += 1;
        }
    }
    // Let the last deliveries arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let undelivered = sent.lock().map_or(0, |s| s.len());
    let h = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock"))?
        .clone();
    readers.abort_all();
    drop(server);
    println!(
        "RESULT sockets sockets={sockets} rss_per_idle_socket_kb={per_connection_kb:.1} \
         posted={n} rate_per_s={} delivered={} undelivered={undelivered} failed_posts={failed} \
         p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        o.rate,
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
    );
    Ok(())
}
