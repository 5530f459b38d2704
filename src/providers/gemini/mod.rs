//! The `gemini` provider: Google's Gemini image models ("Nano Banana", Nano Banana Pro) through
//! `generateContent`, and Imagen through `predict`, on the Gemini API's real wire format.
//!
//! Owns: building each upstream request from a [`GenerateRequest`], sending it with the key
//! in the `x-goog-api-key` header (never in the URL, never in a log line or an error
//! message), reading the reply within time and size bounds, and handing back images or a
//! classified [`ProviderError`].
//! Must not: choose keys, retry, sleep on `Retry-After`, or keep state between calls; the
//! key pool and the worker do that with what the error says.
//!
//! Submodules: [`config`] (settings, capability table, [`validate`]), [`wire`] (serde types of
//! the API), [`classify`] (what a reply or a failure means; pure functions, tested on the
//! recorded replies in `fixtures/`).

pub mod classify;
pub mod config;
pub mod operations;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};

pub use classify::codes;
pub use config::{is_imagen, validate, GeminiConfig, ModelCapability};

use super::{
    Capabilities, GenerateOutput, GenerateRequest, Provider, ProviderError, UpstreamCredential,
};
use crate::base::job::Mode;
use crate::providers::ProvidersConfig;
use wire::{
    Content, GenerateContentRequest, GenerationConfig, ImageConfig, Part, PredictInstance,
    PredictParameters, PredictRequest,
};

/// The header that carries the key.
pub const API_KEY_HEADER: &str = "x-goog-api-key";

/// The origin's environment variables of Gemini keys: `GEMINI_API_KEY_1..N`.
pub const ENV_KEY_PREFIX: &str = "GEMINI_API_KEY_";

/// A key probe lists one model: free, and quick unless the upstream is in trouble.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Error replies are read up to this much; the rest is not needed to classify them.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

pub struct GeminiProvider {
    config: GeminiConfig,
    http: reqwest::Client,
    capabilities: Capabilities,
}

impl GeminiProvider {
    /// Checks `config` and builds the HTTP client (rustls, no redirects, bounded time).
    pub fn new(config: GeminiConfig) -> Result<GeminiProvider, String> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .user_agent(concat!("easel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("providers.gemini: cannot build the HTTP client: {e}"))?;
        let capabilities = declared_capabilities(&config);
        Ok(GeminiProvider {
            config,
            http,
            capabilities,
        })
    }

    /// Its line in the registry ([`crate::providers::registry::BUILT_IN`]).
    pub fn build(config: &ProvidersConfig) -> Result<Arc<dyn Provider>, String> {
        Ok(Arc::new(GeminiProvider::new(config.gemini.clone())?))
    }

    pub fn config(&self) -> &GeminiConfig {
        &self.config
    }

    /// The key's own base URL, else the configured one; without a trailing slash.
    fn base_url<'a>(&'a self, credential: &'a UpstreamCredential) -> &'a str {
        match credential.base_url.trim() {
            "" => self.config.base_url.trim_end_matches('/'),
            own => own.trim_end_matches('/'),
        }
    }

    /// The key as a header value, marked sensitive so it never reaches a log line.
    fn key_header(secret: &str) -> Result<HeaderValue, ProviderError> {
        let mut key = HeaderValue::from_str(secret).map_err(|_| ProviderError::KeyRejected {
            message: "the key holds characters a header cannot carry".into(),
        })?;
        key.set_sensitive(true);
        Ok(key)
    }

    async fn run(
        &self,
        request: &GenerateRequest,
        credential: &UpstreamCredential,
    ) -> Result<GenerateOutput, ProviderError> {
        let model = self.config.model_of(request);
        let cap = self
            .config
            .capability(model)
            .ok_or_else(|| invalid(format!("model '{model}' is not configured")))?;
        let base = self.base_url(credential);
        if request.extra.operation.gives_text() {
            return self.describe(request, cap, credential).await;
        }
        if is_imagen(model) {
            let url = format!("{base}/v1beta/models/{model}:predict");
            let body = encode(&build_predict(request, cap))?;
            let reply = self.call(&url, &credential.secret, body).await?;
            let mut out = parse_off_thread(reply, classify::parse_predict).await?;
            out.images.truncate(request.n.max(1) as usize);
            out.model_version.get_or_insert_with(|| model.to_owned());
            return Ok(out);
        }
        let url = format!("{base}/v1beta/models/{model}:generateContent");
        let n = request.n.max(1);
        if n == 1 || cap.multi_image_calls {
            let body = encode(&build_generate_content(
                request,
                cap,
                &self.config,
                request.seed,
                (n > 1).then_some(n),
            ))?;
            let reply = self.call(&url, &credential.secret, body).await?;
            let mut out = parse_off_thread(reply, classify::parse_generate_content).await?;
            out.images.truncate(n as usize);
            return Ok(out);
        }
        // One image per call: n calls, each with its own seed so they differ; the first
        // failure ends the job's attempt (and cancels the calls still running).
        let calls = (0..n).map(|i| {
            let seed = request.seed.map(|s| s.wrapping_add(u64::from(i)));
            let url = url.as_str();
            async move {
                let body = encode(&build_generate_content(
                    request,
                    cap,
                    &self.config,
                    seed,
                    None,
                ))?;
                let reply = self.call(url, &credential.secret, body).await?;
                parse_off_thread(reply, classify::parse_generate_content).await
            }
        });
        let outputs: Vec<GenerateOutput> = futures::stream::iter(calls)
            .buffered(self.config.fan_out_parallelism as usize)
            .try_collect()
            .await?;
        let mut out = merge(outputs);
        out.images.truncate(n as usize);
        Ok(out)
    }

    /// A describe: the source image and the instruction, answered in text only.
    async fn describe(
        &self,
        request: &GenerateRequest,
        cap: &ModelCapability,
        credential: &UpstreamCredential,
    ) -> Result<GenerateOutput, ProviderError> {
        let model = self.config.model_of(request);
        let url = format!(
            "{}/v1beta/models/{model}:generateContent",
            self.base_url(credential)
        );
        let mut body = build_generate_content(request, cap, &self.config, None, None);
        body.generation_config.response_modalities = vec!["TEXT".into()];
        body.generation_config.image_config = None;
        let reply = self.call(&url, &credential.secret, encode(&body)?).await?;
        let reply: wire::GenerateContentResponse =
            serde_json::from_slice(&reply).map_err(|e| ProviderError::Retryable {
                code: codes::MALFORMED.into(),
                message: format!("the describe reply is not JSON: {e}"),
                retry_after: None,
            })?;
        operations::parse_text(reply)
    }

    /// One POST; returns the body of a 2xx reply, or the classified failure.
    async fn call(&self, url: &str, secret: &str, body: Vec<u8>) -> Result<Bytes, ProviderError> {
        let key = GeminiProvider::key_header(secret)?;
        let started = Instant::now();
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(API_KEY_HEADER, key)
            .body(body)
            .send()
            .await
            .map_err(classify::classify_transport)?;
        let status = response.status();
        tracing::debug!(
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "gemini reply"
        );
        if status.is_success() {
            return read_bounded(response, self.config.max_response_bytes, true).await;
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // An error body that breaks off or runs long is still an error of this status.
        let body = read_bounded(response, MAX_ERROR_BODY_BYTES, false)
            .await
            .unwrap_or_default();
        Err(classify::classify_status(
            status.as_u16(),
            retry_after.as_deref(),
            &body,
        ))
    }
}

/// A key probe's reply: 2xx means the key works; any other reply is read (bounded) and
/// classified as a call's would be by `classify`, the key scrubbed from the message.
pub(crate) async fn probe_reply(
    response: reqwest::Response,
    secret: &str,
    classify: impl FnOnce(u16, &[u8]) -> ProviderError,
) -> Result<(), ProviderError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = read_bounded(response, MAX_ERROR_BODY_BYTES, false)
        .await
        .unwrap_or_default();
    Err(redact(classify(status.as_u16(), &body), secret))
}

/// Reads a body up to `limit` bytes. Past the limit: an error when `strict`, else the body is
/// cut there.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
    strict: bool,
) -> Result<Bytes, ProviderError> {
    let too_large = |len: u64| ProviderError::Final {
        code: codes::RESPONSE_TOO_LARGE.into(),
        message: format!("the reply is {len} bytes or more; the limit is {limit}"),
    };
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if strict {
        if let Some(len) = declared.filter(|len| *len > limit as u64) {
            return Err(too_large(len));
        }
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(classify::classify_transport)?
    {
        if buf.len() + chunk.len() > limit {
            if strict {
                return Err(too_large((buf.len() + chunk.len()) as u64));
            }
            buf.extend_from_slice(&chunk[..limit - buf.len()]);
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// JSON parsing and base64 decoding of multi-megabyte replies is CPU work: off the async
/// workers (a small reply is read where it is).
async fn parse_off_thread(
    body: Bytes,
    parse: fn(&[u8]) -> Result<GenerateOutput, ProviderError>,
) -> Result<GenerateOutput, ProviderError> {
    super::cpu_work(body.len(), move || parse(&body))
        .await
        .map_err(|e| ProviderError::Retryable {
            code: codes::MALFORMED.into(),
            message: format!("reading the reply failed: {e}"),
            retry_after: None,
        })?
}

fn encode<T: serde::Serialize>(body: &T) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(body).map_err(|e| invalid(format!("cannot encode the request: {e}")))
}

fn invalid(message: String) -> ProviderError {
    ProviderError::Final {
        code: codes::INVALID_REQUEST.into(),
        message,
    }
}

/// The `generateContent` body for `request` on a model with capability `cap`.
/// `candidate_count` is sent only when set; `imageSize` only when the model takes it.
pub fn build_generate_content(
    request: &GenerateRequest,
    cap: &ModelCapability,
    config: &GeminiConfig,
    seed: Option<u64>,
    candidate_count: Option<u32>,
) -> GenerateContentRequest {
    let mut parts = vec![Part::text(request.prompt.clone())];
    for image in request.input_images() {
        parts.push(Part::inline(
            image.mime.clone(),
            base64::engine::general_purpose::STANDARD.encode(&image.bytes),
        ));
    }
    let image_config = ImageConfig {
        aspect_ratio: request.aspect_ratio.clone(),
        image_size: request.image_size.clone().filter(|_| cap.sends_image_size),
    };
    let has_image_config = image_config != ImageConfig::default();
    let modalities: &[&str] = if config.image_only {
        &["IMAGE"]
    } else {
        &["TEXT", "IMAGE"]
    };
    let mut contents: Vec<Content> = request.extra.history.iter().map(history_content).collect();
    contents.push(Content {
        role: Some("user".into()),
        parts,
    });
    GenerateContentRequest {
        contents,
        generation_config: GenerationConfig {
            response_modalities: modalities.iter().map(|m| (*m).to_owned()).collect(),
            candidate_count,
            seed: seed.map(upstream_seed),
            image_config: has_image_config.then_some(image_config),
        },
    }
}

/// An earlier turn as Gemini takes it back: its text, then its images; a model turn's
/// `thoughtSignature` rides on its first image (where Gemini put it), else on its text.
fn history_content(turn: &crate::providers::HistoryTurn) -> Content {
    let mut parts = Vec::new();
    if !turn.text.is_empty() {
        parts.push(Part::text(turn.text.clone()));
    }
    for image in &turn.images {
        parts.push(Part::inline(
            image.mime.clone(),
            base64::engine::general_purpose::STANDARD.encode(&image.bytes),
        ));
    }
    if let Some(signature) = &turn.thought_signature {
        let carrier = parts
            .iter()
            .position(|p| p.inline_data.is_some())
            .or(if parts.is_empty() { None } else { Some(0) });
        match carrier {
            Some(i) => parts[i].thought_signature = Some(signature.clone()),
            None => parts.push(Part {
                thought_signature: Some(signature.clone()),
                ..Part::text("")
            }),
        }
    }
    let role = if turn.role == "model" {
        "model"
    } else {
        "user"
    };
    Content {
        role: Some(role.into()),
        parts,
    }
}

/// The Imagen `predict` body. Imagen on the Gemini API takes no seed and no input image.
pub fn build_predict(request: &GenerateRequest, cap: &ModelCapability) -> PredictRequest {
    PredictRequest {
        instances: vec![PredictInstance {
            prompt: request.prompt.clone(),
        }],
        parameters: PredictParameters {
            sample_count: request.n.max(1),
            aspect_ratio: request.aspect_ratio.clone(),
            image_size: request.image_size.clone().filter(|_| cap.sends_image_size),
        },
    }
}

/// `generationConfig.seed` is an `int32`: keep the low 31 bits, so it stays non-negative.
fn upstream_seed(seed: u64) -> i32 {
    (seed & 0x7FFF_FFFF) as i32
}

/// Joins the outputs of the `n` calls of one job. Numeric top-level usage figures are summed
/// (so billing sees the whole job) and `requestCount` says how many calls there were; model
/// version, response id and thought signature come from the first call.
fn merge(outputs: Vec<GenerateOutput>) -> GenerateOutput {
    let count = outputs.len();
    let mut merged = GenerateOutput::default();
    let mut captions: Vec<String> = Vec::new();
    let mut usage = serde_json::Map::new();
    for out in outputs {
        merged.images.extend(out.images);
        if let Some(c) = out.caption {
            if !captions.contains(&c) {
                captions.push(c);
            }
        }
        if let Some(serde_json::Value::Object(u)) = out.usage {
            for (k, v) in u {
                match (usage.get_mut(&k), v.as_u64()) {
                    (Some(slot), Some(add)) if slot.is_u64() => {
                        *slot = (slot.as_u64().unwrap_or(0) + add).into();
                    }
                    (None, _) => {
                        usage.insert(k, v);
                    }
                    _ => {}
                }
            }
        }
        merged.model_version = merged.model_version.or(out.model_version);
        merged.response_id = merged.response_id.or(out.response_id);
        merged.thought_signature = merged.thought_signature.or(out.thought_signature);
    }
    merged.caption = (!captions.is_empty()).then(|| captions.join("\n"));
    if !usage.is_empty() {
        usage.insert("requestCount".into(), count.into());
        merged.usage = Some(serde_json::Value::Object(usage));
    }
    merged
}

/// What both modes can do, for the provider-level [`Capabilities`]; [`validate`] is the exact,
/// per-mode check.
fn declared_capabilities(config: &GeminiConfig) -> Capabilities {
    let caps: Vec<&ModelCapability> = [&config.draft_model, &config.final_model]
        .iter()
        .filter_map(|m| config.capability(m))
        .collect();
    // What every mode's model takes, in the order of the last one's table.
    let in_all = |values: fn(&ModelCapability) -> &Vec<String>| -> Vec<String> {
        caps.last()
            .map(|c| {
                values(c)
                    .iter()
                    .filter(|v| caps.iter().all(|o| values(o).contains(v)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let aspect_ratios = in_all(|c| &c.aspect_ratios);
    let image_sizes = in_all(|c| &c.image_sizes);
    Capabilities {
        modes: vec![Mode::Draft, Mode::Final],
        image_to_image: caps.iter().all(|c| c.image_to_image),
        max_images: caps.iter().map(|c| c.max_images).min().unwrap_or(1),
        aspect_ratios,
        image_sizes,
        needs_key: true,
    }
}

/// Replaces every occurrence of the key in an error's text, whatever put it there (an
/// upstream or relay echoing it back, a library quoting a header).
pub fn redact(error: ProviderError, secret: &str) -> ProviderError {
    if secret.is_empty() {
        return error;
    }
    let scrub = |s: String| {
        if s.contains(secret) {
            s.replace(secret, "****")
        } else {
            s
        }
    };
    match error {
        ProviderError::Retryable {
            code,
            message,
            retry_after,
        } => ProviderError::Retryable {
            code,
            message: scrub(message),
            retry_after,
        },
        ProviderError::Final { code, message } => ProviderError::Final {
            code,
            message: scrub(message),
        },
        ProviderError::KeyRejected { message } => ProviderError::KeyRejected {
            message: scrub(message),
        },
        ProviderError::ContentBlocked { reason } => ProviderError::ContentBlocked {
            reason: scrub(reason),
        },
    }
}

#[async_trait]
impl Provider for GeminiProvider {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Every operation on the `generateContent` models ([`operations`]); Imagen takes no
    /// input image, so only generate and reroll there.
    fn supports(&self, operation: &crate::base::operation::Operation) -> bool {
        use crate::base::operation::Operation;
        self.capabilities.image_to_image
            || matches!(operation, Operation::Generate | Operation::Reroll)
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs)
    }

    fn env_key_prefix(&self) -> Option<&'static str> {
        Some(ENV_KEY_PREFIX)
    }

    /// Lists one model with the key (free): 2xx means the key works; any other reply is
    /// classified as a call's would be (401/403 reject the key).
    async fn probe(&self, credential: &UpstreamCredential) -> Result<(), ProviderError> {
        let url = format!("{}/v1beta/models?pageSize=1", self.base_url(credential));
        let response = self
            .http
            .get(url)
            .header(
                API_KEY_HEADER,
                GeminiProvider::key_header(&credential.secret)?,
            )
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .map_err(|e| redact(classify::classify_transport(e), &credential.secret))?;
        probe_reply(response, &credential.secret, |status, body| {
            classify::classify_status(status, None, body)
        })
        .await
    }

    async fn generate(
        &self,
        request: &GenerateRequest,
        credential: Option<&UpstreamCredential>,
    ) -> Result<GenerateOutput, ProviderError> {
        let prepared;
        let request = if request.extra.operation.is_generate() {
            request
        } else {
            // Decoding and padding images is CPU work: off the async workers.
            let (owned, ratios) = (request.clone(), self.capabilities.aspect_ratios.clone());
            prepared = tokio::task::spawn_blocking(move || operations::prepare(&owned, &ratios))
                .await
                .map_err(|e| invalid(e.to_string()))?
                .map_err(invalid)?;
            &prepared
        };
        validate(request, &self.config).map_err(invalid)?;
        let Some(credential) = credential else {
            return Err(ProviderError::key_missing(self.name()));
        };
        self.run(request, credential)
            .await
            .map_err(|e| redact(e, &credential.secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::job::Mode;
    use crate::providers::{GeneratedImage, InputImage};

    fn request(mode: Mode) -> GenerateRequest {
        GenerateRequest {
            job_id: "j".into(),
            prompt: "a fox".into(),
            mode,
            input_image: None,
            seed: Some(7),
            n: 1,
            aspect_ratio: Some("16:9".into()),
            image_size: Some("1K".into()),
            extra: Default::default(),
        }
    }

    #[test]
    fn generate_content_body_is_the_real_shape() {
        let config = GeminiConfig::default();
        let mut r = request(Mode::Final);
        r.image_size = Some("2K".into());
        r.input_image = Some(InputImage {
            bytes: Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
            mime: "image/png".into(),
        });
        let cap = config.capability(&config.final_model).expect("cap");
        let body = serde_json::to_value(build_generate_content(&r, cap, &config, r.seed, None))
            .expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "contents": [{"role": "user", "parts": [
                    {"text": "a fox"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
                ]}],
                "generationConfig": {
                    "responseModalities": ["TEXT", "IMAGE"],
                    "seed": 7,
                    "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"}
                }
            })
        );
    }

    #[test]
    fn flash_image_never_gets_image_size() {
        let config = GeminiConfig {
            image_only: true,
            ..GeminiConfig::default()
        };
        let r = request(Mode::Draft);
        let cap = config.capability(&config.draft_model).expect("cap");
        let body = serde_json::to_value(build_generate_content(&r, cap, &config, None, Some(2)))
            .expect("json");
        assert_eq!(
            body["generationConfig"],
            serde_json::json!({
                "responseModalities": ["IMAGE"],
                "candidateCount": 2,
                "imageConfig": {"aspectRatio": "16:9"}
            })
        );
        let mut r = r;
        r.aspect_ratio = None;
        let body = serde_json::to_value(build_generate_content(&r, cap, &config, None, None))
            .expect("json");
        assert!(body["generationConfig"].get("imageConfig").is_none());
    }

    #[test]
    fn predict_body_is_the_real_shape() {
        let config = GeminiConfig::default();
        let cap = config.capability("imagen-4.0-generate-001").expect("cap");
        let mut r = request(Mode::Final);
        r.n = 3;
        r.image_size = Some("2K".into());
        let body = serde_json::to_value(build_predict(&r, cap)).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "instances": [{"prompt": "a fox"}],
                "parameters": {"sampleCount": 3, "aspectRatio": "16:9", "imageSize": "2K"}
            })
        );
    }

    #[test]
    fn seeds_fit_int32() {
        assert_eq!(upstream_seed(7), 7);
        assert_eq!(upstream_seed(u64::MAX), i32::MAX);
        assert!(upstream_seed(1 << 31) >= 0);
    }

    #[test]
    fn merge_sums_usage_and_keeps_firsts() {
        let img = || GeneratedImage {
            bytes: Bytes::from_static(b"x"),
            mime: "image/png".into(),
            pixels: None,
        };
        let one = |id: &str, tokens: u64| GenerateOutput {
            images: vec![img()],
            caption: Some("same".into()),
            usage: Some(
                serde_json::json!({"totalTokenCount": tokens, "promptTokenCount": 3,
                "promptTokensDetails": [{"modality": "TEXT"}]}),
            ),
            model_version: Some("m".into()),
            response_id: Some(id.into()),
            thought_signature: Some(format!("sig-{id}")),
            details: None,
        };
        let out = merge(vec![one("a", 10), one("b", 20)]);
        assert_eq!(out.images.len(), 2);
        assert_eq!(out.caption.as_deref(), Some("same"));
        assert_eq!(out.response_id.as_deref(), Some("a"));
        assert_eq!(out.thought_signature.as_deref(), Some("sig-a"));
        let usage = out.usage.expect("usage");
        assert_eq!(usage["totalTokenCount"], 30);
        assert_eq!(usage["promptTokenCount"], 6);
        assert_eq!(usage["requestCount"], 2);
        assert!(usage["promptTokensDetails"].is_array());
    }

    #[test]
    fn redact_scrubs_every_field() {
        let e = redact(
            ProviderError::KeyRejected {
                message: "bad key AIzaSECRET given".into(),
            },
            "AIzaSECRET",
        );
        assert_eq!(e.to_string(), "upstream key rejected: bad key **** given");
    }

    #[test]
    fn capabilities_hold_for_both_modes() {
        let config = GeminiConfig {
            draft_model: "imagen-4.0-fast-generate-001".into(),
            ..GeminiConfig::default()
        };
        let caps = declared_capabilities(&config);
        assert!(!caps.image_to_image);
        assert_eq!(caps.aspect_ratios, ["1:1", "3:4", "4:3", "9:16", "16:9"]);
        assert!(caps.needs_key);
    }
}
