//! `GET /metrics`: Prometheus text of what happened, labelled by route template (never a
//! path with ids in it), and behind `auth.metrics_token` when that is set.

mod common;

use std::time::Duration;

use easel::base::secret::Secret;
use easel::server::Roles;
use serde_json::{json, Value};

/// The value of the sample whose line starts with `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_job_shows_in_the_counters_by_route_template() {
    let app = common::spawn_app().await;
    let response = app.submit(json!({"prompt": "a lighthouse"})).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    let job_id = body["jobId"].as_str().expect("jobId").to_owned();
    let job = app
        .wait_for(&job_id, &["SUCCEEDED", "FAILED"], Duration::from_secs(10))
        .await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");

    let response = app.http.get(app.url("/metrics")).send().await.expect("get");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.expect("text");
    let submits = sample(
        &text,
        r#"easel_http_requests_total{method="POST",route="/v1/images/generate",status="202"}"#,
    );
    assert!(submits >= Some(1.0), "{text}");
    let polls = sample(
        &text,
        r#"easel_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"}"#,
    );
    assert!(polls >= Some(1.0), "{text}");
    assert!(!text.contains(&job_id), "a job id leaked into a label");
    assert!(sample(&text, r#"easel_jobs_submitted_total{outcome="created"}"#) >= Some(1.0));
    assert!(
        sample(&text, "easel_jobs_claimed_total") >= Some(1.0),
        "{text}"
    );
    // Nothing else waited and the worker had room: the submit itself claimed the job.
    assert!(
        sample(&text, "easel_jobs_claimed_at_submit_total") >= Some(1.0),
        "{text}"
    );
    let attempts = sample(
        &text,
        r#"easel_job_attempts_total{provider="local",result="succeeded"}"#,
    );
    assert!(attempts >= Some(1.0), "{text}");
    assert!(text.contains("easel_upstream_call_duration_seconds_bucket{provider=\"local\""));
    assert_eq!(sample(&text, "easel_limiter_degraded"), Some(0.0));
    assert!(
        sample(&text, r#"easel_jobs_open{status="queued"}"#).is_some(),
        "{text}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn the_metrics_token_guards_the_endpoint() {
    let app = common::spawn_app_with(
        |c| c.auth.metrics_token = Some(Secret::new("scrape-me")),
        Roles::ALL,
    )
    .await;
    let url = app.url("/metrics");
    common::expect_error(
        app.http.get(&url).send().await.expect("get"),
        401,
        "INVALID_API_KEY",
    )
    .await;
    let wrong = app
        .http
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status(), 401);
    let right = app
        .http
        .get(&url)
        .bearer_auth("scrape-me")
        .send()
        .await
        .expect("get");
    assert_eq!(right.status(), 200);
    assert!(right
        .text()
        .await
        .expect("text")
        .contains("easel_build_info"));
    app.shutdown().await;
}

#[tokio::test]
async fn upstream_keys_show_state_but_never_their_secret() {
    let app = common::spawn_app().await;
    app.add_gemini_key("AIzaSy-metrics-secret-0001", 60, 2)
        .await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(!text.contains("metrics-secret"), "a key secret leaked");
    let usable: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("easel_upstream_key_usable{") && l.contains("provider=\"gemini\"")
        })
        .collect();
    assert_eq!(usable.len(), 1, "{text}");
    assert!(usable[0].ends_with(" 1"), "{}", usable[0]);
    app.shutdown().await;
}
