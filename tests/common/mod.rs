//! Shared test harness: a real Easel (API + worker) on 127.0.0.1:0 with a fresh data folder.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use easel::app::{create_tenant, App};
use easel::config::Config;
use easel::server::{self, Roles};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub mod images;

/// A child process (an `easel serve --role worker`, say) killed and reaped when the test
/// ends, however it ends, so none outlives its test.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `easel serve --role worker` on the data folder `dir` (its log in `dir/<log>`), with the
/// environment cleared but for `PATH`, `HOME` and `envs`, so no developer setting leaks in.
pub fn spawn_worker_process(dir: &std::path::Path, log: &str, envs: &[(&str, &str)]) -> ChildGuard {
    let log = std::fs::File::create(dir.join(log)).expect("log file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(["serve", "--role", "worker", "--data-dir"])
        .arg(dir)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn easel serve --role worker");
    ChildGuard(child)
}

pub struct TestApp {
    pub base: String,
    pub api_key: String,
    pub tenant_id: String,
    pub app: App,
    pub http: reqwest::Client,
    pub stop: CancellationToken,
    pub handle: tokio::task::JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

/// A config for tests: temp data folder, tiny images, fast polling.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.server.host = "127.0.0.1".into();
    config.worker.poll_ms = 50;
    // Tests drive many jobs quickly; the global limits are tested on their own.
    config.limits.global_rpm = 10_000_000;
    config.worker.maintenance_ms = 100;
    config.worker.retry_base_ms = 10;
    config.worker.retry_max_ms = 100;
    config.providers.local.draft_size = 16;
    config.providers.local.final_size = 32;
    config
}

/// The S3-compatible server of the test run, from `EASEL_TEST_S3_URL` (its endpoint, e.g.
/// `http://127.0.0.1:8014`), `EASEL_TEST_S3_BUCKET` (default `easel-test`, which must
/// exist), `EASEL_TEST_S3_ACCESS_KEY_ID`, `EASEL_TEST_S3_SECRET_ACCESS_KEY`, and optionally
/// `EASEL_TEST_S3_REGION` and `EASEL_TEST_S3_PATH_STYLE` (default `true`). `None` when
/// `EASEL_TEST_S3_URL` is unset: S3 tests then print a skip note.
pub fn test_s3_settings() -> Option<easel::storage::S3Settings> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let endpoint = var("EASEL_TEST_S3_URL")?;
    Some(easel::storage::S3Settings {
        allow_http: endpoint.starts_with("http://"),
        endpoint: Some(endpoint),
        bucket: Some(var("EASEL_TEST_S3_BUCKET").unwrap_or_else(|| "easel-test".into())),
        region: var("EASEL_TEST_S3_REGION"),
        access_key_id: var("EASEL_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: var("EASEL_TEST_S3_SECRET_ACCESS_KEY")
            .map(easel::base::secret::Secret::new),
        path_style: var("EASEL_TEST_S3_PATH_STYLE").is_none_or(|v| v != "false"),
        ..Default::default()
    })
}

/// Stores images in the test S3 bucket (see [`test_s3_settings`]).
pub fn use_s3(config: &mut Config, s3: easel::storage::S3Settings) {
    config.storage.kind = easel::storage::StorageKind::S3;
    config.storage.s3 = s3;
}

/// The HTTP API alone: jobs stay where they are until a test starts a worker.
pub const API_ONLY: Roles = Roles {
    api: true,
    worker: false,
};

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}, Roles::ALL).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config), roles: Roles) -> TestApp {
    spawn_app_built(tweak, |_| {}, roles).await
}

/// As [`spawn_app_with`], and `customize` changes the built `App` (its providers, say) before
/// it serves.
pub async fn spawn_app_built(
    tweak: impl FnOnce(&mut Config),
    customize: impl FnOnce(&mut App),
    roles: Roles,
) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    config.server.port = addr.port();
    tweak(&mut config);
    let mut app = App::build(config).await.expect("build app");
    customize(&mut app);
    let created = create_tenant(app.store.as_ref(), "test", 1_000_000, 50, None)
        .await
        .expect("tenant");
    let stop = CancellationToken::new();
    let handle = tokio::spawn(server::run(
        app.clone(),
        roles,
        Some(listener),
        stop.clone(),
    ));
    TestApp {
        base: format!("http://{addr}"),
        api_key: created.api_key,
        tenant_id: created.tenant.id,
        app,
        http: reqwest::Client::new(),
        stop,
        handle,
        dir,
    }
}

impl TestApp {
    /// Another tenant on the same server: (tenant id, API key).
    pub async fn new_tenant(&self, name: &str, rpm: u32, concurrency: u32) -> (String, String) {
        let created = create_tenant(self.app.store.as_ref(), name, rpm, concurrency, None)
            .await
            .expect("tenant");
        (created.tenant.id, created.api_key)
    }

    /// Registers an upstream Gemini key and reloads the pool so workers use it at once.
    pub async fn add_gemini_key(&self, key: &str, rpm: u32, concurrency: u32) {
        self.add_key("gemini", key, None, rpm, concurrency).await;
    }

    /// Registers an upstream key of `provider` (at `endpoint`, else the provider's default)
    /// and reloads the pool.
    pub async fn add_key(
        &self,
        provider: &str,
        key: &str,
        endpoint: Option<&str>,
        rpm: u32,
        concurrency: u32,
    ) {
        let spec = easel::keypool::ProviderKeySpec {
            provider: provider.into(),
            key: key.into(),
            rpm,
            concurrency,
            endpoint: endpoint.map(str::to_owned),
            priority: 0,
            project: None,
        };
        easel::keypool::add_provider_key(self.app.store.as_ref(), &self.app.sealer, spec)
            .await
            .expect("add key");
        self.app.keys.load().await.expect("reload keys");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST /v1/images/generate with this app's key.
    pub async fn submit(&self, body: Value) -> reqwest::Response {
        self.submit_as(&self.api_key, body, None).await
    }

    pub async fn submit_as(
        &self,
        key: &str,
        body: Value,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/v1/images/generate"))
            .bearer_auth(key)
            .json(&body);
        if let Some(k) = idempotency_key {
            request = request.header("Idempotency-Key", k);
        }
        request.send().await.expect("send")
    }

    /// GET `path` with this app's tenant key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .expect("send")
    }

    pub async fn get_job(&self, key: &str, job_id: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/v1/jobs/{job_id}")))
            .bearer_auth(key)
            .send()
            .await
            .expect("send")
    }

    /// POST `path` with the admin token `token`; the JSON answer.
    pub async fn admin_post(&self, token: &str, path: &str) -> Value {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    }

    /// Polls the job until its status is one of `wanted`; panics after `timeout`.
    pub async fn wait_for(&self, job_id: &str, wanted: &[&str], timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let job: Value = self
                .get_job(&self.api_key, job_id)
                .await
                .json()
                .await
                .expect("json");
            if wanted.contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(
                started.elapsed() < timeout,
                "job {job_id} still {} after {timeout:?}",
                job["status"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a worker (with its maintenance pass) on this app's store, as a second process
    /// would; it stops when the returned token fires or the app shuts down.
    pub fn start_worker(&self) -> CancellationToken {
        let stop = self.stop.child_token();
        let worker = Roles {
            api: false,
            worker: true,
        };
        tokio::spawn(server::run(self.app.clone(), worker, None, stop.clone()));
        stop
    }

    /// The statuses of a job's audit trail, in order.
    pub async fn event_statuses(&self, job_id: &str) -> Vec<String> {
        self.app
            .store
            .job_events(job_id)
            .await
            .expect("events")
            .iter()
            .map(|e| e.status.as_str().to_owned())
            .collect()
    }

    /// Runs the `easel` command line on this app's data folder (another process, the same
    /// database).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_easel"))
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .output()
            .expect("run easel")
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

/// A response header as text (`""` when absent).
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Asserts an error response of the contract: this status, `{"error": code, "message": ...}`
/// as JSON with exactly those two fields and a non-empty message, which it returns.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> String {
    let got = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "status for body {text}");
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?} for body {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let object = body.as_object().expect("error body is an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "message"], "{body}");
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().expect("message is a string");
    assert!(!message.trim().is_empty(), "empty message: {body}");
    message.to_owned()
}

/// Asserts an RFC 3339 UTC timestamp with milliseconds (`2026-01-26T09:36:16.288Z`) and
/// returns it as Unix milliseconds.
pub fn timestamp_millis(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {value}"));
    const SHAPE: &[u8] = b"0000-00-00T00:00:00.000Z";
    let shaped = text.len() == SHAPE.len()
        && text.bytes().zip(SHAPE).all(|(c, &s)| match s {
            b'0' => c.is_ascii_digit(),
            _ => c == s,
        });
    assert!(shaped, "timestamp {text:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("timestamp {text:?}: {e}"))
        .timestamp_millis()
}

/// The sorted field names of a JSON object.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort_unstable();
    keys
}
