//! Redis going away and coming back, with a private `redis-server` per test (spawned here, on
//! a free port, killed with SIGKILL and restarted on the same port): the `FailoverLimiter`
//! shares limits through Redis, falls back to each node's share (the limit divided by the live
//! nodes in the store's heartbeats) without a single error, says so on `/health`, and returns
//! to Redis; and two apps on one Redis see each other's job events live through the Redis bus.
//!
//! The server binary is `EASEL_TEST_REDIS_BIN`, or `redis-server` on the PATH. Without one
//! these tests FAIL rather than skip: CI installs it (`.ci/run`).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{keys, spawn_app_with, test_config, TestApp, API_ONLY};
use easel::app::{create_tenant, App};
use easel::base::clock::now_millis;
use easel::base::secret::Secret;
use easel::events::{Change, Wake};
use easel::limits::{
    FailoverConfig, FailoverLimiter, LimitError, Limiter, LiveNodes, Permit, PermitSpec, RateQuota,
};
use easel::server::{self, heartbeat_once, Roles};
use easel::store::sqlite::SqliteStore;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(30);
/// How long a node may take to notice Redis is back (PING every second, plus slack for a
/// loaded machine).
const RECOVERY: Duration = Duration::from_secs(6);

// ---- a private redis-server ----

struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local addr").port()
    }

    /// Starts a server on a free port and waits until it answers.
    async fn start() -> RedisServer {
        RedisServer::start_on(RedisServer::free_port()).await
    }

    async fn start_on(port: u16) -> RedisServer {
        let bin = std::env::var("EASEL_TEST_REDIS_BIN")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "redis-server".to_owned());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {bin:?} ({e}): install redis-server or set \
                     EASEL_TEST_REDIS_BIN; these tests do not skip"
                )
            });
        let mut server = RedisServer {
            child: Some(child),
            port,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if ping(self.port).await {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("redis-server on {} exited: {status}", self.port);
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on {} never answered",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL, as a crash: no goodbye to the clients.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new server on the same port (empty: nothing is persisted).
    async fn restart(&mut self) {
        self.kill();
        let again = RedisServer::start_on(self.port).await;
        self.child = again.into_child();
    }

    fn into_child(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether something on `port` answers a RESP `PING` with `+PONG`.
async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"+PONG\r\n"
    )
}

fn prefix() -> String {
    format!("easel-failover-test:{}:", ulid::Ulid::new())
}

/// Waits until `done` holds, polling; panics after `limit`. Returns the time it took.
async fn eventually(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

async fn take(limiter: &dyn Limiter, key: &str, limit: u32) -> Option<Permit> {
    limiter
        .permits_acquire(&[PermitSpec::new(key, limit)], LEASE)
        .await
        .expect("permits_acquire answers")
}

async fn allowed(limiter: &dyn Limiter, key: &str, quota: RateQuota) -> bool {
    limiter
        .rate_acquire(key, quota, 1)
        .await
        .expect("rate_acquire answers")
        .allowed
}

// ---- the limiter ----

/// Two nodes (two limiters, two live nodes in the heartbeats) share one limit through Redis;
/// with Redis killed every call still answers, each node at half of each limit; with Redis
/// back on the same port both return to the shared limit within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_shared_through_redis_then_halved_per_node_then_shared_again() {
    let mut redis = RedisServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("easel.db")).expect("sqlite");
    let (nodes_a, nodes_b) = (Arc::new(LiveNodes::new()), Arc::new(LiveNodes::new()));
    heartbeat_once(&store, "node_a", "api+worker", &nodes_a)
        .await
        .unwrap();
    let live = heartbeat_once(&store, "node_b", "worker", &nodes_b)
        .await
        .unwrap();
    assert_eq!(live, 2);
    heartbeat_once(&store, "node_a", "api+worker", &nodes_a)
        .await
        .unwrap();
    assert_eq!((nodes_a.get(), nodes_b.get()), (2, 2));

    let (url, prefix) = (redis.url(), prefix());
    let connect = |nodes: Arc<LiveNodes>| {
        FailoverLimiter::connect(&url, prefix.clone(), nodes, FailoverConfig::default())
    };
    let a = connect(nodes_a.clone()).await.expect("connect a");
    let b = connect(nodes_b.clone()).await.expect("connect b");
    assert!(!a.is_degraded() && !b.is_degraded());
    assert_eq!(a.degraded(), None);

    // Through Redis: one limit of 4 slots and one burst of 4, shared by both nodes.
    let quota = RateQuota::with_burst(60, 4);
    let mut held_before = Vec::new();
    for node in [&a, &a, &b, &b] {
        held_before.push(take(node, "conc", 4).await.expect("4 slots in all"));
    }
    assert!(take(&a, "conc", 4).await.is_none());
    assert!(take(&b, "conc", 4).await.is_none());
    assert_eq!(a.in_use("conc").await.unwrap(), 4);
    for node in [&a, &b, &a, &b] {
        assert!(allowed(node, "rate", quota).await);
    }
    assert!(!allowed(&a, "rate", quota).await);
    assert!(!allowed(&b, "rate", quota).await);

    // Redis dies. Every call still answers, quickly, and each node enforces its half.
    redis.kill();
    let started = Instant::now();
    let first = take(&a, "conc-outage", 4).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the first call after the crash took {:?}",
        started.elapsed()
    );
    assert!(first.is_some());
    assert!(a.is_degraded(), "a fell back on its first failed call");
    let second = take(&a, "conc-outage", 4).await.expect("a's second of 2");
    assert!(take(&a, "conc-outage", 4).await.is_none(), "a's share is 2");
    assert!(take(&b, "conc-outage", 4).await.is_some());
    assert!(b.is_degraded());
    assert!(take(&b, "conc-outage", 4).await.is_some());
    assert!(take(&b, "conc-outage", 4).await.is_none(), "b's share is 2");
    let outage_quota = RateQuota::with_burst(60, 4);
    for node in [&a, &b] {
        assert!(allowed(node, "rate-outage", outage_quota).await);
        assert!(allowed(node, "rate-outage", outage_quota).await);
        let denied = node
            .rate_acquire("rate-outage", outage_quota, 1)
            .await
            .unwrap();
        assert!(!denied.allowed, "each node's burst is 2");
        assert_eq!(denied.limit, 2);
        assert!(denied.retry_after.is_some());
    }
    // The Redis permits a node still holds count against its share: a holds 2 of "conc",
    // which is its whole share of it.
    assert!(take(&a, "conc", 4).await.is_none());
    assert_eq!(a.in_use("conc").await.unwrap(), 2);
    // Renewing a Redis permit while Redis is away keeps the holder going; memory permits
    // renew in memory.
    assert!(a.permit_renew(&held_before[0], LEASE).await.unwrap());
    assert!(a.permit_renew(&second, LEASE).await.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let report = a.degraded().expect("a reports degraded");
    assert_eq!(report.mode, "memory-fallback");
    assert_eq!(report.live_nodes, 2);
    assert_eq!(report.fallbacks, 1);
    assert!(report.fallback_decisions >= 8, "{report:?}");
    // Invalid requests are still errors, not fallbacks.
    assert!(matches!(
        a.permits_acquire(&[PermitSpec::new("conc", 1)], Duration::ZERO)
            .await,
        Err(LimitError::Invalid(_))
    ));

    // Redis is back (empty) on the same port: both nodes return to it by themselves.
    redis.restart().await;
    let took = eventually(RECOVERY, "both nodes back on Redis", || {
        !a.is_degraded() && !b.is_degraded()
    })
    .await;
    eprintln!("back on Redis {took:?} after the restart");
    assert_eq!(a.degraded(), None);
    // Shared again: 4 slots across both nodes, not 2 per node.
    for node in [&a, &a, &a, &b] {
        assert!(take(node, "conc-after", 4).await.is_some());
    }
    assert!(take(&b, "conc-after", 4).await.is_none());
    assert!(take(&a, "conc-after", 4).await.is_none());
    // A permit taken in memory during the outage lives on in memory until released.
    assert!(a.permit_renew(&second, LEASE).await.unwrap());
    assert_eq!(a.in_use("conc-outage").await.unwrap(), 2, "Redis 0 + a's 2");
    a.permit_release(&second).await.unwrap();
    assert_eq!(a.in_use("conc-outage").await.unwrap(), 1);
    // Redis lost the old permits with its data: renewing says so.
    assert!(!a.permit_renew(&held_before[0], LEASE).await.unwrap());
}

/// Redis down when the node starts: it starts anyway, degraded, and moves to Redis when a
/// server appears on the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_degraded_without_redis_and_moves_to_it_when_it_appears() {
    let port = RedisServer::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let nodes = Arc::new(LiveNodes::new());
    let prefix = prefix();
    let a = FailoverLimiter::connect(&url, prefix.clone(), nodes, FailoverConfig::default())
        .await
        .expect("starts without Redis");
    assert!(a.is_degraded());
    assert!(take(&a, "k", 1).await.is_some());
    let _redis = RedisServer::start_on(port).await;
    eventually(RECOVERY, "on Redis once it answers", || !a.is_degraded()).await;
    let b = FailoverLimiter::connect(
        &url,
        prefix,
        Arc::new(LiveNodes::new()),
        FailoverConfig::default(),
    )
    .await
    .unwrap();
    assert!(!b.is_degraded());
    assert!(take(&a, "shared", 1).await.is_some());
    assert!(
        take(&b, "shared", 1).await.is_none(),
        "one limit across both"
    );
}

// ---- /health ----

fn with_redis(url: String) -> impl FnOnce(&mut easel::config::Config) {
    move |config| {
        config.redis.url = Some(Secret::new(url));
        config.redis.prefix = prefix();
    }
}

async fn health(app: &TestApp) -> Value {
    let response = app.http.get(app.url("/health")).send().await.expect("send");
    assert_eq!(response.status(), 200, "/health answers 200 in every mode");
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_degraded_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let app = spawn_app_with(with_redis(redis.url()), API_ONLY).await;
    let body = health(&app).await;
    assert_eq!(keys(&body), ["status", "timestamp"], "{body}");
    assert_eq!(body["status"], "ok");

    redis.kill();
    // The prober notices within about a second even with no traffic.
    let started = Instant::now();
    let degraded = loop {
        let body = health(&app).await;
        if body["status"] == "degraded" {
            break body;
        }
        assert!(started.elapsed() < RECOVERY, "still {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        keys(&degraded),
        [
            "degradedSince",
            "limiter",
            "limiterFallbackDecisions",
            "limiterFallbacks",
            "liveNodes",
            "status",
            "timestamp"
        ]
    );
    assert_eq!(degraded["limiter"], "memory-fallback");
    assert_eq!(degraded["limiterFallbacks"], 1);
    assert!(
        degraded["liveNodes"].as_u64().unwrap_or(0) >= 1,
        "{degraded}"
    );
    common::timestamp_millis(&degraded["degradedSince"]);
    // Submits still work: the tenant's rate is decided in memory.
    let before = degraded["limiterFallbackDecisions"].as_u64().unwrap_or(0);
    let response = app.submit(json!({"prompt": "during the outage"})).await;
    assert_eq!(response.status(), 202);
    let after = health(&app).await;
    assert!(
        after["limiterFallbackDecisions"].as_u64().unwrap_or(0) > before,
        "{after}"
    );

    redis.restart().await;
    let started = Instant::now();
    loop {
        let body = health(&app).await;
        if body["status"] == "ok" {
            assert_eq!(keys(&body), ["status", "timestamp"], "{body}");
            break;
        }
        assert!(started.elapsed() < RECOVERY, "still {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await;
}

// ---- events across nodes ----

/// A minimal SSE reader: the `data:` JSON of each event.
struct Sse {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl Sse {
    async fn open(http: &reqwest::Client, url: &str, key: &str) -> Sse {
        let response = http.get(url).bearer_auth(key).send().await.expect("send");
        assert_eq!(response.status(), 200, "GET {url}");
        Sse {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next event's data, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("utf-8");
                let data = text.lines().find_map(|l| l.strip_prefix("data:"));
                if let Some(data) = data {
                    return Some(serde_json::from_str(data.trim()).expect("data is JSON"));
                }
                continue;
            }
            match tokio::time::timeout(Duration::from_secs(15), self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => panic!("stream failed: {e}"),
                Ok(None) => return None,
                Err(_) => panic!("no event within 15 s"),
            }
        }
    }
}

/// App A (API only) and app B (worker only) share one database and one Redis. A's SSE stream
/// of a job that B's worker runs hears B's changes through Redis pub/sub, well before A's
/// 1 s re-read of the events table would have found them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_see_each_others_job_events_through_redis() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = prefix();
    let config = |port: u16| {
        let mut config = test_config(dir.path());
        config.server.port = port;
        config.redis.url = Some(Secret::new(redis.url()));
        config.redis.prefix = prefix.clone();
        config
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app_a = App::build(config(addr.port())).await.expect("app A");
    let tenant = create_tenant(app_a.store.as_ref(), "t", 1_000_000, 50, None)
        .await
        .expect("tenant");
    let stop = CancellationToken::new();
    let serve_a = tokio::spawn(server::run(
        app_a.clone(),
        API_ONLY,
        Some(listener),
        stop.clone(),
    ));
    // A heartbeats as soon as it serves; B, built after that, already counts it.
    let since = now_millis() - 15_000;
    let started = Instant::now();
    while app_a.store.nodes_live(since).await.unwrap() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no heartbeat from A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let app_b = App::build(config(0)).await.expect("app B");
    assert_eq!(app_b.live_nodes.get(), 2, "B counts A and itself");
    let worker = Roles {
        api: false,
        worker: true,
    };
    let serve_b = tokio::spawn(server::run(app_b.clone(), worker, None, stop.clone()));

    // A's own bus hears B's notices (it only published the submits itself).
    let mut heard = app_a.events.subscribe();
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let mut lags = Vec::new();
    let mut job_ids = Vec::new();
    for i in 0..5 {
        let response = http
            .post(format!("{base}/v1/images/generate"))
            .bearer_auth(&tenant.api_key)
            .json(&json!({"prompt": format!("job {i}"), "mode": "draft"}))
            .send()
            .await
            .expect("submit");
        assert_eq!(response.status(), 202);
        let job_id = response.json::<Value>().await.expect("json")["jobId"]
            .as_str()
            .expect("jobId")
            .to_owned();
        let mut stream = Sse::open(
            &http,
            &format!("{base}/v1/jobs/{job_id}/events"),
            &tenant.api_key,
        )
        .await;
        let mut statuses = Vec::new();
        while let Some(event) = stream.next().await {
            let status = event["status"].as_str().unwrap_or("").to_owned();
            if status == "SUCCEEDED" {
                let at = common::timestamp_millis(&event["timestamp"]);
                lags.push(now_millis() - at);
            }
            statuses.push(status);
        }
        assert_eq!(statuses, ["QUEUED", "RUNNING", "SUCCEEDED"], "job {job_id}");
        job_ids.push(job_id);
    }
    lags.sort_unstable();
    let median = lags[lags.len() / 2];
    eprintln!("SSE lag on A for jobs finished by B (ms, sorted): {lags:?}");
    assert!(
        median < 400,
        "median lag {median} ms: B's events reached A by the 1 s re-read, not through Redis"
    );

    // Proof of the path: per job, A's bus carried A's submit notice and B's notices for the
    // claim and the finish (a bus of A's own would carry the submit only).
    let mut per_job = std::collections::HashMap::<String, usize>::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), heard.recv()).await {
            Ok(Wake::Changed(Change {
                job_id: Some(job), ..
            })) => *per_job.entry(job.to_string()).or_default() += 1,
            Ok(Wake::Changed(_)) | Ok(Wake::Missed) => {}
            Ok(Wake::Closed) | Err(_) => break,
        }
    }
    for job_id in &job_ids {
        let count = per_job.get(job_id).copied().unwrap_or(0);
        assert!(
            count >= 3,
            "A's bus heard {count} notices for {job_id}: {per_job:?}"
        );
    }

    stop.cancel();
    let _ = serve_a.await;
    let _ = serve_b.await;
}
