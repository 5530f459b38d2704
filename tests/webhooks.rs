//! Webhooks end to end, against a real receiver (axum on 127.0.0.1:0, allow-listed): one
//! successful delivery per terminal job, both signatures checked by an independent
//! implementation (the `standardwebhooks` package from PyPI, run with python3), outages,
//! 410, `Retry-After`, slow receivers, replay, secret rotation, per-job URLs and redirects.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use common::TestApp;
use easel::config::Config;
use easel::server::Roles;
use serde_json::{json, Value};

// ---- the receiver ----

/// How the receiver answers on one path.
#[derive(Clone, Default)]
struct Behaviour {
    /// Answered for the first `times` requests (all of them if `None`); 200 afterwards.
    status: u16,
    times: Option<usize>,
    retry_after: Option<String>,
    location: Option<String>,
    delay: Duration,
}

#[derive(Clone, Debug)]
struct Receipt {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
    answered: u16,
}

impl Receipt {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    fn event_id(&self) -> String {
        self.json()["eventId"].as_str().expect("eventId").to_owned()
    }
}

#[derive(Default)]
struct ReceiverState {
    receipts: Mutex<Vec<Receipt>>,
    behaviours: Mutex<HashMap<String, Behaviour>>,
    seen: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

#[derive(Clone)]
struct Receiver {
    base: String,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return StatusCode::NOT_FOUND.into_response();
    }
    let at = Instant::now();
    let path = uri.path().to_owned();
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let behaviour = state
        .behaviours
        .lock()
        .expect("lock")
        .get(&path)
        .cloned()
        .unwrap_or_default();
    let n = {
        let mut seen = state.seen.lock().expect("lock");
        let n = seen.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    tokio::time::sleep(behaviour.delay).await;
    let status = if behaviour.status != 0 && behaviour.times.is_none_or(|t| n <= t) {
        behaviour.status
    } else {
        200
    };
    state.receipts.lock().expect("lock").push(Receipt {
        path,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        at,
        answered: status,
    });
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = StatusCode::from_u16(status)
        .expect("status")
        .into_response();
    if status != 200 {
        if let Some(ra) = &behaviour.retry_after {
            response
                .headers_mut()
                .insert("retry-after", ra.parse().expect("header"));
        }
        if let Some(location) = &behaviour.location {
            response
                .headers_mut()
                .insert("location", location.parse().expect("header"));
        }
    }
    response
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Receiver::start_on(listener)
    }

    fn start_on(listener: tokio::net::TcpListener) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            base: format!("http://{addr}"),
            state,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn on(&self, path: &str, behaviour: Behaviour) {
        self.state
            .behaviours
            .lock()
            .expect("lock")
            .insert(path.to_owned(), behaviour);
    }

    fn receipts(&self) -> Vec<Receipt> {
        self.state.receipts.lock().expect("lock").clone()
    }

    fn on_path(&self, path: &str) -> Vec<Receipt> {
        self.receipts()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// eventId -> number of 2xx answers.
    fn successes(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for r in self.receipts() {
            if (200..300).contains(&r.answered) {
                *out.entry(r.event_id()).or_default() += 1;
            }
        }
        out
    }
}

// ---- the independent verifier ----

/// Installs the `standardwebhooks` package from PyPI once per test run. A failed install
/// fails the test: the signatures must be checked by an implementation that is not ours.
fn standardwebhooks_installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "standardwebhooks",
            ])
            .output()
            .expect("python3 must be installed to verify webhook signatures");
        assert!(
            out.status.success(),
            "pip install standardwebhooks failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

const VERIFY_PY: &str = r#"
import base64, hashlib, hmac, json, sys
from standardwebhooks import Webhook

out = []
for case in json.load(sys.stdin):
    body = base64.b64decode(case["body"])
    headers = case["headers"]
    try:
        Webhook(case["secret"]).verify(body, headers)
        standard = True
    except Exception:
        standard = False
    expected = "sha256=" + hmac.new(case["secret"].encode(), body, hashlib.sha256).hexdigest()
    origin = hmac.compare_digest(expected, headers.get("x-signature", ""))
    out.append({"standard": standard, "origin": origin})
print(json.dumps(out))
"#;

/// For each (secret, receipt): does `webhook-signature` verify with `standardwebhooks`, and
/// does `X-Signature` equal `sha256=` + hex HMAC-SHA256 of the body keyed with the secret?
fn verify(cases: &[(&str, &Receipt)]) -> Vec<(bool, bool)> {
    standardwebhooks_installed();
    let input: Vec<Value> = cases
        .iter()
        .map(|(secret, r)| {
            json!({
                "secret": secret,
                "body": base64::engine::general_purpose::STANDARD.encode(&r.body),
                "headers": r.headers,
            })
        })
        .collect();
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(VERIFY_PY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(serde_json::to_string(&input).expect("json").as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "verifier failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("verifier output");
    results
        .iter()
        .map(|r| {
            (
                r["standard"].as_bool().expect("bool"),
                r["origin"].as_bool().expect("bool"),
            )
        })
        .collect()
}

// ---- Easel ----

/// Webhooks and input images may reach loopback; retries are quick.
fn hooks_config(c: &mut Config) {
    c.webhooks.allow_networks = vec!["127.0.0.0/8".into()];
    c.inputs.allow_networks = vec!["127.0.0.0/8".into()];
    c.webhooks.poll_ms = 20;
    c.webhooks.timeout_secs = 5;
    c.webhooks.retry_schedule_secs = vec![0.2; 9];
}

async fn hooks_app(tweak: impl FnOnce(&mut Config), roles: Roles) -> TestApp {
    common::spawn_app_with(
        |c| {
            hooks_config(c);
            tweak(c);
        },
        roles,
    )
    .await
}

async fn put_webhook(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.http
        .put(app.url("/v1/webhook"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("send")
}

/// Sets the tenant's endpoint and returns the secret (shown once, on creation).
async fn create_endpoint(app: &TestApp, key: &str, url: Option<&str>, events: &str) -> String {
    let response = put_webhook(app, key, json!({"url": url, "events": events})).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    let secret = body["secret"]
        .as_str()
        .expect("secret on creation")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    secret
}

async fn submit(app: &TestApp, key: &str, body: Value) -> String {
    let response = app.submit_as(key, body, None).await;
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    response.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("jobId")
        .to_owned()
}

async fn get_json(app: &TestApp, key: &str, path: &str) -> Value {
    let response = app
        .http
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("json")
}

async fn job_deliveries(app: &TestApp, key: &str, job_id: &str) -> Vec<Value> {
    get_json(app, key, &format!("/v1/jobs/{job_id}/webhooks")).await["items"]
        .as_array()
        .expect("items")
        .clone()
}

async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until every job's deliveries are in one of `states`.
async fn deliveries_settle(app: &TestApp, key: &str, jobs: &[String], states: &[&str]) {
    eventually("deliveries to settle", Duration::from_secs(20), || async {
        for job in jobs {
            let d = job_deliveries(app, key, job).await;
            if d.is_empty()
                || !d
                    .iter()
                    .all(|d| states.contains(&d["status"].as_str().unwrap_or("")))
            {
                return false;
            }
        }
        true
    })
    .await;
}

const CONTRACT_FIELDS: [&str; 7] = [
    "error",
    "eventId",
    "jobId",
    "resultUrls",
    "status",
    "tenantId",
    "timestamp",
];

// ---- the scenarios ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_terminal_job_delivers_one_webhook_that_verifies_independently() {
    let receiver = Receiver::start().await;
    let app = hooks_app(|_| {}, common::API_ONLY).await;
    let key = app.api_key.clone();
    // Nothing configured yet.
    common::expect_error(
        app.http
            .get(app.url("/v1/webhook"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("send"),
        404,
        "NOT_FOUND",
    )
    .await;
    let secret = create_endpoint(&app, &key, Some(&receiver.url("/hook")), "terminal").await;
    // Afterwards the secret is never shown again, only its fingerprint.
    let shown = get_json(&app, &key, "/v1/webhook").await;
    assert!(shown.get("secret").is_none(), "{shown}");
    assert_eq!(shown["url"], receiver.url("/hook"));
    assert_eq!(
        (shown["events"].as_str(), shown["enabled"].as_bool()),
        (Some("terminal"), Some(true))
    );
    assert_eq!(
        shown["secretFingerprint"].as_str(),
        Some(easel::base::secret::fingerprint(&secret).as_str())
    );
    let again = put_webhook(&app, &key, json!({"url": receiver.url("/hook")})).await;
    assert_eq!(again.status(), 200);
    assert!(again
        .json::<Value>()
        .await
        .expect("json")
        .get("secret")
        .is_none());

    // Succeeded, failed (404 input image) and canceled jobs; canceled ones before any worker.
    let mut jobs: Vec<String> = Vec::new();
    for i in 0..6 {
        jobs.push(
            submit(
                &app,
                &key,
                json!({"prompt": format!("a fox {i}"), "mode": "draft"}),
            )
            .await,
        );
    }
    let failing = submit(
        &app,
        &key,
        json!({"prompt": "edit", "inputImageUrl": receiver.url("/missing.png")}),
    )
    .await;
    jobs.push(failing.clone());
    let mut canceled = Vec::new();
    for _ in 0..2 {
        let id = submit(&app, &key, json!({"prompt": "never mind"})).await;
        let r = app
            .http
            .delete(app.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .expect("cancel");
        assert_eq!(r.status(), 200);
        canceled.push(id.clone());
        jobs.push(id);
    }
    app.start_worker();
    let mut finals: HashMap<String, Value> = HashMap::new();
    for job in &jobs {
        let view = app
            .wait_for(
                job,
                &["SUCCEEDED", "FAILED", "CANCELED"],
                Duration::from_secs(20),
            )
            .await;
        finals.insert(job.clone(), view);
    }
    assert_eq!(finals[&failing]["status"], "FAILED");
    deliveries_settle(&app, &key, &jobs, &["succeeded"]).await;

    // Exactly one successful delivery per job, each with its own eventId.
    let receipts = receiver.on_path("/hook");
    assert_eq!(receipts.len(), jobs.len(), "no retries were needed");
    let successes = receiver.successes();
    assert_eq!(successes.len(), jobs.len());
    assert!(successes.values().all(|n| *n == 1), "{successes:?}");
    let mut by_job: HashMap<String, &Receipt> = HashMap::new();
    for r in &receipts {
        let body = r.json();
        assert_eq!(common::keys(&body), CONTRACT_FIELDS, "{body}");
        let job_id = body["jobId"].as_str().expect("jobId").to_owned();
        assert!(
            by_job.insert(job_id, r).is_none(),
            "two deliveries for one job"
        );
    }
    for (job_id, r) in &by_job {
        let body = r.json();
        let view = &finals[job_id];
        assert_eq!(body["status"], view["status"]);
        assert_eq!(body["tenantId"], app.tenant_id.as_str());
        assert_eq!(body["error"], view["error"], "{body}");
        assert!(body["timestamp"].is_i64(), "{body}");
        let at = body["timestamp"].as_i64().expect("ms");
        if let Some(finished) = view["finishedAt"].as_str() {
            assert_eq!(at, common::timestamp_millis(&json!(finished)));
        }
        let urls = body["resultUrls"].as_array().expect("resultUrls");
        assert_eq!(
            urls.len(),
            view["resultUrls"].as_array().expect("urls").len()
        );
        // Headers of the contract and of Standard Webhooks.
        let h = &r.headers;
        assert_eq!(h["content-type"], "application/json");
        assert!(h["user-agent"].starts_with("Easel-Webhooks/"), "{h:?}");
        assert_eq!(h["webhook-id"], body["eventId"].as_str().expect("id"));
        assert!(h["webhook-id"].starts_with("evt_"));
        let ts: i64 = h["webhook-timestamp"].parse().expect("seconds");
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 60, "{ts}");
        assert!(h["webhook-signature"].starts_with("v1,"));
        assert!(h["x-signature"].starts_with("sha256="));
    }
    assert_eq!(
        by_job[&failing].json()["error"],
        "the input image URL answered HTTP 404"
    );
    for id in &canceled {
        assert_eq!(by_job[id].json()["status"], "CANCELED");
    }
    // A result link in a webhook works.
    let succeeded = by_job
        .values()
        .find(|r| r.json()["status"] == "SUCCEEDED")
        .expect("a success");
    let link = succeeded.json()["resultUrls"][0]
        .as_str()
        .expect("url")
        .to_owned();
    let image = app.http.get(&link).send().await.expect("fetch");
    assert_eq!(image.status(), 200);
    assert!(image.bytes().await.expect("bytes").starts_with(b"\x89PNG"));

    // Both signatures verify with an implementation that is not Easel's.
    let cases: Vec<(&str, &Receipt)> = receipts.iter().map(|r| (secret.as_str(), r)).collect();
    for (i, (standard, origin)) in verify(&cases).into_iter().enumerate() {
        assert!(standard, "webhook-signature of receipt {i} does not verify");
        assert!(origin, "X-Signature of receipt {i} does not verify");
    }
    // And they are not just accepted by anything: another secret fails both.
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert_eq!(verify(&[(other, &receipts[0])]), vec![(false, false)]);

    // The delivery logs.
    let d = job_deliveries(&app, &key, &jobs[0]).await;
    assert_eq!(d.len(), 1);
    let d = &d[0];
    assert_eq!(d["id"], by_job[&jobs[0]].event_id().as_str());
    assert_eq!(
        (d["status"].as_str(), d["jobStatus"].as_str()),
        (Some("succeeded"), Some("SUCCEEDED"))
    );
    assert_eq!(
        (d["attempts"].as_u64(), d["lastStatusCode"].as_u64()),
        (Some(1), Some(200))
    );
    assert!(
        d["lastLatencyMs"].is_u64() && d["lastError"].is_null(),
        "{d}"
    );
    assert_eq!(d["url"], receiver.url("/hook"));
    common::timestamp_millis(&d["deliveredAt"]);
    let all = get_json(&app, &key, "/v1/webhooks/deliveries?limit=100").await;
    assert_eq!(all["items"].as_array().expect("items").len(), jobs.len());
    let page = get_json(
        &app,
        &key,
        "/v1/webhooks/deliveries?limit=4&status=succeeded",
    )
    .await;
    assert_eq!(page["items"].as_array().expect("items").len(), 4);
    assert_eq!(page["hasMore"], true);
    let cursor = page["nextCursor"].as_str().expect("cursor");
    let rest = get_json(
        &app,
        &key,
        &format!("/v1/webhooks/deliveries?limit=100&cursor={cursor}"),
    )
    .await;
    assert_eq!(
        rest["items"].as_array().expect("items").len(),
        jobs.len() - 4
    );
    let none = get_json(&app, &key, "/v1/webhooks/deliveries?status=failed").await;
    assert!(none["items"].as_array().expect("items").is_empty());
    for bad in ["status=done", "limit=0", "cursor=zzz"] {
        let r = app
            .http
            .get(app.url(&format!("/v1/webhooks/deliveries?{bad}")))
            .bearer_auth(&key)
            .send()
            .await
            .expect("send");
        common::expect_error(r, 400, "INVALID_REQUEST").await;
    }
    // Another tenant sees none of it.
    let (_, other_key) = app.new_tenant("other", 600, 5).await;
    let theirs = get_json(&app, &other_key, "/v1/webhooks/deliveries").await;
    assert!(theirs["items"].as_array().expect("items").is_empty());
    let r = app
        .http
        .get(app.url(&format!("/v1/jobs/{}/webhooks", jobs[0])))
        .bearer_auth(&other_key)
        .send()
        .await
        .expect("send");
    common::expect_error(r, 404, "JOB_NOT_FOUND").await;
    let r = app
        .http
        .get(app.url("/v1/webhooks/deliveries"))
        .send()
        .await
        .expect("send");
    common::expect_error(r, 401, "INVALID_API_KEY").await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_gets_everything_once_it_is_back() {
    // Part 1: nobody listens on the port yet (connection refused).
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = reserved.local_addr().expect("addr");
    drop(reserved);
    // Quick first retries, then longer ones: the receiver is back well before the last.
    let app = hooks_app(
        |c| c.webhooks.retry_schedule_secs = vec![0.2, 0.2, 0.5, 1.0, 1.0, 2.0, 2.0, 5.0, 5.0],
        Roles::ALL,
    )
    .await;
    let key = app.api_key.clone();
    create_endpoint(&app, &key, Some(&format!("http://{addr}/hook")), "terminal").await;
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.push(
            submit(
                &app,
                &key,
                json!({"prompt": format!("down {i}"), "mode": "draft"}),
            )
            .await,
        );
    }
    for job in &jobs {
        app.wait_for(job, &["SUCCEEDED"], Duration::from_secs(10))
            .await;
    }
    eventually(
        "failed attempts while down",
        Duration::from_secs(10),
        || async {
            let d = job_deliveries(&app, &key, &jobs[0]).await;
            d.first().and_then(|d| d["attempts"].as_u64()).unwrap_or(0) >= 2
        },
    )
    .await;
    let d = &job_deliveries(&app, &key, &jobs[0]).await[0];
    assert!(
        ["pending", "delivering"].contains(&d["status"].as_str().unwrap_or("")),
        "{d}"
    );
    assert!(d["lastStatusCode"].is_null());
    assert_eq!(d["lastError"], "could not connect to the receiver");
    // It comes back on the same port.
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let receiver = Receiver::start_on(listener);
    deliveries_settle(&app, &key, &jobs, &["succeeded"]).await;
    let successes = receiver.successes();
    assert_eq!(successes.len(), jobs.len());
    assert!(successes.values().all(|n| *n == 1), "{successes:?}");

    // Part 2: the receiver answers 503 for a while.
    let path = "/flaky";
    receiver.on(
        path,
        Behaviour {
            status: 503,
            times: Some(6),
            ..Behaviour::default()
        },
    );
    put_webhook(&app, &key, json!({"url": format!("http://{addr}{path}")})).await;
    let mut more = Vec::new();
    for i in 0..3 {
        more.push(
            submit(
                &app,
                &key,
                json!({"prompt": format!("flaky {i}"), "mode": "draft"}),
            )
            .await,
        );
    }
    deliveries_settle(&app, &key, &more, &["succeeded"]).await;
    let receipts = receiver.on_path(path);
    assert!(receipts.len() >= 6 + more.len(), "{}", receipts.len());
    let mut ok_per_event: HashMap<String, usize> = HashMap::new();
    let mut events = HashSet::new();
    for r in &receipts {
        events.insert(r.event_id());
        assert_eq!(
            r.headers["webhook-id"],
            r.event_id(),
            "a retry keeps its id"
        );
        if r.answered == 200 {
            *ok_per_event.entry(r.event_id()).or_default() += 1;
        }
    }
    // Duplicates are retries of the same events only; each ends with one success.
    assert_eq!(events.len(), more.len());
    assert!(ok_per_event.values().all(|n| *n == 1) && ok_per_event.len() == more.len());
    let retried = job_deliveries(&app, &key, &more[0]).await;
    assert!(retried[0]["attempts"].as_u64().expect("attempts") >= 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_and_retry_after_is_honoured() {
    let receiver = Receiver::start().await;
    let app = hooks_app(|_| {}, Roles::ALL).await;
    let key = app.api_key.clone();
    // Retry-After: 2 on the first answer, then 200.
    receiver.on(
        "/busy",
        Behaviour {
            status: 429,
            times: Some(1),
            retry_after: Some("2".into()),
            ..Behaviour::default()
        },
    );
    create_endpoint(&app, &key, Some(&receiver.url("/busy")), "terminal").await;
    let job = submit(&app, &key, json!({"prompt": "patience", "mode": "draft"})).await;
    deliveries_settle(&app, &key, std::slice::from_ref(&job), &["succeeded"]).await;
    let receipts = receiver.on_path("/busy");
    assert_eq!(receipts.len(), 2);
    assert_eq!((receipts[0].answered, receipts[1].answered), (429, 200));
    let gap = receipts[1].at - receipts[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, not 2 s"
    );
    let d = &job_deliveries(&app, &key, &job).await[0];
    assert_eq!(d["attempts"], 2);

    // 410 Gone: this delivery and the endpoint are disabled; nothing more is sent to it.
    receiver.on(
        "/gone",
        Behaviour {
            status: 410,
            ..Behaviour::default()
        },
    );
    put_webhook(&app, &key, json!({"url": receiver.url("/gone")})).await;
    let first = submit(&app, &key, json!({"prompt": "gone 1", "mode": "draft"})).await;
    deliveries_settle(&app, &key, std::slice::from_ref(&first), &["disabled"]).await;
    let d = &job_deliveries(&app, &key, &first).await[0];
    assert_eq!(
        (d["lastStatusCode"].as_u64(), d["attempts"].as_u64()),
        (Some(410), Some(1))
    );
    let endpoint = get_json(&app, &key, "/v1/webhook").await;
    assert_eq!(endpoint["enabled"], false);
    assert!(endpoint["disabledReason"]
        .as_str()
        .expect("reason")
        .contains("410"));
    let later = submit(&app, &key, json!({"prompt": "gone 2", "mode": "draft"})).await;
    app.wait_for(&later, &["SUCCEEDED"], Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(job_deliveries(&app, &key, &later).await.is_empty());
    assert_eq!(receiver.on_path("/gone").len(), 1);
    // Setting the endpoint again enables it.
    put_webhook(&app, &key, json!({"url": receiver.url("/hook")})).await;
    assert_eq!(get_json(&app, &key, "/v1/webhook").await["enabled"], true);
    let back = submit(&app, &key, json!({"prompt": "back", "mode": "draft"})).await;
    deliveries_settle(&app, &key, std::slice::from_ref(&back), &["succeeded"]).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_slow_job_processing() {
    let receiver = Receiver::start().await;
    receiver.on(
        "/slow",
        Behaviour {
            delay: Duration::from_secs(2),
            ..Behaviour::default()
        },
    );
    let app = hooks_app(|c| c.webhooks.per_endpoint_concurrency = 3, Roles::ALL).await;
    let key = app.api_key.clone();
    create_endpoint(&app, &key, Some(&receiver.url("/slow")), "all").await;
    let started = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..10 {
        jobs.push(
            submit(
                &app,
                &key,
                json!({"prompt": format!("slow {i}"), "mode": "draft"}),
            )
            .await,
        );
    }
    for job in &jobs {
        let view = app
            .wait_for(job, &["SUCCEEDED"], Duration::from_secs(10))
            .await;
        let took = common::timestamp_millis(&view["finishedAt"])
            - common::timestamp_millis(&view["createdAt"]);
        assert!(
            took < 1500,
            "job {job} took {took} ms behind a slow receiver"
        );
    }
    let all_done = started.elapsed();
    // 30 deliveries (QUEUED, RUNNING, SUCCEEDED per job) at 3 at a time, 2 s each, are far from
    // done when every job has finished.
    assert!(all_done < Duration::from_secs(3), "{all_done:?}");
    assert!(
        receiver.receipts().len() < 30,
        "{}",
        receiver.receipts().len()
    );
    // The per-endpoint cap held.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(receiver.state.max_in_flight.load(Ordering::SeqCst) <= 3);
    assert!(receiver.state.max_in_flight.load(Ordering::SeqCst) >= 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_with_the_same_event_id() {
    let receiver = Receiver::start().await;
    let app = hooks_app(|_| {}, Roles::ALL).await;
    let key = app.api_key.clone();
    let secret = create_endpoint(&app, &key, Some(&receiver.url("/hook")), "terminal").await;
    let job = submit(&app, &key, json!({"prompt": "again", "mode": "draft"})).await;
    deliveries_settle(&app, &key, std::slice::from_ref(&job), &["succeeded"]).await;
    let id = job_deliveries(&app, &key, &job).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let replay = |who: String, id: String| {
        let app = &app;
        async move {
            app.http
                .post(app.url(&format!("/v1/webhooks/deliveries/{id}/replay")))
                .bearer_auth(who)
                .send()
                .await
                .expect("send")
        }
    };
    let r = replay(key.clone(), id.clone()).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        (body["id"].as_str(), body["status"].as_str()),
        (Some(id.as_str()), Some("pending"))
    );
    eventually("the replay", Duration::from_secs(10), || async {
        receiver.on_path("/hook").len() == 2
    })
    .await;
    let receipts = receiver.on_path("/hook");
    assert_eq!(receipts[0].event_id(), receipts[1].event_id());
    assert_eq!(receipts[1].headers["webhook-id"], id);
    let results = verify(&[
        (secret.as_str(), &receipts[0]),
        (secret.as_str(), &receipts[1]),
    ]);
    assert_eq!(results, vec![(true, true), (true, true)]);
    deliveries_settle(&app, &key, std::slice::from_ref(&job), &["succeeded"]).await;
    // Unknown ids and other tenants' ids are not found.
    common::expect_error(
        replay(key.clone(), "evt_nope".into()).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let (_, other_key) = app.new_tenant("other", 600, 5).await;
    common::expect_error(replay(other_key, id.clone()).await, 404, "NOT_FOUND").await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_old_one_during_the_overlap() {
    let receiver = Receiver::start().await;
    let app = hooks_app(|_| {}, Roles::ALL).await;
    let key = app.api_key.clone();
    let rotate = |body: Option<Value>| {
        let app = &app;
        let key = key.clone();
        async move {
            let mut request = app
                .http
                .post(app.url("/v1/webhook/rotate-secret"))
                .bearer_auth(key);
            if let Some(body) = body {
                request = request.json(&body);
            }
            request.send().await.expect("send")
        }
    };
    common::expect_error(rotate(None).await, 404, "NOT_FOUND").await;
    let old = create_endpoint(&app, &key, Some(&receiver.url("/hook")), "terminal").await;
    let r = rotate(None).await;
    assert_eq!(r.status(), 200);
    let rotated: Value = r.json().await.expect("json");
    let new = rotated["secret"].as_str().expect("new secret").to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let fp = easel::base::secret::fingerprint;
    assert_eq!(
        rotated["secretFingerprint"].as_str(),
        Some(fp(&new).as_str())
    );
    assert_eq!(
        rotated["previousSecretFingerprint"].as_str(),
        Some(fp(&old).as_str())
    );
    let until = common::timestamp_millis(&rotated["previousSecretExpiresAt"]);
    let expected = chrono::Utc::now().timestamp_millis() + 24 * 3600 * 1000;
    assert!((until - expected).abs() < 60_000, "default overlap is 24 h");

    let job = submit(&app, &key, json!({"prompt": "rotate", "mode": "draft"})).await;
    deliveries_settle(&app, &key, std::slice::from_ref(&job), &["succeeded"]).await;
    let r = &receiver.on_path("/hook")[0];
    assert_eq!(r.headers["webhook-signature"].split(' ').count(), 2);
    // Standard Webhooks: either secret verifies. X-Signature: the newest only.
    assert_eq!(
        verify(&[(new.as_str(), r), (old.as_str(), r)]),
        vec![(true, true), (true, false)]
    );

    // No overlap: the old secret stops signing at once.
    let r = rotate(Some(json!({"overlapSeconds": 0}))).await;
    assert_eq!(r.status(), 200);
    let newest = r.json::<Value>().await.expect("json")["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let job = submit(
        &app,
        &key,
        json!({"prompt": "rotate again", "mode": "draft"}),
    )
    .await;
    deliveries_settle(&app, &key, std::slice::from_ref(&job), &["succeeded"]).await;
    let r = &receiver.on_path("/hook")[1];
    assert_eq!(r.headers["webhook-signature"].split(' ').count(), 1);
    assert_eq!(
        verify(&[(newest.as_str(), r), (new.as_str(), r)]),
        vec![(true, true), (false, false)]
    );
    let shown = get_json(&app, &key, "/v1/webhook").await;
    assert!(shown["previousSecretFingerprint"].is_null(), "{shown}");
    common::expect_error(
        rotate(Some(json!({"overlapSeconds": -1}))).await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_webhook_url_overrides_the_tenant_url_and_is_checked() {
    let receiver = Receiver::start().await;
    let app = hooks_app(|_| {}, Roles::ALL).await;
    let key = app.api_key.clone();
    // Without a tenant secret a job URL cannot be signed: refused.
    let r = app
        .submit(json!({"prompt": "x", "webhookUrl": receiver.url("/job")}))
        .await;
    let message = common::expect_error(r, 400, "INVALID_REQUEST").await;
    assert!(message.contains("webhookUrl"), "{message}");
    // Only per-job URLs: no tenant URL.
    let secret = create_endpoint(&app, &key, None, "terminal").await;
    let plain = submit(&app, &key, json!({"prompt": "no hook", "mode": "draft"})).await;
    let own = submit(
        &app,
        &key,
        json!({"prompt": "own hook", "mode": "draft", "webhookUrl": receiver.url("/job")}),
    )
    .await;
    deliveries_settle(&app, &key, std::slice::from_ref(&own), &["succeeded"]).await;
    app.wait_for(&plain, &["SUCCEEDED"], Duration::from_secs(10))
        .await;
    assert!(job_deliveries(&app, &key, &plain).await.is_empty());
    // With a tenant URL, the job's own still wins.
    put_webhook(&app, &key, json!({"url": receiver.url("/tenant")})).await;
    let to_tenant = submit(&app, &key, json!({"prompt": "tenant", "mode": "draft"})).await;
    let to_job = submit(
        &app,
        &key,
        json!({"prompt": "job", "mode": "draft", "webhookUrl": receiver.url("/job")}),
    )
    .await;
    deliveries_settle(
        &app,
        &key,
        &[to_tenant.clone(), to_job.clone()],
        &["succeeded"],
    )
    .await;
    let at_job: Vec<String> = receiver
        .on_path("/job")
        .iter()
        .map(|r| r.json()["jobId"].as_str().expect("id").to_owned())
        .collect();
    let at_tenant: Vec<String> = receiver
        .on_path("/tenant")
        .iter()
        .map(|r| r.json()["jobId"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(at_job, vec![own.clone(), to_job.clone()]);
    assert_eq!(at_tenant, vec![to_tenant.clone()]);
    let job_receipt = &receiver.on_path("/job")[1];
    assert_eq!(
        verify(&[(secret.as_str(), job_receipt)]),
        vec![(true, true)]
    );
    // Forbidden and malformed targets are refused at submit and at PUT.
    for (url, needle) in [
        ("http://169.254.169.254/latest", "private"),
        ("http://10.1.2.3/hook", "private"),
        ("ftp://example.com/x", "http"),
        ("not a url", "URL"),
    ] {
        let r = app.submit(json!({"prompt": "x", "webhookUrl": url})).await;
        let message = common::expect_error(r, 400, "INVALID_REQUEST").await;
        assert!(
            message.contains("webhookUrl") && message.contains(needle),
            "{url}: {message}"
        );
        let r = put_webhook(&app, &key, json!({"url": url})).await;
        let message = common::expect_error(r, 400, "INVALID_REQUEST").await;
        assert!(message.starts_with("url"), "{url}: {message}");
    }
    for body in [
        json!({}),
        json!({"url": 3}),
        json!({"url": null, "events": "some"}),
    ] {
        let r = put_webhook(&app, &key, body).await;
        common::expect_error(r, 400, "INVALID_REQUEST").await;
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start().await;
    receiver.on(
        "/moved",
        Behaviour {
            status: 307,
            location: Some(receiver.url("/target")),
            ..Behaviour::default()
        },
    );
    let app = hooks_app(
        |c| c.webhooks.retry_schedule_secs = vec![0.1, 0.1],
        Roles::ALL,
    )
    .await;
    let key = app.api_key.clone();
    create_endpoint(&app, &key, Some(&receiver.url("/moved")), "terminal").await;
    let job = submit(&app, &key, json!({"prompt": "moved", "mode": "draft"})).await;
    deliveries_settle(&app, &key, std::slice::from_ref(&job), &["failed"]).await;
    let d = &job_deliveries(&app, &key, &job).await[0];
    assert_eq!(
        (d["attempts"].as_u64(), d["lastStatusCode"].as_u64()),
        (Some(3), Some(307))
    );
    assert!(
        d["lastError"].as_str().expect("error").contains("redirect"),
        "{d}"
    );
    assert_eq!(receiver.on_path("/moved").len(), 3);
    assert!(
        receiver.on_path("/target").is_empty(),
        "a redirect was followed"
    );
    app.shutdown().await;
}

#[test]
fn cli_prints_webhook_secrets_once_and_stores_them_sealed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_easel"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .current_dir(dir.path())
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("run easel");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let secret_on = |stdout: &str| -> String {
        let line = stdout
            .lines()
            .find(|l| l.contains("signing secret (shown once"))
            .unwrap_or_else(|| panic!("no secret line in:\n{stdout}"));
        line.split_whitespace()
            .find(|w| w.starts_with("whsec_"))
            .expect("whsec_ secret")
            .to_owned()
    };
    let (ok, out, err) = run(&[
        "create-tenant",
        "Hooked",
        "100",
        "10",
        "--webhook-url",
        "https://hooks.example.com/easel",
    ]);
    assert!(ok, "{out}{err}");
    let first = secret_on(&out);
    let tenant_id = out
        .split_whitespace()
        .find(|w| w.starts_with("(ten_"))
        .expect("tenant id")
        .trim_matches(['(', ')'])
        .to_owned();
    // Setting the URL again keeps the secret and does not print it.
    let (ok, out, err) = run(&[
        "set-webhook",
        &tenant_id,
        "https://hooks.example.com/v2",
        "--events",
        "all",
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("events=all") && !out.contains("whsec_"),
        "{out}"
    );
    let (ok, out, err) = run(&["rotate-webhook-secret", &tenant_id]);
    assert!(ok, "{out}{err}");
    let second = secret_on(&out);
    assert_ne!(first, second);
    // Refusals.
    let (ok, _, err) = run(&["set-webhook", &tenant_id, "http://127.0.0.1/x"]);
    assert!(!ok && err.contains("private"), "{err}");
    let (ok, _, err) = run(&["set-webhook", "ten_missing", "https://hooks.example.com/x"]);
    assert!(!ok && err.contains("no tenant"), "{err}");
    let (ok, _, err) = run(&["rotate-webhook-secret", "ten_missing"]);
    assert!(!ok && err.contains("no webhook"), "{err}");
    let (ok, _, err) = run(&["create-tenant", "Bad", "--webhook-url", "ftp://x/y"]);
    assert!(!ok && err.contains("refused"), "{err}");
    // Neither secret is anywhere in the data folder in clear.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).expect("read");
        for secret in [&first, &second] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a webhook secret is stored in clear in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// An operator sets a customer's endpoint through the admin API: admin token required, the
/// secret shown once, the tenant sees the same endpoint, deliveries arrive; unknown tenant 404.
#[tokio::test]
async fn the_admin_api_sets_a_tenants_endpoint() {
    let receiver = Receiver::start().await;
    let app = hooks_app(
        |c| c.auth.admin_token = Some(easel::base::secret::Secret::new("admin-secret")),
        Roles::ALL,
    )
    .await;
    let (tenant_id, key) = app.new_tenant("customer", 600, 4).await;
    let put = |tenant: &str, token: &str| {
        app.http
            .put(app.url(&format!("/admin/v1/tenants/{tenant}/webhook")))
            .bearer_auth(token)
            .json(&json!({"url": receiver.url("/admin-set"), "events": "terminal"}))
            .send()
    };
    assert_eq!(put(&tenant_id, "wrong").await.expect("send").status(), 401);
    assert_eq!(
        put("ten_nope", "admin-secret")
            .await
            .expect("send")
            .status(),
        404
    );
    let created = put(&tenant_id, "admin-secret").await.expect("send");
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.expect("json");
    assert!(body["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_")));
    let seen = get_json(&app, &key, "/v1/webhook").await;
    assert_eq!(seen["url"], receiver.url("/admin-set"));
    assert!(seen.get("secret").is_none_or(Value::is_null), "{seen}");

    let job = submit(&app, &key, json!({"prompt": "a lighthouse"})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while receiver.on_path("/admin-set").is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = receiver.on_path("/admin-set");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["jobId"], job.as_str());
    assert_eq!(got[0].json()["status"], "SUCCEEDED");
}
