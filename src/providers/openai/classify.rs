//! What an OpenAI reply means: images, a moderation block, or a classified failure.
//!
//! Owns: the pure functions that turn a status, headers and body into an [`ImagesResponse`]
//! or a [`ProviderError`]. The stable codes are the Gemini provider's ([`codes`]), so the key
//! pool and retries treat every upstream alike. Nothing here does I/O or knows the key.
//!
//! The rules, in short:
//! - 429 is retryable after `retry-after-ms` or `Retry-After` (the longer). A 429 whose code is
//!   `insufficient_quota` (the account's credit is spent) gets
//!   [`codes::QUOTA_EXHAUSTED_DAILY`], so the pool parks the key instead of hammering it.
//! - 5xx, 408, 409, timeouts, connection errors, malformed or truncated JSON, and a 200 with no
//!   image are retryable.
//! - 400 with code `moderation_blocked` or `content_policy_violation` (or a message about the
//!   safety system) is a final [`ProviderError::ContentBlocked`] carrying that code.
//! - 401 and 403 reject the key; other 4xx are final.

use std::time::{Duration, SystemTime};

use super::wire::{ErrorEnvelope, ImagesResponse};
use crate::providers::gemini::classify::{clip, json_error, parse_retry_after};
use crate::providers::gemini::codes;
use crate::providers::ProviderError;

/// Upstream text kept in an error message, at most.
const MAX_MESSAGE_CHARS: usize = 400;

/// Error codes OpenAI gives a prompt or image its safety system refused.
const BLOCK_CODES: &[&str] = &["moderation_blocked", "content_policy_violation"];

/// The delay a reply asks for: `retry-after-ms` (OpenAI's own, milliseconds) or
/// `Retry-After` (seconds or an HTTP date), the longer of the two.
pub fn retry_delay(retry_after: Option<&str>, retry_after_ms: Option<&str>) -> Option<Duration> {
    let seconds = retry_after.and_then(|v| parse_retry_after(v, SystemTime::now()));
    let millis = retry_after_ms
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_micros((ms * 1000.0) as u64));
    seconds.max(millis)
}

/// Classifies a non-2xx reply.
pub fn classify_status(status: u16, delay: Option<Duration>, body: &[u8]) -> ProviderError {
    let error = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|e| e.error);
    let code = error.as_ref().and_then(|e| e.code_str()).unwrap_or("");
    let message = describe(status, error.as_ref(), body);
    let retryable = |c: &str| ProviderError::Retryable {
        code: c.into(),
        message: message.clone(),
        retry_after: delay,
    };
    let final_ = |c: &str| ProviderError::Final {
        code: c.into(),
        message: message.clone(),
    };
    let blocked = BLOCK_CODES.contains(&code)
        || error.as_ref().is_some_and(|e| {
            e.kind.as_deref() == Some("image_generation_user_error")
                && e.message.contains("safety system")
        });
    match status {
        429 if code == "insufficient_quota" => retryable(codes::QUOTA_EXHAUSTED_DAILY),
        429 => retryable(codes::RATE_LIMITED),
        400 if blocked => ProviderError::ContentBlocked {
            reason: if code.is_empty() {
                "moderation_blocked".into()
            } else {
                code.to_owned()
            },
        },
        401 | 403 => ProviderError::KeyRejected { message },
        400 | 422 => final_(codes::BAD_REQUEST),
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

fn describe(status: u16, error: Option<&super::wire::ErrorBody>, body: &[u8]) -> String {
    match error {
        Some(e) if !e.message.is_empty() => {
            let code = e.code_str().map(|c| format!(" {c}")).unwrap_or_default();
            format!(
                "HTTP {status}{code}: {}",
                clip(&e.message, MAX_MESSAGE_CHARS)
            )
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            match text.trim() {
                "" => format!("HTTP {status} with an empty body"),
                t => format!("HTTP {status}: {}", clip(t, MAX_MESSAGE_CHARS / 2)),
            }
        }
    }
}

/// Reads a 200 reply. A reply with no image in it is malformed (retryable): OpenAI refuses
/// with a 400 rather than answering empty.
pub fn parse_images_response(body: &[u8]) -> Result<ImagesResponse, ProviderError> {
    let reply: ImagesResponse =
        serde_json::from_slice(body).map_err(|e| json_error("images reply", &e))?;
    let usable = reply
        .data
        .iter()
        .any(|d| d.b64_json.is_some() || d.url.is_some());
    if !usable {
        return Err(ProviderError::Retryable {
            code: codes::MALFORMED.into(),
            message: "the images reply holds no b64_json or url".into(),
            retry_after: None,
        });
    }
    Ok(reply)
}

/// What the job keeps from a reply beside its images (the facade answers with it).
pub fn details_of(reply: &ImagesResponse) -> serde_json::Value {
    let revised: Vec<Option<&str>> = reply
        .data
        .iter()
        .map(|d| d.revised_prompt.as_deref())
        .collect();
    serde_json::json!({
        "created": reply.created,
        "size": reply.size,
        "quality": reply.quality,
        "output_format": reply.output_format,
        "background": reply.background,
        "revised_prompts": revised,
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

    #[test]
    fn rate_limits_keep_their_delay() {
        let delay = retry_delay(Some("2"), Some("20000"));
        assert_eq!(delay, Some(Duration::from_secs(20)));
        assert_eq!(retry_delay(Some("7"), None), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_delay(None, Some("1500.5")),
            Some(Duration::from_micros(1_500_500))
        );
        assert_eq!(retry_delay(None, Some("soon")), None);
        let e = classify_status(429, delay, fixture!("error_429_rate_limit.json"));
        assert_eq!(
            retryable(&e),
            (codes::RATE_LIMITED, Some(Duration::from_secs(20)))
        );
        assert!(e.to_string().contains("rate_limit_exceeded"), "{e}");
        let e = classify_status(429, None, fixture!("error_429_insufficient_quota.json"));
        assert_eq!(retryable(&e).0, codes::QUOTA_EXHAUSTED_DAILY);
    }

    #[test]
    fn safety_refusals_are_content_blocks() {
        for (fixture, code) in [
            (
                fixture!("error_400_moderation_blocked.json"),
                "moderation_blocked",
            ),
            (
                fixture!("error_400_content_policy.json"),
                "content_policy_violation",
            ),
        ] {
            match classify_status(400, None, fixture) {
                ProviderError::ContentBlocked { reason } => assert_eq!(reason, code),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn keys_bad_requests_and_server_errors() {
        let e = classify_status(401, None, fixture!("error_401_invalid_key.json"));
        assert!(matches!(e, ProviderError::KeyRejected { .. }), "{e:?}");
        let e = classify_status(403, None, b"<html>forbidden</html>");
        assert!(matches!(e, ProviderError::KeyRejected { .. }), "{e:?}");
        match classify_status(400, None, fixture!("error_400_invalid_size.json")) {
            ProviderError::Final { code, message } => {
                assert_eq!(code, codes::BAD_REQUEST);
                assert!(message.contains("Invalid size"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let e = classify_status(
            500,
            Some(Duration::from_secs(3)),
            fixture!("error_500.json"),
        );
        assert_eq!(
            retryable(&e),
            (codes::UNAVAILABLE, Some(Duration::from_secs(3)))
        );
        assert_eq!(
            retryable(&classify_status(502, None, b"")).0,
            codes::UNAVAILABLE
        );
        assert!(matches!(
            classify_status(404, None, b"{}"),
            ProviderError::Final { .. }
        ));
    }

    #[test]
    fn replies_are_read_or_refused() {
        let reply = parse_images_response(fixture!("ok_gpt_image.json")).expect("reply");
        assert_eq!(reply.data.len(), 1);
        assert_eq!(reply.size.as_deref(), Some("1024x1024"));
        assert_eq!(reply.usage.as_ref().expect("usage")["total_tokens"], 4210);
        let details = details_of(&reply);
        assert_eq!(details["output_format"], "png");
        let reply = parse_images_response(fixture!("ok_dalle3_url.json")).expect("reply");
        assert!(reply.data[0].url.is_some());
        assert_eq!(
            details_of(&reply)["revised_prompts"][0],
            "A red fox in snow."
        );
        let whole = include_str!("fixtures/ok_gpt_image.json");
        let e = parse_images_response(&whole.as_bytes()[..whole.len() / 2]).expect_err("cut");
        assert_eq!(retryable(&e).0, codes::TRUNCATED);
        let e = parse_images_response(b"<html>").expect_err("html");
        assert_eq!(retryable(&e).0, codes::MALFORMED);
        let e = parse_images_response(br#"{"created": 1, "data": []}"#).expect_err("empty");
        assert_eq!(retryable(&e).0, codes::MALFORMED);
    }
}
