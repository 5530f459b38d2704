//! Settings of the OpenAI provider, what each model family accepts, and [`validate`], the pure
//! check of a request against the model it will use.
//!
//! Owns: which model `draft` and `final` use, where requests go, time and size bounds, and the
//! parameter table of OpenAI's image models (read from the official SDK's param types,
//! `../shared/contract/openai-images.md` §3): GPT image models (`gpt-image-*`,
//! `chatgpt-image-*`), `dall-e-2` and `dall-e-3`. A model of none of these families (a relay's
//! own model) is passed through with the GPT image rules for its parameters.
//! Must not: talk to the network. The API calls [`validate`] at submit so a request the model
//! cannot serve is refused with 400 instead of failing later in a worker.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::base::job::Mode;
use crate::providers::GenerateRequest;

/// The official endpoint (with its `/v1`); a key's own base URL wins over it.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Input image types the edits route takes.
pub const INPUT_MIME_TYPES: &[&str] = &["image/png", "image/jpeg", "image/webp"];

/// The parameters a client may set in [`crate::providers::RequestExtras::options`].
pub const OPTION_NAMES: &[&str] = &[
    "size",
    "quality",
    "background",
    "output_format",
    "output_compression",
    "input_fidelity",
    "moderation",
    "style",
    "user",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenAiConfig {
    /// Model for `mode: draft` when the client names none.
    pub draft_model: String,
    /// Model for `mode: final` when the client names none.
    pub final_model: String,
    /// Used when a key carries no base URL of its own. Ends with the API version (`/v1`).
    pub base_url: String,
    /// Whole-request bound for one upstream call. GPT image edits take up to two minutes.
    pub timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// A reply larger than this is refused while it is read (ten 4K PNGs in base64 fit).
    pub max_response_bytes: usize,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            draft_model: "gpt-image-1-mini".into(),
            final_model: "gpt-image-1".into(),
            base_url: DEFAULT_BASE_URL.into(),
            timeout_secs: 300,
            connect_timeout_secs: 10,
            max_response_bytes: 256 * 1024 * 1024,
        }
    }
}

impl OpenAiConfig {
    /// The model a request uses: the one it names, else the one of its mode.
    pub fn model_for<'a>(&'a self, request: &'a GenerateRequest) -> &'a str {
        match (&request.extra.model, request.mode) {
            (Some(model), _) => model,
            (None, Mode::Draft) => &self.draft_model,
            (None, Mode::Final) => &self.final_model,
        }
    }

    /// Checks the settings; the error names the key (`providers.openai.<field>`).
    pub fn validate(&self) -> Result<(), String> {
        const P: &str = "providers.openai";
        for (field, model) in [
            ("draft_model", &self.draft_model),
            ("final_model", &self.final_model),
        ] {
            if !valid_model_name(model) {
                return Err(format!("{P}.{field}: '{model}' is not a model name"));
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
        Ok(())
    }
}

/// Model names travel in JSON and form fields: letters, digits, `.`, `-`, `_`, `:`, `/`.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/'))
}

/// The families of OpenAI image models, which differ in every parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `gpt-image-1`, `gpt-image-1-mini`, `gpt-image-1.5`, `gpt-image-2`, `chatgpt-image-latest`:
    /// always answer `b64_json`, take `background`, `output_format`, ...
    GptImage,
    DallE2,
    DallE3,
    /// Not an OpenAI model (a relay's): GPT image rules, and `response_format: b64_json` is
    /// sent, which compatible relays honour.
    Other,
}

impl Family {
    pub fn of(model: &str) -> Family {
        if model.starts_with("gpt-image-") || model.starts_with("chatgpt-image") {
            Family::GptImage
        } else if model == "dall-e-2" {
            Family::DallE2
        } else if model == "dall-e-3" {
            Family::DallE3
        } else {
            Family::Other
        }
    }

    /// Whether `response_format` may be sent (GPT image models refuse it).
    pub fn takes_response_format(self) -> bool {
        self != Family::GptImage
    }

    fn is_dalle(self) -> bool {
        matches!(self, Family::DallE2 | Family::DallE3)
    }

    fn max_images(self) -> u32 {
        match self {
            Family::DallE3 => 1,
            _ => 10,
        }
    }

    fn max_prompt_chars(self) -> usize {
        match self {
            Family::DallE2 => 1000,
            Family::DallE3 => 4000,
            _ => 32_000,
        }
    }

    fn sizes(self) -> &'static [&'static str] {
        match self {
            Family::DallE2 => &["256x256", "512x512", "1024x1024"],
            Family::DallE3 => &["1024x1024", "1792x1024", "1024x1792"],
            _ => &["auto", "1024x1024", "1536x1024", "1024x1536"],
        }
    }

    fn qualities(self) -> &'static [&'static str] {
        match self {
            Family::DallE2 => &["standard"],
            Family::DallE3 => &["standard", "hd"],
            _ => &["auto", "low", "medium", "high"],
        }
    }

    /// Input images an edit takes at most (0: no edits).
    fn max_edit_images(self) -> usize {
        match self {
            Family::DallE2 => 1,
            Family::DallE3 => 0,
            _ => 16,
        }
    }
}

/// The models the facade lists, by family.
pub const KNOWN_MODELS: &[&str] = &[
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
    "chatgpt-image-latest",
    "dall-e-2",
    "dall-e-3",
];

fn text<'a>(options: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, String> {
    match options.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

fn one_of(field: &str, value: Option<&str>, allowed: &[&str], model: &str) -> Result<(), String> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(format!(
            "{field} '{v}' is not supported by {model}; one of: {}",
            allowed.join(", ")
        )),
        _ => Ok(()),
    }
}

fn gpt_only(field: &str, value: Option<&str>, family: Family, model: &str) -> Result<(), String> {
    if value.is_some() && family.is_dalle() {
        return Err(format!("{field} is not supported by {model}"));
    }
    Ok(())
}

/// gpt-image-2 takes any `WxH` with both sides multiples of 16, at most 3840 wide and 2160
/// high (either way round), and an aspect ratio within 3:1.
fn free_size_ok(size: &str) -> bool {
    let Some((w, h)) = size.split_once('x') else {
        return false;
    };
    let (Ok(w), Ok(h)) = (w.parse::<u32>(), h.parse::<u32>()) else {
        return false;
    };
    let (long, short) = (w.max(h), w.min(h));
    w % 16 == 0 && h % 16 == 0 && short >= 16 && long <= 3840 && short <= 2160 && long <= 3 * short
}

fn check_size(size: Option<&str>, family: Family, model: &str) -> Result<(), String> {
    let Some(size) = size else { return Ok(()) };
    if family.sizes().contains(&size) || (model.starts_with("gpt-image-2") && free_size_ok(size)) {
        return Ok(());
    }
    if family == Family::Other {
        // A relay's model decides its own sizes; only the shape is checked.
        return match size == "auto" || size.split_once('x').is_some() {
            true => Ok(()),
            false => Err(format!("size '{size}' is not WIDTHxHEIGHT or auto")),
        };
    }
    Err(format!(
        "size '{size}' is not supported by {model}; one of: {}",
        family.sizes().join(", ")
    ))
}

fn check_options(request: &GenerateRequest, family: Family, model: &str) -> Result<(), String> {
    let options = &request.extra.options;
    if let Some(unknown) = options.keys().find(|k| !OPTION_NAMES.contains(&k.as_str())) {
        return Err(format!("unknown parameter '{unknown}'"));
    }
    check_size(text(options, "size")?, family, model)?;
    one_of(
        "quality",
        text(options, "quality")?,
        family.qualities(),
        model,
    )?;
    let background = text(options, "background")?;
    gpt_only("background", background, family, model)?;
    one_of(
        "background",
        background,
        &["transparent", "opaque", "auto"],
        model,
    )?;
    let format = text(options, "output_format")?;
    gpt_only("output_format", format, family, model)?;
    one_of("output_format", format, &["png", "jpeg", "webp"], model)?;
    if background == Some("transparent") && format == Some("jpeg") {
        return Err("background 'transparent' needs output_format png or webp".into());
    }
    match options.get("output_compression") {
        None | Some(Value::Null) => {}
        Some(v) => {
            gpt_only("output_compression", Some(""), family, model)?;
            if v.as_u64().is_none_or(|c| c > 100) {
                return Err("output_compression must be an integer from 0 to 100".into());
            }
        }
    }
    let moderation = text(options, "moderation")?;
    gpt_only("moderation", moderation, family, model)?;
    one_of("moderation", moderation, &["low", "auto"], model)?;
    let style = text(options, "style")?;
    if style.is_some() && family != Family::DallE3 {
        return Err(format!("style is not supported by {model}"));
    }
    one_of("style", style, &["vivid", "natural"], model)?;
    let fidelity = text(options, "input_fidelity")?;
    if fidelity.is_some() && (family.is_dalle() || model.starts_with("gpt-image-1-mini")) {
        return Err(format!("input_fidelity is not supported by {model}"));
    }
    if fidelity.is_some() && request.input_image.is_none() {
        return Err("input_fidelity applies to edits only".into());
    }
    one_of("input_fidelity", fidelity, &["high", "low"], model)?;
    text(options, "user")?;
    Ok(())
}

fn check_inputs(request: &GenerateRequest, family: Family, model: &str) -> Result<(), String> {
    let count = request.input_images().count();
    if request.is_variation() {
        if family != Family::DallE2 {
            return Err(format!("variations are made by dall-e-2 only, not {model}"));
        }
        if count != 1 || request.extra.mask.is_some() {
            return Err("a variation takes exactly one image and no mask".into());
        }
    } else if count > family.max_edit_images() {
        return Err(match family.max_edit_images() {
            0 => format!("{model} does not edit images"),
            n => format!("{model} edits at most {n} image(s); {count} given"),
        });
    }
    if request.extra.mask.is_some() && count == 0 {
        return Err("a mask needs an image to apply to".into());
    }
    for image in request.input_images().chain(&request.extra.mask) {
        if !INPUT_MIME_TYPES.contains(&image.mime.as_str()) {
            return Err(format!(
                "input image type '{}' is not one of: {}",
                image.mime,
                INPUT_MIME_TYPES.join(", ")
            ));
        }
    }
    if family == Family::DallE2 && count > 0 {
        // dall-e-2 edits and variations take one square PNG under 4 MB.
        let image = request.input_images().next();
        if image.is_some_and(|i| i.mime != "image/png" || i.bytes.len() >= 4 * 1024 * 1024) {
            return Err("dall-e-2 takes one PNG image under 4 MB".into());
        }
    }
    Ok(())
}

/// Checks `request` against the model it will use. `Err` is a message for the client.
pub fn validate(request: &GenerateRequest, config: &OpenAiConfig) -> Result<(), String> {
    let model = config.model_for(request);
    if !valid_model_name(model) {
        return Err(format!("'{model}' is not a model name"));
    }
    let family = Family::of(model);
    if request.prompt.trim().is_empty() && !request.is_variation() {
        return Err("prompt must not be empty".into());
    }
    let chars = request.prompt.chars().count();
    if chars > family.max_prompt_chars() {
        return Err(format!(
            "prompt is {chars} characters; {model} takes at most {}",
            family.max_prompt_chars()
        ));
    }
    if request.n == 0 || request.n > family.max_images() {
        return Err(format!(
            "n must be between 1 and {} for {model}",
            family.max_images()
        ));
    }
    check_options(request, family, model)?;
    check_inputs(request, family, model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{InputImage, RequestExtras};
    use bytes::Bytes;

    fn request(model: &str, options: Value) -> GenerateRequest {
        GenerateRequest {
            job_id: "j".into(),
            prompt: "a fox".into(),
            mode: Mode::Final,
            input_image: None,
            seed: None,
            n: 1,
            aspect_ratio: None,
            image_size: None,
            extra: RequestExtras {
                model: Some(model.into()),
                options: options.as_object().cloned().unwrap_or_default(),
                ..RequestExtras::default()
            },
        }
    }

    fn png() -> InputImage {
        InputImage {
            bytes: Bytes::from_static(b"\x89PNG\r\n\x1a\n"),
            mime: "image/png".into(),
        }
    }

    fn err(r: &GenerateRequest) -> String {
        validate(r, &OpenAiConfig::default()).expect_err("should be refused")
    }

    #[test]
    fn defaults_are_valid_and_modes_pick_models() {
        let c = OpenAiConfig::default();
        c.validate().expect("valid");
        let mut r = request("x", serde_json::json!({}));
        r.extra.model = None;
        assert_eq!(c.model_for(&r), "gpt-image-1");
        r.mode = Mode::Draft;
        assert_eq!(c.model_for(&r), "gpt-image-1-mini");
        let bad = OpenAiConfig {
            base_url: "ftp://x".into(),
            ..OpenAiConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("providers.openai.base_url"));
    }

    #[test]
    fn gpt_image_parameters() {
        let c = OpenAiConfig::default();
        let ok = request(
            "gpt-image-1",
            serde_json::json!({"size": "1536x1024", "quality": "high", "background": "transparent",
                "output_format": "webp", "output_compression": 80, "moderation": "low"}),
        );
        validate(&ok, &c).expect("valid");
        let r = request("gpt-image-1", serde_json::json!({"size": "1792x1024"}));
        assert!(err(&r).contains("size '1792x1024'"));
        let r = request("gpt-image-1", serde_json::json!({"quality": "hd"}));
        assert!(err(&r).contains("quality 'hd'"));
        let r = request(
            "gpt-image-1",
            serde_json::json!({"background": "transparent", "output_format": "jpeg"}),
        );
        assert!(err(&r).contains("transparent"));
        let r = request(
            "gpt-image-1",
            serde_json::json!({"output_compression": 101}),
        );
        assert!(err(&r).contains("output_compression"));
        let r = request("gpt-image-1", serde_json::json!({"style": "vivid"}));
        assert!(err(&r).contains("style"));
        let r = request("gpt-image-1", serde_json::json!({"response_format": "url"}));
        assert!(err(&r).contains("unknown parameter 'response_format'"));
        let r = request("gpt-image-2", serde_json::json!({"size": "2048x1152"}));
        validate(&r, &c).expect("gpt-image-2 takes free sizes");
        let r = request("gpt-image-2", serde_json::json!({"size": "3840x1000"}));
        assert!(err(&r).contains("size"));
        let mut r = request("gpt-image-1", serde_json::json!({}));
        r.n = 11;
        assert!(err(&r).contains("n must be between 1 and 10"));
    }

    #[test]
    fn dalle_parameters() {
        let c = OpenAiConfig::default();
        let r = request(
            "dall-e-3",
            serde_json::json!({"size": "1792x1024", "quality": "hd", "style": "natural"}),
        );
        validate(&r, &c).expect("valid");
        let mut r = request("dall-e-3", serde_json::json!({}));
        r.n = 2;
        assert!(err(&r).contains("between 1 and 1"));
        let r = request("dall-e-2", serde_json::json!({"background": "opaque"}));
        assert!(err(&r).contains("background is not supported by dall-e-2"));
        let r = request("dall-e-2", serde_json::json!({"size": "1024x1536"}));
        assert!(err(&r).contains("256x256"));
        let mut r = request("dall-e-2", serde_json::json!({}));
        r.prompt = "x".repeat(1001);
        assert!(err(&r).contains("at most 1000"));
    }

    #[test]
    fn edits_and_variations() {
        let c = OpenAiConfig::default();
        let mut r = request("gpt-image-1", serde_json::json!({"input_fidelity": "high"}));
        assert!(err(&r).contains("edits only"));
        r.input_image = Some(png());
        r.extra.more_images = vec![png(); 3];
        r.extra.mask = Some(png());
        validate(&r, &c).expect("several images and a mask");
        r.extra.more_images = vec![png(); 16];
        assert!(err(&r).contains("at most 16"));
        let mut r = request("dall-e-3", serde_json::json!({}));
        r.input_image = Some(png());
        assert!(err(&r).contains("does not edit"));
        let mut r = request("gpt-image-1", serde_json::json!({}));
        r.extra.mask = Some(png());
        assert!(err(&r).contains("mask needs an image"));
        let mut r = request("dall-e-2", serde_json::json!({}));
        r.extra.variation = true;
        r.prompt = String::new();
        assert!(err(&r).contains("exactly one image"));
        r.input_image = Some(png());
        validate(&r, &c).expect("a variation");
        r.extra.model = Some("gpt-image-1".into());
        assert!(err(&r).contains("dall-e-2 only"));
        let mut r = request(
            "gpt-image-1-mini",
            serde_json::json!({"input_fidelity": "low"}),
        );
        r.input_image = Some(png());
        assert!(err(&r).contains("input_fidelity is not supported"));
        let mut r = request("gpt-image-1", serde_json::json!({}));
        r.input_image = Some(InputImage {
            bytes: Bytes::from_static(b"GIF89a"),
            mime: "image/gif".into(),
        });
        assert!(err(&r).contains("image/gif"));
    }

    #[test]
    fn families() {
        assert_eq!(Family::of("gpt-image-1.5"), Family::GptImage);
        assert_eq!(Family::of("chatgpt-image-latest"), Family::GptImage);
        assert_eq!(Family::of("dall-e-2"), Family::DallE2);
        assert_eq!(Family::of("flux-pro"), Family::Other);
        assert!(!Family::GptImage.takes_response_format());
        assert!(Family::DallE3.takes_response_format());
        let r = request("flux-pro", serde_json::json!({"size": "1280x720"}));
        validate(&r, &OpenAiConfig::default()).expect("relay models pass through");
    }
}
