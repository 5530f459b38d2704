//! Upstream image models behind one [`Provider`] trait, and the [`Registry`]: the one list of
//! providers this build has.
//!
//! Owns: the wire formats of each upstream (Gemini, OpenAI, a midjourney-proxy; the
//! built-in `local` renderer), what each declares it can do ([`Capabilities`]), how
//! long one of its calls may take, how it checks a key ([`Provider::probe`]), and the
//! classification of every upstream failure into [`ProviderError`] (retryable, final, key
//! rejected, content blocked) with the codes of [`crate::base::job_errors`].
//! It also owns the `[providers]` configuration section ([`ProvidersConfig`], each
//! provider's part in its folder).
//! Must not touch: the store, job state, limits or key selection. A provider is handed one
//! request and at most one credential and returns images or a classified error; retries and
//! bookkeeping happen in `jobs/`, and the upstream keys live in [`crate::keypool`], which
//! imports this module (never the other way round).
//!
//! Adding a provider: a folder here with a type that implements [`Provider`], and one line in
//! [`registry::BUILT_IN`]. Nothing outside names a provider: the worker, the key pool, the
//! probes and the command line all ask the registry.

pub mod gemini;
pub mod imageops;
pub mod local;
pub mod midjourney;
pub mod openai;
pub mod registry;

pub use registry::Registry;

use std::fmt;
use std::time::Duration;

use crate::base::job::Mode;
use crate::base::operation::Operation;
use async_trait::async_trait;
use bytes::Bytes;

/// A reply up to this many bytes is parsed and decoded on the calling async worker: that takes
/// microseconds, less than a hop to a blocking thread and back.
const INLINE_WORK_BYTES: usize = 64 << 10;

/// Runs `work` over an input of `len` bytes: here when it is small, on a blocking thread when
/// it is large enough (a multi-megabyte reply) to hold up the async workers.
pub(crate) async fn cpu_work<T: Send + 'static>(
    len: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if len <= INLINE_WORK_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await
}

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
    pub extra: RequestExtras,
}

/// What some jobs carry beyond a prompt and one input image: several references and a mask
/// (edits), a model the client named, a variation, and parameters only one provider reads.
#[derive(Debug, Clone, Default)]
pub struct RequestExtras {
    /// Reference images after `input_image`, in order.
    pub more_images: Vec<InputImage>,
    /// The edit mask, applied to the first image (its transparent pixels are repainted).
    pub mask: Option<InputImage>,
    /// The upstream model the client named; `None`: the provider's model for the mode.
    pub model: Option<String>,
    /// A variation of `input_image` rather than a generation (OpenAI's dall-e-2).
    pub variation: bool,
    /// Provider-specific parameters as the client gave them (OpenAI's `size`, `quality`...).
    pub options: serde_json::Map<String, serde_json::Value>,
    /// What to do with the prompt and `input_image` (`generate` unless the job says).
    pub operation: Operation,
    /// The parent job's upstream result (its `upstream` meta: the midjourney task id and
    /// message hash an action names), when the job works on a parent's image.
    pub parent: Option<serde_json::Value>,
    /// Which of the parent's images (from 1).
    pub parent_index: Option<u32>,
    /// Earlier turns of the conversation, oldest first (Gemini sends them as `contents`
    /// before this request's own turn; other providers ignore them).
    pub history: Vec<HistoryTurn>,
    /// Where a provider whose upstream tells how far a task has come reports it.
    pub progress: Progress,
}

/// How far a long upstream task has come, 0-99 percent (its end is the job's end), reported
/// by the provider while the worker records it as job events. Only a rise is passed on, and
/// a report costs nothing when nobody listens (a request made outside the worker).
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<tokio::sync::watch::Sender<u8>>);

impl Progress {
    /// A handle and the receiver that hears its rises.
    pub fn channel() -> (Progress, tokio::sync::watch::Receiver<u8>) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (Progress(Some(tx)), rx)
    }

    pub fn report(&self, percent: u8) {
        let percent = percent.min(99);
        if let Some(tx) = &self.0 {
            tx.send_if_modified(|seen| {
                let rose = percent > *seen;
                if rose {
                    *seen = percent;
                }
                rose
            });
        }
    }
}

/// One earlier turn, with its images read back.
#[derive(Debug, Clone, Default)]
pub struct HistoryTurn {
    /// `user` or `model`.
    pub role: String,
    pub text: String,
    pub images: Vec<InputImage>,
    pub thought_signature: Option<String>,
}

impl GenerateRequest {
    /// A variation of the input image: OpenAI's flag, or the job's operation.
    pub fn is_variation(&self) -> bool {
        self.extra.variation || matches!(self.extra.operation, Operation::Variation(_))
    }

    /// Every input image in order: `input_image` first, then the other references.
    pub fn input_images(&self) -> impl Iterator<Item = &InputImage> {
        self.input_image.iter().chain(&self.extra.more_images)
    }
}

/// One produced image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub bytes: Bytes,
    pub mime: String,
    /// The same picture decoded, when the provider has it at hand (the local renderer): an
    /// imagine's grid is composed from it rather than from decoding `bytes` again.
    pub pixels: Option<std::sync::Arc<image::RgbImage>>,
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
    /// What else the upstream said about the result (OpenAI: size, quality, output format,
    /// background, revised prompts), kept in the job's result meta as `upstream`.
    pub details: Option<serde_json::Value>,
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
    /// A provider that needs an upstream key was called without one: final.
    pub fn key_missing(provider: &str) -> ProviderError {
        ProviderError::Final {
            code: crate::base::job_errors::PROVIDER_KEY_MISSING.into(),
            message: format!("the {provider} provider needs an upstream key"),
        }
    }

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
    /// The modes it serves (`draft`, `final`).
    pub modes: Vec<Mode>,
    /// Takes an input image (image-to-image, edits).
    pub image_to_image: bool,
    /// Largest `n` of one job.
    pub max_images: u32,
    /// `aspectRatio` values accepted in every mode (empty: the provider picks).
    pub aspect_ratios: Vec<String>,
    /// `imageSize` values accepted in every mode (empty: none).
    pub image_sizes: Vec<String>,
    /// Calls need an upstream key from the key pool.
    pub needs_key: bool,
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// Stable name used in config, in job rows and on the command line (`local`, `gemini`).
    fn name(&self) -> &'static str;

    fn capabilities(&self) -> &Capabilities;

    /// The longest one [`Provider::generate`] call may take; a key's concurrency permit is
    /// leased for about this long, so a crashed process's slot comes back soon after.
    fn call_timeout(&self) -> Duration;

    /// The origin's environment variables holding keys for this provider, by prefix
    /// (`GEMINI_API_KEY_` reads `GEMINI_API_KEY_1..N` at start); `None` for none.
    fn env_key_prefix(&self) -> Option<&'static str> {
        None
    }

    /// Checks that the upstream accepts `credential` with a cheap call that spends no image
    /// quota (listing models). Used to re-test disabled keys, on a schedule and by hand.
    async fn probe(&self, credential: &UpstreamCredential) -> Result<(), ProviderError>;

    /// Whether it can do `operation`; asked at submit, so a job it cannot do is refused with
    /// 400 `UNSUPPORTED_OPERATION` rather than failing later. Default: generate, and edit
    /// when it takes an input image.
    fn supports(&self, operation: &Operation) -> bool {
        match operation {
            Operation::Generate => true,
            Operation::Edit => self.capabilities().image_to_image,
            _ => false,
        }
    }

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
    pub openai: openai::OpenAiConfig,
    pub midjourney: midjourney::MidjourneyProviderConfig,
}

impl ProvidersConfig {
    /// Each provider's section's checks (the first problem found, with its key).
    pub fn validate(&self) -> Result<(), crate::base::settings::Invalid> {
        self.local.validate()?;
        self.gemini
            .validate()
            .map_err(|problem| ("providers.gemini", problem))?;
        self.openai
            .validate()
            .map_err(|problem| ("providers.openai", problem))?;
        self.midjourney.validate()
    }
}
