//! The `openai` provider: OpenAI's image models (GPT image, dall-e-2, dall-e-3) through the
//! Images API's real wire format, at OpenAI, an Azure OpenAI deployment or a compatible relay.
//!
//! Owns: building each upstream request from a [`GenerateRequest`]: `POST images/generations`
//! (JSON), `images/edits` (multipart: one `image` or several `image[]`, and `mask`) when the
//! job has input images, `images/variations` (multipart, dall-e-2) for a variation; sending it
//! with the key's headers ([`endpoint`]); reading the reply within time and size bounds; and
//! handing back the images exactly as the upstream sent them (`b64_json` decoded, or a dall-e
//! `url` fetched), with `usage` and the reply's details for the job's meta.
//! Must not: choose keys, retry, or keep state between calls; the key pool and the worker do.
//!
//! Submodules: [`config`] (settings, the families' parameters, [`validate`]), [`wire`] (serde
//! types), [`classify`] (what a reply means; tested on the recorded replies in `fixtures/`),
//! [`endpoint`] (base URL and per-key headers).

pub mod classify;
pub mod config;
pub mod endpoint;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::Value;

pub use config::{validate, Family, OpenAiConfig, KNOWN_MODELS};
use endpoint::Endpoint;
use wire::{ImagesRequest, ImagesResponse};

use super::gemini::classify::{classify_transport, decode_image, sniff_image};
use super::gemini::{codes, probe_reply, read_bounded, redact};
use super::{
    Capabilities, GenerateOutput, GenerateRequest, GeneratedImage, InputImage, Provider,
    ProviderError, ProvidersConfig, UpstreamCredential,
};
use crate::base::job::Mode;

/// Error replies are read up to this much.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// A key probe lists models: it is quick or it is failing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The routes of the Images API, under the base URL.
const GENERATIONS: &str = "images/generations";
const EDITS: &str = "images/edits";
const VARIATIONS: &str = "images/variations";

pub struct OpenAiProvider {
    config: OpenAiConfig,
    http: reqwest::Client,
    capabilities: Capabilities,
}

/// One request's body: JSON, or a multipart form.
enum Body {
    Json(Vec<u8>),
    Form(reqwest::multipart::Form),
}

impl OpenAiProvider {
    /// Checks `config` and builds the HTTP client (rustls, no redirects, bounded time).
    pub fn new(config: OpenAiConfig) -> Result<OpenAiProvider, String> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .user_agent(concat!("easel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("providers.openai: cannot build the HTTP client: {e}"))?;
        Ok(OpenAiProvider {
            config,
            http,
            capabilities: Capabilities {
                modes: vec![Mode::Draft, Mode::Final],
                image_to_image: true,
                max_images: 10,
                aspect_ratios: Vec::new(),
                image_sizes: Vec::new(),
                needs_key: true,
            },
        })
    }

    /// Its line in the registry ([`crate::providers::registry::BUILT_IN`]).
    pub fn build(config: &ProvidersConfig) -> Result<Arc<dyn Provider>, String> {
        Ok(Arc::new(OpenAiProvider::new(config.openai.clone())?))
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    async fn run(
        &self,
        request: &GenerateRequest,
        credential: &UpstreamCredential,
    ) -> Result<GenerateOutput, ProviderError> {
        let model = self.config.model_for(request).to_owned();
        let endpoint =
            Endpoint::parse(&credential.base_url, &self.config.base_url).map_err(invalid)?;
        let fields = build_request(request, &model);
        let (route, body) = if request.is_variation() {
            (VARIATIONS, Body::Form(form(request, &fields, true)?))
        } else if request.input_image.is_some() {
            (EDITS, Body::Form(form(request, &fields, false)?))
        } else {
            let json = serde_json::to_vec(&fields)
                .map_err(|e| invalid(format!("cannot encode the request: {e}")))?;
            (GENERATIONS, Body::Json(json))
        };
        let reply = self
            .call(&endpoint, &credential.secret, route, body)
            .await?;
        let reply = super::cpu_work(reply.len(), move || classify::parse_images_response(&reply))
            .await
            .map_err(|e| malformed(format!("reading the reply failed: {e}")))??;
        let images = self.images_of(&reply).await?;
        Ok(GenerateOutput {
            images,
            usage: reply.usage.clone(),
            model_version: Some(model),
            details: Some(classify::details_of(&reply)),
            ..GenerateOutput::default()
        })
    }

    /// One POST; the body of a 2xx reply, or the classified failure.
    async fn call(
        &self,
        endpoint: &Endpoint,
        secret: &str,
        route: &str,
        body: Body,
    ) -> Result<Bytes, ProviderError> {
        let headers = endpoint
            .auth_headers(secret)
            .map_err(|message| ProviderError::KeyRejected { message })?;
        let mut builder = self.http.post(endpoint.url(route));
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        builder = match body {
            Body::Json(bytes) => builder.header(CONTENT_TYPE, "application/json").body(bytes),
            Body::Form(form) => builder.multipart(form),
        };
        let response = builder.send().await.map_err(classify_transport)?;
        let status = response.status();
        tracing::debug!(status = status.as_u16(), route, "openai reply");
        if status.is_success() {
            return read_bounded(response, self.config.max_response_bytes, true).await;
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let delay = classify::retry_delay(
            header(RETRY_AFTER.as_str()).as_deref(),
            header("retry-after-ms").as_deref(),
        );
        let body = read_bounded(response, MAX_ERROR_BODY_BYTES, false)
            .await
            .unwrap_or_default();
        Err(classify::classify_status(status.as_u16(), delay, &body))
    }

    /// The reply's images, in order: `b64_json` decoded (off the async workers when large), a `url`
    /// fetched (dall-e links expire after an hour, so Easel keeps its own copy).
    async fn images_of(
        &self,
        reply: &ImagesResponse,
    ) -> Result<Vec<GeneratedImage>, ProviderError> {
        let mut images = Vec::with_capacity(reply.data.len());
        for item in &reply.data {
            if let Some(data) = item.b64_json.clone() {
                let image = super::cpu_work(data.len(), move || decode_image(&data, ""))
                    .await
                    .map_err(|e| malformed(format!("decoding an image failed: {e}")))??;
                images.push(image);
            } else if let Some(url) = &item.url {
                images.push(self.fetch(url).await?);
            }
        }
        Ok(images)
    }

    /// Fetches an image the upstream linked to (no key sent: the link is signed itself).
    async fn fetch(&self, url: &str) -> Result<GeneratedImage, ProviderError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(classify_transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(ProviderError::Retryable {
                code: codes::UNAVAILABLE.into(),
                message: format!("fetching the image link answered HTTP {}", status.as_u16()),
                retry_after: None,
            });
        }
        let bytes = read_bounded(response, self.config.max_response_bytes, true).await?;
        let mime = sniff_image(&bytes)
            .ok_or_else(|| malformed("the image link did not hold a PNG, JPEG or WebP".into()))?;
        Ok(GeneratedImage {
            bytes,
            mime: mime.into(),
            pixels: None,
        })
    }
}

fn invalid(message: String) -> ProviderError {
    ProviderError::Final {
        code: codes::INVALID_REQUEST.into(),
        message,
    }
}

fn malformed(message: String) -> ProviderError {
    ProviderError::Retryable {
        code: codes::MALFORMED.into(),
        message,
        retry_after: None,
    }
}

fn option_str(request: &GenerateRequest, name: &str) -> Option<String> {
    request
        .extra
        .options
        .get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The request's fields for `model`. GPT image models get no `response_format` (they refuse
/// it and always answer `b64_json`); every other model is asked for `b64_json`, so the image
/// comes in the reply rather than behind a link that expires.
pub fn build_request(request: &GenerateRequest, model: &str) -> ImagesRequest {
    let family = Family::of(model);
    ImagesRequest {
        model: model.to_owned(),
        prompt: request.prompt.clone(),
        n: request.n.max(1),
        size: option_str(request, "size"),
        quality: option_str(request, "quality"),
        response_format: family
            .takes_response_format()
            .then(|| "b64_json".to_owned()),
        background: option_str(request, "background"),
        output_format: option_str(request, "output_format"),
        output_compression: request
            .extra
            .options
            .get("output_compression")
            .and_then(Value::as_u64),
        moderation: option_str(request, "moderation"),
        style: option_str(request, "style"),
        input_fidelity: option_str(request, "input_fidelity"),
        user: option_str(request, "user"),
    }
}

fn file_part(image: &InputImage, name: &str) -> Result<reqwest::multipart::Part, ProviderError> {
    let ext = match image.mime.as_str() {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        _ => "png",
    };
    reqwest::multipart::Part::bytes(image.bytes.to_vec())
        .file_name(format!("{name}.{ext}"))
        .mime_str(&image.mime)
        .map_err(|e| invalid(format!("input image type '{}': {e}", image.mime)))
}

/// The multipart form of an edit or a variation, with the part names the official SDK uses:
/// `image` for one file, `image[]` repeated for several, `mask`.
fn form(
    request: &GenerateRequest,
    fields: &ImagesRequest,
    variation: bool,
) -> Result<reqwest::multipart::Form, ProviderError> {
    let mut form = reqwest::multipart::Form::new();
    let images: Vec<&InputImage> = request.input_images().collect();
    let image_field = if images.len() == 1 {
        "image"
    } else {
        "image[]"
    };
    for (index, image) in images.iter().enumerate() {
        form = form.part(image_field, file_part(image, &format!("image-{index}"))?);
    }
    if let Some(mask) = &request.extra.mask {
        form = form.part("mask", file_part(mask, "mask")?);
    }
    let mut fields = fields.clone();
    if variation {
        // A variation has no prompt and takes only these.
        fields = ImagesRequest {
            model: fields.model,
            n: fields.n,
            size: fields.size,
            response_format: fields.response_format,
            user: fields.user,
            ..ImagesRequest::default()
        };
    }
    for (name, value) in fields.form_fields() {
        form = form.text(name, value);
    }
    Ok(form)
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    /// Generations, edits and (dall-e-2) variations: the Images API has nothing else.
    fn supports(&self, operation: &crate::base::operation::Operation) -> bool {
        use crate::base::operation::Operation;
        matches!(
            operation,
            Operation::Generate | Operation::Edit | Operation::Variation(_)
        )
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs)
    }

    fn env_key_prefix(&self) -> Option<&'static str> {
        Some("OPENAI_API_KEY_")
    }

    /// `GET models` with the key (free): 2xx means the upstream takes it; any other reply is
    /// classified as a call's would be (401/403 reject the key).
    async fn probe(&self, credential: &UpstreamCredential) -> Result<(), ProviderError> {
        let endpoint =
            Endpoint::parse(&credential.base_url, &self.config.base_url).map_err(invalid)?;
        let headers = endpoint
            .auth_headers(&credential.secret)
            .map_err(|message| ProviderError::KeyRejected { message })?;
        let mut request = self.http.get(endpoint.url("models")).timeout(PROBE_TIMEOUT);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| redact(classify_transport(e), &credential.secret))?;
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
    use crate::providers::RequestExtras;

    fn request(model: &str, options: Value) -> GenerateRequest {
        GenerateRequest {
            job_id: "j".into(),
            prompt: "a fox".into(),
            mode: Mode::Final,
            input_image: None,
            seed: Some(3),
            n: 2,
            aspect_ratio: None,
            image_size: None,
            extra: RequestExtras {
                model: Some(model.into()),
                options: options.as_object().cloned().unwrap_or_default(),
                ..RequestExtras::default()
            },
        }
    }

    #[test]
    fn gpt_image_bodies_carry_no_response_format() {
        let r = request(
            "gpt-image-1",
            serde_json::json!({"size": "1024x1536", "quality": "high", "background": "transparent",
                "output_format": "webp", "output_compression": 70}),
        );
        let body = serde_json::to_value(build_request(&r, "gpt-image-1")).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"model": "gpt-image-1", "prompt": "a fox", "n": 2,
                "size": "1024x1536", "quality": "high", "background": "transparent",
                "output_format": "webp", "output_compression": 70})
        );
    }

    #[test]
    fn dalle_bodies_ask_for_b64_json() {
        let r = request("dall-e-3", serde_json::json!({"style": "vivid"}));
        let body = serde_json::to_value(build_request(&r, "dall-e-3")).expect("json");
        assert_eq!(body["response_format"], "b64_json");
        assert_eq!(body["style"], "vivid");
        assert!(body.get("background").is_none());
    }

    #[test]
    fn form_fields_follow_the_request() {
        let r = request("gpt-image-1", serde_json::json!({"input_fidelity": "high"}));
        let fields = build_request(&r, "gpt-image-1").form_fields();
        assert_eq!(
            fields,
            [
                ("prompt", "a fox".to_owned()),
                ("model", "gpt-image-1".to_owned()),
                ("n", "2".to_owned()),
                ("input_fidelity", "high".to_owned()),
            ]
        );
    }
}
