//! Settings of the Gemini provider and the per-model capability table, plus [`validate`], the
//! pure check of a request against the model its mode picks.
//!
//! Owns: which model `draft` and `final` use, where requests go, time and size bounds, and
//! what each model accepts (aspect ratios, `imageSize`, how many images, input images).
//! Must not: talk to the network. The API may call [`validate`] at submit so a request the
//! model cannot serve is refused with 400 instead of failing later in a worker.
//!
//! The defaults follow Google's documentation (2026-11): Gemini image models take ten aspect
//! ratios; `gemini-2.5-flash-image` has a fixed ~1K output and must never be sent `imageSize`;
//! Gemini 3 image models take `1K`/`2K`/`4K` (upper-case K); no Gemini image model accepts
//! `candidateCount` > 1 ("Multiple candidates is not enabled"), so `n` images are `n` calls;
//! Imagen (`imagen-*`, through `:predict`) takes five ratios and up to four samples per call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::providers::GenerateRequest;

use crate::base::job::Mode;

/// The official endpoint; a key's own base URL (a relay, a test fake) wins over it.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// Input image types Gemini accepts inline.
pub const INPUT_MIME_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/heic",
    "image/heif",
];

/// Largest input image sent inline. A `generateContent` request must stay under 20 MB, and
/// base64 adds a third.
pub const MAX_INPUT_IMAGE_BYTES: usize = 14_000_000;

const GEMINI_RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];
const IMAGEN_RATIOS: &[&str] = &["1:1", "3:4", "4:3", "9:16", "16:9"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeminiConfig {
    /// Model for `mode: draft`: fast and cheap.
    pub draft_model: String,
    /// Model for `mode: final`: best quality.
    pub final_model: String,
    /// Used when a key carries no base URL of its own.
    pub base_url: String,
    /// Whole-request bound for one upstream call (connect, send, wait, read).
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// A reply larger than this is refused while it is read, so a broken upstream or relay
    /// cannot exhaust memory. Four 4K PNGs in base64 stay well under the default.
    pub max_response_bytes: usize,
    /// Ask for `["IMAGE"]` only instead of `["TEXT", "IMAGE"]` (then there is no caption).
    pub image_only: bool,
    /// When `n` > 1 on a model that makes one image per call, how many of the `n` calls run
    /// at once. 1 (the default) runs them one after another, so a job never holds more than
    /// one upstream request per key at a time (the key pool's concurrency permits count jobs).
    pub fan_out_parallelism: u32,
    /// What each model accepts, by model name. Models used by `draft_model` and `final_model`
    /// must be listed.
    pub models: BTreeMap<String, ModelCapability>,
}

/// What one model accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelCapability {
    /// `aspectRatio` values accepted.
    pub aspect_ratios: Vec<String>,
    /// `imageSize` values a request may carry (empty: none).
    pub image_sizes: Vec<String>,
    /// Whether `imageSize` goes on the wire. `false` for models with one fixed size, which
    /// still accept that size in a request (it is simply not sent).
    pub sends_image_size: bool,
    /// Largest `n`.
    pub max_images: u32,
    /// The model returns `n` images from one call (`candidateCount` for Gemini, `sampleCount`
    /// for Imagen). Otherwise `n` images take `n` calls.
    pub multi_image_calls: bool,
    /// Takes an input image (image-to-image, edits).
    pub image_to_image: bool,
}

impl Default for ModelCapability {
    /// A Gemini image model with a fixed output size.
    fn default() -> Self {
        ModelCapability {
            aspect_ratios: strings(GEMINI_RATIOS),
            image_sizes: strings(&["1K"]),
            sends_image_size: false,
            max_images: 4,
            multi_image_calls: false,
            image_to_image: true,
        }
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The capability table shipped as the default.
pub fn default_models() -> BTreeMap<String, ModelCapability> {
    let fixed_size = ModelCapability::default();
    let sized = |sizes: &[&str]| ModelCapability {
        image_sizes: strings(sizes),
        sends_image_size: true,
        ..ModelCapability::default()
    };
    let imagen = |sizes: &[&str]| ModelCapability {
        aspect_ratios: strings(IMAGEN_RATIOS),
        image_sizes: strings(sizes),
        sends_image_size: !sizes.is_empty(),
        max_images: 4,
        multi_image_calls: true,
        image_to_image: false,
    };
    let mut flash_31 = sized(&["512", "1K", "2K", "4K"]);
    flash_31
        .aspect_ratios
        .extend(strings(&["1:4", "4:1", "1:8", "8:1"]));
    BTreeMap::from([
        ("gemini-2.5-flash-image".to_owned(), fixed_size.clone()),
        ("gemini-2.5-flash-image-preview".to_owned(), fixed_size),
        (
            "gemini-3-pro-image-preview".to_owned(),
            sized(&["1K", "2K", "4K"]),
        ),
        ("gemini-3.1-flash-image-preview".to_owned(), flash_31),
        ("imagen-4.0-generate-001".to_owned(), imagen(&["1K", "2K"])),
        (
            "imagen-4.0-ultra-generate-001".to_owned(),
            imagen(&["1K", "2K"]),
        ),
        ("imagen-4.0-fast-generate-001".to_owned(), imagen(&[])),
    ])
}

impl Default for GeminiConfig {
    fn default() -> Self {
        GeminiConfig {
            draft_model: "gemini-2.5-flash-image".into(),
            final_model: "gemini-3-pro-image-preview".into(),
            base_url: DEFAULT_BASE_URL.into(),
            timeout_secs: 120,
            connect_timeout_secs: 10,
            max_response_bytes: 64 * 1024 * 1024,
            image_only: false,
            fan_out_parallelism: 1,
            models: default_models(),
        }
    }
}

/// Imagen models are served by `:predict`; every other model by `:generateContent`.
pub fn is_imagen(model: &str) -> bool {
    model.starts_with("imagen-")
}

impl GeminiConfig {
    /// The model a mode uses.
    pub fn model_for(&self, mode: Mode) -> &str {
        match mode {
            Mode::Draft => &self.draft_model,
            Mode::Final => &self.final_model,
        }
    }

    /// The model a request uses: the one the client named (the OpenAI facade's `model`),
    /// else the one of its mode.
    pub fn model_of<'a>(&'a self, request: &'a GenerateRequest) -> &'a str {
        match &request.extra.model {
            Some(model) => model,
            None => self.model_for(request.mode),
        }
    }

    pub fn capability(&self, model: &str) -> Option<&ModelCapability> {
        self.models.get(model)
    }

    /// Checks the settings; the error names the key (`providers.gemini.<field>`).
    pub fn validate(&self) -> Result<(), String> {
        const P: &str = "providers.gemini";
        for (field, model) in [
            ("draft_model", &self.draft_model),
            ("final_model", &self.final_model),
        ] {
            if !valid_model_name(model) {
                return Err(format!(
                    "{P}.{field}: '{model}' is not a model name (letters, digits, '.', '-', '_')"
                ));
            }
            if !self.models.contains_key(model) {
                return Err(format!(
                    "{P}.{field}: '{model}' has no entry in {P}.models; add one that says \
                     what it accepts"
                ));
            }
        }
        match url::Url::parse(&self.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(format!(
                    "{P}.base_url: '{}' is not an http(s) URL",
                    self.base_url
                ))
            }
        }
        if self.timeout_secs == 0 || self.connect_timeout_secs == 0 {
            return Err(format!(
                "{P}.timeout_secs and {P}.connect_timeout_secs must be at least 1"
            ));
        }
        if self.max_response_bytes < 1024 * 1024 {
            return Err(format!("{P}.max_response_bytes must be at least 1 MiB"));
        }
        if self.fan_out_parallelism == 0 {
            return Err(format!("{P}.fan_out_parallelism must be at least 1"));
        }
        for (name, cap) in &self.models {
            if !valid_model_name(name) {
                return Err(format!("{P}.models: '{name}' is not a model name"));
            }
            if cap.max_images == 0 {
                return Err(format!("{P}.models.{name}.max_images must be at least 1"));
            }
            if cap.aspect_ratios.is_empty() {
                return Err(format!("{P}.models.{name}.aspect_ratios must not be empty"));
            }
            if cap.sends_image_size && cap.image_sizes.is_empty() {
                return Err(format!(
                    "{P}.models.{name}: sends_image_size needs at least one image_sizes value"
                ));
            }
        }
        Ok(())
    }
}

/// Model names go into the URL path: keep them to the characters Google uses.
fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Checks `request` against the model its mode picks. `Err` is a message for the client
/// (the API answers 400 `INVALID_REQUEST` with it; the provider returns
/// `ProviderError::Final { code: "INVALID_REQUEST" }`).
pub fn validate(request: &GenerateRequest, config: &GeminiConfig) -> Result<(), String> {
    let model = config.model_of(request);
    let mode = request.mode.as_str();
    let cap = config
        .capability(model)
        .ok_or_else(|| format!("model '{model}' ({mode}) is not configured"))?;
    if request.prompt.trim().is_empty() {
        return Err("prompt must not be empty".into());
    }
    if request.n == 0 || request.n > cap.max_images {
        return Err(format!(
            "n must be between 1 and {} for {model} ({mode})",
            cap.max_images
        ));
    }
    if let Some(ratio) = &request.aspect_ratio {
        if !cap.aspect_ratios.contains(ratio) {
            return Err(format!(
                "aspectRatio '{ratio}' is not supported by {model} ({mode}); one of: {}",
                cap.aspect_ratios.join(", ")
            ));
        }
    }
    if let Some(size) = &request.image_size {
        if cap.image_sizes.is_empty() {
            return Err(format!("imageSize is not supported by {model} ({mode})"));
        }
        if !cap.image_sizes.contains(size) {
            return Err(format!(
                "imageSize '{size}' is not supported by {model} ({mode}); one of: {}",
                cap.image_sizes.join(", ")
            ));
        }
    }
    if request.extra.mask.is_some() || request.extra.variation {
        return Err(format!(
            "{model} ({mode}) takes no mask and makes no variations"
        ));
    }
    for image in request.input_images() {
        // Imagen's `predict` has no place for an input image, whatever the table says.
        if !cap.image_to_image || is_imagen(model) {
            return Err(format!("{model} ({mode}) does not take an input image"));
        }
        if !INPUT_MIME_TYPES.contains(&image.mime.as_str()) {
            return Err(format!(
                "input image type '{}' is not one of: {}",
                image.mime,
                INPUT_MIME_TYPES.join(", ")
            ));
        }
        if image.bytes.len() > MAX_INPUT_IMAGE_BYTES {
            return Err(format!(
                "input image is {} bytes; the limit is {MAX_INPUT_IMAGE_BYTES}",
                image.bytes.len()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::InputImage;

    fn request(mode: Mode) -> GenerateRequest {
        GenerateRequest {
            job_id: "j".into(),
            prompt: "a fox".into(),
            mode,
            input_image: None,
            seed: None,
            n: 1,
            aspect_ratio: None,
            image_size: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = GeminiConfig::default();
        c.validate().expect("defaults validate");
        assert_eq!(c.model_for(Mode::Draft), "gemini-2.5-flash-image");
        assert_eq!(c.model_for(Mode::Final), "gemini-3-pro-image-preview");
        assert_eq!(c.timeout_secs, 120);
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        let flash = c.capability("gemini-2.5-flash-image").expect("listed");
        assert!(!flash.sends_image_size);
    }

    #[test]
    fn config_errors_name_their_key() {
        let mut c = GeminiConfig {
            draft_model: "gemini-9-image".into(),
            ..GeminiConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .contains("providers.gemini.draft_model"));
        c.draft_model = "../../x".into();
        assert!(c.validate().unwrap_err().contains("not a model name"));
        let c = GeminiConfig {
            base_url: "ftp://x".into(),
            ..GeminiConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("base_url"));
        let c = GeminiConfig {
            fan_out_parallelism: 0,
            ..GeminiConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn config_deserializes_partially_over_defaults() {
        let c: GeminiConfig = serde_json::from_value(serde_json::json!({
            "draft_model": "imagen-4.0-fast-generate-001",
            "timeout_secs": 30
        }))
        .expect("parse");
        assert_eq!(c.timeout_secs, 30);
        assert_eq!(c.final_model, "gemini-3-pro-image-preview");
        assert!(c.models.contains_key("gemini-2.5-flash-image"));
        c.validate().expect("valid");
    }

    #[test]
    fn image_size_per_model() {
        let c = GeminiConfig::default();
        let mut r = request(Mode::Final);
        r.image_size = Some("4K".into());
        validate(&r, &c).expect("pro takes 4K");
        r.mode = Mode::Draft;
        let e = validate(&r, &c).expect_err("flash does not");
        assert!(
            e.contains("imageSize '4K' is not supported by gemini-2.5-flash-image"),
            "{e}"
        );
        // 1K is what 2.5 flash makes anyway: accepted, and never sent.
        r.image_size = Some("1K".into());
        validate(&r, &c).expect("1K on flash");
        let mut c2 = c.clone();
        c2.draft_model = "imagen-4.0-fast-generate-001".into();
        let e = validate(&r, &c2).expect_err("fast imagen has no size");
        assert!(e.contains("imageSize is not supported"), "{e}");
    }

    #[test]
    fn aspect_ratio_n_and_input_image() {
        let mut c = GeminiConfig::default();
        let mut r = request(Mode::Final);
        r.aspect_ratio = Some("21:9".into());
        validate(&r, &c).expect("21:9 on gemini");
        r.aspect_ratio = Some("7:3".into());
        assert!(validate(&r, &c).unwrap_err().contains("aspectRatio '7:3'"));
        r.aspect_ratio = None;
        r.n = 5;
        assert!(validate(&r, &c)
            .unwrap_err()
            .contains("n must be between 1 and 4"));
        r.n = 0;
        assert!(validate(&r, &c).is_err());
        r.n = 1;
        r.input_image = Some(InputImage {
            bytes: bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
            mime: "image/gif".into(),
        });
        assert!(validate(&r, &c).unwrap_err().contains("image/gif"));
        r.input_image = Some(InputImage {
            bytes: bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
            mime: "image/png".into(),
        });
        validate(&r, &c).expect("image-to-image on gemini");
        c.final_model = "imagen-4.0-generate-001".into();
        assert!(validate(&r, &c)
            .unwrap_err()
            .contains("does not take an input image"));
        r.input_image = None;
        r.aspect_ratio = Some("21:9".into());
        assert!(validate(&r, &c)
            .unwrap_err()
            .contains("imagen-4.0-generate-001"));
    }
}
