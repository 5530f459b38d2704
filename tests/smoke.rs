//! The shortest path through Easel: submit, run on the local renderer, download the image.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

#[tokio::test]
async fn submit_runs_and_serves_the_image() {
    let app = common::spawn_app().await;
    let response = app
        .submit(json!({"prompt": "a red fox", "mode": "draft"}))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "QUEUED");
    let job_id = body["jobId"].as_str().expect("jobId").to_owned();
    let job = app
        .wait_for(&job_id, &["SUCCEEDED", "FAILED"], Duration::from_secs(10))
        .await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    let url = job["resultUrls"][0].as_str().expect("url");
    let image = app.http.get(url).send().await.expect("get");
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    let bytes = image.bytes().await.expect("bytes");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    app.shutdown().await;
}
