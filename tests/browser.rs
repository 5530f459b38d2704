//! The SaaS origin's API page flow in a real browser: a page served from a second loopback
//! origin calls Easel with `fetch` (submit, get, list, cancel), as `docs/api.html` does, in
//! headless Chromium (Debian's `chromium` package). The page reports what it saw back to the
//! server that served it, so the test waits on that report, never on time.
//!
//! Without Chromium the test fails when `CI=true` (CI installs it) and is skipped otherwise.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::extract::State;
use axum::response::Html;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::mpsc;

/// `EASEL_TEST_CHROMIUM`, else `chromium` or `chromium-browser` on the PATH.
fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("EASEL_TEST_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// The page: the origin's API page flow against `easel`, reported to `/report` on its own
/// origin. Submit and cancel send the key as `X-API-Key` (the origin's OpenAPI way), get and
/// list as `Authorization: Bearer`.
fn api_page(easel: &str, key: &str) -> String {
    let script = r#"
const out = {};
async function call(name, method, path, headers, body) {
  const init = {method, headers};
  if (body !== undefined) init.body = JSON.stringify(body);
  const r = await fetch(EASEL + path, init);
  out[name] = {
    status: r.status,
    body: await r.json(),
    rateLimit: r.headers.get("RateLimit"),
    rateLimitPolicy: r.headers.get("RateLimit-Policy"),
    etag: r.headers.get("ETag"),
    replayed: r.headers.get("Idempotent-Replayed"),
  };
  return out[name].body;
}
(async () => {
  try {
    const json = {"Content-Type": "application/json"};
    const byKey = {"X-API-Key": KEY};
    const bearer = {"Authorization": "Bearer " + KEY};
    const submitted = await call("submit", "POST", "/v1/images/generate",
      {...json, ...byKey, "Idempotency-Key": "page-1"}, {prompt: "a browser cat", mode: "draft"});
    await call("replay", "POST", "/v1/images/generate",
      {...json, ...byKey, "Idempotency-Key": "page-1"}, {prompt: "a browser cat", mode: "draft"});
    const id = submitted.jobId;
    await call("get", "GET", "/v1/jobs/" + id, bearer);
    await call("list", "GET", "/v1/jobs?limit=10", bearer);
    await call("cancel", "DELETE", "/v1/jobs/" + id, byKey);
    await call("after", "GET", "/v1/jobs/" + id, byKey);
    await call("cancelAgain", "DELETE", "/v1/jobs/" + id, byKey);
    await call("wrongKey", "GET", "/v1/jobs", {"X-API-Key": "img_wrong"});
  } catch (e) {
    out.error = String(e);
  }
  document.getElementById("result").textContent = JSON.stringify(out);
  await fetch("/report", {method: "POST", body: JSON.stringify(out)});
})();
"#;
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>API page</title></head>\
         <body><pre id=\"result\">running</pre><script>const EASEL = {easel:?}; \
         const KEY = {key:?};{script}</script></body></html>"
    )
}

struct PageServer {
    url: String,
    reports: mpsc::Receiver<Value>,
}

/// Serves `page` at `/` on its own loopback port (another origin than Easel's) and passes on
/// what the page posts to `/report`.
async fn serve_page(page: String) -> PageServer {
    let (tx, reports) = mpsc::channel(1);
    let router = axum::Router::new()
        .route("/", get(move || async move { Html(page) }))
        .route(
            "/report",
            post(
                |State(tx): State<mpsc::Sender<Value>>, body: String| async move {
                    let report = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    let _ = tx.send(report).await;
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    PageServer {
        url: format!("http://{addr}/"),
        reports,
    }
}

#[tokio::test]
async fn the_saas_api_page_flow_works_from_another_origin_in_chromium() {
    let Some(chromium) = find_chromium() else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "chromium is not installed (apt-get install -y chromium), and CI=true needs it"
        );
        eprintln!(
            "skipped: chromium not found (apt-get install -y chromium); CI=true makes this fail"
        );
        return;
    };
    // Jobs stay RUNNING (the local renderer takes a minute), so the page cancels a running job.
    let app = common::spawn_app_with(
        |c| c.providers.local.delay_ms = 60_000,
        easel::server::Roles::ALL,
    )
    .await;
    let mut page = serve_page(api_page(&app.base, &app.api_key)).await;
    assert_ne!(
        page.url,
        format!("{}/", app.base),
        "the page is on another origin"
    );
    let profile = tempfile::tempdir().expect("profile dir");
    let mut browser = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&page.url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
    let report = tokio::time::timeout(Duration::from_secs(60), page.reports.recv()).await;
    let _ = browser.kill().await;
    let report = match report {
        Ok(Some(report)) => report,
        _ => {
            let mut stderr = String::new();
            if let Some(mut err) = browser.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = err.read_to_string(&mut stderr).await;
            }
            panic!("the page never reported; chromium said:\n{stderr}");
        }
    };
    assert!(report.get("error").is_none(), "the page failed: {report}");
    let submit = &report["submit"];
    assert_eq!(submit["status"], 202, "{report}");
    assert_eq!(submit["body"]["status"], "QUEUED");
    let job_id = submit["body"]["jobId"].as_str().expect("job id").to_owned();
    // Exposed headers are readable from the page.
    assert!(submit["rateLimit"].is_string(), "{submit}");
    assert!(submit["rateLimitPolicy"].is_string(), "{submit}");
    assert_eq!(report["replay"]["status"], 202);
    assert_eq!(report["replay"]["replayed"], "true");
    assert_eq!(report["replay"]["body"]["jobId"], job_id.as_str());
    assert_eq!(report["get"]["status"], 200);
    assert_eq!(report["get"]["body"]["jobId"], job_id.as_str());
    assert!(report["get"]["etag"].is_string(), "{report}");
    assert_eq!(report["list"]["status"], 200);
    let listed: Vec<&str> = report["list"]["body"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(listed, [job_id.as_str()]);
    assert_eq!(report["cancel"]["status"], 200);
    assert_eq!(report["cancel"]["body"]["status"], "CANCELED");
    assert_eq!(report["after"]["body"]["status"], "CANCELED");
    assert_eq!(report["cancelAgain"]["status"], 400);
    assert_eq!(report["cancelAgain"]["body"]["error"], "INVALID_STATE");
    assert_eq!(report["wrongKey"]["status"], 401);
    assert_eq!(report["wrongKey"]["body"]["error"], "INVALID_API_KEY");
    // What the page did is what Easel holds.
    let view: Value = app
        .get_job(&app.api_key, &job_id)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(view["status"], "CANCELED");
    app.shutdown().await;
}
