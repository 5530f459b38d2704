//! Upstream image models behind one [`Provider`] trait.
//!
//! Owns: the wire formats of each upstream (Gemini, OpenAI, Midjourney proxy, the built-in
//! `local` renderer), their declared capabilities, and the classification of every upstream
//! failure into [`ProviderError`] (retryable, final, key rejected, content blocked), and the
//! `[providers]` configuration section ([`ProvidersConfig`], each provider's part with it).
//! Must not touch: the store, job state, limits or key selection. A provider is handed one
//! request and at most one credential and returns images or a classified error; retries and
//! bookkeeping happen in `jobs/`.
//!
//! The one exception sits beside the providers rather than in them: [`keypool`] (with its
//! per-key [`breaker`]) owns the upstream keys, picks one per call through the limiter and
//! turns each classified error into key health. Providers never see the pool; the worker asks
//! the pool for a key and hands the provider only the credential.

pub mod breaker;
pub mod gemini;
pub mod keypool;
pub mod local;
pub mod probe;

use std::fmt;
use std::time::Duration;

use crate::base::job::Mode;
use async_trait::async_trait;
use bytes::Bytes;

/// An input image already fetched and checked by Easel.
#[derive(Debug, Clone)]
pub struct InputImage {
    pub bytes: Bytes,
    pub mime: String,
}

/// Everything a provider needs to run one job.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub job_id: String,
    pub prompt: String,
    pub mode: Mode,
    pub input_image: Option<InputImage>,
    pub seed: Option<u64>,
    /// Images wanted (>= 1).
    pub n: u32,
    pub aspect_ratio: Option<String>,
    pub image_size: Option<String>,
}

/// One produced image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub bytes: Bytes,
    pub mime: String,
}

/// What a provider returns on success.
#[derive(Debug, Clone, Default)]
pub struct GenerateOutput {
    pub images: Vec<GeneratedImage>,
    /// Text the model returned beside the image, if any.
    pub caption: Option<String>,
    /// Upstream usage figures (tokens, images), kept for billing and audit.
    pub usage: Option<serde_json::Value>,
    pub model_version: Option<String>,
    pub response_id: Option<String>,
    /// Gemini 3 `thoughtSignature`, needed for a later multi-turn edit.
    pub thought_signature: Option<String>,
}

/// A credential for one upstream key: where to send and what to send.
#[derive(Clone)]
pub struct UpstreamCredential {
    pub key_id: String,
    pub secret: String,
    pub base_url: String,
}

impl fmt::Debug for UpstreamCredential {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamCredential")
            .field("key_id", &self.key_id)
            .field("secret", &"****")
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// Every upstream failure, classified so the caller knows what happens next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// Try again later (429, 5xx, timeout, connection error, malformed body).
    #[error("{code}: {message}")]
    Retryable {
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request itself is wrong for this upstream; retrying cannot help.
    #[error("{code}: {message}")]
    Final { code: String, message: String },
    /// The key was refused (401/403): disable it and move the job to another key.
    #[error("upstream key rejected: {message}")]
    KeyRejected { message: String },
    /// A safety filter refused the prompt or the image: final, never retried.
    #[error("content blocked: {reason}")]
    ContentBlocked { reason: String },
}

impl ProviderError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Retryable { .. } | ProviderError::KeyRejected { .. }
        )
    }

    /// The contract's `errorCode` for a job that ends with this error.
    pub fn error_code(&self) -> &str {
        match self {
            ProviderError::Retryable { code, .. } | ProviderError::Final { code, .. } => code,
            ProviderError::KeyRejected { .. } => crate::base::job_errors::UPSTREAM_KEY_REJECTED,
            ProviderError::ContentBlocked { .. } => crate::base::job_errors::CONTENT_BLOCKED,
        }
    }
}

/// What a provider can do; checked at submit so bad requests fail early.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub image_to_image: bool,
    pub max_images: u32,
    pub aspect_ratios: Vec<String>,
    pub needs_key: bool,
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// Stable name used in config and in job rows (`local`, `gemini`, ...).
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> &Capabilities;

    /// Runs one generation. `credential` is `None` only for providers that need no key.
    async fn generate(
        &self,
        request: &GenerateRequest,
        credential: Option<&UpstreamCredential>,
    ) -> Result<GenerateOutput, ProviderError>;
}

/// `[providers]` in the configuration: each provider's own section.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProvidersConfig {
    /// Provider used for new jobs. Default: `local` unless another provider is configured.
    pub default: Option<String>,
    pub local: local::LocalProviderConfig,
    pub gemini: gemini::GeminiConfig,
}

/// The configured providers by name, and which one new jobs use.
#[derive(Clone)]
pub struct Registry {
    providers: std::collections::HashMap<&'static str, std::sync::Arc<dyn Provider>>,
    default: &'static str,
}

impl Registry {
    /// Every provider this build knows. The default is `providers.default` if set, otherwise
    /// the first of `with_keys` (providers that have upstream keys), otherwise `local`: the
    /// local renderer is the default only when nothing else is configured.
    pub fn build(config: &ProvidersConfig, with_keys: &[&str]) -> Result<Registry, String> {
        let mut providers: std::collections::HashMap<&'static str, std::sync::Arc<dyn Provider>> =
            std::collections::HashMap::new();
        let local: std::sync::Arc<dyn Provider> =
            std::sync::Arc::new(local::LocalProvider::new(config.local.clone()));
        providers.insert(local.name(), local);
        let gemini: std::sync::Arc<dyn Provider> =
            std::sync::Arc::new(gemini::GeminiProvider::new(config.gemini.clone())?);
        providers.insert(gemini.name(), gemini);
        let wanted = config
            .default
            .as_deref()
            .or_else(|| {
                with_keys
                    .iter()
                    .copied()
                    .find(|p| providers.contains_key(p))
            })
            .unwrap_or("local");
        let default = providers
            .keys()
            .copied()
            .find(|name| *name == wanted)
            .ok_or_else(|| format!("providers.default: unknown provider '{wanted}'"))?;
        Ok(Registry { providers, default })
    }

    pub fn get(&self, name: &str) -> Option<std::sync::Arc<dyn Provider>> {
        self.providers.get(name).cloned()
    }

    pub fn default_name(&self) -> &'static str {
        self.default
    }
}
