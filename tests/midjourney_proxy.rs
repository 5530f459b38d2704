//! The `midjourney` provider against the fake midjourney-proxy: the chain imagine → U2 →
//! zoom out → V1 → describe through the job API with the customIds the proxy expects, the
//! faults its submit codes and tasks inject, and the seed's routes on the proxy with exact
//! token counts.

mod common;

use std::time::Duration;

use common::TestApp;
use easel::testing::fake_mj_proxy::{FakeMjProxy, MjFault};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

async fn proxy_app(
    fake: &FakeMjProxy,
    secrets: &[&str],
    tweak: fn(&mut easel::config::Config),
) -> TestApp {
    let app = common::spawn_app_with(
        move |c| {
            c.providers.default = Some("midjourney".into());
            c.providers.midjourney.poll_ms = 10;
            c.worker.max_attempts = 2;
            c.worker.retry_base_ms = 5;
            c.worker.retry_max_ms = 10;
            tweak(c);
        },
        easel::server::Roles::ALL,
    )
    .await;
    for secret in secrets {
        app.add_key("midjourney", secret, Some(&fake.base_url), 60_000, 4)
            .await;
    }
    app
}

async fn finished(app: &TestApp, body: Value) -> Value {
    let response = app.submit(body).await;
    let accepted: Value = response.json().await.expect("json");
    let id = accepted["jobId"].as_str().expect("job id").to_owned();
    app.wait_for(&id, &["SUCCEEDED", "FAILED"], WAIT).await
}

#[tokio::test]
async fn the_chain_runs_through_the_proxy_with_its_buttons() {
    let fake = FakeMjProxy::start(&["mj-secret"]).await;
    let app = proxy_app(&fake, &["mj-secret"], |_| {}).await;
    let imagine = finished(&app, json!({"prompt": "a cat", "grid": true})).await;
    assert_eq!(imagine["status"], "SUCCEEDED", "{imagine}");
    assert_eq!(imagine["resultUrls"].as_array().expect("urls").len(), 4);
    assert!(imagine["gridUrl"].is_string());
    let id = |j: &Value| j["jobId"].as_str().expect("id").to_owned();
    // The proxy's "50%" while the task ran is a RUNNING event of the job, on its stream too.
    let events = app
        .app
        .store
        .job_events(&id(&imagine))
        .await
        .expect("events");
    let progress: Vec<_> = events.iter().filter_map(|e| e.progress).collect();
    assert_eq!(progress, [50], "{events:?}");
    let stream = app
        .get(&format!("/v1/jobs/{}/events", id(&imagine)))
        .await
        .text()
        .await
        .expect("sse");
    assert!(
        stream.contains(r#""status":"RUNNING","#) && stream.contains(r#""progress":50"#),
        "{stream}"
    );
    let u2 = finished(
        &app,
        json!({"prompt": "a cat", "operation": "upscale", "parentJobId": id(&imagine), "parentIndex": 2}),
    )
    .await;
    assert_eq!(u2["status"], "SUCCEEDED", "{u2}");
    assert_eq!(u2["resultUrls"].as_array().expect("urls").len(), 1);
    let zoom = finished(
        &app,
        json!({"prompt": "a cat", "operation": "zoom_out:1.5", "parentJobId": id(&u2), "grid": true}),
    )
    .await;
    assert_eq!(zoom["status"], "SUCCEEDED", "{zoom}");
    let v1 = finished(
        &app,
        json!({"prompt": "a cat", "operation": "variation", "parentJobId": id(&zoom), "parentIndex": 1, "grid": true}),
    )
    .await;
    assert_eq!(v1["status"], "SUCCEEDED", "{v1}");
    let describe = finished(
        &app,
        json!({"prompt": "d", "operation": "describe", "parentJobId": id(&v1), "parentIndex": 3}),
    )
    .await;
    assert_eq!(describe["status"], "SUCCEEDED", "{describe}");
    assert!(describe["resultText"]
        .as_str()
        .expect("text")
        .contains("fake description"));

    let submits = fake.submits();
    let kinds: Vec<&str> = submits.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["imagine", "action", "action", "action", "describe"]);
    let custom = |i: usize| submits[i].1["customId"].as_str().unwrap_or("").to_owned();
    assert!(
        custom(1).starts_with("MJ::JOB::upsample::2::"),
        "{}",
        custom(1)
    );
    assert!(
        custom(2).starts_with("MJ::Outpaint::75::1::"),
        "{}",
        custom(2)
    );
    assert!(
        custom(3).starts_with("MJ::JOB::variation::1::"),
        "{}",
        custom(3)
    );
    assert!(submits[4].1["base64"]
        .as_str()
        .expect("b64")
        .starts_with("data:image/png;base64,"));
    app.shutdown().await;
}

#[tokio::test]
async fn submit_codes_and_stuck_tasks_map_to_outcomes() {
    let fake = FakeMjProxy::start(&["queued", "full", "banned", "stuck", "gone"]).await;
    let cases = [
        ("queued", MjFault::QueuedFirst, "SUCCEEDED", None),
        (
            "full",
            MjFault::QueueFull,
            "FAILED",
            Some("UPSTREAM_UNAVAILABLE"),
        ),
        ("banned", MjFault::Banned, "FAILED", Some("CONTENT_BLOCKED")),
        ("stuck", MjFault::Stuck, "FAILED", Some("UPSTREAM_TIMEOUT")),
        (
            "gone",
            MjFault::ImageGone,
            "FAILED",
            Some("UPSTREAM_UNAVAILABLE"),
        ),
    ];
    for (secret, fault, status, code) in cases {
        fake.set_fault(secret, fault);
        let app = proxy_app(&fake, &[secret], |c| {
            c.providers.midjourney.task_timeout_secs = 1
        })
        .await;
        let before = fake.submits().len();
        let job = finished(&app, json!({"prompt": "a gore cat", "grid": true})).await;
        assert_eq!(job["status"], status, "{secret}: {job}");
        assert_eq!(job["errorCode"].as_str(), code, "{secret}: {job}");
        let tries = fake.submits().len() - before;
        let expected = match fault {
            // Retried once (max_attempts 2); a ban and a timeout are final.
            MjFault::QueueFull | MjFault::ImageGone => 2,
            _ => 1,
        };
        assert_eq!(tries, expected, "{secret}");
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_proxy_without_an_account_hands_the_job_to_another_key() {
    let fake = FakeMjProxy::start(&["empty", "good"]).await;
    fake.set_fault("empty", MjFault::NoAccount);
    let app = proxy_app(&fake, &["empty", "good"], |_| {}).await;
    for _ in 0..3 {
        let job = finished(&app, json!({"prompt": "a cat", "grid": true})).await;
        assert_eq!(job["status"], "SUCCEEDED", "{job}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_seed_routes_run_on_the_proxy_and_a_ban_costs_nothing() {
    let fake = FakeMjProxy::start(&["mj-secret"]).await;
    let app = proxy_app(&fake, &["mj-secret"], |c| {
        c.providers.default = Some("local".into());
        c.midjourney.provider = Some("midjourney".into());
    })
    .await;
    let store = app.app.store.as_ref();
    let (key, row) = easel::ledger::mj::create(store, &app.tenant_id, "gina", 5)
        .await
        .expect("key");
    let call = |prompt: &'static str| {
        let (app, key) = (&app, key.clone());
        async move {
            let answer: Value = app
                .http
                .post(app.url("/v1/api/trigger/imagine"))
                .bearer_auth(&key)
                .json(&json!({"prompt": prompt}))
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("json");
            let task_id = answer["result"].as_str().expect("task").to_owned();
            loop {
                let t: Value = app
                    .http
                    .get(app.url(&format!("/v1/api/trigger/task/{task_id}")))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("send")
                    .json()
                    .await
                    .expect("json");
                if t["status"] != "SUBMITTED" {
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let ok = call("a cat").await;
    assert_eq!(ok["status"], "SUCCESS", "{ok}");
    assert_eq!(
        ok["imageUrl"].as_str().expect("urls").split("||").count(),
        4
    );
    fake.set_fault("mj-secret", MjFault::Banned);
    let banned = call("a gore cat").await;
    assert_eq!(
        banned,
        json!({"status": "FAILURE", "message": "任务被封禁"})
    );
    let info = easel::ledger::mj::info(store, &row).await.expect("info");
    assert_eq!((info.token_total, info.token_use), (5, 1));
    app.shutdown().await;
}

#[tokio::test]
async fn the_proxys_notify_hook_wakes_the_poll_and_polling_is_the_safety_net() {
    let fake = FakeMjProxy::start(&["hooked", "silent"]).await;
    fake.set_fault("hooked", MjFault::Hooked);
    // Polls a minute apart: only the proxy's call can finish the job in time.
    let app = proxy_app(&fake, &["hooked"], |c| {
        c.providers.midjourney.poll_ms = 60_000;
        c.providers.midjourney.notify_secret = Some(easel::base::secret::Secret::new("hook-s"));
    })
    .await;
    let job = finished(&app, json!({"prompt": "a lamp"})).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(fake.hook_calls(), 1);
    let (kind, body) = fake.submits().remove(0);
    assert_eq!(kind, "imagine");
    let hook = body["notifyHook"].as_str().expect("notifyHook");
    assert_eq!(hook, app.url("/internal/mj-proxy/notify/hook-s"));
    // The route is the secret's alone.
    let wrong = app
        .http
        .post(app.url("/internal/mj-proxy/notify/other"))
        .json(&json!({"id": "1"}))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 404);
    let right = app
        .http
        .post(hook)
        .body("not json")
        .send()
        .await
        .expect("send");
    assert_eq!(right.status(), 200);

    // A proxy that never calls: the poll finishes the job.
    let polled = proxy_app(&fake, &["silent"], |c| {
        c.providers.midjourney.notify_secret = Some(easel::base::secret::Secret::new("hook-s"));
    })
    .await;
    let job = finished(&polled, json!({"prompt": "a desk"})).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(fake.hook_calls(), 1);
}
