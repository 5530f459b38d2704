//! A provider added by a test registers through the registry alone and runs jobs end to end:
//! found by name, made the default, handed keys by the pool, and its own probe re-enables a
//! key it rejected. Nothing outside the registry is told about it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use easel::base::job::Mode;
use easel::base::secret::Secret;
use easel::keypool::{add_provider_key, ProviderKeySpec};
use easel::providers::local::render::render_png;
use easel::providers::{
    Capabilities, GenerateOutput, GenerateRequest, GeneratedImage, Provider, ProviderError,
    UpstreamCredential,
};
use serde_json::{json, Value};

const SECRET: &str = "echo-secret-0123";
const WAIT: Duration = Duration::from_secs(15);

/// A keyed provider that renders the prompt locally, and can be told to refuse its keys.
struct Echo {
    capabilities: Capabilities,
    /// Whether the "upstream" accepts keys now.
    accepts: AtomicBool,
    /// The key ids and secrets each generate call was given.
    calls: Mutex<Vec<(String, String)>>,
    probes: AtomicU32,
}

impl Echo {
    fn new() -> Echo {
        Echo {
            capabilities: Capabilities {
                modes: vec![Mode::Draft, Mode::Final],
                image_to_image: false,
                max_images: 1,
                aspect_ratios: Vec::new(),
                image_sizes: Vec::new(),
                needs_key: true,
            },
            accepts: AtomicBool::new(true),
            calls: Mutex::new(Vec::new()),
            probes: AtomicU32::new(0),
        }
    }

    fn check(&self, credential: &UpstreamCredential) -> Result<(), ProviderError> {
        if self.accepts.load(Ordering::SeqCst) && credential.secret == SECRET {
            Ok(())
        } else {
            Err(ProviderError::KeyRejected {
                message: "echo refuses this key".into(),
            })
        }
    }
}

#[async_trait]
impl Provider for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }

    async fn probe(&self, credential: &UpstreamCredential) -> Result<(), ProviderError> {
        self.probes.fetch_add(1, Ordering::SeqCst);
        self.check(credential)
    }

    async fn generate(
        &self,
        request: &GenerateRequest,
        credential: Option<&UpstreamCredential>,
    ) -> Result<GenerateOutput, ProviderError> {
        let credential = credential.expect("a keyed provider is always given a key");
        self.calls
            .lock()
            .unwrap()
            .push((credential.key_id.clone(), credential.secret.clone()));
        self.check(credential)?;
        Ok(GenerateOutput {
            images: vec![GeneratedImage {
                bytes: Bytes::from(render_png(&request.prompt, 1, 8, 8)),
                mime: "image/png".into(),
                pixels: None,
            }],
            model_version: Some("echo-1".into()),
            ..GenerateOutput::default()
        })
    }
}

async fn submit(app: &common::TestApp, prompt: &str) -> String {
    let response = app.submit(json!({"prompt": prompt, "mode": "draft"})).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    body["jobId"].as_str().expect("jobId").to_owned()
}

#[tokio::test]
async fn a_test_provider_registered_in_the_registry_runs_jobs_with_pool_keys_and_probes() {
    let echo = Arc::new(Echo::new());
    let registered = echo.clone();
    let app = common::spawn_app_built(
        |c| {
            c.auth.admin_token = Some(Secret::new("adm"));
            c.worker.key_refresh_ms = 100;
            c.worker.key_probe_secs = 1;
        },
        move |app| {
            app.providers = app
                .providers
                .clone()
                .with(registered)
                .choose_default(Some("echo"), |_| false)
                .expect("echo is registered");
        },
        easel::server::Roles::ALL,
    )
    .await;
    let providers = &app.app.providers;
    assert_eq!(providers.default_name(), "echo");
    assert!(providers.get("echo").is_some());
    assert!(providers.keyed().any(|p| p.name() == "echo"));
    // The built-in providers are still there beside it.
    assert!(providers.get("local").is_some());

    let spec = ProviderKeySpec {
        provider: "echo".into(),
        key: SECRET.into(),
        rpm: 60_000,
        concurrency: 2,
        endpoint: None,
        priority: 0,
        project: None,
    };
    let record = add_provider_key(app.app.store.as_ref(), &app.app.sealer, spec)
        .await
        .expect("add key");
    app.app.keys.load().await.expect("load keys");

    // A job runs through the test provider with the pool's key.
    let first = submit(&app, "a lighthouse").await;
    let done = app.wait_for(&first, &["SUCCEEDED", "FAILED"], WAIT).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let url = done["resultUrls"][0].as_str().expect("a result URL");
    let image = app
        .http
        .get(url)
        .send()
        .await
        .expect("send")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&image[..], &render_png("a lighthouse", 1, 8, 8)[..]);
    assert_eq!(
        *echo.calls.lock().unwrap(),
        vec![(record.id.clone(), SECRET.to_owned())]
    );

    // The upstream refuses the key: the pool disables it and the job waits for a key.
    echo.accepts.store(false, Ordering::SeqCst);
    let second = submit(&app, "a harbour").await;
    let deadline = std::time::Instant::now() + WAIT;
    while !app
        .app
        .store
        .provider_key_list()
        .await
        .expect("keys")
        .iter()
        .any(|k| k.id == record.id && !k.enabled)
    {
        assert!(std::time::Instant::now() < deadline, "key never disabled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A manual test goes through the provider's own probe and fails while it refuses.
    let tested = app
        .admin_post(
            "adm",
            &format!("/admin/v1/provider-keys/{}/test", record.id),
        )
        .await;
    assert_eq!(tested["ok"], false, "{tested}");
    assert!(echo.probes.load(Ordering::SeqCst) >= 1);

    // It accepts again: the scheduled probe re-enables the key and the waiting job finishes.
    echo.accepts.store(true, Ordering::SeqCst);
    let done = app.wait_for(&second, &["SUCCEEDED", "FAILED"], WAIT).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    let stored = app.app.store.provider_key_list().await.expect("keys");
    assert!(stored.iter().any(|k| k.id == record.id && k.enabled));
    app.shutdown().await;
}
