//! The OpenAI Images API's JSON, as serde types: the body of `POST /images/generations`, the
//! `ImagesResponse` every image route answers, and the `{"error": {...}}` envelope.
//!
//! Owns: field names and shapes only, as the API spells them (snake_case). Must not: decide
//! anything ([`super::classify`] does). Reply fields are optional and unknown ones ignored, so
//! new upstream fields never break parsing; request fields left `None` are not sent, since GPT
//! image models refuse parameters they do not take (`response_format`, `style`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Body of `POST /images/generations`. Edits and variations send the same fields as
/// multipart form fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImagesRequest {
    pub model: String,
    pub prompt: String,
    pub n: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// `b64_json` or `url`; dall-e only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_compression: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<String>,
    /// Edits only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_fidelity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ImagesRequest {
    /// The non-file fields of an edit or variation form, in the order the SDK sends them.
    pub fn form_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = Vec::new();
        if !self.prompt.is_empty() {
            fields.push(("prompt", self.prompt.clone()));
        }
        fields.push(("model", self.model.clone()));
        fields.push(("n", self.n.to_string()));
        let optional = [
            ("size", &self.size),
            ("quality", &self.quality),
            ("response_format", &self.response_format),
            ("background", &self.background),
            ("output_format", &self.output_format),
            ("moderation", &self.moderation),
            ("style", &self.style),
            ("input_fidelity", &self.input_fidelity),
            ("user", &self.user),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                fields.push((name, v.clone()));
            }
        }
        if let Some(c) = self.output_compression {
            fields.push(("output_compression", c.to_string()));
        }
        fields
    }
}

/// `ImagesResponse`: only `created` is always there.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImagesResponse {
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub data: Vec<ImageData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// Token counts (GPT image models), kept verbatim for metering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
}

/// One image: `b64_json` (GPT image models, or when asked) or `url` (dall-e's default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// dall-e-3 rewrites the prompt and says how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revised_prompt: Option<String>,
}

/// `{"error": {...}}`, the body of every non-2xx reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    #[serde(default)]
    pub message: String,
    /// `invalid_request_error`, `image_generation_user_error`, `server_error`, ...
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    /// `moderation_blocked`, `content_policy_violation`, `rate_limit_exceeded`,
    /// `insufficient_quota`, `invalid_api_key`, ... A few relays send a number.
    #[serde(default)]
    pub code: Option<Value>,
}

impl ErrorBody {
    pub fn code_str(&self) -> Option<&str> {
        self.code.as_ref().and_then(Value::as_str)
    }
}
