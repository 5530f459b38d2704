//! Jobs through the Gemini provider and the key pool, against the fake Gemini server: spread
//! over keys, faults, key rejection, safety blocks, and limits as the upstream sees them.

mod common;

use std::time::Duration;

use easel::testing::fake_gemini::{FakeGemini, Fault, FaultKind};
use serde_json::{json, Value};

async fn gemini_app(
    fake: &FakeGemini,
    keys: &[(&str, u32, u32)],
    tweak: impl FnOnce(&mut easel::config::Config),
) -> common::TestApp {
    let base = fake.base_url.clone();
    let app = common::spawn_app_with(
        move |c| {
            c.providers.default = Some("gemini".into());
            c.providers.gemini.base_url = base;
            c.worker.retry_base_ms = 5;
            c.worker.retry_max_ms = 20;
            tweak(c);
        },
        easel::server::Roles::ALL,
    )
    .await;
    for (key, rpm, concurrency) in keys {
        app.add_gemini_key(key, *rpm, *concurrency).await;
    }
    app
}

async fn submit_many(app: &common::TestApp, n: usize) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, url, key) = (
            app.http.clone(),
            app.url("/v1/images/generate"),
            app.api_key.clone(),
        );
        tasks.spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"prompt": format!("cat {i}"), "mode": "draft"}))
                .send()
                .await
                .expect("send");
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.expect("json")["jobId"]
                .as_str()
                .expect("id")
                .to_owned()
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = tasks.join_next().await {
        ids.push(id.expect("task"));
    }
    ids
}

async fn wait_all(app: &common::TestApp, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        out.push(
            app.wait_for(
                id,
                &["SUCCEEDED", "FAILED", "CANCELED"],
                Duration::from_secs(60),
            )
            .await,
        );
    }
    out
}

#[tokio::test]
async fn a_thousand_jobs_spread_evenly_over_three_keys_within_their_limits() {
    let fake = FakeGemini::start().await;
    for key in ["k-a", "k-b", "k-c"] {
        fake.set_fault(key, Fault::latency(Duration::from_millis(5)));
    }
    let keys = [("k-a", 60_000, 4), ("k-b", 60_000, 4), ("k-c", 60_000, 4)];
    let app = gemini_app(&fake, &keys, |_| {}).await;
    let ids = submit_many(&app, 1000).await;
    let jobs = wait_all(&app, &ids).await;
    assert!(
        jobs.iter().all(|j| j["status"] == "SUCCEEDED"),
        "not all succeeded"
    );
    let counts: Vec<u64> = ["k-a", "k-b", "k-c"]
        .iter()
        .map(|k| fake.stats(k).requests)
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 1000, "{counts:?}");
    for c in &counts {
        let share = *c as f64 / (1000.0 / 3.0);
        assert!((0.9..=1.1).contains(&share), "uneven spread {counts:?}");
    }
    for k in ["k-a", "k-b", "k-c"] {
        assert!(
            fake.stats(k).max_in_flight <= 4,
            "{k} saw {} at once",
            fake.stats(k).max_in_flight
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn with_twenty_percent_5xx_every_job_ends_within_max_attempts() {
    let fake = FakeGemini::start().await;
    fake.set_fault(
        "k-1",
        Fault::from(FaultKind::ServerError(503)).percent(20, 7),
    );
    fake.set_fault(
        "k-2",
        Fault::from(FaultKind::ServerError(500)).percent(20, 11),
    );
    let app = gemini_app(&fake, &[("k-1", 60_000, 8), ("k-2", 60_000, 8)], |c| {
        // A 20% failure rate must not trip the breakers in this test.
        let _ = c;
    })
    .await;
    let ids = submit_many(&app, 300).await;
    let jobs = wait_all(&app, &ids).await;
    let succeeded = jobs.iter().filter(|j| j["status"] == "SUCCEEDED").count();
    for job in &jobs {
        assert!(job["attempts"].as_u64().unwrap_or(99) <= 3, "{job}");
        if job["status"] == "FAILED" {
            assert_eq!(job["errorCode"], "UPSTREAM_UNAVAILABLE", "{job}");
            assert_eq!(job["attempts"], 3, "{job}");
        }
    }
    // With independent 20% failures, P(3 failures) = 0.8%: nearly all succeed.
    assert!(succeeded >= 285, "only {succeeded} of 300 succeeded");
    let upstream = fake.stats("k-1").requests + fake.stats("k-2").requests;
    let attempts: u64 = jobs
        .iter()
        .map(|j| j["attempts"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        upstream, attempts,
        "every attempt made exactly one upstream call"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_rejected_key_is_disabled_and_the_job_moves_on() {
    let fake = FakeGemini::start().await;
    fake.set_fault("bad", FaultKind::Unauthorized);
    let app = gemini_app(&fake, &[("bad", 60_000, 4), ("good", 60_000, 4)], |_| {}).await;
    let ids = submit_many(&app, 20).await;
    let jobs = wait_all(&app, &ids).await;
    assert!(jobs.iter().all(|j| j["status"] == "SUCCEEDED"), "{jobs:?}");
    assert!(
        jobs.iter().all(|j| j["attempts"] == 1),
        "a key switch is not a new attempt"
    );
    // Calls already in flight when the first 401 came back may also hit it: at most its
    // concurrency, and none after it was disabled.
    assert!(
        fake.stats("bad").requests <= 4,
        "bad key called {} times",
        fake.stats("bad").requests
    );
    let keys = app.app.store.provider_key_list().await.expect("keys");
    let bad = keys
        .iter()
        .find(|k| k.fingerprint == easel::base::secret::fingerprint("bad"))
        .expect("bad key");
    assert!(!bad.enabled);
    assert!(
        bad.last_error.as_deref().unwrap_or("").contains("rejected"),
        "{:?}",
        bad.last_error
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_safety_block_fails_once_with_content_blocked() {
    let fake = FakeGemini::start().await;
    fake.set_fault("k", FaultKind::FinishReason("IMAGE_SAFETY".into()));
    let app = gemini_app(&fake, &[("k", 60_000, 2)], |_| {}).await;
    let ids = submit_many(&app, 1).await;
    let job = &wait_all(&app, &ids).await[0];
    assert_eq!(job["status"], "FAILED");
    assert_eq!(job["errorCode"], "CONTENT_BLOCKED");
    assert!(
        job["errorMessage"]
            .as_str()
            .unwrap_or("")
            .contains("IMAGE_SAFETY"),
        "{job}"
    );
    assert_eq!(job["attempts"], 1);
    assert_eq!(fake.stats("k").requests, 1, "a safety block is not retried");
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_rpm_is_never_exceeded_as_the_upstream_sees_it() {
    let fake = FakeGemini::start().await;
    let app = gemini_app(&fake, &[("slow", 30, 2)], |_| {}).await;
    // 30 RPM, evenly spaced: one call every 2 s. Submit 4 and watch the spacing.
    let ids = submit_many(&app, 4).await;
    let jobs = wait_all(&app, &ids).await;
    assert!(jobs.iter().all(|j| j["status"] == "SUCCEEDED"));
    let times = fake.stats("slow").request_times;
    assert_eq!(times.len(), 4);
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(1900),
            "calls {gap:?} apart at 30 RPM"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn disabled_keys_are_visible_retested_and_re_enabled_without_restart() {
    let fake = FakeGemini::start().await;
    fake.set_fault("flaky-key-secret", FaultKind::Forbidden);
    let app = gemini_app(
        &fake,
        &[("flaky-key-secret", 60_000, 1), ("spare", 60_000, 1)],
        |c| {
            c.auth.admin_token = Some(easel::base::secret::Secret::new("adm"));
            c.worker.key_refresh_ms = 100;
            c.worker.key_probe_secs = 1;
        },
    )
    .await;
    let ids = submit_many(&app, 3).await;
    assert!(wait_all(&app, &ids)
        .await
        .iter()
        .all(|j| j["status"] == "SUCCEEDED"));

    let list = || async {
        let r = app
            .http
            .get(app.url("/admin/v1/provider-keys"))
            .bearer_auth("adm")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        r.text().await.expect("text")
    };
    let text = list().await;
    assert!(
        !text.contains("flaky-key-secret"),
        "the secret leaked: {text}"
    );
    let keys: Value = serde_json::from_str(&text).expect("json");
    let flaky_fp = easel::base::secret::fingerprint("flaky-key-secret");
    let flaky = keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["fingerprint"] == flaky_fp.as_str())
        .cloned()
        .expect("key");
    assert_eq!(flaky["enabled"], false, "{flaky}");
    let key_id = flaky["id"].as_str().expect("id").to_owned();

    // A manual test while the upstream still refuses it: not enabled.
    let tested = app
        .admin_post("adm", &format!("/admin/v1/provider-keys/{}/test", key_id))
        .await;
    assert_eq!(tested["ok"], false, "{tested}");

    // The upstream accepts it again: the scheduled probe re-enables it by itself.
    fake.clear_faults();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Value = serde_json::from_str(&list().await).expect("json");
        let k = keys["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|k| k["id"] == key_id.as_str())
            .cloned()
            .expect("key");
        if k["enabled"] == true {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never re-enabled: {k}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = app.app.store.provider_key_list().await.expect("keys");
    assert!(stored.iter().find(|k| k.id == key_id).expect("key").enabled);
    app.shutdown().await;
}

/// A worker claims no more jobs than its free keys can start: the others stay QUEUED (and
/// cancellable, and fair to other tenants) instead of RUNNING while they wait for a key.
#[tokio::test]
async fn jobs_wait_queued_not_running_while_every_key_is_busy() {
    let fake = FakeGemini::start().await;
    fake.set_default_fault(Fault::latency(Duration::from_millis(600)));
    let app = gemini_app(&fake, &[("k1", 100_000, 2)], |c| {
        c.worker.concurrency = 16;
    })
    .await;
    let ids = submit_many(&app, 8).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page: Value = app
        .get("/v1/jobs?status=RUNNING&limit=100")
        .await
        .json()
        .await
        .expect("json");
    let running = page["items"].as_array().expect("items").len();
    assert_eq!(running, 2, "one key of concurrency 2: {page}");
    let done = wait_all(&app, &ids).await;
    assert!(done.iter().all(|j| j["status"] == "SUCCEEDED"));
    assert_eq!(fake.stats("k1").max_in_flight, 2);
}

/// Files under the app's image folder whose name holds `job_id`.
fn stored_images(app: &common::TestApp, job_id: &str) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, job_id: &str, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, job_id, out);
            } else if path.to_string_lossy().contains(job_id) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&app.app.config.storage_path(), job_id, &mut out);
    out
}

async fn cancel(app: &common::TestApp, job_id: &str) -> reqwest::Response {
    app.http
        .delete(app.url(&format!("/v1/jobs/{job_id}")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("send")
}

/// `DELETE` of a RUNNING job: the job is CANCELED at once, the worker hears of it on the event
/// bus (its heartbeat is a minute away) and drops the upstream call, giving its key back; the
/// answer that comes later is never stored.
#[tokio::test]
async fn canceling_a_running_job_aborts_its_attempt_and_frees_its_key() {
    let fake = FakeGemini::start().await;
    let app = gemini_app(&fake, &[("k-slow", 6000, 1)], |c| {
        c.worker.heartbeat_ms = 60_000;
    })
    .await;
    fake.hold_answers();
    let id = submit_many(&app, 1).await.remove(0);
    fake.wait_held(1).await;
    assert_eq!(
        app.app.keys.free_slots("gemini"),
        0,
        "the call holds the key"
    );
    let view: Value = app
        .get_job(&app.api_key, &id)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(view["status"], "RUNNING");

    let response = cancel(&app, &id).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"jobId": id, "status": "CANCELED"}));
    // The key comes back while the upstream is still holding its answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.app.keys.free_slots("gemini") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the attempt kept its key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Answers are still held, so the only way out of the fake is the caller hanging up.
    while fake.held() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream call was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.stats("k-slow").requests, 1);

    // The upstream answers; a next job runs on the freed key and the canceled one stays put.
    fake.release_answers();
    let next = submit_many(&app, 1).await.remove(0);
    let done = app
        .wait_for(&next, &["SUCCEEDED", "FAILED"], Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let view: Value = app
        .get_job(&app.api_key, &id)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(view["status"], "CANCELED", "{view}");
    assert_eq!(view["resultUrls"], json!([]));
    assert_eq!(
        app.event_statuses(&id).await,
        ["QUEUED", "RUNNING", "CANCELED"]
    );
    assert!(stored_images(&app, &id).is_empty());
    let again = cancel(&app, &id).await;
    common::expect_error(again, 400, "INVALID_STATE").await;
    app.shutdown().await;
}

/// An attempt that never hears of the cancel (another process, no shared bus) runs to its
/// end; its result is refused by the fencing token and the images it stored are deleted.
#[tokio::test]
async fn a_late_result_of_a_canceled_job_is_discarded_with_its_images() {
    let fake = FakeGemini::start().await;
    let base = fake.base_url.clone();
    // No worker of the app's own: this test runs the attempt itself, deaf to the bus.
    let app = common::spawn_app_with(
        move |c| {
            c.providers.default = Some("gemini".into());
            c.providers.gemini.base_url = base;
            c.worker.heartbeat_ms = 60_000;
        },
        common::API_ONLY,
    )
    .await;
    app.add_gemini_key("k-late", 6000, 1).await;
    let store = app.app.store.clone();
    let submitted = app.app.store.job_submit(easel::base::job::NewJob {
        id: easel::base::job::new_job_id(),
        tenant_id: app.tenant_id.clone(),
        idempotency: None,
        prompt: "a late cat".into(),
        mode: easel::base::job::Mode::Draft,
        input_image_url: None,
        params: Default::default(),
        provider: "gemini".into(),
        max_attempts: 3,
        created_at: easel::base::clock::now_millis(),
        cancel_at: None,
        deadline_at: easel::base::clock::now_millis() + 600_000,
        webhook_url: None,
        charge: None,
        follow_up: None,
    });
    let easel::base::job::SubmitOutcome::Created { job_id: id } = submitted.await.expect("submit")
    else {
        panic!("not created")
    };
    let claimed = store
        .job_claim("deaf-worker", 1, Duration::from_secs(600))
        .await
        .expect("claim")
        .remove(0);
    assert_eq!(claimed.job.id, id);
    fake.hold_answers();
    let deps = app.app.worker_deps();
    let attempt = tokio::spawn(async move {
        easel::jobs::worker::run_claimed(&deps, claimed, tokio_util::sync::CancellationToken::new())
            .await
    });
    fake.wait_held(1).await;
    assert_eq!(
        store.job_cancel(&app.tenant_id, &id).await.expect("cancel"),
        easel::store::CancelOutcome::Canceled
    );
    fake.release_answers();
    attempt.await.expect("attempt");
    let job = store
        .job_get(&app.tenant_id, &id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(job.status, easel::base::job::JobStatus::Canceled);
    assert!(job.result_keys.is_empty());
    assert_eq!(
        app.event_statuses(&id).await,
        ["QUEUED", "RUNNING", "CANCELED"]
    );
    assert_eq!(fake.stats("k-late").requests, 1, "the upstream did answer");
    assert!(
        stored_images(&app, &id).is_empty(),
        "{:?}",
        stored_images(&app, &id)
    );
    assert_eq!(app.app.keys.free_slots("gemini"), 1);
    app.shutdown().await;
}
