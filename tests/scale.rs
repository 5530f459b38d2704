//! Scale-out end to end, as separate processes: 2 `easel serve --role api` and 3
//! `easel serve --role worker` on one PostgreSQL (a schema of this test's own), one Redis (a
//! key prefix of its own) and one shared image folder, with the fake Gemini upstream in this
//! process behind a few provider keys.
//!
//! 10,000 jobs (`EASEL_SCALE_JOBS` to change it) are submitted over both API processes by many
//! concurrent clients; mid-run one worker is SIGKILLed and one API process is stopped and
//! started again on its port while submits continue (a client retries on the other API, with
//! the same `Idempotency-Key`, so a retried submit never makes a second job). Idempotent
//! submits spread over both APIs at once give one job per key. At the end every job has
//! exactly one SUCCEEDED event and nothing else terminal, every image object exists and is
//! served by both APIs, no job ran more attempts than allowed, and no upstream key ever saw
//! more requests at once than its concurrency: the key permits live in Redis, shared by the
//! three worker processes.
//!
//! Runs when `EASEL_TEST_PG_URL` and `EASEL_TEST_REDIS_URL` are set (CI sets both); says it
//! skipped otherwise. Every child process is killed when the test ends, however it ends.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use easel::testing::fake_gemini::{FakeGemini, Fault};
use serde_json::{json, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};

const EXE: &str = env!("CARGO_BIN_EXE_easel");

/// Upstream keys and their concurrency (RPM is set far above what the run can reach).
const KEYS: &[(&str, u32)] = &[
    ("scale-key-1", 4),
    ("scale-key-2", 4),
    ("scale-key-3", 3),
    ("scale-key-4", 5),
];
/// Latency of every fake upstream call.
const UPSTREAM_LATENCY: Duration = Duration::from_millis(20);
const WORKERS: usize = 3;
/// Concurrent submitting clients.
const CLIENTS: usize = 32;
/// Idempotency keys submitted concurrently, and how many times each.
const IDEM_KEYS: usize = 20;
const IDEM_REPEATS: usize = 10;
/// Schemas named like tests/store.rs's, so its sweep drops the ones a failed run leaves.
const PG_SCHEMA_PREFIX: &str = "easel_test_";

fn env_url(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Free space on /dev/shm in KiB, if it is there (`df -Pk`: the 4th field of the 2nd line).
fn shm_free_kb() -> Option<u64> {
    let out = Command::new("df").args(["-Pk", "/dev/shm"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Api,
    Worker,
}

/// One `easel serve` child (or a stopped one that may start again on the same port).
struct Proc {
    name: String,
    role: Role,
    port: Option<u16>,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// A worker's id (its jobs' `lease_owner`), from its log.
    worker_id: Option<String>,
}

/// The children of one test. Dropping it SIGKILLs and reaps every child still running; if the
/// test is failing, it prints the end of each child's log first.
struct Cluster {
    root: PathBuf,
    env: Vec<(String, String)>,
    procs: Vec<Proc>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if let Some(mut child) = p.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for p in &self.procs {
                eprintln!("----- {} ({}) log tail -----", p.name, p.log.display());
                eprintln!("{}", tail(&p.log, 30));
            }
        }
    }
}

impl Cluster {
    /// `easel --data-dir <dir>` with nothing from this process's environment but PATH, and the
    /// deployment's shared settings.
    fn command(&self, data_dir: &Path) -> Command {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let mut cmd = Command::new(EXE);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", data_dir)
            .current_dir(data_dir)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs an admin command to its end; returns its stdout, panics on failure.
    fn admin(&self, args: &[&str]) -> String {
        let out = self
            .command(&self.root.join("admin"))
            .args(args)
            .output()
            .expect("run easel");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "easel {args:?}: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn add(&mut self, name: &str, role: Role) -> usize {
        let data_dir = self.root.join(name);
        self.procs.push(Proc {
            name: name.to_owned(),
            role,
            port: (role == Role::Api).then(free_port),
            log: self.root.join(format!("{name}.log")),
            data_dir,
            child: None,
            worker_id: None,
        });
        self.procs.len() - 1
    }

    /// Starts process `i` (its log is appended to, so a restart keeps the first run's lines).
    fn start(&mut self, i: usize) {
        let p = &self.procs[i];
        assert!(p.child.is_none(), "{} already running", p.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .expect("log file");
        let mut cmd = self.command(&p.data_dir);
        cmd.args(["serve", "--role"]);
        match (p.role, p.port) {
            (Role::Api, Some(port)) => cmd.args(["api", "--port", &port.to_string()]),
            // Its id, and the rescues the maintenance pass makes.
            _ => cmd.arg("worker").env("RUST_LOG", "warn,easel::jobs=info"),
        };
        cmd.stdout(log.try_clone().expect("log")).stderr(log);
        let child = cmd.spawn().expect("spawn easel serve");
        self.procs[i].child = Some(child);
    }

    fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.procs[i].port.expect("an API"))
    }

    /// Waits until process `i` says it runs: `/health` for an API, the banner for a worker.
    async fn wait_ready(&mut self, i: usize, http: &reqwest::Client) {
        let started = Instant::now();
        loop {
            let p = &mut self.procs[i];
            if let Some(status) = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "{} exited at start: {status:?}\n{}",
                    p.name,
                    tail(&p.log, 30)
                );
            }
            let ready = match p.role {
                Role::Api => {
                    let url = format!("http://127.0.0.1:{}/health", p.port.expect("port"));
                    matches!(http.get(url).send().await, Ok(r) if r.status().is_success())
                }
                Role::Worker => {
                    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                    p.worker_id = log
                        .lines()
                        .find(|l| l.contains("worker started"))
                        .and_then(|l| l.split("wrk_").nth(1))
                        .map(|rest| {
                            let id: String = rest
                                .chars()
                                .take_while(char::is_ascii_alphanumeric)
                                .collect();
                            format!("wrk_{id}")
                        });
                    p.worker_id.is_some()
                }
            };
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} not ready after 60 s\n{}",
                p.name,
                tail(&p.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no release, no final write.
    fn kill(&mut self, i: usize) {
        let mut child = self.procs[i].child.take().expect("running");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "killed, not exited: {status:?}");
    }

    /// SIGTERM, then the exit status; panics if the process is still running after `within`.
    async fn terminate(&mut self, i: usize, within: Duration) {
        let mut child = self.procs[i].child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "{} after SIGTERM: {status:?}",
                    self.procs[i].name
                );
                return;
            }
            if started.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} still running {within:?} after SIGTERM",
                    self.procs[i].name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Submits over both APIs: one preferred, the other when the first cannot answer.
#[derive(Clone)]
struct Submitter {
    http: reqwest::Client,
    apis: [String; 2],
    api_key: String,
    /// 202s answered by each API.
    answered: Arc<[AtomicUsize; 2]>,
    /// Tries that failed (connection refused or reset, 5xx) and went to the other API.
    failovers: Arc<AtomicUsize>,
}

struct Submitted {
    job_id: String,
    replayed: bool,
}

impl Submitter {
    /// POST /v1/images/generate with an `Idempotency-Key`, so a try that reached the server
    /// but lost its answer is replayed, not duplicated, by the next one.
    async fn submit(&self, prefer: usize, body: &Value, idempotency_key: &str) -> Submitted {
        let started = Instant::now();
        let mut last = String::new();
        for try_no in 0.. {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "submit {idempotency_key} not accepted within 60 s; last: {last}"
            );
            let api = (prefer + try_no) % 2;
            if try_no > 0 {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                // Both APIs tried once: give a restarting one a moment.
                if try_no % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let sent = self
                .http
                .post(format!("{}/v1/images/generate", self.apis[api]))
                .bearer_auth(&self.api_key)
                .header("Idempotency-Key", idempotency_key)
                .json(body)
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!("api {api}: {e}");
                    continue;
                }
            };
            let status = response.status();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => {
                    last = format!("api {api}: body: {e}");
                    continue;
                }
            };
            if status.is_server_error() {
                last = format!("api {api}: {status} {text}");
                continue;
            }
            assert_eq!(status, 202, "submit {idempotency_key} to api {api}: {text}");
            self.answered[api].fetch_add(1, Ordering::Relaxed);
            let body: Value = serde_json::from_str(&text).expect("submit answer is JSON");
            let job_id = body["jobId"].as_str().expect("jobId").to_owned();
            return Submitted { job_id, replayed };
        }
        unreachable!()
    }
}

/// Polls until no job is waiting or running; panics with the status counts after `timeout`.
async fn wait_all_terminal(pool: &PgPool, expected: i64, timeout: Duration) {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let (total, open): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE status NOT IN ('SUCCEEDED','FAILED','CANCELED'))
             FROM jobs",
        )
        .fetch_one(pool)
        .await
        .expect("count jobs");
        if total == expected && open == 0 {
            return;
        }
        if started.elapsed() > timeout {
            panic!(
                "{open} of {total} jobs still open after {timeout:?}: {:?}",
                status_counts(pool).await
            );
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            eprintln!(
                "scale: {:.0} s, {open} of {total} jobs open",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn status_counts(pool: &PgPool) -> HashMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("SELECT status, count(*) FROM jobs GROUP BY status")
        .fetch_all(pool)
        .await
        .expect("status counts")
        .into_iter()
        .collect()
}

async fn one_i64(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Deletes every Redis key under `prefix` (permits, rates, caches of this test).
async fn redis_cleanup(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_and_three_workers_on_postgres_and_redis_run_every_job_exactly_once() {
    let (Some(pg_base), Some(redis_url)) = (
        env_url("EASEL_TEST_PG_URL"),
        env_url("EASEL_TEST_REDIS_URL"),
    ) else {
        eprintln!(
            "note: skipping tests/scale.rs: needs EASEL_TEST_PG_URL and EASEL_TEST_REDIS_URL"
        );
        return;
    };
    let jobs: usize = std::env::var("EASEL_SCALE_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let run_started = Instant::now();

    // A schema of our own in the test database; every process reaches it by search_path.
    let tag = ulid::Ulid::new().to_string().to_lowercase();
    let schema = format!("{PG_SCHEMA_PREFIX}{tag}");
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&pg_base)
            .await
            .expect("connect to EASEL_TEST_PG_URL");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create schema");
    }
    let mut db_url = url::Url::parse(&pg_base).expect("EASEL_TEST_PG_URL is a URL");
    db_url
        .query_pairs_mut()
        .append_pair("options", &format!("-c search_path={schema}"));
    let db_url = db_url.to_string();
    let redis_prefix = format!("easel-test:{tag}:");

    let fake = FakeGemini::start().await;
    fake.set_default_fault(Fault::latency(UPSTREAM_LATENCY));

    // Memory-backed when the host has room (containers often give /dev/shm only 64 MB):
    // 10,000 objects in 10,000 folders are slow to write and to delete on a busy disk.
    let root = match shm_free_kb() {
        Some(free) if free >= 1024 * 1024 => {
            tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())
        }
        _ => tempfile::tempdir(),
    }
    .expect("tempdir");
    let storage = root.path().join("objects");
    let engine = base64::engine::general_purpose::STANDARD;
    let master_key = engine.encode(rand::random::<[u8; 32]>());
    let signing_secret = hex::encode(rand::random::<[u8; 32]>());
    let env: Vec<(String, String)> = [
        ("RUST_LOG", "warn"),
        ("NO_COLOR", "1"),
        ("DATABASE_URL", db_url.as_str()),
        ("EASEL_DATABASE__MAX_CONNECTIONS", "8"),
        ("REDIS_URL", redis_url.as_str()),
        ("EASEL_REDIS__PREFIX", redis_prefix.as_str()),
        ("EASEL_STORAGE__PATH", &storage.display().to_string()),
        ("EASEL_STORAGE__SIGNING_SECRET", signing_secret.as_str()),
        ("EASEL_MASTER_KEY", master_key.as_str()),
        ("EASEL_PROVIDERS__DEFAULT", "gemini"),
        ("EASEL_PROVIDERS__GEMINI__BASE_URL", fake.base_url.as_str()),
        // A key permit is leased for the call timeout + 10 s: a killed worker's permits come
        // back 15 s later.
        ("EASEL_PROVIDERS__GEMINI__TIMEOUT_SECS", "5"),
        ("EASEL_SERVER__HOST", "127.0.0.1"),
        ("EASEL_LIMITS__GLOBAL_RPM", "100000000"),
        ("EASEL_WORKER__CONCURRENCY", "16"),
        ("EASEL_WORKER__MAX_ATTEMPTS", "3"),
        // A killed worker's jobs are rescued within seconds.
        ("EASEL_WORKER__LEASE_MS", "3000"),
        ("EASEL_WORKER__HEARTBEAT_MS", "500"),
        ("EASEL_WORKER__POLL_MS", "100"),
        ("EASEL_WORKER__MAINTENANCE_MS", "250"),
        ("EASEL_WORKER__RETRY_BASE_MS", "10"),
        ("EASEL_WORKER__RETRY_MAX_MS", "100"),
        ("EASEL_WORKER__SHUTDOWN_GRACE_SECS", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut cluster = Cluster {
        root: root.path().to_path_buf(),
        env,
        procs: Vec::new(),
    };

    // The tenant and the upstream keys, through the CLI, before any worker starts.
    let created = cluster.admin(&["create-tenant", "scale", "100000000", "1000"]);
    let api_key = created
        .split_whitespace()
        .find(|w| w.starts_with("img_"))
        .unwrap_or_else(|| panic!("no API key in: {created}"))
        .to_owned();
    for (key, concurrency) in KEYS {
        cluster.admin(&[
            "add-provider-key",
            "gemini",
            key,
            "6000000",
            &concurrency.to_string(),
        ]);
    }

    let apis = [
        cluster.add("api-1", Role::Api),
        cluster.add("api-2", Role::Api),
    ];
    let workers: Vec<usize> = (1..=WORKERS)
        .map(|n| cluster.add(&format!("worker-{n}"), Role::Worker))
        .collect();
    for i in apis.iter().chain(&workers) {
        cluster.start(*i);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS * 2)
        .build()
        .expect("client");
    for i in apis.iter().chain(&workers) {
        cluster.wait_ready(*i, &http).await;
    }
    eprintln!(
        "scale: {} processes ready after {:.1} s",
        apis.len() + workers.len(),
        run_started.elapsed().as_secs_f64()
    );

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db_url)
        .await
        .expect("connect to the test schema");

    let submitter = Submitter {
        http: http.clone(),
        apis: [cluster.base(apis[0]), cluster.base(apis[1])],
        api_key: api_key.clone(),
        answered: Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]),
        failovers: Arc::new(AtomicUsize::new(0)),
    };

    // Bulk submits: CLIENTS clients, alternating APIs by job number.
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let submit_started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (submitter, next, done) = (submitter.clone(), next.clone(), done.clone());
        clients.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= jobs {
                    return ids;
                }
                let body = json!({"prompt": format!("scale job {n}"), "mode": "draft"});
                let got = submitter.submit(n % 2, &body, &format!("bulk-{n}")).await;
                ids.push((n, got.job_id));
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    // Meanwhile: the idempotent submits, every key 10 times at once over both APIs.
    let mut idem = tokio::task::JoinSet::new();
    for k in 0..IDEM_KEYS {
        for r in 0..IDEM_REPEATS {
            let submitter = submitter.clone();
            idem.spawn(async move {
                let body = json!({"prompt": format!("idempotent {k}"), "mode": "draft"});
                let got = submitter.submit(r % 2, &body, &format!("idem-{k}")).await;
                (k, got)
            });
        }
    }
    let mut by_key: HashMap<usize, Vec<Submitted>> = HashMap::new();
    while let Some(joined) = idem.join_next().await {
        let (k, got) = joined.expect("idempotent submit");
        by_key.entry(k).or_default().push(got);
    }
    let mut idem_ids = HashSet::new();
    for (k, answers) in &by_key {
        let ids: HashSet<&str> = answers.iter().map(|a| a.job_id.as_str()).collect();
        assert_eq!(ids.len(), 1, "idem-{k} gave several jobs: {ids:?}");
        let fresh = answers.iter().filter(|a| !a.replayed).count();
        assert_eq!(fresh, 1, "idem-{k}: {fresh} answers were not replays");
        idem_ids.extend(ids.into_iter().map(str::to_owned));
    }
    assert_eq!(idem_ids.len(), IDEM_KEYS);

    // Mid-run: SIGKILL a worker at a third of the submits...
    let wait_for = |share: usize| {
        let done = done.clone();
        async move {
            let target = jobs * share / 100;
            let started = Instant::now();
            while done.load(Ordering::Relaxed) < target {
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "submits stuck at {} of {jobs}",
                    done.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // Killed while it holds jobs (a claimed job takes 20 ms upstream at least, so the few
    // microseconds between this look and the kill cannot see them all finish).
    wait_for(33).await;
    let victim = cluster.procs[workers[0]]
        .worker_id
        .clone()
        .expect("worker id");
    let holding = Instant::now();
    loop {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE status = 'RUNNING' AND lease_owner = $1",
        )
        .bind(&victim)
        .fetch_one(&pool)
        .await
        .expect("running jobs");
        if held >= 2 {
            break;
        }
        assert!(
            holding.elapsed() < Duration::from_secs(60),
            "worker-1 never held two jobs at once"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cluster.kill(workers[0]);
    // Its lease is 3 s and was renewed every 0.5 s: nobody has rescued these yet.
    let orphaned: Vec<String> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'RUNNING' AND lease_owner = $1")
            .bind(&victim)
            .fetch_all(&pool)
            .await
            .expect("orphaned jobs");
    assert!(!orphaned.is_empty(), "the killed worker held no job");
    eprintln!(
        "scale: worker-1 SIGKILLed after {} submits ({:.1} s), holding {} jobs",
        done.load(Ordering::Relaxed),
        submit_started.elapsed().as_secs_f64(),
        orphaned.len()
    );
    // ...and restart an API at half, while the clients keep submitting.
    wait_for(50).await;
    let before_restart = submitter.answered[1].load(Ordering::Relaxed);
    cluster.terminate(apis[1], Duration::from_secs(15)).await;
    let down_at = done.load(Ordering::Relaxed);
    cluster.start(apis[1]);
    cluster.wait_ready(apis[1], &http).await;
    let restarted_at = done.load(Ordering::Relaxed);
    eprintln!(
        "scale: api-2 restarted on its port; {} submits done while it was down",
        restarted_at - down_at
    );

    let mut bulk_ids: Vec<Option<String>> = vec![None; jobs];
    while let Some(joined) = clients.join_next().await {
        for (n, id) in joined.expect("client") {
            bulk_ids[n] = Some(id);
        }
    }
    let submit_secs = submit_started.elapsed().as_secs_f64();
    let after_restart = submitter.answered[1].load(Ordering::Relaxed) - before_restart;
    eprintln!(
        "scale: {jobs} jobs submitted in {submit_secs:.1} s ({:.0}/s); 202s (bulk and idempotent) from api-1 {}, \
         api-2 {} ({after_restart} of them around or after its restart); {} failovers",
        jobs as f64 / submit_secs,
        submitter.answered[0].load(Ordering::Relaxed),
        submitter.answered[1].load(Ordering::Relaxed),
        submitter.failovers.load(Ordering::Relaxed)
    );
    let bulk_ids: Vec<String> = bulk_ids
        .into_iter()
        .enumerate()
        .map(|(n, id)| id.unwrap_or_else(|| panic!("job {n} never submitted")))
        .collect();
    let distinct: HashSet<&String> = bulk_ids.iter().collect();
    assert_eq!(distinct.len(), jobs, "two submits got one job id");
    assert!(
        bulk_ids.iter().all(|id| !idem_ids.contains(id)),
        "a bulk submit replayed an idempotent one"
    );

    // Every job ends.
    let expected = (jobs + IDEM_KEYS) as i64;
    wait_all_terminal(&pool, expected, Duration::from_secs(300)).await;
    let all_done_secs = submit_started.elapsed().as_secs_f64();
    eprintln!(
        "scale: all {expected} jobs ended {all_done_secs:.1} s after the first submit \
         ({:.0} jobs/s end to end)",
        expected as f64 / all_done_secs
    );

    // ...exactly once, successfully, within its attempts.
    let counts = status_counts(&pool).await;
    assert_eq!(
        counts,
        HashMap::from([("SUCCEEDED".to_owned(), expected)]),
        "status counts"
    );
    let not_once = one_i64(
        &pool,
        "SELECT count(*) FROM jobs j WHERE (SELECT count(*) FROM job_events e
             WHERE e.job_id = j.id AND e.status = 'SUCCEEDED') <> 1",
    )
    .await;
    assert_eq!(not_once, 0, "jobs without exactly one SUCCEEDED event");
    let other_ends = one_i64(
        &pool,
        "SELECT count(*) FROM job_events WHERE status IN ('FAILED', 'CANCELED')",
    )
    .await;
    assert_eq!(other_ends, 0, "FAILED or CANCELED events");
    let orphan_events = one_i64(
        &pool,
        "SELECT count(*) FROM job_events e WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id)",
    )
    .await;
    assert_eq!(orphan_events, 0);
    let over = one_i64(
        &pool,
        "SELECT count(*) FROM jobs WHERE attempts > max_attempts OR attempts < 1
             OR max_attempts <> 3",
    )
    .await;
    assert_eq!(over, 0, "jobs with attempts outside 1..=maxAttempts");
    let runs_over = one_i64(
        &pool,
        "SELECT count(*) FROM jobs j WHERE (SELECT count(*) FROM job_events e
             WHERE e.job_id = j.id AND e.status = 'RUNNING') > j.max_attempts",
    )
    .await;
    assert_eq!(runs_over, 0, "jobs that started more runs than maxAttempts");
    let rescued = one_i64(
        &pool,
        "SELECT count(DISTINCT job_id) FROM job_events WHERE error_code = 'WORKER_LOST'",
    )
    .await;
    let retried = one_i64(&pool, "SELECT count(*) FROM jobs WHERE attempts > 1").await;
    eprintln!("scale: {rescued} jobs rescued from the killed worker; {retried} ran more than once");
    // The killed worker's jobs were taken from it (its lease ran out) and run again.
    let lost: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT job_id FROM job_events WHERE error_code = 'WORKER_LOST' AND job_id = ANY($1)",
    )
    .bind(&orphaned)
    .fetch_all(&pool)
    .await
    .expect("rescued jobs");
    assert_eq!(
        lost.len(),
        orphaned.len(),
        "jobs of the killed worker never rescued: {orphaned:?} vs {lost:?}"
    );

    // Every image object exists in the shared folder...
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, result_keys FROM jobs")
        .fetch_all(&pool)
        .await
        .expect("result keys");
    for (id, keys) in &rows {
        let keys: Vec<String> = serde_json::from_str(keys).expect("result_keys is a JSON list");
        assert_eq!(keys.len(), 1, "job {id}: {keys:?}");
        let bytes = std::fs::read(storage.join(&keys[0]))
            .unwrap_or_else(|e| panic!("job {id}: object {} missing: {e}", keys[0]));
        assert!(bytes.starts_with(b"\x89PNG"), "job {id}: not a PNG");
    }
    // ...and either API serves it, by a link the other one signed.
    for (n, id) in bulk_ids.iter().step_by((jobs / 10).max(1)).enumerate() {
        let from = apis[n % 2];
        let to = apis[(n + 1) % 2];
        let job: Value = http
            .get(format!("{}/v1/jobs/{id}", cluster.base(from)))
            .bearer_auth(&api_key)
            .send()
            .await
            .expect("get job")
            .json()
            .await
            .expect("job JSON");
        assert_eq!(job["status"], "SUCCEEDED", "{job}");
        let url = url::Url::parse(job["resultUrls"][0].as_str().expect("resultUrl")).expect("url");
        let other = format!(
            "{}{}?{}",
            cluster.base(to),
            url.path(),
            url.query().unwrap_or_default()
        );
        for link in [url.to_string(), other] {
            let image = http.get(&link).send().await.expect("download");
            assert_eq!(image.status(), 200, "{link}");
            assert!(image.bytes().await.expect("bytes").starts_with(b"\x89PNG"));
        }
    }

    // The upstream never saw a key over its concurrency, across the three workers.
    let mut requests = 0;
    for (key, concurrency) in KEYS {
        let stats = fake.stats(key);
        eprintln!(
            "scale: {key}: {} requests, at most {} at once (limit {concurrency})",
            stats.requests, stats.max_in_flight
        );
        assert!(
            stats.max_in_flight <= *concurrency,
            "{key} saw {} requests at once; its limit is {concurrency}",
            stats.max_in_flight
        );
        requests += stats.requests;
    }
    assert!(
        requests >= expected as u64,
        "{requests} upstream requests for {expected} jobs"
    );
    assert!(
        KEYS.iter()
            .any(|(key, c)| fake.stats(key).max_in_flight == *c),
        "no key ever reached its limit: the limits were not under test"
    );

    // The survivors are still healthy and stop cleanly.
    for i in [apis[0], apis[1], workers[1], workers[2]] {
        cluster.terminate(i, Duration::from_secs(20)).await;
    }
    drop(cluster);
    pool.close().await;
    {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_base).await {
            let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await;
        }
    }
    redis_cleanup(&redis_url, &redis_prefix).await;
    eprintln!(
        "scale: passed in {:.1} s",
        run_started.elapsed().as_secs_f64()
    );
}
