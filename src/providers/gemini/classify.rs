//! What a Gemini reply means: images, a safety block, or a classified failure.
//!
//! Owns: the pure functions that turn an HTTP status + headers + body (or a transport error)
//! into a [`GenerateOutput`] or a [`ProviderError`], and the stable `code`s those errors carry
//! ([`codes`]). Nothing here does I/O or knows the API key; the caller scrubs the key from
//! messages (see `redact` in the parent module) before they leave the provider.
//!
//! The rules, in short:
//! - 429 is retryable, after `Retry-After` or the body's `google.rpc.RetryInfo.retryDelay`
//!   (the longer of the two). A 429 whose `google.rpc.QuotaFailure` names a per-day quota
//!   (`quotaId` containing `PerDay`) gets its own code, [`codes::QUOTA_EXHAUSTED_DAILY`], so the
//!   key pool can park the whole Cloud project until the quota resets.
//! - 5xx, 408, timeouts, connection errors, malformed or truncated JSON are retryable.
//! - 401, 403, and a 400 whose `ErrorInfo.reason` is `API_KEY_*` reject the key.
//! - Other 4xx (400, 404, ...) are final.
//! - HTTP 200 with no usable image is a final [`ProviderError::ContentBlocked`] carrying the
//!   upstream reason (`promptFeedback.blockReason`, the candidate's `finishReason`, or
//!   `NO_IMAGE` when Gemini answered with text only).

use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;

use super::wire::{ErrorEnvelope, GenerateContentResponse, PredictResponse, RpcStatus};
use crate::providers::{GenerateOutput, GeneratedImage, ProviderError};

/// The `code` of every [`ProviderError::Retryable`] and [`ProviderError::Final`] this provider
/// returns. Stable: the key pool, retries and clients match on them.
pub mod codes {
    /// 429 on a per-minute (or unspecified) quota.
    pub const RATE_LIMITED: &str = crate::base::job_errors::UPSTREAM_RATE_LIMITED;
    /// 429 on a per-day quota: the Cloud project is spent until the daily reset.
    pub const QUOTA_EXHAUSTED_DAILY: &str = crate::base::job_errors::UPSTREAM_QUOTA_EXHAUSTED_DAILY;
    /// 5xx.
    pub const UNAVAILABLE: &str = crate::base::job_errors::UPSTREAM_UNAVAILABLE;
    /// No answer in time (client timeout or 408).
    pub const TIMEOUT: &str = crate::base::job_errors::UPSTREAM_TIMEOUT;
    /// Could not connect, or the connection broke before the body was complete.
    pub const CONNECTION: &str = crate::base::job_errors::UPSTREAM_CONNECTION;
    /// The body is not the JSON (or the image) it should be.
    pub const MALFORMED: &str = crate::base::job_errors::UPSTREAM_MALFORMED_RESPONSE;
    /// The body is JSON cut short.
    pub const TRUNCATED: &str = crate::base::job_errors::UPSTREAM_TRUNCATED_RESPONSE;
    /// 409 / 499: the upstream gave up on the request; another try may pass.
    pub const ABORTED: &str = crate::base::job_errors::UPSTREAM_ABORTED;
    /// 400: the upstream refused the request as built.
    pub const BAD_REQUEST: &str = crate::base::job_errors::UPSTREAM_BAD_REQUEST;
    /// 404: no such model (or method) at this base URL.
    pub const NOT_FOUND: &str = crate::base::job_errors::UPSTREAM_NOT_FOUND;
    /// Any other 4xx.
    pub const REJECTED: &str = crate::base::job_errors::UPSTREAM_REJECTED;
    /// 3xx: redirects are not followed; the base URL is probably wrong.
    pub const REDIRECT: &str = crate::base::job_errors::UPSTREAM_REDIRECT;
    /// The body was larger than the configured bound.
    pub const RESPONSE_TOO_LARGE: &str = crate::base::job_errors::UPSTREAM_RESPONSE_TOO_LARGE;
    /// The request does not fit the chosen model (checked before any call).
    pub const INVALID_REQUEST: &str = crate::base::job_errors::INVALID_REQUEST;
    /// The provider was called without a credential.
    pub const KEY_MISSING: &str = crate::base::job_errors::PROVIDER_KEY_MISSING;
}

/// `finishReason`s that mean the candidate was refused (its parts, if any, are not used).
pub const BLOCKING_FINISH_REASONS: &[&str] = &[
    "SAFETY",
    "IMAGE_SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_PROHIBITED_CONTENT",
    "NO_IMAGE",
    "BLOCKLIST",
    "RECITATION",
    "IMAGE_RECITATION",
    "SPII",
];

/// Upstream text kept in an error message, at most.
const MAX_MESSAGE_CHARS: usize = 400;

/// Classifies a non-2xx reply. `retry_after` is the raw `Retry-After` header, if any.
pub fn classify_status(status: u16, retry_after: Option<&str>, body: &[u8]) -> ProviderError {
    let rpc = parse_error_body(body);
    let message = describe(status, rpc.as_ref(), body);
    let header_delay = retry_after.and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body_delay = rpc
        .as_ref()
        .and_then(RpcStatus::retry_delay)
        .and_then(parse_retry_delay);
    // Both may be present; waiting the longer of the two never hammers a spent quota.
    let delay = header_delay.max(body_delay);
    let retryable = |code: &str| ProviderError::Retryable {
        code: code.into(),
        message: message.clone(),
        retry_after: delay,
    };
    let final_ = |code: &str| ProviderError::Final {
        code: code.into(),
        message: message.clone(),
    };
    match status {
        429 => {
            if rpc.as_ref().is_some_and(is_daily_quota) {
                retryable(codes::QUOTA_EXHAUSTED_DAILY)
            } else {
                retryable(codes::RATE_LIMITED)
            }
        }
        401 | 403 => ProviderError::KeyRejected { message },
        // Gemini answers a bad API key with 400 INVALID_ARGUMENT + ErrorInfo API_KEY_INVALID.
        400 if rpc.as_ref().is_some_and(is_key_error) => ProviderError::KeyRejected { message },
        400 => final_(codes::BAD_REQUEST),
        404 => final_(codes::NOT_FOUND),
        408 => retryable(codes::TIMEOUT),
        409 | 499 => retryable(codes::ABORTED),
        500..=599 => retryable(codes::UNAVAILABLE),
        300..=399 => ProviderError::Final {
            code: codes::REDIRECT.into(),
            message: format!("{message} (redirects are not followed: check the base URL)"),
        },
        _ => final_(codes::REJECTED),
    }
}

/// A 429 caused by a per-day quota, which will not lift for hours.
pub fn is_daily_quota(rpc: &RpcStatus) -> bool {
    rpc.quota_ids().iter().any(|id| id.contains("PerDay"))
}

fn is_key_error(rpc: &RpcStatus) -> bool {
    rpc.error_reasons()
        .iter()
        .any(|r| r.starts_with("API_KEY_"))
        || rpc.message.starts_with("API key not valid")
        || rpc.message.starts_with("API key expired")
}

fn parse_error_body(body: &[u8]) -> Option<RpcStatus> {
    serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|e| e.error)
}

fn describe(status: u16, rpc: Option<&RpcStatus>, body: &[u8]) -> String {
    match rpc {
        Some(rpc) if !rpc.status.is_empty() || !rpc.message.is_empty() => format!(
            "HTTP {status} {}: {}",
            rpc.status,
            clip(&rpc.message, MAX_MESSAGE_CHARS)
        ),
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status} with an empty body")
            } else {
                format!("HTTP {status}: {}", clip(text, MAX_MESSAGE_CHARS / 2))
            }
        }
    }
}

/// At most `max` characters of `s`, on a character boundary, with an ellipsis if cut.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// A protobuf `Duration` in JSON: decimal seconds with an `s` suffix (`"37s"`,
/// `"45.837906927s"`, `"0.5s"`).
pub fn parse_retry_delay(value: &str) -> Option<Duration> {
    let secs = value.trim().strip_suffix('s')?;
    let (whole, frac) = match secs.split_once('.') {
        Some((w, f)) => (w, f),
        None => (secs, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(whole, nanos))
}

/// `Retry-After`: delta-seconds, or an HTTP-date (taken relative to `now`; a date in the past
/// means "now", which is zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::try_from(at.timestamp()).ok()?))?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Classifies a transport failure: no reply, or a reply whose body broke off.
pub fn classify_transport(error: reqwest::Error) -> ProviderError {
    // The URL never holds the key, but it may name an internal relay: keep it out of messages
    // that end up in job rows.
    let error = error.without_url();
    let detail = error_chain(&error);
    let code = if error.is_timeout() {
        codes::TIMEOUT
    } else {
        codes::CONNECTION
    };
    let what = if error.is_timeout() {
        "no answer in time"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the connection broke while reading the reply"
    } else {
        "the request failed"
    };
    ProviderError::Retryable {
        code: code.into(),
        message: format!("{what}: {detail}"),
        retry_after: None,
    }
}

fn error_chain(error: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        current = e.source();
    }
    clip(&out, MAX_MESSAGE_CHARS)
}

/// An error for a body that is not the JSON it should be.
pub fn json_error(what: &str, error: &serde_json::Error) -> ProviderError {
    let code = if error.is_eof() {
        codes::TRUNCATED
    } else {
        codes::MALFORMED
    };
    ProviderError::Retryable {
        code: code.into(),
        message: format!("{what}: {error}"),
        retry_after: None,
    }
}

fn malformed(message: String) -> ProviderError {
    ProviderError::Retryable {
        code: codes::MALFORMED.into(),
        message,
        retry_after: None,
    }
}

/// The MIME type the bytes really are, from their magic numbers: PNG, JPEG or WebP.
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Decodes one base64 image and checks it is a PNG, JPEG or WebP. The sniffed type wins over
/// the declared one (relays sometimes label a JPEG `image/png`).
pub fn decode_image(data: &str, declared_mime: &str) -> Result<GeneratedImage, ProviderError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| malformed(format!("image data is not valid base64: {e}")))?;
    let Some(mime) = sniff_image(&bytes) else {
        return Err(malformed(format!(
            "image data declared {declared_mime:?} is not a PNG, JPEG or WebP ({} bytes)",
            bytes.len()
        )));
    };
    if !declared_mime.is_empty() && declared_mime != mime {
        tracing::debug!(
            declared = declared_mime,
            sniffed = mime,
            "image type mislabelled upstream"
        );
    }
    Ok(GeneratedImage {
        bytes: Bytes::from(bytes),
        mime: mime.into(),
        pixels: None,
    })
}

/// Reads a 200 reply of `generateContent`.
pub fn parse_generate_content(body: &[u8]) -> Result<GenerateOutput, ProviderError> {
    let reply: GenerateContentResponse =
        serde_json::from_slice(body).map_err(|e| json_error("generateContent reply", &e))?;
    output_of(reply)
}

/// Turns a parsed `generateContent` reply into images, or the reason there are none.
pub fn output_of(reply: GenerateContentResponse) -> Result<GenerateOutput, ProviderError> {
    let mut images = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut image_signature = None;
    let mut any_signature = None;
    // The first reason any candidate gave for stopping other than a normal STOP.
    let mut refusal: Option<String> = None;
    for candidate in &reply.candidates {
        let finish = candidate.finish_reason.as_deref().unwrap_or("");
        if BLOCKING_FINISH_REASONS.contains(&finish) {
            refusal.get_or_insert_with(|| finish.to_owned());
            continue;
        }
        if !finish.is_empty() && finish != "STOP" {
            refusal.get_or_insert_with(|| finish.to_owned());
        }
        let parts = candidate.content.as_ref().map(|c| c.parts.as_slice());
        for part in parts.unwrap_or_default() {
            // Interim reasoning (text and draft images) is not the answer.
            if part.thought == Some(true) {
                continue;
            }
            if let Some(text) = part.text.as_deref().filter(|t| !t.trim().is_empty()) {
                texts.push(text.trim().to_owned());
            }
            if let Some(sig) = &part.thought_signature {
                any_signature.get_or_insert_with(|| sig.clone());
            }
            if let Some(blob) = &part.inline_data {
                images.push(decode_image(&blob.data, &blob.mime_type)?);
                if let Some(sig) = &part.thought_signature {
                    image_signature.get_or_insert_with(|| sig.clone());
                }
            }
        }
    }
    if images.is_empty() {
        let reason = reply
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.clone())
            .or(refusal)
            .unwrap_or_else(|| "NO_IMAGE".to_owned());
        return Err(ProviderError::ContentBlocked { reason });
    }
    Ok(GenerateOutput {
        images,
        caption: (!texts.is_empty()).then(|| texts.join("\n")),
        usage: reply.usage_metadata,
        model_version: reply.model_version,
        response_id: reply.response_id,
        thought_signature: image_signature.or(any_signature),
        details: None,
    })
}

/// Reads a 200 reply of Imagen's `predict`.
pub fn parse_predict(body: &[u8]) -> Result<GenerateOutput, ProviderError> {
    let reply: PredictResponse =
        serde_json::from_slice(body).map_err(|e| json_error("predict reply", &e))?;
    let mut images = Vec::new();
    let mut filtered = None;
    for prediction in &reply.predictions {
        match &prediction.bytes_base64_encoded {
            Some(data) => images.push(decode_image(
                data,
                prediction.mime_type.as_deref().unwrap_or(""),
            )?),
            None => {
                if let Some(reason) = &prediction.rai_filtered_reason {
                    filtered.get_or_insert_with(|| clip(reason, MAX_MESSAGE_CHARS));
                }
            }
        }
    }
    if images.is_empty() {
        return Err(ProviderError::ContentBlocked {
            reason: filtered.unwrap_or_else(|| "NO_IMAGE".to_owned()),
        });
    }
    Ok(GenerateOutput {
        images,
        ..GenerateOutput::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("fixtures/", $name)).as_bytes()
        };
    }

    fn retryable(e: &ProviderError) -> (&str, Option<Duration>) {
        match e {
            ProviderError::Retryable {
                code, retry_after, ..
            } => (code.as_str(), *retry_after),
            other => panic!("expected Retryable, got {other:?}"),
        }
    }

    fn final_code(e: &ProviderError) -> &str {
        match e {
            ProviderError::Final { code, .. } => code,
            other => panic!("expected Final, got {other:?}"),
        }
    }

    fn blocked(r: Result<GenerateOutput, ProviderError>) -> String {
        match r {
            Err(ProviderError::ContentBlocked { reason }) => reason,
            other => panic!("expected ContentBlocked, got {other:?}"),
        }
    }

    #[test]
    fn rate_limit_per_minute_uses_retry_info() {
        let e = classify_status(429, None, fixture!("error_429_per_minute.json"));
        assert_eq!(
            retryable(&e),
            (codes::RATE_LIMITED, Some(Duration::from_secs(37)))
        );
        assert!(e.to_string().contains("RESOURCE_EXHAUSTED"), "{e}");
    }

    #[test]
    fn rate_limit_per_day_is_marked_and_keeps_fractional_delay() {
        let e = classify_status(429, None, fixture!("error_429_per_day.json"));
        assert_eq!(
            retryable(&e),
            (
                codes::QUOTA_EXHAUSTED_DAILY,
                Some(Duration::new(45, 837_906_927))
            )
        );
    }

    #[test]
    fn retry_after_header_and_body_take_the_longer() {
        let e = classify_status(429, Some("5"), fixture!("error_429_bare.json"));
        assert_eq!(
            retryable(&e),
            (codes::RATE_LIMITED, Some(Duration::from_secs(5)))
        );
        let e = classify_status(429, Some("90"), fixture!("error_429_per_minute.json"));
        assert_eq!(retryable(&e).1, Some(Duration::from_secs(90)));
        let e = classify_status(429, Some("1"), fixture!("error_429_per_minute.json"));
        assert_eq!(retryable(&e).1, Some(Duration::from_secs(37)));
        let e = classify_status(429, None, fixture!("error_429_bare.json"));
        assert_eq!(retryable(&e), (codes::RATE_LIMITED, None));
    }

    #[test]
    fn server_errors_are_retryable() {
        for (status, body) in [
            (500, fixture!("error_500_internal.json")),
            (503, fixture!("error_503_overloaded.json")),
            (502, b"<html><body>502 Bad Gateway</body></html>".as_slice()),
            (504, b"".as_slice()),
        ] {
            let e = classify_status(status, None, body);
            assert_eq!(retryable(&e).0, codes::UNAVAILABLE, "{status}");
            assert!(e.to_string().contains(&format!("HTTP {status}")), "{e}");
        }
        let e = classify_status(503, Some("12"), fixture!("error_503_overloaded.json"));
        assert_eq!(retryable(&e).1, Some(Duration::from_secs(12)));
    }

    #[test]
    fn key_errors_reject_the_key() {
        for (status, body) in [
            (400, fixture!("error_400_api_key_invalid.json")),
            (401, fixture!("error_401_unauthenticated.json")),
            (403, fixture!("error_403_permission_denied.json")),
        ] {
            let e = classify_status(status, None, body);
            assert!(
                matches!(e, ProviderError::KeyRejected { .. }),
                "{status}: {e:?}"
            );
        }
    }

    #[test]
    fn bad_requests_and_missing_models_are_final() {
        let e = classify_status(400, None, fixture!("error_400_invalid_argument.json"));
        assert_eq!(final_code(&e), codes::BAD_REQUEST);
        assert!(e.to_string().contains("Multiple candidates"), "{e}");
        let e = classify_status(404, None, fixture!("error_404_model.json"));
        assert_eq!(final_code(&e), codes::NOT_FOUND);
        let e = classify_status(302, None, b"");
        assert_eq!(final_code(&e), codes::REDIRECT);
        let e = classify_status(413, None, b"too big");
        assert_eq!(final_code(&e), codes::REJECTED);
    }

    #[test]
    fn long_upstream_messages_are_clipped() {
        let body = serde_json::json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "x".repeat(5000)}})
        .to_string();
        let e = classify_status(400, None, body.as_bytes());
        assert!(e.to_string().len() < 600, "{}", e.to_string().len());
    }

    #[test]
    fn retry_delay_parsing() {
        assert_eq!(parse_retry_delay("37s"), Some(Duration::from_secs(37)));
        assert_eq!(parse_retry_delay("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_delay(".25s"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_retry_delay("45.837906927s"),
            Some(Duration::new(45, 837_906_927))
        );
        for bad in ["", "s", "37", "-1s", "1.2.3s", "abc s", "1.0000000001s"] {
            assert_eq!(parse_retry_delay(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_header_parsing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn text_and_image_reply_is_read_whole() {
        let out = parse_generate_content(fixture!("ok_text_and_image.json")).expect("output");
        assert_eq!(out.images.len(), 1);
        assert_eq!(out.images[0].mime, "image/png");
        assert_eq!(
            out.caption.as_deref(),
            Some("Here is a small red fox sitting in the snow.")
        );
        assert_eq!(
            out.model_version.as_deref(),
            Some("gemini-3-pro-image-preview")
        );
        assert_eq!(out.response_id.as_deref(), Some("mW8xab3kAsKfz7IPtcPXmQ8"));
        // The image part's signature is the one a follow-up edit needs.
        assert_eq!(
            out.thought_signature.as_deref(),
            Some("EpoBCpcBAdHtim9sigimage")
        );
        let usage = out.usage.expect("usage");
        assert_eq!(usage["totalTokenCount"], 1438);
        assert_eq!(usage["candidatesTokensDetails"][0]["modality"], "IMAGE");
    }

    #[test]
    fn thought_parts_are_skipped() {
        let out = parse_generate_content(fixture!("ok_with_thought_parts.json")).expect("output");
        assert_eq!(
            out.images.len(),
            1,
            "the interim thought image is not a result"
        );
        assert_eq!(out.caption, None);
        assert_eq!(
            out.thought_signature.as_deref(),
            Some("final-image-signature")
        );
    }

    #[test]
    fn image_type_comes_from_the_bytes() {
        let out = parse_generate_content(fixture!("ok_image_only_jpeg_mislabelled.json"))
            .expect("output");
        assert_eq!(out.images[0].mime, "image/jpeg");
        assert_eq!(out.thought_signature, None);
        let e = parse_generate_content(fixture!("ok_not_an_image.json")).expect_err("not image");
        assert_eq!(retryable(&e).0, codes::MALFORMED);
    }

    #[test]
    fn safety_blocks_carry_the_upstream_reason() {
        assert_eq!(
            blocked(parse_generate_content(fixture!("blocked_prompt.json"))),
            "PROHIBITED_CONTENT"
        );
        assert_eq!(
            blocked(parse_generate_content(fixture!(
                "blocked_image_safety.json"
            ))),
            "IMAGE_SAFETY"
        );
        assert_eq!(
            blocked(parse_generate_content(fixture!("no_image_finish.json"))),
            "NO_IMAGE"
        );
        // 200 with only text: the model declined in words.
        assert_eq!(
            blocked(parse_generate_content(fixture!("text_only.json"))),
            "NO_IMAGE"
        );
        assert_eq!(blocked(parse_generate_content(b"{}")), "NO_IMAGE");
        let max_tokens = br#"{"candidates":[{"content":{"parts":[{"text":"..."}]},"finishReason":"MAX_TOKENS"}]}"#;
        assert_eq!(blocked(parse_generate_content(max_tokens)), "MAX_TOKENS");
    }

    #[test]
    fn a_blocked_candidate_does_not_hide_a_good_one() {
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP438AAAAQBAYDFKhhdAAAAAElFTkSuQmCC";
        let body = serde_json::json!({"candidates": [
            {"finishReason": "IMAGE_SAFETY", "content": {"parts": [
                {"inlineData": {"mimeType": "image/png", "data": png}}]}},
            {"finishReason": "STOP", "content": {"parts": [
                {"inlineData": {"mimeType": "image/png", "data": png}}]}}
        ]})
        .to_string();
        let out = parse_generate_content(body.as_bytes()).expect("output");
        assert_eq!(out.images.len(), 1);
    }

    #[test]
    fn malformed_and_truncated_bodies_are_retryable() {
        let whole = include_str!("fixtures/ok_text_and_image.json");
        let cut = &whole.as_bytes()[..whole.len() / 2];
        let e = parse_generate_content(cut).expect_err("truncated");
        assert_eq!(retryable(&e).0, codes::TRUNCATED);
        let e = parse_generate_content(b"<html>oops</html>").expect_err("html");
        assert_eq!(retryable(&e).0, codes::MALFORMED);
        let e = parse_generate_content(br#"{"candidates": "nope"}"#).expect_err("shape");
        assert_eq!(retryable(&e).0, codes::MALFORMED);
        let e = parse_generate_content(b"").expect_err("empty");
        assert_eq!(retryable(&e).0, codes::TRUNCATED);
    }

    #[test]
    fn predict_replies() {
        let out = parse_predict(fixture!("predict_ok.json")).expect("output");
        assert_eq!(out.images.len(), 2);
        assert!(out.images.iter().all(|i| i.mime == "image/png"));
        let reason = blocked(parse_predict(fixture!("predict_filtered.json")));
        assert!(reason.contains("safety filter"), "{reason}");
        assert_eq!(
            blocked(parse_predict(fixture!("predict_empty.json"))),
            "NO_IMAGE"
        );
        let whole = include_str!("fixtures/predict_ok.json");
        let e = parse_predict(&whole.as_bytes()[..40]).expect_err("truncated");
        assert_eq!(retryable(&e).0, codes::TRUNCATED);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(
            sniff_image(b"RIFF\x10\x00\x00\x00WEBPVP8 "),
            Some("image/webp")
        );
        assert_eq!(sniff_image(b"GIF89a"), None);
        assert_eq!(sniff_image(b""), None);
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("héllo", 2), "hé…");
        assert_eq!(clip("abc", 3), "abc");
    }
}
