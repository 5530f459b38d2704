//! The Gemini API's JSON, as serde types: `models/{model}:generateContent` (Gemini image
//! models, "Nano Banana") and `models/{model}:predict` (Imagen), requests, replies and the
//! `google.rpc.Status` error envelope.
//!
//! Owns: field names and shapes only, exactly as the REST API spells them (camelCase).
//! Must not: decide anything. What a reply *means* (an image, a block, a retryable error) is
//! [`super::classify`]'s job. Every field a reply may omit is optional or defaulted, and
//! unknown fields are ignored, so new upstream fields never break parsing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// generateContent
// ---------------------------------------------------------------------------------------------

/// Body of `POST /v1beta/models/{model}:generateContent`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    pub contents: Vec<Content>,
    pub generation_config: GenerationConfig,
}

/// One turn of the conversation: a role and its parts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub parts: Vec<Part>,
}

/// One part of a turn: text, inline bytes, or (in replies) a thought.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob>,
    /// Set on the model's interim reasoning parts (Gemini 3), which are not the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// Opaque; must be sent back in the next turn of a multi-turn edit (Gemini 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
}

impl Part {
    pub fn text(text: impl Into<String>) -> Part {
        Part {
            text: Some(text.into()),
            ..Part::default()
        }
    }

    pub fn inline(mime_type: impl Into<String>, data_base64: String) -> Part {
        Part {
            inline_data: Some(Blob {
                mime_type: mime_type.into(),
                data: data_base64,
            }),
            ..Part::default()
        }
    }
}

/// Inline bytes, base64-encoded (standard alphabet, padded).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    #[serde(default)]
    pub mime_type: String,
    #[serde(default)]
    pub data: String,
}

/// `generationConfig`: what to produce.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    /// `["TEXT", "IMAGE"]` or `["IMAGE"]`.
    pub response_modalities: Vec<String>,
    /// Only for models that accept several candidates; Gemini image models refuse it (400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    /// An `int32` upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<ImageConfig>,
}

/// `generationConfig.imageConfig`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// `"1:1"`, `"16:9"`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// `"1K"`, `"2K"`, `"4K"` (upper-case K). Not accepted by every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<String>,
}

/// Reply of `generateContent`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<PromptFeedback>,
    /// Kept verbatim (token counts by modality, thoughts, ...) for billing and audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// Absent when the candidate was blocked before producing anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// `STOP`, `MAX_TOKENS`, `SAFETY`, `IMAGE_SAFETY`, `NO_IMAGE`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// Set when the prompt itself was refused; then there are no candidates.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// `SAFETY`, `OTHER`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `IMAGE_SAFETY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason_message: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// predict (Imagen)
// ---------------------------------------------------------------------------------------------

/// Body of `POST /v1beta/models/{imagen-model}:predict`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PredictRequest {
    pub instances: Vec<PredictInstance>,
    pub parameters: PredictParameters,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PredictInstance {
    pub prompt: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PredictParameters {
    /// Images wanted, 1 to 4.
    pub sample_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// `"1K"` or `"2K"`, on the Imagen models that accept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<String>,
}

/// Reply of `predict`. Filtered images are left out, so there may be fewer than asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PredictResponse {
    #[serde(default)]
    pub predictions: Vec<Prediction>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_base64_encoded: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Why an image was withheld, when the caller asked to be told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rai_filtered_reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Errors: google.rpc.Status
// ---------------------------------------------------------------------------------------------

/// `{"error": {...}}`, the body of every non-2xx reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ErrorEnvelope {
    pub error: RpcStatus,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RpcStatus {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub message: String,
    /// `RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`, `PERMISSION_DENIED`, ...
    #[serde(default)]
    pub status: String,
    /// `google.rpc.*` detail messages, told apart by `@type`.
    #[serde(default)]
    pub details: Vec<Value>,
}

pub const TYPE_RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";
pub const TYPE_QUOTA_FAILURE: &str = "type.googleapis.com/google.rpc.QuotaFailure";
pub const TYPE_ERROR_INFO: &str = "type.googleapis.com/google.rpc.ErrorInfo";

impl RpcStatus {
    /// The details of one `@type`.
    pub fn details_of<'a>(&'a self, type_url: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.details
            .iter()
            .filter(move |d| d.get("@type").and_then(Value::as_str) == Some(type_url))
    }

    /// `RetryInfo.retryDelay`, a protobuf duration such as `"37s"` or `"45.837906927s"`.
    pub fn retry_delay(&self) -> Option<&str> {
        self.details_of(TYPE_RETRY_INFO)
            .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
    }

    /// Every `QuotaFailure.violations[].quotaId`.
    pub fn quota_ids(&self) -> Vec<&str> {
        self.details_of(TYPE_QUOTA_FAILURE)
            .filter_map(|d| d.get("violations").and_then(Value::as_array))
            .flatten()
            .filter_map(|v| v.get("quotaId").and_then(Value::as_str))
            .collect()
    }

    /// Every `ErrorInfo.reason` (`API_KEY_INVALID`, `SERVICE_DISABLED`, ...).
    pub fn error_reasons(&self) -> Vec<&str> {
        self.details_of(TYPE_ERROR_INFO)
            .filter_map(|d| d.get("reason").and_then(Value::as_str))
            .collect()
    }
}
