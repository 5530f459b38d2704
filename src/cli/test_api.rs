//! `easel test-api`: submits a job to a running server, follows it to a terminal status and
//! checks that the first result downloads as an image.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

pub async fn run(
    base: &str,
    api_key: &str,
    prompt: &str,
    mode: &str,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let base = base.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let health: Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?
        .json()
        .await?;
    println!("health: {health}");
    let response = http
        .post(format!("{base}/v1/images/generate"))
        .bearer_auth(api_key)
        .json(&json!({"prompt": prompt, "mode": mode}))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .context("submit answered with no JSON")?;
    if status.as_u16() != 202 {
        bail!("submit failed: HTTP {status}: {body}");
    }
    let job_id = body["jobId"]
        .as_str()
        .context("no jobId in the answer")?
        .to_owned();
    println!("submitted job {job_id}");
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let job: Value = http
            .get(format!("{base}/v1/jobs/{job_id}"))
            .bearer_auth(api_key)
            .send()
            .await?
            .json()
            .await?;
        let status = job["status"].as_str().unwrap_or("?").to_owned();
        if status != last {
            println!("  {:>6} ms  {status}", started.elapsed().as_millis());
            last = status.clone();
        }
        match status.as_str() {
            "SUCCEEDED" => return check_result(&http, &job).await,
            "FAILED" | "CANCELED" => bail!("job ended {status}: {}", job["error"]),
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(timeout_secs) {
            bail!("job still {status} after {timeout_secs} s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn check_result(http: &reqwest::Client, job: &Value) -> anyhow::Result<()> {
    let url = job["resultUrls"][0]
        .as_str()
        .context("SUCCEEDED with no result URL")?;
    let bytes = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let is_image = bytes.starts_with(b"\x89PNG")
        || bytes.starts_with(b"\xff\xd8")
        || bytes.get(8..12) == Some(b"WEBP");
    if !is_image {
        bail!("result {url} is not an image");
    }
    println!("result: {url} ({} bytes)", bytes.len());
    println!("test-api: OK");
    Ok(())
}
