//! The official `openai` Python SDK against a live Easel: `tests/sdk/openai_images.py` runs
//! images.generate (url and b64_json), images.edit (one image, several, a mask),
//! images.create_variation, models.list and the typed exceptions for 400, 401 and 429.
//!
//! The SDK lives in a virtual environment whose python `EASEL_TEST_PYTHON` names (`.ci/run`
//! makes it). Without it the test says it skipped, except under `CI=true`, where it fails.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use easel::testing::fake_openai::FakeOpenAi;

fn sdk_python() -> Option<PathBuf> {
    let python = std::env::var("EASEL_TEST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    if python.is_none() && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but EASEL_TEST_PYTHON is not set: .ci/run must make the openai venv");
    }
    python.map(PathBuf::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_works_unchanged() {
    let Some(python) = sdk_python() else {
        eprintln!("SKIPPED: set EASEL_TEST_PYTHON to a python with the openai package");
        return;
    };
    let fake = FakeOpenAi::start().await;
    let app = common::spawn_app().await;
    app.add_key("openai", "sk-sdk", Some(&fake.base_url), 60_000, 4)
        .await;
    let (_slow, slow_key) = app.new_tenant("slow", 1, 5).await;
    let inputs = tempfile::tempdir().expect("tempdir");
    for (name, seed) in [("a.png", 1), ("b.png", 2), ("mask.png", 3)] {
        let png = easel::providers::local::render::render_png("input", seed, 16, 16);
        std::fs::write(inputs.path().join(name), png).expect("write input");
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_images.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .env("EASEL_BASE_URL", app.url("/v1"))
        .env("EASEL_API_KEY", &app.api_key)
        .env("EASEL_SLOW_API_KEY", &slow_key)
        .env("EASEL_INPUT_DIR", inputs.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the SDK script failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("ok - ").count(), 17, "{stdout}");
    app.shutdown().await;
}
