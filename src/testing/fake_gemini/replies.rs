//! The fake's answers: successful replies in the real format, the checks the real API makes
//! on a request, and the reply for each [`FaultKind`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::{FaultKind, InFlight, Method, Shared};
use crate::providers::local::render::render_png;

/// Side of the square PNGs the fake returns.
const IMAGE_SIDE: u32 = 8;
const GEMINI_RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "1:4", "4:1", "1:8",
    "8:1",
];
const IMAGEN_RATIOS: &[&str] = &["1:1", "3:4", "4:3", "9:16", "16:9"];
const IMAGE_SIZES: &[&str] = &["512", "1K", "2K", "4K"];

pub(super) fn fault_response(
    fault: FaultKind,
    key: &str,
    model: &str,
    method: Method,
    shared: &Arc<Shared>,
    guard: InFlight,
) -> Response {
    match fault {
        FaultKind::None | FaultKind::Hang => json_response(200, "{}".into()),
        FaultKind::RateLimited {
            retry_after_secs,
            retry_delay,
        } => {
            let mut details = vec![quota_failure(
                "GenerateRequestsPerMinutePerProjectPerModel",
                model,
            )];
            if let Some(delay) = retry_delay {
                details.push(retry_info(&delay));
            }
            let mut response = google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                Some(details),
            );
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        FaultKind::QuotaExhaustedDaily { retry_delay } => {
            let mut details = vec![quota_failure(
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                model,
            )];
            if let Some(delay) = retry_delay {
                details.push(retry_info(&delay));
            }
            google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                Some(details),
            )
        }
        FaultKind::ServerError(502) => Response::builder()
            .status(502)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(
                "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
            ))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()),
        FaultKind::ServerError(status) => {
            let (name, message) = match status {
                503 => ("UNAVAILABLE", "The model is overloaded. Please try again later."),
                504 => ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
                _ => ("INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
            };
            google_error(status, name, message, None)
        }
        FaultKind::StallBody => {
            let stop = shared.stop.clone();
            let stream = futures::stream::once(async {
                Ok::<Bytes, Infallible>(Bytes::from_static(b"{\"candidates\": ["))
            })
            .chain(futures::stream::once(async move {
                // Keep the request counted as in flight while it stalls.
                let _guard = guard;
                stop.cancelled().await;
                Ok::<Bytes, Infallible>(Bytes::new())
            }));
            streaming_response(Body::from_stream(stream))
        }
        FaultKind::DropConnection => {
            let full = happy_body(model, method, "dropped", 1).to_string();
            let half = Bytes::from(full.as_bytes()[..full.len() / 2].to_vec());
            let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(half) })
                .chain(futures::stream::once(async move {
                    let _guard = guard;
                    // Give the first half time to leave, then break the connection.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "fake Gemini drops the connection",
                    ))
                }));
            streaming_response(Body::from_stream(stream))
        }
        FaultKind::MalformedJson => {
            json_response(200, "{\"candidates\": [{\"content\": nope}]}".into())
        }
        FaultKind::TruncatedJson => {
            let full = happy_body(model, method, "truncated", 1).to_string();
            json_response(200, full[..full.len() * 3 / 5].to_owned())
        }
        FaultKind::PromptBlocked(reason) => match method {
            Method::Predict => json_response(200, "{}".into()),
            Method::GenerateContent => json_response(
                200,
                json!({
                    "promptFeedback": {"blockReason": reason},
                    "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                    "modelVersion": model,
                    "responseId": response_id(),
                })
                .to_string(),
            ),
        },
        FaultKind::FinishReason(reason) => match method {
            Method::Predict => json_response(
                200,
                json!({"predictions": [{"raiFilteredReason": reason}]}).to_string(),
            ),
            Method::GenerateContent => json_response(
                200,
                json!({
                    "candidates": [{"content": {"role": "model"}, "finishReason": reason, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                    "modelVersion": model,
                    "responseId": response_id(),
                })
                .to_string(),
            ),
        },
        FaultKind::TextOnly(text) => match method {
            Method::Predict => json_response(200, json!({"predictions": []}).to_string()),
            Method::GenerateContent => json_response(
                200,
                json!({
                    "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 20,
                                      "totalTokenCount": 32},
                    "modelVersion": model,
                    "responseId": response_id(),
                })
                .to_string(),
            ),
        },
        FaultKind::Unauthorized => google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        ),
        FaultKind::Forbidden => google_error(
            403,
            "PERMISSION_DENIED",
            "Generative Language API has not been used in project 123456789012 before or it is disabled.",
            Some(vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SERVICE_DISABLED",
                "domain": "googleapis.com",
            })]),
        ),
        FaultKind::InvalidKey => google_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            Some(vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            })]),
        ),
        FaultKind::EchoKey => google_error(
            400,
            "INVALID_ARGUMENT",
            &format!("The key {key} is not allowed to call {model}"),
            None,
        ),
        FaultKind::Redirect(location) => Response::builder()
            .status(302)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::FOUND.into_response()),
        FaultKind::Oversized(bytes) => {
            let mut body = happy_body(model, method, "oversized", 1);
            if let Value::Object(map) = &mut body {
                map.insert("padding".into(), Value::String("a".repeat(bytes)));
            }
            json_response(200, body.to_string())
        }
        FaultKind::Status { status, body } => json_response(status, body),
    }
}

fn quota_failure(quota_id: &str, model: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": model},
            "quotaValue": "10",
        }],
    })
}

fn retry_info(delay: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
}

pub(super) fn google_error(
    status: u16,
    name: &str,
    message: &str,
    details: Option<Vec<Value>>,
) -> Response {
    let mut error = json!({"code": status, "message": message, "status": name});
    if let Some(details) = details {
        error["details"] = Value::Array(details);
    }
    json_response(status, json!({ "error": error }).to_string())
}

pub(super) fn json_response(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn streaming_response(body: Body) -> Response {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn response_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "fake-{:08x}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn png_base64(prompt: &str, seed: u64) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(render_png(prompt, seed, IMAGE_SIDE, IMAGE_SIDE))
}

/// A successful reply, without checking any request.
fn happy_body(model: &str, method: Method, prompt: &str, n: u32) -> Value {
    match method {
        Method::Predict => json!({
            "predictions": (0..n).map(|i| json!({
                "bytesBase64Encoded": png_base64(prompt, u64::from(i)),
                "mimeType": "image/png",
            })).collect::<Vec<_>>()
        }),
        Method::GenerateContent => generate_content_reply(model, prompt, 0, true),
    }
}

fn generate_content_reply(model: &str, prompt: &str, seed: u64, with_text: bool) -> Value {
    let id = response_id();
    let mut parts = Vec::new();
    if with_text {
        parts.push(json!({"text": format!("Here is your image: {prompt}")}));
    }
    let mut image =
        json!({"inlineData": {"mimeType": "image/png", "data": png_base64(prompt, seed)}});
    if model.starts_with("gemini-3") {
        image["thoughtSignature"] = Value::String(format!("sig-{id}"));
    }
    parts.push(image);
    let prompt_tokens = prompt.split_whitespace().count().max(1) as u64;
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": 1290,
            "totalTokenCount": prompt_tokens + 1290,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
        },
        "modelVersion": model,
        "responseId": id,
    })
}

/// Why the fake refuses a request: status, `google.rpc.Code` name, message.
pub(super) struct Refusal(u16, &'static str, String);

impl Refusal {
    pub(super) fn into_response(self) -> Response {
        google_error(self.0, self.1, &self.2, None)
    }
}

pub(super) type Reply = Result<Value, Refusal>;

fn bad_request(message: &str) -> Refusal {
    Refusal(400, "INVALID_ARGUMENT", message.to_owned())
}

fn model_not_found(model: &str, method: &str) -> Refusal {
    Refusal(
        404,
        "NOT_FOUND",
        format!(
            "models/{model} is not found for API version v1beta, or is not supported for {method}. \
             Call ListModels to see the list of available models and their supported methods."
        ),
    )
}

/// Checks a `generateContent` request as the real API would, and answers it.
pub(super) fn generate_content(model: &str, request: &Value) -> Reply {
    if !model.starts_with("gemini-") {
        return Err(model_not_found(model, "generateContent"));
    }
    let parts = request["contents"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|c| c["parts"].as_array())
        .ok_or_else(|| {
            bad_request("* GenerateContentRequest.contents: contents is not specified")
        })?;
    let prompt: String = parts
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for part in parts {
        if let Some(blob) = part.get("inlineData") {
            let mime = blob["mimeType"].as_str().unwrap_or("");
            let data = blob["data"].as_str().unwrap_or("");
            if mime.is_empty()
                || base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .is_err()
            {
                return Err(bad_request(
                    "Invalid value at 'contents[0].parts[1].inline_data' (TYPE_BYTES), Base64 decoding failed",
                ));
            }
        }
    }
    let config = &request["generationConfig"];
    let modalities: Vec<&str> = config["responseModalities"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if modalities == ["TEXT"] {
        // A text-only answer (a describe): what the image models do when asked for text.
        return Ok(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": format!("1️⃣ a described image ({} parts seen)", parts.len())}]},
                "finishReason": "STOP",
                "index": 0,
            }],
            "modelVersion": model,
            "responseId": response_id(),
        }));
    }
    if !modalities.contains(&"IMAGE") {
        return Err(bad_request(
            "fake Gemini: an image model needs generationConfig.responseModalities with IMAGE",
        ));
    }
    if config["candidateCount"].as_u64().is_some_and(|n| n > 1) {
        return Err(bad_request(&format!(
            "Multiple candidates is not enabled for models/{model}"
        )));
    }
    let image_config = &config["imageConfig"];
    if let Some(ratio) = image_config.get("aspectRatio") {
        if !ratio.as_str().is_some_and(|r| GEMINI_RATIOS.contains(&r)) {
            return Err(bad_request(&format!(
                "* GenerateContentRequest.generation_config.image_config.aspect_ratio: unsupported aspect ratio {ratio}"
            )));
        }
    }
    if let Some(size) = image_config.get("imageSize") {
        if model.starts_with("gemini-2.5-flash-image") {
            return Err(bad_request(&format!(
                "fake Gemini: imageSize is not supported by {model}"
            )));
        }
        if !size.as_str().is_some_and(|s| IMAGE_SIZES.contains(&s)) {
            return Err(bad_request(&format!(
                "* GenerateContentRequest.generation_config.image_config.image_size: unsupported image size {size}"
            )));
        }
    }
    let seed = config["seed"].as_u64().unwrap_or(0);
    Ok(generate_content_reply(
        model,
        &prompt,
        seed,
        modalities.contains(&"TEXT"),
    ))
}

/// Checks an Imagen `predict` request as the real API would, and answers it.
pub(super) fn predict(model: &str, request: &Value) -> Reply {
    if !model.starts_with("imagen-") {
        return Err(model_not_found(model, "predict"));
    }
    let prompt = request["instances"][0]["prompt"]
        .as_str()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad_request("instances[0].prompt is required"))?;
    let parameters = &request["parameters"];
    let n = parameters["sampleCount"].as_u64().unwrap_or(4);
    if !(1..=4).contains(&n) {
        return Err(bad_request(&format!(
            "sampleCount must be between 1 and 4, got {n}"
        )));
    }
    if let Some(ratio) = parameters.get("aspectRatio") {
        if !ratio.as_str().is_some_and(|r| IMAGEN_RATIOS.contains(&r)) {
            return Err(bad_request(&format!("unsupported aspect ratio {ratio}")));
        }
    }
    Ok(happy_body(model, Method::Predict, prompt, n as u32))
}
