//! `GeminiProvider` against the fake Gemini API: the happy paths on the real wire format, and
//! every fault class mapped to the exact `ProviderError` the worker and key pool act on.

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use easel::base::job::Mode;
use easel::providers::gemini::{codes, GeminiConfig, GeminiProvider};
use easel::providers::{
    GenerateOutput, GenerateRequest, InputImage, Provider, ProviderError, UpstreamCredential,
};
use easel::testing::fake_gemini::{FakeGemini, Fault, FaultKind};
use serde_json::Value;

/// A key shaped like a real one, so a leak would be easy to spot.
const KEY: &str = "AIzaSyFAKE-test-key-0123456789abcdef";

struct Bundle {
    fake: FakeGemini,
    provider: GeminiProvider,
}

impl Bundle {
    fn credential(&self, key: &str) -> UpstreamCredential {
        UpstreamCredential {
            key_id: "k1".into(),
            secret: key.into(),
            base_url: self.fake.base_url.clone(),
        }
    }

    async fn run(&self, request: &GenerateRequest) -> Result<GenerateOutput, ProviderError> {
        self.provider
            .generate(request, Some(&self.credential(KEY)))
            .await
    }

    fn last_body(&self) -> Value {
        self.fake.stats(KEY).last_body.expect("a request was sent")
    }
}

async fn setup() -> Bundle {
    setup_with(|_| {}).await
}

async fn setup_with(tweak: impl FnOnce(&mut GeminiConfig)) -> Bundle {
    let fake = FakeGemini::start().await;
    let mut config = GeminiConfig {
        timeout_secs: 1,
        // Never the real endpoint in tests: every key carries the fake's URL anyway.
        base_url: "http://127.0.0.1:9".into(),
        ..GeminiConfig::default()
    };
    tweak(&mut config);
    let provider = GeminiProvider::new(config).expect("provider");
    Bundle { fake, provider }
}

fn request(mode: Mode) -> GenerateRequest {
    GenerateRequest {
        job_id: "job-1".into(),
        prompt: "a red fox in the snow".into(),
        mode,
        input_image: None,
        seed: Some(5),
        n: 1,
        aspect_ratio: None,
        image_size: None,
        extra: Default::default(),
    }
}

fn is_png(bytes: &Bytes) -> bool {
    png::Decoder::new(&bytes[..]).read_info().is_ok()
}

#[track_caller]
fn retryable(result: Result<GenerateOutput, ProviderError>) -> (String, Option<Duration>) {
    match result {
        Err(ProviderError::Retryable {
            code, retry_after, ..
        }) => (code, retry_after),
        other => panic!("expected Retryable, got {other:?}"),
    }
}

#[track_caller]
fn final_code(result: Result<GenerateOutput, ProviderError>) -> String {
    match result {
        Err(ProviderError::Final { code, .. }) => code,
        other => panic!("expected Final, got {other:?}"),
    }
}

#[track_caller]
fn blocked(result: Result<GenerateOutput, ProviderError>) -> String {
    match result {
        Err(ProviderError::ContentBlocked { reason }) => reason,
        other => panic!("expected ContentBlocked, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn final_mode_text_and_image_with_everything_captured() {
    let b = setup().await;
    let mut r = request(Mode::Final);
    r.aspect_ratio = Some("16:9".into());
    r.image_size = Some("2K".into());
    let out = b.run(&r).await.expect("generate");

    assert_eq!(out.images.len(), 1);
    assert_eq!(out.images[0].mime, "image/png");
    assert!(is_png(&out.images[0].bytes));
    assert_eq!(
        out.caption.as_deref(),
        Some("Here is your image: a red fox in the snow")
    );
    assert_eq!(
        out.model_version.as_deref(),
        Some("gemini-3-pro-image-preview")
    );
    let response_id = out.response_id.expect("responseId");
    assert!(response_id.starts_with("fake-"), "{response_id}");
    assert_eq!(
        out.thought_signature.as_deref(),
        Some(format!("sig-{response_id}").as_str())
    );
    let usage = out.usage.expect("usage");
    assert_eq!(usage["candidatesTokenCount"], 1290);

    let stats = b.fake.stats(KEY);
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.key_in_url, 0, "the key travels in the header only");
    assert_eq!(
        stats.last_model.as_deref(),
        Some("gemini-3-pro-image-preview")
    );
    assert_eq!(stats.last_method.as_deref(), Some("generateContent"));
    let body = b.last_body();
    assert_eq!(
        body,
        serde_json::json!({
            "contents": [{"role": "user", "parts": [{"text": "a red fox in the snow"}]}],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "seed": 5,
                "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}
            }
        })
    );
}

#[tokio::test]
async fn draft_flash_image_never_receives_image_size() {
    let b = setup().await;
    let mut r = request(Mode::Draft);
    r.aspect_ratio = Some("3:4".into());
    r.image_size = Some("1K".into());
    let out = b.run(&r).await.expect("generate");
    assert_eq!(out.model_version.as_deref(), Some("gemini-2.5-flash-image"));
    assert_eq!(out.thought_signature, None);
    let config = &b.last_body()["generationConfig"];
    assert_eq!(
        config["imageConfig"],
        serde_json::json!({"aspectRatio": "3:4"})
    );
    assert!(config["imageConfig"].get("imageSize").is_none());

    // A size the model cannot make is refused before any request goes out.
    r.image_size = Some("4K".into());
    assert_eq!(final_code(b.run(&r).await), codes::INVALID_REQUEST);
    r.image_size = None;
    r.aspect_ratio = Some("7:5".into());
    assert_eq!(final_code(b.run(&r).await), codes::INVALID_REQUEST);
    assert_eq!(b.fake.stats(KEY).requests, 1);
}

#[tokio::test]
async fn image_to_image_sends_inline_data() {
    let b = setup().await;
    let input = Bytes::from(easel::providers::local::render::render_png("in", 1, 8, 8));
    let mut r = request(Mode::Draft);
    r.input_image = Some(InputImage {
        bytes: input.clone(),
        mime: "image/png".into(),
    });
    b.run(&r).await.expect("generate");
    let parts = &b.last_body()["contents"][0]["parts"];
    assert_eq!(parts[0]["text"], "a red fox in the snow");
    assert_eq!(parts[1]["inlineData"]["mimeType"], "image/png");
    assert_eq!(
        parts[1]["inlineData"]["data"],
        base64::engine::general_purpose::STANDARD.encode(&input)
    );
}

#[tokio::test]
async fn n_images_are_n_calls_one_at_a_time_by_default() {
    let b = setup().await;
    b.fake
        .set_fault(KEY, Fault::latency(Duration::from_millis(50)));
    let mut r = request(Mode::Final);
    r.n = 3;
    let out = b.run(&r).await.expect("generate");
    assert_eq!(out.images.len(), 3);
    assert!(out.images.iter().all(|i| is_png(&i.bytes)));
    let usage = out.usage.expect("usage");
    assert_eq!(usage["requestCount"], 3);
    assert_eq!(usage["candidatesTokenCount"], 3 * 1290);
    let stats = b.fake.stats(KEY);
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.max_in_flight, 1);
    // Each call has its own seed, so the images differ; none asks for several candidates.
    let config = &b.last_body()["generationConfig"];
    assert_eq!(config["seed"], 7);
    assert!(config.get("candidateCount").is_none());
    assert_ne!(out.images[0].bytes, out.images[1].bytes);
}

#[tokio::test]
async fn n_images_in_parallel_when_configured() {
    let b = setup_with(|c| c.fan_out_parallelism = 4).await;
    b.fake
        .set_fault(KEY, Fault::latency(Duration::from_millis(300)));
    let mut r = request(Mode::Draft);
    r.n = 4;
    let out = b.run(&r).await.expect("generate");
    assert_eq!(out.images.len(), 4);
    // All four were at the fake at once (one after another would never overlap).
    assert_eq!(b.fake.stats(KEY).max_in_flight, 4);
}

#[tokio::test]
async fn imagen_goes_through_predict() {
    let b = setup_with(|c| c.final_model = "imagen-4.0-generate-001".into()).await;
    let mut r = request(Mode::Final);
    r.n = 2;
    r.aspect_ratio = Some("9:16".into());
    r.image_size = Some("2K".into());
    let out = b.run(&r).await.expect("generate");
    assert_eq!(out.images.len(), 2);
    assert!(out.images.iter().all(|i| is_png(&i.bytes)));
    assert_eq!(
        out.model_version.as_deref(),
        Some("imagen-4.0-generate-001")
    );
    let stats = b.fake.stats(KEY);
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.last_method.as_deref(), Some("predict"));
    assert_eq!(
        b.last_body(),
        serde_json::json!({
            "instances": [{"prompt": "a red fox in the snow"}],
            "parameters": {"sampleCount": 2, "aspectRatio": "9:16", "imageSize": "2K"}
        })
    );
    // Imagen blocks: the filtered reason comes back.
    b.fake
        .set_fault(KEY, FaultKind::FinishReason("filtered by safety".into()));
    assert_eq!(blocked(b.run(&r).await), "filtered by safety");
}

#[tokio::test]
async fn latency_is_waited_out_and_faults_are_per_key() {
    let b = setup().await;
    let other = "AIzaSyOTHER-key";
    b.fake
        .set_fault(KEY, Fault::latency(Duration::from_millis(300)));
    b.fake.set_fault(other, FaultKind::ServerError(503));
    let started = Instant::now();
    b.run(&request(Mode::Draft)).await.expect("slow but fine");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let e = b
        .provider
        .generate(&request(Mode::Draft), Some(&b.credential(other)))
        .await;
    assert_eq!(retryable(e).0, codes::UNAVAILABLE);
    assert_eq!(b.fake.stats(KEY).faults, 0);
    assert_eq!(b.fake.stats(other).faults, 1);
}

#[tokio::test]
async fn request_times_support_rpm_checks() {
    let b = setup().await;
    for _ in 0..5 {
        b.run(&request(Mode::Draft)).await.expect("generate");
    }
    let stats = b.fake.stats(KEY);
    assert_eq!(stats.request_times.len(), 5);
    assert_eq!(stats.max_in_window(Duration::from_secs(60)), 5);
    assert_eq!(b.fake.total_requests(), 5);
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_honours_retry_after_header_and_retry_info() {
    let b = setup().await;
    b.fake.set_fault(
        KEY,
        FaultKind::RateLimited {
            retry_after_secs: Some(7),
            retry_delay: None,
        },
    );
    assert_eq!(
        retryable(b.run(&request(Mode::Draft)).await),
        (codes::RATE_LIMITED.into(), Some(Duration::from_secs(7)))
    );
    b.fake.set_fault(
        KEY,
        FaultKind::RateLimited {
            retry_after_secs: None,
            retry_delay: Some("37s".into()),
        },
    );
    assert_eq!(
        retryable(b.run(&request(Mode::Draft)).await),
        (codes::RATE_LIMITED.into(), Some(Duration::from_secs(37)))
    );
}

#[tokio::test]
async fn daily_quota_is_marked_for_the_key_pool() {
    let b = setup().await;
    b.fake.set_fault(
        KEY,
        FaultKind::QuotaExhaustedDaily {
            retry_delay: Some("45.5s".into()),
        },
    );
    assert_eq!(
        retryable(b.run(&request(Mode::Final)).await),
        (
            codes::QUOTA_EXHAUSTED_DAILY.into(),
            Some(Duration::from_millis(45_500))
        )
    );
}

#[tokio::test]
async fn server_errors_are_retryable() {
    let b = setup().await;
    for status in [500, 502, 503, 504] {
        b.fake.set_fault(KEY, FaultKind::ServerError(status));
        let (code, retry_after) = retryable(b.run(&request(Mode::Draft)).await);
        assert_eq!(
            (code.as_str(), retry_after),
            (codes::UNAVAILABLE, None),
            "{status}"
        );
    }
}

#[tokio::test]
async fn a_hung_upstream_times_out() {
    let b = setup().await;
    b.fake.set_fault(KEY, FaultKind::Hang);
    let started = Instant::now();
    assert_eq!(
        retryable(b.run(&request(Mode::Draft)).await).0,
        codes::TIMEOUT
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    let b = setup().await;
    b.fake.set_fault(KEY, FaultKind::StallBody);
    assert_eq!(
        retryable(b.run(&request(Mode::Draft)).await).0,
        codes::TIMEOUT
    );
}

#[tokio::test]
async fn a_dropped_connection_is_retryable() {
    let b = setup().await;
    b.fake.set_fault(KEY, FaultKind::DropConnection);
    assert_eq!(
        retryable(b.run(&request(Mode::Draft)).await).0,
        codes::CONNECTION
    );
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let b = setup().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let credential = UpstreamCredential {
        key_id: "k1".into(),
        secret: KEY.into(),
        base_url: format!("http://127.0.0.1:{closed}"),
    };
    let e = b
        .provider
        .generate(&request(Mode::Draft), Some(&credential))
        .await;
    assert_eq!(retryable(e).0, codes::CONNECTION);
}

#[tokio::test]
async fn malformed_and_truncated_json_are_retryable() {
    let b = setup().await;
    b.fake.set_fault(KEY, FaultKind::MalformedJson);
    assert_eq!(
        retryable(b.run(&request(Mode::Draft)).await).0,
        codes::MALFORMED
    );
    b.fake.set_fault(KEY, FaultKind::TruncatedJson);
    assert_eq!(
        retryable(b.run(&request(Mode::Draft)).await).0,
        codes::TRUNCATED
    );
}

#[tokio::test]
async fn safety_blocks_are_final_with_the_upstream_reason() {
    let b = setup().await;
    b.fake
        .set_fault(KEY, FaultKind::PromptBlocked("PROHIBITED_CONTENT".into()));
    assert_eq!(
        blocked(b.run(&request(Mode::Final)).await),
        "PROHIBITED_CONTENT"
    );
    b.fake
        .set_fault(KEY, FaultKind::FinishReason("IMAGE_SAFETY".into()));
    assert_eq!(blocked(b.run(&request(Mode::Final)).await), "IMAGE_SAFETY");
    b.fake
        .set_fault(KEY, FaultKind::FinishReason("NO_IMAGE".into()));
    assert_eq!(blocked(b.run(&request(Mode::Final)).await), "NO_IMAGE");
    b.fake.set_fault(
        KEY,
        FaultKind::TextOnly("I can't draw that, but here is a poem.".into()),
    );
    assert_eq!(blocked(b.run(&request(Mode::Final)).await), "NO_IMAGE");
    assert!(!ProviderError::ContentBlocked {
        reason: "NO_IMAGE".into()
    }
    .is_retryable());
}

#[tokio::test]
async fn wrong_keys_are_rejected() {
    let b = setup().await;
    for fault in [
        FaultKind::Unauthorized,
        FaultKind::Forbidden,
        FaultKind::InvalidKey,
    ] {
        b.fake.set_fault(KEY, fault.clone());
        let e = b.run(&request(Mode::Draft)).await;
        assert!(
            matches!(e, Err(ProviderError::KeyRejected { .. })),
            "{fault:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn unknown_model_is_final() {
    let b = setup_with(|c| {
        c.models.insert("nano-banana-9".into(), Default::default());
        c.draft_model = "nano-banana-9".into();
    })
    .await;
    assert_eq!(
        final_code(b.run(&request(Mode::Draft)).await),
        codes::NOT_FOUND
    );
    b.fake.set_fault(
        KEY,
        FaultKind::Status {
            status: 400,
            body: r#"{"error":{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT"}}"#.into(),
        },
    );
    assert_eq!(
        final_code(b.run(&request(Mode::Final)).await),
        codes::BAD_REQUEST
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let b = setup().await;
    let target = format!(
        "{}/v1beta/models/gemini-2.5-flash-image:generateContent",
        b.fake.base_url
    );
    b.fake.set_fault(KEY, FaultKind::Redirect(target));
    assert_eq!(
        final_code(b.run(&request(Mode::Draft)).await),
        codes::REDIRECT
    );
    assert_eq!(b.fake.total_requests(), 1);
}

#[tokio::test]
async fn oversized_replies_are_refused() {
    let b = setup_with(|c| c.max_response_bytes = 1024 * 1024).await;
    b.fake.set_fault(KEY, FaultKind::Oversized(2 * 1024 * 1024));
    assert_eq!(
        final_code(b.run(&request(Mode::Draft)).await),
        codes::RESPONSE_TOO_LARGE
    );
    b.fake.set_fault(KEY, FaultKind::Oversized(1000));
    b.run(&request(Mode::Draft))
        .await
        .expect("small padding is fine");
}

#[tokio::test]
async fn fail_next_n_then_recover() {
    let b = setup().await;
    b.fake
        .set_fault(KEY, Fault::from(FaultKind::ServerError(503)).next(2));
    for _ in 0..2 {
        assert_eq!(
            retryable(b.run(&request(Mode::Draft)).await).0,
            codes::UNAVAILABLE
        );
    }
    b.run(&request(Mode::Draft)).await.expect("third succeeds");
    assert_eq!(b.fake.stats(KEY).faults, 2);
}

#[tokio::test]
async fn percent_faults_are_deterministic() {
    let b = setup().await;
    let outcomes = |key: &'static str| {
        let b = &b;
        async move {
            let mut seen = Vec::new();
            for _ in 0..30 {
                let r = b
                    .provider
                    .generate(&request(Mode::Draft), Some(&b.credential(key)))
                    .await;
                seen.push(r.is_ok());
            }
            seen
        }
    };
    b.fake.set_fault(
        "key-a",
        Fault::from(FaultKind::ServerError(500)).percent(40, 9),
    );
    b.fake.set_fault(
        "key-b",
        Fault::from(FaultKind::ServerError(500)).percent(40, 9),
    );
    let a = outcomes("key-a").await;
    let c = outcomes("key-b").await;
    assert_eq!(a, c);
    let failures = a.iter().filter(|ok| !**ok).count();
    assert!((4..=20).contains(&failures), "{failures} of 30");
}

#[tokio::test]
async fn a_missing_credential_is_final() {
    let b = setup().await;
    let e = b.provider.generate(&request(Mode::Draft), None).await;
    assert_eq!(final_code(e), codes::KEY_MISSING);
    assert_eq!(b.fake.total_requests(), 0);
}

#[tokio::test]
async fn the_key_never_appears_in_an_error() {
    let b = setup().await;
    let faults = [
        FaultKind::RateLimited {
            retry_after_secs: Some(1),
            retry_delay: Some("2s".into()),
        },
        FaultKind::QuotaExhaustedDaily { retry_delay: None },
        FaultKind::ServerError(500),
        FaultKind::ServerError(502),
        FaultKind::Hang,
        FaultKind::StallBody,
        FaultKind::DropConnection,
        FaultKind::MalformedJson,
        FaultKind::TruncatedJson,
        FaultKind::PromptBlocked("SAFETY".into()),
        FaultKind::FinishReason("IMAGE_SAFETY".into()),
        FaultKind::TextOnly(format!("your key is {KEY}")),
        FaultKind::Unauthorized,
        FaultKind::Forbidden,
        FaultKind::InvalidKey,
        FaultKind::EchoKey,
        FaultKind::Redirect(format!("http://evil.example/?key={KEY}")),
        FaultKind::Status {
            status: 418,
            body: format!(r#"{{"error":{{"code":418,"message":"{KEY}","status":"TEAPOT"}}}}"#),
        },
    ];
    for fault in faults {
        b.fake.set_fault(KEY, fault.clone());
        let e = b
            .run(&request(Mode::Draft))
            .await
            .expect_err("every fault fails");
        let shown = format!("{e} | {e:?} | {}", e.error_code());
        assert!(!shown.contains(KEY), "{fault:?} leaked the key: {shown}");
        if fault == FaultKind::EchoKey {
            assert!(shown.contains("****"), "{shown}");
            assert_eq!(e.error_code(), codes::BAD_REQUEST);
        }
    }
    let credential = format!("{:?}", b.credential(KEY));
    assert!(!credential.contains(KEY));
}
