//! Operations beyond generate through the job API: an imagine (four images and Easel's 2x2
//! grid), then U2, zoom out, V1 and describe on the chosen image, on the local renderer and on
//! the fake Gemini; what a provider cannot do is refused at submit.

mod common;

use std::time::Duration;

use common::{expect_error, TestApp};
use easel::testing::fake_gemini::FakeGemini;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

async fn submitted(app: &TestApp, body: Value) -> String {
    let response = app.submit(body).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 202, "{body}");
    body["jobId"].as_str().expect("jobId").to_owned()
}

async fn succeeded(app: &TestApp, body: Value) -> Value {
    let id = submitted(app, body).await;
    let job = app.wait_for(&id, &["SUCCEEDED", "FAILED"], WAIT).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    job
}

async fn dimensions(app: &TestApp, url: &str) -> (u32, u32) {
    let bytes = app
        .http
        .get(url)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    let image = image::load_from_memory(&bytes).expect("image");
    (image.width(), image.height())
}

/// imagine → U2 → zoom out → V1 → describe; returns the jobs' views in that order.
async fn chain(app: &TestApp) -> Vec<Value> {
    let imagine = succeeded(app, json!({"prompt": "a lighthouse at dusk", "grid": true})).await;
    let id = |job: &Value| job["jobId"].as_str().expect("id").to_owned();
    let upscale = succeeded(
        app,
        json!({"prompt": "a lighthouse at dusk", "operation": "upscale:subtle:2x",
               "parentJobId": id(&imagine), "parentIndex": 2}),
    )
    .await;
    let zoom = succeeded(
        app,
        json!({"prompt": "a lighthouse at dusk", "operation": "zoom_out:1.5",
               "parentJobId": id(&upscale)}),
    )
    .await;
    let variation = succeeded(
        app,
        json!({"prompt": "a lighthouse at dusk", "operation": "variation:strong",
               "parentJobId": id(&zoom), "grid": true}),
    )
    .await;
    let describe = succeeded(
        app,
        json!({"prompt": "describe", "operation": "describe",
               "parentJobId": id(&variation), "parentIndex": 1}),
    )
    .await;
    vec![imagine, upscale, zoom, variation, describe]
}

#[tokio::test]
async fn the_chain_runs_on_the_local_renderer() {
    let app = common::spawn_app().await;
    let jobs = chain(&app).await;
    let [imagine, upscale, zoom, variation, describe] = &jobs[..] else {
        panic!("five jobs")
    };
    assert_eq!(imagine["operation"], "generate");
    assert_eq!(imagine["resultUrls"].as_array().expect("urls").len(), 4);
    let grid = imagine["gridUrl"].as_str().expect("grid");
    let cell = dimensions(&app, imagine["resultUrls"][1].as_str().expect("u")).await;
    assert_eq!(cell, (32, 32));
    assert_eq!(dimensions(&app, grid).await, (64, 64));

    assert_eq!(upscale["operation"], "upscale:subtle:2x");
    assert_eq!(upscale["parentIndex"], 2);
    let up = dimensions(&app, upscale["resultUrls"][0].as_str().expect("u")).await;
    assert_eq!(up, (64, 64));
    let zoomed = dimensions(&app, zoom["resultUrls"][0].as_str().expect("u")).await;
    assert_eq!(
        (zoom["operation"].as_str(), zoomed),
        (Some("zoom_out:1.5"), (96, 96))
    );
    assert_eq!(variation["resultUrls"].as_array().expect("urls").len(), 4);
    assert!(variation["gridUrl"].is_string());

    assert_eq!(describe["operation"], "describe");
    assert_eq!(describe["resultUrls"], json!([]));
    let text = describe["resultText"].as_str().expect("text");
    assert!(text.starts_with("1️⃣") && text.contains("--ar"), "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_chain_runs_on_gemini() {
    let fake = FakeGemini::start().await;
    let base = fake.base_url.clone();
    let app = common::spawn_app_with(
        move |c| {
            c.providers.default = Some("gemini".into());
            c.providers.gemini.base_url = base;
        },
        easel::server::Roles::ALL,
    )
    .await;
    app.add_gemini_key("k", 60_000, 8).await;
    let jobs = chain(&app).await;
    assert_eq!(jobs[0]["resultUrls"].as_array().expect("urls").len(), 4);
    assert!(jobs[0]["gridUrl"].is_string());
    assert_eq!(jobs[1]["operation"], "upscale:subtle:2x");
    let text = jobs[4]["resultText"].as_str().expect("text");
    assert!(text.contains("described"), "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn operations_are_checked_at_submit() {
    let app = common::spawn_app_with(|_| {}, common::API_ONLY).await;
    let refuse = |body: Value, needle: &'static str| {
        let app = &app;
        async move {
            let message = expect_error(app.submit(body).await, 400, "INVALID_REQUEST").await;
            assert!(message.contains(needle), "{message}");
        }
    };
    refuse(json!({"prompt": "x", "operation": "paint"}), "not one of").await;
    refuse(
        json!({"prompt": "x", "operation": "upscale"}),
        "needs an image",
    )
    .await;
    refuse(
        json!({"prompt": "x", "operation": "upscale", "parentJobId": "nope"}),
        "not a job of yours",
    )
    .await;
    refuse(
        json!({"prompt": "x", "parentIndex": 2}),
        "needs a parentJobId",
    )
    .await;
    refuse(json!({"prompt": "x", "grid": true, "n": 2}), "n must be 4").await;
    refuse(
        json!({"prompt": "x", "operation": "blend", "inputImageIds": ["a"]}),
        "a blend takes 2 to 5",
    )
    .await;
    // A parent that has not finished has no image to work on.
    let queued = submitted(&app, json!({"prompt": "x"})).await;
    refuse(
        json!({"prompt": "x", "operation": "upscale", "parentJobId": queued}),
        "QUEUED",
    )
    .await;
    // The job API still shows `generate` for a plain job.
    let job: Value = app
        .get_job(&app.api_key, &queued)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(job["operation"], "generate");
    app.shutdown().await;
}

#[tokio::test]
async fn a_provider_that_cannot_do_an_operation_is_refused_at_submit() {
    let app = common::spawn_app_with(
        |c| c.providers.default = Some("openai".into()),
        common::API_ONLY,
    )
    .await;
    let response = app
        .submit(json!({"prompt": "x", "operation": "zoom_out", "inputImageUrl": "https://example.com/a.png"}))
        .await;
    let message = expect_error(response, 400, "UNSUPPORTED_OPERATION").await;
    assert!(
        message.contains("openai") && message.contains("zoom_out"),
        "{message}"
    );
    let jobs: Value = app.get("/v1/jobs").await.json().await.expect("json");
    assert_eq!(jobs["items"], json!([]), "no job was made");
    app.shutdown().await;
}
