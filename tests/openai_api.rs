//! The OpenAI-compatible images API over HTTP: each route on the local renderer (no key) and on
//! the fake OpenAI upstream, the answer shapes, and every error in OpenAI's shape.

mod common;

use base64::Engine;
use easel::testing::fake_openai::{FakeOpenAi, Fault, FaultKind};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

fn png(seed: u64) -> Vec<u8> {
    easel::providers::local::render::render_png("input", seed, 8, 8)
}

fn file(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes)
        .file_name(name.to_owned())
        .mime_str("image/png")
        .expect("mime")
}

async fn post_json(app: &common::TestApp, path: &str, body: Value) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(&app.api_key)
        .json(&body)
        .send()
        .await
        .expect("send")
}

async fn post_form(app: &common::TestApp, path: &str, form: Form) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(&app.api_key)
        .multipart(form)
        .send()
        .await
        .expect("send")
}

/// Asserts OpenAI's error shape with this status and returns `error`.
async fn openai_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("json");
    let error = body["error"].clone();
    let mut keys = common::keys(&error);
    keys.sort();
    assert_eq!(keys, ["code", "message", "param", "type"], "{body}");
    assert!(
        !error["message"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
    error
}

fn decoded_png(b64: &Value) -> Vec<u8> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().expect("b64 string"))
        .expect("base64");
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    bytes
}

#[tokio::test]
async fn generations_on_the_local_renderer_answer_urls_or_b64() {
    let app = common::spawn_app().await;
    let r = post_json(
        &app,
        "/v1/images/generations",
        json!({"prompt": "a red fox", "n": 2}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("easel-job-id"));
    let body: Value = r.json().await.expect("json");
    assert!(body["created"].as_i64().expect("created") > 1_700_000_000);
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 2);
    for item in data {
        let url = item["url"].as_str().expect("url");
        let image = app.http.get(url).send().await.expect("get");
        assert_eq!(image.status(), 200);
        assert!(image.bytes().await.expect("bytes").starts_with(b"\x89PNG"));
    }
    assert_eq!(body["output_format"], "png");

    let r = post_json(
        &app,
        "/v1/images/generations",
        json!({"prompt": "a red fox", "response_format": "b64_json", "model": "local"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    decoded_png(&body["data"][0]["b64_json"]);
    assert!(body["data"][0].get("url").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn edits_take_one_image_several_and_a_mask_and_variations_one() {
    let app = common::spawn_app().await;
    let one = Form::new()
        .text("prompt", "make it blue")
        .text("response_format", "b64_json")
        .part("image", file(png(1), "a.png"));
    let r = post_form(&app, "/v1/images/edits", one).await;
    assert_eq!(r.status(), 200);
    let single = decoded_png(&r.json::<Value>().await.expect("json")["data"][0]["b64_json"]);

    let several = Form::new()
        .text("prompt", "make it blue")
        .text("response_format", "b64_json")
        .part("image[]", file(png(1), "a.png"))
        .part("image[]", file(png(2), "b.png"))
        .part("mask", file(png(3), "mask.png"));
    let r = post_form(&app, "/v1/images/edits", several).await;
    assert_eq!(r.status(), 200);
    let job_id = r.headers()["easel-job-id"].to_str().expect("id").to_owned();
    let many = decoded_png(&r.json::<Value>().await.expect("json")["data"][0]["b64_json"]);
    assert_ne!(single, many, "more inputs must change the picture");
    let job = app
        .app
        .store
        .job_get(&app.tenant_id, &job_id)
        .await
        .expect("store")
        .expect("job");
    assert_eq!(job.params.inputs.len(), 2);
    assert!(job.params.mask.is_some());

    let variation = Form::new()
        .text("n", "2")
        .part("image", file(png(4), "v.png"));
    let r = post_form(&app, "/v1/images/variations", variation).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json")["data"]
            .as_array()
            .expect("data")
            .len(),
        2
    );

    let no_image = Form::new().text("prompt", "x");
    let e = openai_error(post_form(&app, "/v1/images/edits", no_image).await, 400).await;
    assert_eq!(e["param"], "image");
    let gif = Form::new().text("prompt", "x").part(
        "image",
        Part::bytes(b"GIF89a....".to_vec()).file_name("a.gif"),
    );
    let e = openai_error(post_form(&app, "/v1/images/edits", gif).await, 400).await;
    assert!(e["message"]
        .as_str()
        .expect("msg")
        .contains("unsupported mimetype"));
    app.shutdown().await;
}

#[tokio::test]
async fn models_lists_what_can_be_routed_and_errors_have_openai_shape() {
    let app = common::spawn_app().await;
    let r = app.get("/v1/models").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    // No upstream key: only the local renderer.
    assert_eq!(ids, ["local"]);

    let r = app
        .http
        .post(app.url("/v1/images/generations"))
        .bearer_auth("wrong")
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .expect("send");
    let e = openai_error(r, 401).await;
    assert_eq!(e["code"], "invalid_api_key");

    let e = openai_error(
        post_json(
            &app,
            "/v1/images/generations",
            json!({"prompt": "x", "model": "dall-e-9"}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(
        (e["param"].as_str(), e["code"].as_str()),
        (Some("model"), Some("model_not_found"))
    );
    let e = openai_error(
        post_json(
            &app,
            "/v1/images/generations",
            json!({"prompt": "x", "model": "gpt-image-1"}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["code"], "model_not_available");
    let e = openai_error(
        post_json(&app, "/v1/images/generations", json!({"n": 1})).await,
        400,
    )
    .await;
    assert!(
        e["message"].as_str().expect("msg").contains("prompt"),
        "{e}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after() {
    let app = common::spawn_app().await;
    let (_tenant, key) = app.new_tenant("slow", 1, 5).await;
    let call = || {
        app.http
            .post(app.url("/v1/images/generations"))
            .bearer_auth(&key)
            .json(&json!({"prompt": "x"}))
            .send()
    };
    assert_eq!(call().await.expect("send").status(), 200);
    let r = call().await.expect("send");
    assert!(r.headers().contains_key("retry-after"));
    let e = openai_error(r, 429).await;
    assert_eq!(e["code"], "rate_limit_exceeded");
    app.shutdown().await;
}

#[tokio::test]
async fn respond_async_and_idempotency_key_return_the_same_job() {
    let app = common::spawn_app_with(|_| {}, common::API_ONLY).await;
    let call = || {
        app.http
            .post(app.url("/v1/images/generations"))
            .bearer_auth(&app.api_key)
            .header("Prefer", "respond-async")
            .header("Idempotency-Key", "call-1")
            .json(&json!({"prompt": "a kite"}))
            .send()
    };
    let first = call().await.expect("send");
    assert_eq!(first.status(), 202);
    let location = first.headers()["location"]
        .to_str()
        .expect("loc")
        .to_owned();
    let first: Value = first.json().await.expect("json");
    let second: Value = call().await.expect("send").json().await.expect("json");
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        location,
        format!("/v1/jobs/{}", first["id"].as_str().expect("id"))
    );
    let job: Value = app
        .get_job(&app.api_key, first["id"].as_str().expect("id"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(job["status"], "QUEUED");
    app.shutdown().await;
}

/// A waiting call that replays an `Idempotency-Key` answers with the job it names, already
/// ended, whether or not it waited for it the first time.
#[tokio::test]
async fn a_waiting_call_replayed_by_idempotency_key_answers_the_same_job() {
    let app = common::spawn_app().await;
    let call = || {
        app.http
            .post(app.url("/v1/images/generations"))
            .bearer_auth(&app.api_key)
            .header("Idempotency-Key", "wait-1")
            .json(&json!({"prompt": "a kite", "response_format": "b64_json"}))
            .send()
    };
    let first = call().await.expect("send");
    assert_eq!(first.status(), 200);
    let job_id = first.headers()["easel-job-id"].to_owned();
    let first: Value = first.json().await.expect("json");
    let second = call().await.expect("send");
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["easel-job-id"], job_id);
    let second: Value = second.json().await.expect("json");
    assert_eq!(first["data"], second["data"]);
    decoded_png(&first["data"][0]["b64_json"]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_call_waits_for_its_job_without_polling_and_times_out_as_504() {
    let app = common::spawn_app_with(|c| c.openai_api.wait_secs = 1, common::API_ONLY).await;
    let r = post_json(
        &app,
        "/v1/images/generations",
        json!({"prompt": "never run"}),
    )
    .await;
    let job_id = r.headers()["easel-job-id"].to_str().expect("id").to_owned();
    assert_eq!(r.headers()["x-should-retry"], "false");
    let e = openai_error(r, 504).await;
    assert!(e["message"].as_str().expect("msg").contains(&job_id));

    // A worker that starts while a call waits: the call answers as soon as the job ends.
    let waiting = tokio::spawn({
        let (http, url, key) = (
            app.http.clone(),
            app.url("/v1/images/generations"),
            app.api_key.clone(),
        );
        async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({"prompt": "runs"}))
                .send()
                .await
        }
    });
    let _worker = app.start_worker();
    let r = waiting.await.expect("task").expect("send");
    assert_eq!(r.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_its_job_when_configured() {
    let app = common::spawn_app_with(
        |c| c.openai_api.cancel_on_disconnect = true,
        common::API_ONLY,
    )
    .await;
    let call = tokio::spawn({
        let (http, url, key) = (
            app.http.clone(),
            app.url("/v1/images/generations"),
            app.api_key.clone(),
        );
        async move {
            http.post(url)
                .bearer_auth(key)
                .json(&json!({"prompt": "abandoned"}))
                .send()
                .await
        }
    });
    // No worker runs, so the call waits on its queued job; find that job.
    let started = std::time::Instant::now();
    let job_id = loop {
        let page: Value = app.get("/v1/jobs").await.json().await.expect("json");
        if let Some(id) = page["items"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    call.abort();
    let job = app
        .wait_for(&job_id, &["CANCELED"], std::time::Duration::from_secs(10))
        .await;
    assert_eq!(job["status"], "CANCELED");
    app.shutdown().await;
}

async fn openai_upstream_app(fake: &FakeOpenAi) -> common::TestApp {
    let app = common::spawn_app().await;
    app.add_key("openai", "sk-up", Some(&fake.base_url), 60_000, 4)
        .await;
    app
}

#[tokio::test]
async fn gpt_image_calls_go_to_openai_and_answer_its_shape() {
    let fake = FakeOpenAi::start().await;
    let app = openai_upstream_app(&fake).await;
    let r = post_json(
        &app,
        "/v1/images/generations",
        json!({"prompt": "a fox", "model": "gpt-image-1", "quality": "low", "size": "1024x1536"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    decoded_png(&body["data"][0]["b64_json"]);
    assert_eq!(body["size"], "1024x1536");
    assert_eq!(body["quality"], "low");
    assert_eq!(body["output_format"], "png");
    assert_eq!(body["background"], "opaque");
    assert_eq!(body["usage"]["total_tokens"], 4210);
    let sent = fake.stats("sk-up").last.expect("sent");
    assert_eq!(sent.body["model"], "gpt-image-1");
    assert_eq!(sent.body["quality"], "low");

    let edit = Form::new()
        .text("prompt", "add a hat")
        .text("model", "gpt-image-1")
        .text("input_fidelity", "high")
        .part("image[]", file(png(1), "a.png"))
        .part("image[]", file(png(2), "b.png"))
        .part("mask", file(png(3), "m.png"));
    let r = post_form(&app, "/v1/images/edits", edit).await;
    assert_eq!(r.status(), 200);
    let sent = fake.stats("sk-up").last.expect("sent");
    assert_eq!(sent.file_parts(), ["image[]", "image[]", "mask"]);
    assert_eq!(sent.body["input_fidelity"], "high");

    let dalle = post_json(
        &app,
        "/v1/images/generations",
        json!({"prompt": "a fox", "model": "dall-e-3"}),
    )
    .await;
    assert_eq!(dalle.status(), 200);
    let body: Value = dalle.json().await.expect("json");
    assert!(body["data"][0]["url"].is_string(), "{body}");
    assert_eq!(body["data"][0]["revised_prompt"], "a fox, revised");

    let e = openai_error(
        post_json(
            &app,
            "/v1/images/generations",
            json!({"prompt": "x", "model": "dall-e-3", "n": 2}),
        )
        .await,
        400,
    )
    .await;
    assert!(
        e["message"]
            .as_str()
            .expect("msg")
            .contains("between 1 and 1"),
        "{e}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_blocked_job_answers_400_moderation_blocked() {
    let fake = FakeOpenAi::start().await;
    fake.set_fault("sk-up", Fault::always(FaultKind::ModerationBlocked));
    let app = openai_upstream_app(&fake).await;
    let r = post_json(
        &app,
        "/v1/images/generations",
        json!({"prompt": "no", "model": "gpt-image-1"}),
    )
    .await;
    let e = openai_error(r, 400).await;
    assert_eq!(e["code"], "moderation_blocked");
    assert_eq!(e["type"], "image_generation_user_error");
    app.shutdown().await;
}

#[tokio::test]
async fn gemini_models_and_the_nano_banana_alias_go_to_gemini() {
    let fake = easel::testing::fake_gemini::FakeGemini::start().await;
    let app = common::spawn_app().await;
    app.add_key("gemini", "AIza-facade", Some(&fake.base_url), 60_000, 4)
        .await;
    let r = post_json(
        &app,
        "/v1/images/generations",
        json!({"prompt": "a banana", "model": "nano-banana", "response_format": "b64_json"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    decoded_png(&r.json::<Value>().await.expect("json")["data"][0]["b64_json"]);
    let stats = fake.stats("AIza-facade");
    assert_eq!(stats.last_model.as_deref(), Some("gemini-2.5-flash-image"));

    let edit = Form::new()
        .text("prompt", "put them together")
        .text("model", "gemini-3-pro-image-preview")
        .part("image[]", file(png(1), "a.png"))
        .part("image[]", file(png(2), "b.png"));
    let r = post_form(&app, "/v1/images/edits", edit).await;
    assert_eq!(r.status(), 200);
    let stats = fake.stats("AIza-facade");
    assert_eq!(
        stats.last_model.as_deref(),
        Some("gemini-3-pro-image-preview")
    );
    let parts = stats.last_body.expect("body")["contents"][0]["parts"].clone();
    assert_eq!(parts.as_array().expect("parts").len(), 3, "{parts}");

    let masked = Form::new()
        .text("prompt", "x")
        .text("model", "nano-banana")
        .part("image", file(png(1), "a.png"))
        .part("mask", file(png(2), "m.png"));
    let e = openai_error(post_form(&app, "/v1/images/edits", masked).await, 400).await;
    assert!(e["message"].as_str().expect("msg").contains("mask"), "{e}");
    app.shutdown().await;
}

/// A prepaid tenant pays for facade calls as for job API submits: one image held and settled
/// per call, and a call it cannot afford is a 402 in OpenAI's shape that creates no job.
#[tokio::test]
async fn prepaid_tenants_pay_for_facade_calls() {
    let app = common::spawn_app_with(
        |c| c.auth.admin_token = Some(easel::base::secret::Secret::new("adm")),
        easel::server::Roles::ALL,
    )
    .await;
    let admin = |path: String, body: Value| {
        app.http
            .request(reqwest::Method::PUT, app.url(&path))
            .bearer_auth("adm")
            .json(&body)
    };
    let billing = admin(
        format!("/admin/v1/tenants/{}/billing", app.tenant_id),
        json!({"prepaid": true}),
    )
    .send()
    .await
    .expect("billing");
    assert_eq!(billing.status(), 200);
    let gift = app
        .http
        .post(app.url(&format!("/admin/v1/tenants/{}/credits", app.tenant_id)))
        .bearer_auth("adm")
        .json(&json!({"account": "tenant", "amount": 1, "gift": true, "reason": "test"}))
        .send()
        .await
        .expect("credits");
    assert_eq!(gift.status(), 201);

    let body = json!({"prompt": "a paid fox", "model": "local"});
    let paid = post_json(&app, "/v1/images/generations", body.clone()).await;
    assert_eq!(paid.status(), 200);
    let refused = post_json(&app, "/v1/images/generations", body).await;
    let error = openai_error(refused, 402).await;
    assert_eq!(error["code"], "insufficient_credits");

    let jobs: Value = app.get("/v1/jobs").await.json().await.expect("json");
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(1), "{jobs}");
    let differences = app.app.store.ledger_check().await.expect("check");
    assert!(differences.is_empty(), "{differences:?}");
}
