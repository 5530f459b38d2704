//! The built-in `local` provider: renders a deterministic PNG from the prompt, so the whole
//! flow works with no upstream key. Same prompt and seed, same image; drafts are smaller.
//! Owns its `[providers.local]` configuration section ([`LocalProviderConfig`]).

pub mod ops;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{
    Capabilities, GenerateOutput, GenerateRequest, Provider, ProviderError, ProvidersConfig,
    UpstreamCredential,
};
use crate::base::job::Mode;
use crate::base::settings::Invalid;

/// `[providers.local]` in the configuration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LocalProviderConfig {
    pub draft_size: u32,
    pub final_size: u32,
    /// Simulated upstream latency on top of the render itself.
    pub delay_ms: u64,
}

impl Default for LocalProviderConfig {
    fn default() -> Self {
        LocalProviderConfig {
            draft_size: 512,
            final_size: 1024,
            delay_ms: 0,
        }
    }
}

impl LocalProviderConfig {
    /// The first problem found, with the key it concerns.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, size) in [
            ("providers.local.draft_size", self.draft_size),
            ("providers.local.final_size", self.final_size),
        ] {
            if !(8..=4096).contains(&size) {
                return Err((key, "must be between 8 and 4096".into()));
            }
        }
        Ok(())
    }
}

pub struct LocalProvider {
    config: LocalProviderConfig,
    capabilities: Capabilities,
}

impl LocalProvider {
    pub fn new(config: LocalProviderConfig) -> LocalProvider {
        LocalProvider {
            config,
            capabilities: Capabilities {
                modes: vec![Mode::Draft, Mode::Final],
                image_to_image: true,
                max_images: 4,
                aspect_ratios: vec!["1:1".into()],
                image_sizes: Vec::new(),
                needs_key: false,
            },
        }
    }

    /// Its line in the registry ([`crate::providers::registry::BUILT_IN`]).
    pub fn build(config: &ProvidersConfig) -> Result<Arc<dyn Provider>, String> {
        Ok(Arc::new(LocalProvider::new(config.local.clone())))
    }
}

/// The local render's own bound, far above any configured delay a test or a demo uses.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Every operation, deterministically ([`ops`]).
    fn supports(&self, _operation: &crate::base::operation::Operation) -> bool {
        true
    }

    fn call_timeout(&self) -> Duration {
        CALL_TIMEOUT + Duration::from_millis(self.config.delay_ms)
    }

    /// No upstream, no key: nothing to check.
    async fn probe(&self, _credential: &UpstreamCredential) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn generate(
        &self,
        request: &GenerateRequest,
        _credential: Option<&UpstreamCredential>,
    ) -> Result<GenerateOutput, ProviderError> {
        if self.config.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.delay_ms)).await;
        }
        let size = match request.mode {
            Mode::Draft => self.config.draft_size,
            Mode::Final => self.config.final_size,
        };
        // Input images (all of them, and a mask) steer the picture too, so edits and
        // variations give a different result from the prompt alone.
        let seed = request
            .input_images()
            .chain(&request.extra.mask)
            .enumerate()
            .fold(request.seed.unwrap_or(0), |seed, (index, input)| {
                let digest = <sha2::Sha256 as sha2::Digest>::digest(&input.bytes);
                let mut first = [0u8; 8];
                first.copy_from_slice(&digest[..8]);
                // Rotated by position, so the order of the images matters.
                seed ^ u64::from_le_bytes(first).rotate_left(index as u32)
            });
        let job = ops::LocalJob {
            operation: request.extra.operation,
            prompt: request.prompt.clone(),
            seed,
            size,
            n: request.n.max(1),
            images: request.input_images().map(|i| i.bytes.clone()).collect(),
        };
        // Rendering is CPU work: keep it off the async workers.
        let result = tokio::task::spawn_blocking(move || ops::perform(&job))
            .await
            .map_err(|e| ProviderError::Retryable {
                code: crate::base::job_errors::RENDER_FAILED.into(),
                message: format!("local render task failed: {e}"),
                retry_after: None,
            })?
            .map_err(|e| ProviderError::Final {
                code: crate::base::job_errors::RENDER_FAILED.into(),
                message: e.0,
            })?;
        let images = result.images;
        Ok(GenerateOutput {
            images,
            caption: result.text,
            model_version: Some(format!("local-{size}")),
            ..GenerateOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(prompt: &str, mode: Mode, seed: Option<u64>) -> GenerateRequest {
        GenerateRequest {
            job_id: "j".into(),
            prompt: prompt.into(),
            mode,
            input_image: None,
            seed,
            n: 1,
            aspect_ratio: None,
            image_size: None,
            extra: Default::default(),
        }
    }

    #[tokio::test]
    async fn same_prompt_same_image_and_draft_is_smaller() {
        let provider = LocalProvider::new(LocalProviderConfig {
            draft_size: 32,
            final_size: 64,
            delay_ms: 0,
        });
        let a = provider
            .generate(&request("a cat", Mode::Draft, Some(1)), None)
            .await
            .expect("render");
        let b = provider
            .generate(&request("a cat", Mode::Draft, Some(1)), None)
            .await
            .expect("render");
        let c = provider
            .generate(&request("a cat", Mode::Final, Some(1)), None)
            .await
            .expect("render");
        assert_eq!(a.images[0].bytes, b.images[0].bytes);
        let dims = |png: &bytes::Bytes| {
            let decoder = png::Decoder::new(&png[..]);
            let reader = decoder.read_info().expect("png");
            (reader.info().width, reader.info().height)
        };
        assert_eq!(dims(&a.images[0].bytes), (32, 32));
        assert_eq!(dims(&c.images[0].bytes), (64, 64));
    }
}
