//! Cheap upstream checks for a key: does the upstream accept it? Used to re-test disabled keys
//! (on a schedule and by `easel test-provider-key`) without spending image quota.

use std::time::Duration;

use super::gemini::API_KEY_HEADER;
use super::keypool::PoolKey;

/// Lists models with the key (free): 2xx means the key works.
pub async fn probe_key(key: &PoolKey, default_base_url: &str) -> Result<(), String> {
    let base = key
        .base_url
        .as_deref()
        .filter(|b| !b.is_empty())
        .unwrap_or(default_base_url)
        .trim_end_matches('/');
    let url = match key.provider.as_str() {
        "gemini" => format!("{base}/v1beta/models?pageSize=1"),
        other => return Err(format!("no probe for provider {other}")),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(url)
        .header(API_KEY_HEADER, &key.secret)
        .send()
        .await
        .map_err(|e| format!("upstream unreachable: {}", e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("upstream answered HTTP {}", status.as_u16()))
    }
}
