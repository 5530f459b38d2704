//! What the modes share: the runtime, submits, RSS, reading a finished SQLite run, and for
//! the load modes their arguments, their database (SQLite, or a fresh PostgreSQL one) and the
//! rate of a request over many connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::config::Config;

/// Two runtime threads: the machine the figures are for has two cores.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// This process's resident set, in KiB.
pub fn rss_kb() -> u64 {
    rss_kb_of("self")
}

/// The resident set of process `pid` (or `self`), in KiB.
pub fn rss_kb_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Submits one draft job; its id when accepted (a refusal is printed, not fatal).
pub async fn submit(http: &reqwest::Client, base: &str, key: &str) -> Option<String> {
    submit_prompt(http, base, key, "a watercolor lighthouse at dusk").await
}

pub async fn submit_prompt(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    prompt: &str,
) -> Option<String> {
    let body = serde_json::json!({ "prompt": prompt, "mode": "draft" });
    let response = http
        .post(format!("{base}/v1/images/generate"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await;
    match response {
        Ok(r) if r.status() == 202 => {
            let body: serde_json::Value = r.json().await.ok()?;
            body["jobId"].as_str().map(str::to_owned)
        }
        Ok(r) => {
            eprintln!("submit answered {}", r.status());
            None
        }
        Err(e) => {
            eprintln!("submit failed: {e}");
            None
        }
    }
}

pub fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("easel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub fn open_db(path: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    Ok(rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?)
}

pub async fn wait_all_done(path: &std::path::Path, expected: u64) -> anyhow::Result<()> {
    let conn = open_db(path)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: u64 = conn.query_row(
            "SELECT count(*) FROM jobs WHERE status IN ('SUCCEEDED','FAILED','CANCELED')",
            [],
            |r| r.get(0),
        )?;
        if done >= expected {
            let failed: u64 = conn.query_row(
                "SELECT count(*) FROM jobs WHERE status <> 'SUCCEEDED'",
                [],
                |r| r.get(0),
            )?;
            anyhow::ensure!(failed == 0, "{failed} jobs did not succeed");
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {expected} jobs done after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn max_seq(path: &std::path::Path) -> anyhow::Result<i64> {
    Ok(open_db(path)?.query_row("SELECT coalesce(max(seq), 0) FROM jobs", [], |r| r.get(0))?)
}

/// p50 and p99 of `finished_at - created_at` (ms) for jobs after `from_seq`, and their count.
pub fn phase_stats(path: &std::path::Path, from_seq: i64) -> anyhow::Result<(i64, i64, usize)> {
    let conn = open_db(path)?;
    let mut stmt =
        conn.prepare("SELECT finished_at - created_at FROM jobs WHERE seq > ?1 ORDER BY 1")?;
    let values: Vec<i64> = stmt
        .query_map([from_seq], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let pick = |q: f64| {
        values
            .get(((values.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok((pick(0.5), pick(0.99), values.len()))
}

/// Removes a run's data folder, or keeps it when `EASEL_BENCH_KEEP` is set. Keeping matters
/// between runs on ext4 without a journal: for a few minutes after tens of thousands of files
/// are deleted, creating files there is several times slower, and the next run measures that.
pub fn remove_or_keep(dir: &std::path::Path) {
    if std::env::var_os("EASEL_BENCH_KEEP").is_some() {
        println!("data kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Easel on the embedded default, tuned as the benchmark asks: the local renderer at
/// 0 ms and 8 px, and no global limit in the way.
pub async fn bench_config(
    dir: &std::path::Path,
) -> anyhow::Result<(Config, tokio::net::TcpListener)> {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.server.host = "127.0.0.1".into();
    config.worker.concurrency = 256;
    config.worker.poll_ms = 50;
    // The origin's global defaults (1000 RPM) would be the bottleneck, not Easel.
    config.limits.global_rpm = 1_000_000_000;
    config.limits.global_concurrency = 100_000;
    config.providers.local.draft_size = 8;
    config.providers.local.final_size = 8;
    config.providers.local.delay_ms = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    config.server.port = listener.local_addr()?.port();
    Ok((config, listener))
}

/// Submits `jobs` jobs over `connections` concurrent senders; the ids of those accepted.
pub async fn submit_all(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    jobs: u64,
    connections: u64,
) -> Vec<String> {
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (http, base, key, next) = (http.clone(), base.to_owned(), key.to_owned(), next.clone());
        senders.spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < jobs {
                ids.extend(submit(&http, &base, &key).await);
            }
            ids
        });
    }
    let mut accepted = Vec::with_capacity(jobs as usize);
    while let Some(ids) = senders.join_next().await {
        accepted.extend(ids.unwrap_or_default());
    }
    accepted
}

/// Easel with every role, serving on `listener`, in this process.
pub struct RunningServer {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Starts the server and gives it 300 ms to come up before the load does.
    pub async fn start(app: &easel::app::App, listener: tokio::net::TcpListener) -> RunningServer {
        RunningServer::start_with(app, listener, easel::server::Roles::ALL).await
    }

    /// As [`RunningServer::start`], with only these roles.
    pub async fn start_with(
        app: &easel::app::App,
        listener: tokio::net::TcpListener,
        roles: easel::server::Roles,
    ) -> RunningServer {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(easel::server::run(
            app.clone(),
            roles,
            Some(listener),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        RunningServer { stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// `easel serve` in a child process (the `easel` binary beside this one), for figures that
/// must be the server's alone (its RSS); killed when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    pub base: String,
    _data_dir: std::path::PathBuf,
}

impl ServerProcess {
    /// Starts it on a free loopback port with a fresh data folder and `env` (`EASEL_...`
    /// settings), and waits until `/health` answers.
    pub async fn start(env: &[(&str, &str)]) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe()?.with_file_name("easel");
        anyhow::ensure!(
            exe.exists(),
            "{} not built (cargo build --release)",
            exe.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data_dir = tempfile_dir()?;
        let child = std::process::Command::new(exe)
            .args(["--data-dir", &data_dir.to_string_lossy(), "serve"])
            .args(["--port", &port.to_string()])
            .env("EASEL_SERVER__HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let server = ServerProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _data_dir: data_dir,
        };
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http
                .get(format!("{}/health", server.base))
                .send()
                .await
                .is_ok()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("easel serve did not answer /health in 10 s")
    }

    /// The server's resident set, in KiB.
    pub fn rss_kb(&self) -> u64 {
        rss_kb_of(&self.child.id().to_string())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
/// `[--seconds S] [--connections C] [--database-url URL]` of the load modes.
pub struct LoadArgs {
    pub seconds: u64,
    pub connections: u64,
    pub database_url: Option<String>,
}

impl LoadArgs {
    /// Parses the arguments; exits with `usage` on a bad one.
    pub fn parse(raw: &[String], usage: &str) -> LoadArgs {
        let mut args = LoadArgs {
            seconds: 5,
            connections: 64,
            database_url: None,
        };
        for pair in raw.chunks(2) {
            let value = pair.get(1).cloned();
            match (pair[0].as_str(), value) {
                ("--seconds", Some(v)) if v.parse::<u64>().is_ok() => {
                    args.seconds = v.parse().unwrap_or(5)
                }
                ("--connections", Some(v)) if v.parse::<u64>().is_ok() => {
                    args.connections = v.parse().unwrap_or(64)
                }
                ("--database-url", Some(v)) => args.database_url = Some(v),
                _ => {
                    eprintln!("usage: {usage}");
                    std::process::exit(2);
                }
            }
        }
        args
    }
}

/// The database of a load run: SQLite in the data folder, or with `--database-url` a fresh
/// database on that PostgreSQL server, dropped by [`RunDatabase::drop`].
pub struct RunDatabase {
    /// The server's URL and the database's name.
    pg: Option<(String, String)>,
}

impl RunDatabase {
    /// Points `config` at the run's database.
    pub async fn configure(config: &mut Config, args: &LoadArgs) -> anyhow::Result<RunDatabase> {
        let Some(url) = &args.database_url else {
            return Ok(RunDatabase { pg: None });
        };
        let (db_url, name) = fresh_pg_database(url).await?;
        config.database.url = Some(db_url);
        config.database.max_connections = args.connections as u32;
        Ok(RunDatabase {
            pg: Some((url.clone(), name)),
        })
    }

    pub fn engine(&self) -> &'static str {
        if self.pg.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Brings the planner's statistics up to date after a bulk load (PostgreSQL's
    /// autovacuum would, some time later); nothing on SQLite.
    pub async fn analyze(&self, config: &Config) -> anyhow::Result<()> {
        use sqlx::Connection;
        if let (Some(_), Some(url)) = (&self.pg, &config.database.url) {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
        }
        Ok(())
    }

    pub async fn drop(self) {
        if let Some((url, name)) = self.pg {
            drop_pg_database(&url, &name).await;
        }
    }
}

/// A database of its own on the PostgreSQL server of `url`; its URL, and the name to drop.
async fn fresh_pg_database(url: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let name = format!(
        "easel_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let mut parsed = url::Url::parse(url)?;
    parsed.set_path(&format!("/{name}"));
    Ok((parsed.to_string(), name))
}

async fn drop_pg_database(url: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
            eprintln!("could not drop {name}: {e}");
        }
    }
}

/// Successful requests per second over `connections` senders for `duration`: sender `i`
/// sends `request(i)` again and again; it says whether the request succeeded.
pub async fn rate<F, Fut>(connections: u64, duration: Duration, request: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..connections {
        let (request, accepted) = (request.clone(), accepted.clone());
        senders.spawn(async move {
            while Instant::now() < deadline {
                if request(i).await {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while senders.join_next().await.is_some() {}
    accepted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Accepted plain submits per second of the tenant with `key` (see [`rate`]).
pub async fn submit_rate(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    connections: u64,
    duration: Duration,
) -> f64 {
    let (http, base, key) = (http.clone(), base.to_owned(), key.to_owned());
    rate(connections, duration, move |_| {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        async move { submit(&http, &base, &key).await.is_some() }
    })
    .await
}
