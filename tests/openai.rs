//! `OpenAiProvider` against the fake OpenAI API: the wire format of each route (JSON for
//! generations, multipart checked part by part for edits and variations), every fault mapped to
//! the `ProviderError` the worker acts on, and real jobs through the worker and the key pool.

mod common;

use std::time::Duration;

use bytes::Bytes;
use easel::base::job::Mode;
use easel::providers::gemini::codes;
use easel::providers::openai::{OpenAiConfig, OpenAiProvider};
use easel::providers::{
    GenerateOutput, GenerateRequest, InputImage, Provider, ProviderError, RequestExtras,
    UpstreamCredential,
};
use easel::testing::fake_openai::{FakeOpenAi, Fault, FaultKind};
use serde_json::{json, Value};

const KEY: &str = "sk-proj-FAKE-test-key-0123456789abcdef";

struct Bundle {
    fake: FakeOpenAi,
    provider: OpenAiProvider,
}

impl Bundle {
    fn credential(&self, base_url: &str) -> UpstreamCredential {
        UpstreamCredential {
            key_id: "k1".into(),
            secret: KEY.into(),
            base_url: base_url.into(),
        }
    }

    async fn run(&self, request: &GenerateRequest) -> Result<GenerateOutput, ProviderError> {
        let credential = self.credential(&self.fake.base_url);
        self.provider.generate(request, Some(&credential)).await
    }
}

async fn setup() -> Bundle {
    let fake = FakeOpenAi::start().await;
    let config = OpenAiConfig {
        timeout_secs: 5,
        base_url: "http://127.0.0.1:9/v1".into(),
        ..OpenAiConfig::default()
    };
    Bundle {
        fake,
        provider: OpenAiProvider::new(config).expect("provider"),
    }
}

fn request(model: &str, options: Value) -> GenerateRequest {
    GenerateRequest {
        job_id: "job-1".into(),
        prompt: "a red fox".into(),
        mode: Mode::Final,
        input_image: None,
        seed: None,
        n: 1,
        aspect_ratio: None,
        image_size: None,
        extra: RequestExtras {
            model: Some(model.into()),
            options: options.as_object().cloned().unwrap_or_default(),
            ..RequestExtras::default()
        },
    }
}

fn png(seed: u64) -> InputImage {
    InputImage {
        bytes: Bytes::from(easel::providers::local::render::render_png(
            "in", seed, 4, 4,
        )),
        mime: "image/png".into(),
    }
}

fn is_png(bytes: &Bytes) -> bool {
    png::Decoder::new(&bytes[..]).read_info().is_ok()
}

#[tokio::test]
async fn generations_send_json_and_keep_usage_and_details() {
    let b = setup().await;
    let mut r = request(
        "gpt-image-1",
        json!({"size": "1536x1024", "quality": "low", "output_format": "webp", "output_compression": 50}),
    );
    r.n = 2;
    let out = b.run(&r).await.expect("images");
    assert_eq!(out.images.len(), 2);
    assert!(out
        .images
        .iter()
        .all(|i| is_png(&i.bytes) && i.mime == "image/png"));
    assert_eq!(
        out.usage.as_ref().expect("usage")["total_tokens"],
        50 + 8320
    );
    let details = out.details.expect("details");
    assert_eq!(details["size"], "1536x1024");
    assert_eq!(details["quality"], "low");
    assert_eq!(details["output_format"], "webp");
    let last = b.fake.stats(KEY).last.expect("recorded");
    assert_eq!(last.route, "images/generations");
    assert_eq!(
        last.body,
        json!({"model": "gpt-image-1", "prompt": "a red fox", "n": 2, "size": "1536x1024",
            "quality": "low", "output_format": "webp", "output_compression": 50})
    );
    assert_eq!(last.headers["authorization"], format!("Bearer {KEY}"));
    assert!(last.headers["content-type"].starts_with("application/json"));
}

#[tokio::test]
async fn dalle_links_are_fetched_and_revised_prompts_kept() {
    let b = setup().await;
    let out = b
        .run(&request("dall-e-3", json!({"style": "natural"})))
        .await
        .expect("images");
    assert_eq!(out.images.len(), 1);
    assert!(is_png(&out.images[0].bytes));
    assert_eq!(
        out.details.expect("details")["revised_prompts"][0],
        "a red fox, revised"
    );
    let last = b.fake.stats(KEY).last.expect("recorded");
    assert_eq!(last.body["response_format"], "b64_json");
}

#[tokio::test]
async fn one_image_edits_use_image_and_several_use_image_brackets_with_the_mask() {
    let b = setup().await;
    let mut r = request(
        "gpt-image-1",
        json!({"input_fidelity": "high", "quality": "medium"}),
    );
    r.input_image = Some(png(1));
    b.run(&r).await.expect("one image");
    let last = b.fake.stats(KEY).last.expect("recorded");
    assert_eq!(last.route, "images/edits");
    assert_eq!(last.file_parts(), ["image"]);
    assert_eq!(last.body["prompt"], "a red fox");
    assert_eq!(last.body["input_fidelity"], "high");
    assert_eq!(last.body["n"], "1");
    assert!(last.body.get("response_format").is_none());
    assert!(last.headers["content-type"].starts_with("multipart/form-data; boundary="));

    r.extra.more_images = vec![png(2), png(3)];
    r.extra.mask = Some(png(4));
    b.run(&r).await.expect("several images and a mask");
    let last = b.fake.stats(KEY).last.expect("recorded");
    assert_eq!(last.file_parts(), ["image[]", "image[]", "image[]", "mask"]);
    for part in last.parts.iter().filter(|p| p.filename.is_some()) {
        assert_eq!(part.content_type.as_deref(), Some("image/png"), "{part:?}");
        assert!(part.len > 8, "{part:?}");
    }
}

#[tokio::test]
async fn variations_send_one_image_and_no_prompt() {
    let b = setup().await;
    let mut r = request("dall-e-2", json!({"size": "256x256"}));
    r.prompt = String::new();
    r.extra.variation = true;
    r.input_image = Some(png(9));
    r.n = 2;
    let out = b.run(&r).await.expect("variations");
    assert_eq!(out.images.len(), 2);
    let last = b.fake.stats(KEY).last.expect("recorded");
    assert_eq!(last.route, "images/variations");
    assert_eq!(last.file_parts(), ["image"]);
    assert_eq!(
        last.body,
        json!({"model": "dall-e-2", "n": "2", "size": "256x256", "response_format": "b64_json"})
    );
}

#[tokio::test]
async fn organization_and_project_ride_on_the_key() {
    let b = setup().await;
    let base = format!("{}#organization=org-7&project=proj-9", b.fake.base_url);
    let credential = b.credential(&base);
    b.provider
        .generate(&request("gpt-image-1", json!({})), Some(&credential))
        .await
        .expect("images");
    let last = b.fake.stats(KEY).last.expect("recorded");
    assert_eq!(last.headers["openai-organization"], "org-7");
    assert_eq!(last.headers["openai-project"], "proj-9");
}

#[tokio::test]
async fn every_fault_is_classified() {
    let b = setup().await;
    let r = request("gpt-image-1", json!({}));
    type Expect = Box<dyn Fn(&ProviderError) -> bool>;
    let cases: Vec<(FaultKind, Expect)> = vec![
        (
            FaultKind::RateLimited {
                retry_after_secs: Some(7),
            },
            Box::new(|e| {
                matches!(e, ProviderError::Retryable { code, retry_after, .. }
                    if code == codes::RATE_LIMITED && *retry_after == Some(Duration::from_secs(7)))
            }),
        ),
        (
            FaultKind::InsufficientQuota,
            Box::new(
                |e| matches!(e, ProviderError::Retryable { code, .. } if code == codes::QUOTA_EXHAUSTED_DAILY),
            ),
        ),
        (
            FaultKind::ServerError(500),
            Box::new(
                |e| matches!(e, ProviderError::Retryable { code, .. } if code == codes::UNAVAILABLE),
            ),
        ),
        (
            FaultKind::ModerationBlocked,
            Box::new(
                |e| matches!(e, ProviderError::ContentBlocked { reason } if reason == "moderation_blocked"),
            ),
        ),
        (
            FaultKind::Unauthorized,
            Box::new(|e| matches!(e, ProviderError::KeyRejected { .. })),
        ),
        (
            FaultKind::MalformedJson,
            Box::new(
                |e| matches!(e, ProviderError::Retryable { code, .. } if code == codes::TRUNCATED),
            ),
        ),
    ];
    for (kind, expected) in cases {
        b.fake.set_fault(KEY, Fault::always(kind.clone()));
        let e = b.run(&r).await.expect_err("a fault");
        assert!(expected(&e), "{kind:?} gave {e:?}");
        assert!(!e.to_string().contains(KEY), "{e}");
    }
}

#[tokio::test]
async fn refusals_of_the_upstream_are_final_bad_requests() {
    let b = setup().await;
    // A relay model passes Easel's checks; the fake refuses what GPT image models refuse.
    let mut r = request("gpt-image-1", json!({}));
    r.input_image = Some(InputImage {
        bytes: Bytes::from_static(b"not an image at all"),
        mime: "image/png".into(),
    });
    match b.run(&r).await {
        Err(ProviderError::Final { code, message }) => {
            assert_eq!(code, codes::BAD_REQUEST);
            assert!(message.contains("unsupported mimetype"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Easel's own check refuses before any call.
    let before = b.fake.stats(KEY).requests;
    let e = b
        .run(&request("dall-e-3", json!({"background": "opaque"})))
        .await
        .expect_err("refused");
    assert!(matches!(e, ProviderError::Final { ref code, .. } if code == "INVALID_REQUEST"));
    assert_eq!(b.fake.stats(KEY).requests, before);
}

#[tokio::test]
async fn a_held_answer_runs_out_the_timeout_as_retryable() {
    let fake = FakeOpenAi::start().await;
    let config = OpenAiConfig {
        timeout_secs: 1,
        ..OpenAiConfig::default()
    };
    let provider = OpenAiProvider::new(config).expect("provider");
    fake.set_fault(KEY, Fault::always(FaultKind::Held));
    let credential = UpstreamCredential {
        key_id: "k".into(),
        secret: KEY.into(),
        base_url: fake.base_url.clone(),
    };
    let e = provider
        .generate(&request("gpt-image-1", json!({})), Some(&credential))
        .await
        .expect_err("timeout");
    assert!(
        matches!(e, ProviderError::Retryable { ref code, .. } if code == codes::TIMEOUT),
        "{e:?}"
    );
    fake.release_held();
}

// ---------------------------------------------------------------------------------------------
// Real jobs: the job API, the worker, the key pool.
// ---------------------------------------------------------------------------------------------

async fn openai_app(fake: &FakeOpenAi, keys: &[&str]) -> common::TestApp {
    let app = common::spawn_app_with(
        |c| {
            c.providers.default = Some("openai".into());
            c.worker.retry_base_ms = 5;
            c.worker.retry_max_ms = 20;
        },
        easel::server::Roles::ALL,
    )
    .await;
    for key in keys {
        app.add_key("openai", key, Some(&fake.base_url), 60_000, 4)
            .await;
    }
    app
}

async fn submit(app: &common::TestApp, prompt: &str) -> String {
    let r = app.submit(json!({"prompt": prompt})).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.expect("json")["jobId"]
        .as_str()
        .expect("id")
        .to_owned()
}

const DONE: &[&str] = &["SUCCEEDED", "FAILED", "CANCELED"];

#[tokio::test]
async fn a_job_runs_on_gpt_image_and_keeps_usage_in_its_meta() {
    let fake = FakeOpenAi::start().await;
    let app = openai_app(&fake, &["sk-a"]).await;
    let id = submit(&app, "a lighthouse").await;
    let job = app.wait_for(&id, DONE, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["resultUrls"].as_array().expect("urls").len(), 1);
    let stored = app
        .app
        .store
        .job_get(&app.tenant_id, &id)
        .await
        .expect("store")
        .expect("job");
    let meta = stored.result_meta.expect("meta");
    assert_eq!(meta["usage"]["total_tokens"], 4210);
    assert_eq!(meta["modelVersion"], "gpt-image-1");
    assert_eq!(meta["upstream"]["size"], "1024x1024");
    assert_eq!(
        fake.stats("sk-a").last.expect("sent").body["model"],
        "gpt-image-1"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_429_with_retry_after_then_success() {
    let fake = FakeOpenAi::start().await;
    fake.set_fault(
        "sk-a",
        Fault::next(
            FaultKind::RateLimited {
                retry_after_secs: Some(0),
            },
            1,
        ),
    );
    let app = openai_app(&fake, &["sk-a"]).await;
    let id = submit(&app, "a boat").await;
    let job = app.wait_for(&id, DONE, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(fake.stats("sk-a").requests, 2);
    app.shutdown().await;
}

#[tokio::test]
async fn moderation_blocked_fails_the_job_at_once() {
    let fake = FakeOpenAi::start().await;
    fake.set_fault("sk-a", Fault::always(FaultKind::ModerationBlocked));
    let app = openai_app(&fake, &["sk-a"]).await;
    let id = submit(&app, "something refused").await;
    let job = app.wait_for(&id, DONE, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(job["errorCode"], "CONTENT_BLOCKED", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_rejected_key_is_disabled_and_the_job_moves_to_another() {
    let fake = FakeOpenAi::start().await;
    fake.set_fault("sk-bad", Fault::always(FaultKind::Unauthorized));
    let app = openai_app(&fake, &["sk-bad", "sk-good"]).await;
    for i in 0..4 {
        let id = submit(&app, &format!("cat {i}")).await;
        let job = app.wait_for(&id, DONE, Duration::from_secs(20)).await;
        assert_eq!(job["status"], "SUCCEEDED", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
    }
    assert!(fake.stats("sk-bad").requests <= 1);
    assert_eq!(app.app.keys.enabled_keys("openai"), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_500_and_a_malformed_body_are_retried() {
    let fake = FakeOpenAi::start().await;
    fake.set_fault("sk-a", Fault::next(FaultKind::ServerError(500), 1));
    let app = openai_app(&fake, &["sk-a"]).await;
    let id = submit(&app, "first").await;
    let job = app.wait_for(&id, DONE, Duration::from_secs(20)).await;
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_u64()),
        (Some("SUCCEEDED"), Some(2)),
        "{job}"
    );
    fake.set_fault("sk-a", Fault::next(FaultKind::MalformedJson, 1));
    let id = submit(&app, "second").await;
    let job = app.wait_for(&id, DONE, Duration::from_secs(20)).await;
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_u64()),
        (Some("SUCCEEDED"), Some(2)),
        "{job}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_held_answer_keeps_the_job_running_until_released() {
    let fake = FakeOpenAi::start().await;
    fake.set_fault("sk-a", Fault::next(FaultKind::Held, 1));
    let app = openai_app(&fake, &["sk-a"]).await;
    let id = submit(&app, "slow").await;
    fake.wait_held(1).await;
    let job: Value = app
        .get_job(&app.api_key, &id)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(job["status"], "RUNNING", "{job}");
    fake.release_held();
    let job = app.wait_for(&id, DONE, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    app.shutdown().await;
}
