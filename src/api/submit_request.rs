//! The submit request (`POST /v1/images/generate`) parsed and validated: body fields and the
//! `Idempotency-Key` and `Cancel-After` headers, into a [`SubmitRequest`]. Pure functions;
//! every refusal names its field. The handler that takes it from there is `api::jobs::submit`.

use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::base::job::JobParams;
use crate::base::job::Mode;
use crate::base::operation::{Operation, BLEND_IMAGES};
use crate::error::ApiError;

/// Aspect ratios the image APIs accept.
pub const ASPECT_RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];
pub const IMAGE_SIZES: &[&str] = &["1K", "2K", "4K"];
const MAX_URL_CHARS: usize = 2048;
const MAX_IMAGES: u64 = 4;
const MAX_INPUT_IMAGES: usize = 1;
const MAX_CANCEL_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// A submit that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitRequest {
    pub prompt: String,
    pub mode: Mode,
    pub input_image_url: Option<String>,
    pub params: JobParams,
    /// The job's own webhook receiver (wins over the tenant's webhook URL).
    pub webhook_url: Option<String>,
}

impl SubmitRequest {
    /// A fingerprint of what was asked, to tell a replay from a reuse of an idempotency key.
    pub fn fingerprint(&self) -> String {
        let mut canonical = serde_json::json!({
            "prompt": self.prompt,
            "mode": self.mode.as_str(),
            "inputImageUrl": self.input_image_url,
            "params": self.params,
        });
        // Only when given, so fingerprints of requests without one are unchanged.
        if let (Some(url), Some(map)) = (&self.webhook_url, canonical.as_object_mut()) {
            map.insert("webhookUrl".into(), Value::String(url.clone()));
        }
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

fn optional<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    body.get(field).filter(|v| !v.is_null())
}

fn optional_str<'a>(
    body: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, ApiError> {
    match optional(body, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::invalid(format!("{field} must be a string"))),
    }
}

fn optional_uint(body: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match optional(body, field) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("{field} must be a non-negative integer"))),
    }
}

fn one_of(field: &str, value: Option<&str>, allowed: &[&str]) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v.to_owned())),
        Some(v) => Err(ApiError::invalid(format!(
            "{field} '{v}' is not one of: {}",
            allowed.join(", ")
        ))),
    }
}

/// Validates the body of a submit.
pub fn parse_body(
    body: &Map<String, Value>,
    max_prompt_chars: usize,
) -> Result<SubmitRequest, ApiError> {
    let prompt = match body.get("prompt") {
        None | Some(Value::Null) => return Err(ApiError::invalid("prompt is required")),
        Some(Value::String(s)) => s.trim(),
        Some(_) => return Err(ApiError::invalid("prompt must be a string")),
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt must not be empty"));
    }
    // NUL cannot be stored in PostgreSQL text, and no control character but tab and line
    // breaks belongs in a prompt: refused here rather than failing later.
    if let Some(bad) = prompt
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(ApiError::invalid(format!(
            "prompt must not contain control characters (found U+{:04X})",
            u32::from(bad)
        )));
    }
    let chars = prompt.chars().count();
    if chars > max_prompt_chars {
        return Err(ApiError::invalid(format!(
            "prompt is {chars} characters long; the limit is {max_prompt_chars}"
        )));
    }
    let mode = match optional_str(body, "mode")? {
        None => Mode::Final,
        Some(m) => Mode::parse(m)
            .ok_or_else(|| ApiError::invalid(format!("mode '{m}' is not one of: draft, final")))?,
    };
    let input_image_url = optional_str(body, "inputImageUrl")?
        .map(|u| parse_url("inputImageUrl", u))
        .transpose()?;
    let input_image_ids = parse_image_ids(body)?;
    if input_image_url.is_some() && !input_image_ids.is_empty() {
        return Err(ApiError::invalid(
            "send inputImageUrl or inputImageIds, not both",
        ));
    }
    let webhook_url = optional_str(body, "webhookUrl")?
        .map(|u| parse_url("webhookUrl", u))
        .transpose()?;
    let n = optional_uint(body, "n")?;
    if let Some(n) = n {
        if !(1..=MAX_IMAGES).contains(&n) {
            return Err(ApiError::invalid(format!(
                "n must be between 1 and {MAX_IMAGES}"
            )));
        }
    }
    let operation = match optional_str(body, "operation")? {
        None => Operation::Generate,
        Some(raw) => Operation::parse(raw).map_err(ApiError::invalid)?,
    };
    let (parent_job_id, parent_index) = parse_parent(body)?;
    let grid = match optional(body, "grid") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("grid must be a boolean")),
    };
    if grid && n.is_some_and(|n| n != 4) {
        return Err(ApiError::invalid("a grid is made of 4 images: n must be 4"));
    }
    let mut params = JobParams {
        seed: optional_uint(body, "seed")?,
        n: n.map(|n| n as u32),
        aspect_ratio: one_of(
            "aspectRatio",
            optional_str(body, "aspectRatio")?,
            ASPECT_RATIOS,
        )?,
        image_size: one_of("imageSize", optional_str(body, "imageSize")?, IMAGE_SIZES)?,
        input_image_ids,
        operation,
        parent_job_id,
        parent_index,
        grid,
        ..JobParams::default()
    };
    if grid {
        params.n = Some(4);
    }
    check_sources(&params, input_image_url.is_some())?;
    Ok(SubmitRequest {
        prompt: prompt.to_owned(),
        mode,
        input_image_url,
        params,
        webhook_url,
    })
}

/// `parentJobId` and `parentIndex` (from 1: U2 is index 2 of the parent's images).
fn parse_parent(body: &Map<String, Value>) -> Result<(Option<String>, Option<u32>), ApiError> {
    let parent = optional_str(body, "parentJobId")?;
    if parent.is_some_and(|p| p.is_empty() || p.len() > 64) {
        return Err(ApiError::invalid("parentJobId must be a job id"));
    }
    let index = optional_uint(body, "parentIndex")?;
    match (parent, index) {
        (None, Some(_)) => Err(ApiError::invalid("parentIndex needs a parentJobId")),
        (_, Some(i)) if !(1..=MAX_IMAGES).contains(&i) => Err(ApiError::invalid(format!(
            "parentIndex must be between 1 and {MAX_IMAGES}"
        ))),
        (p, i) => Ok((p.map(str::to_owned), i.map(|i| i as u32))),
    }
}

/// Each operation's images: one source (a parent's image or an input image) for those that
/// work on one, 2-5 uploads for a blend, at most one otherwise.
fn check_sources(params: &JobParams, has_url: bool) -> Result<(), ApiError> {
    let op = params.operation;
    let uploads = params.input_image_ids.len();
    let blend = matches!(op, Operation::Blend(_));
    if blend && !BLEND_IMAGES.contains(&uploads) {
        return Err(ApiError::invalid(format!(
            "a blend takes {} to {} inputImageIds",
            BLEND_IMAGES.start(),
            BLEND_IMAGES.end()
        )));
    }
    if !blend && uploads > MAX_INPUT_IMAGES {
        return Err(ApiError::invalid(format!(
            "inputImageIds holds at most {MAX_INPUT_IMAGES} image id (a blend takes more)"
        )));
    }
    let has_source = params.parent_job_id.is_some() || has_url || uploads > 0;
    if op.needs_source_image() && !has_source {
        return Err(ApiError::invalid(format!(
            "operation '{op}' needs an image: parentJobId (with parentIndex), inputImageUrl or inputImageIds"
        )));
    }
    if params.parent_job_id.is_some() && (has_url || uploads > 0) {
        return Err(ApiError::invalid(
            "send parentJobId or an input image, not both",
        ));
    }
    Ok(())
}

/// `inputImageIds`: ids of the tenant's uploads: one, or up to five for a blend (checked
/// with the operation).
fn parse_image_ids(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let Some(value) = optional(body, "inputImageIds") else {
        return Ok(Vec::new());
    };
    let refuse = || ApiError::invalid("inputImageIds must be an array of image id strings");
    let ids = value.as_array().ok_or_else(refuse)?;
    if ids.len() > *BLEND_IMAGES.end() {
        return Err(ApiError::invalid(format!(
            "inputImageIds holds at most {} image ids",
            BLEND_IMAGES.end()
        )));
    }
    ids.iter()
        .map(|id| match id.as_str() {
            Some(id) if !id.is_empty() && id.len() <= 64 => Ok(id.to_owned()),
            _ => Err(refuse()),
        })
        .collect()
}

/// An http(s) URL with a host, named `field` in refusals.
fn parse_url(field: &str, raw: &str) -> Result<String, ApiError> {
    if raw.len() > MAX_URL_CHARS {
        return Err(ApiError::invalid(format!(
            "{field} is longer than {MAX_URL_CHARS} characters"
        )));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| ApiError::invalid(format!("{field} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid(format!(
            "{field} must be an http or https URL"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::invalid(format!("{field} has no host")));
    }
    Ok(url.to_string())
}

/// Validates an `Idempotency-Key` header: 1-255 visible ASCII characters.
pub fn parse_idempotency_key(raw: Option<&[u8]>) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let valid = (1..=255).contains(&raw.len()) && raw.iter().all(|b| (0x21..=0x7e).contains(b));
    if !valid {
        return Err(ApiError::invalid(
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(raw).into_owned()))
}

/// Parses a `Cancel-After` header: seconds (`90`) or a duration (`90s`, `5m`, `1h 30m`).
pub fn parse_cancel_after(raw: Option<&[u8]>) -> Result<Option<Duration>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = std::str::from_utf8(raw).unwrap_or("").trim();
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text).ok(),
    };
    match parsed {
        Some(d) if !d.is_zero() && d <= MAX_CANCEL_AFTER => Ok(Some(d)),
        _ => Err(ApiError::invalid(
            "Cancel-After must be a duration between 1s and 7d, like 30s, 5m or 120",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    fn message(r: Result<SubmitRequest, ApiError>) -> String {
        r.expect_err("should fail").message
    }

    #[test]
    fn accepts_the_origin_shape() {
        let r = parse_body(&body(json!({"prompt": " a cat ", "mode": "draft"})), 100).expect("ok");
        assert_eq!(r.prompt, "a cat");
        assert_eq!(r.mode, Mode::Draft);
        let r = parse_body(&body(json!({"prompt": "x", "mode": null})), 100).expect("ok");
        assert_eq!(r.mode, Mode::Final);
    }

    #[test]
    fn refusals_name_the_field() {
        assert!(message(parse_body(&body(json!({})), 10)).contains("prompt is required"));
        assert!(message(parse_body(&body(json!({"prompt": "  "})), 10)).contains("empty"));
        assert!(message(parse_body(&body(json!({"prompt": 3})), 10)).contains("string"));
        for bad in ["a\u{0}b", "a\u{7}b", "a\u{1b}[31mb", "a\u{85}b"] {
            let m = message(parse_body(&body(json!({ "prompt": bad })), 100));
            assert!(m.contains("control characters"), "{bad:?}: {m}");
        }
        let r = parse_body(&body(json!({"prompt": "line one\nline\ttwo"})), 100).expect("ok");
        assert_eq!(r.prompt, "line one\nline\ttwo");
        assert!(
            message(parse_body(&body(json!({"prompt": "x".repeat(11)})), 10)).contains("limit")
        );
        assert!(message(parse_body(
            &body(json!({"prompt": "x", "mode": "best"})),
            10
        ))
        .contains("mode"));
        for url in [
            "ftp://x/y.png",
            "not a url",
            "file:///etc/passwd",
            "http://",
        ] {
            let err = message(parse_body(
                &body(json!({"prompt": "x", "inputImageUrl": url})),
                10,
            ));
            assert!(err.contains("inputImageUrl"), "{url}: {err}");
            let err = message(parse_body(
                &body(json!({"prompt": "x", "webhookUrl": url})),
                10,
            ));
            assert!(err.contains("webhookUrl"), "{url}: {err}");
        }
        assert!(message(parse_body(&body(json!({"prompt": "x", "n": 9})), 10)).contains("n must"));
        assert!(message(parse_body(
            &body(json!({"prompt": "x", "aspectRatio": "7:5"})),
            10
        ))
        .contains("aspectRatio"));
    }

    #[test]
    fn fingerprint_ignores_defaults_but_not_content() {
        let a = parse_body(&body(json!({"prompt": "x"})), 10).expect("ok");
        let b = parse_body(&body(json!({"prompt": "x", "mode": "final"})), 10).expect("ok");
        let c = parse_body(&body(json!({"prompt": "y"})), 10).expect("ok");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        let d = parse_body(
            &body(json!({"prompt": "x", "webhookUrl": "https://example.com/h"})),
            10,
        )
        .expect("ok");
        assert_ne!(a.fingerprint(), d.fingerprint());
    }

    #[test]
    fn headers() {
        assert_eq!(parse_idempotency_key(None).expect("ok"), None);
        assert_eq!(
            parse_idempotency_key(Some(b"abc-1"))
                .expect("ok")
                .as_deref(),
            Some("abc-1")
        );
        assert!(parse_idempotency_key(Some(b"")).is_err());
        assert!(parse_idempotency_key(Some(&[b'a'; 256])).is_err());
        assert!(parse_idempotency_key(Some(b"a b")).is_err());
        assert_eq!(
            parse_cancel_after(Some(b"90")).expect("ok"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_cancel_after(Some(b"5m")).expect("ok"),
            Some(Duration::from_secs(300))
        );
        assert!(parse_cancel_after(Some(b"0")).is_err());
        assert!(parse_cancel_after(Some(b"soon")).is_err());
        assert!(parse_cancel_after(Some(b"30d")).is_err());
    }
}
