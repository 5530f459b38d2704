//! One images call as the facade reads it, whatever route and encoding it came in: the JSON of
//! `images/generations`, or the multipart form of `images/edits` and `images/variations`
//! (file parts `image`, repeated `image[]`, `mask`; every other part a text field, numbers
//! included, as the SDK sends them).

use axum::extract::Multipart;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::error::OpenAiError;
use crate::providers::gemini::classify::sniff_image;
use crate::providers::openai::config::OPTION_NAMES;
use crate::providers::InputImage;

/// Images one call may carry (the GPT image models' limit).
pub const MAX_INPUT_IMAGES: usize = 16;

/// How the client wants its images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// Easel's signed links.
    Url,
    B64Json,
}

#[derive(Debug, Clone, Default)]
pub struct ImageCall {
    pub model: Option<String>,
    pub prompt: String,
    pub n: u32,
    pub response_format: Option<ResponseFormat>,
    /// The parameters the provider reads (`size`, `quality`, ...), as given.
    pub options: Map<String, Value>,
    pub images: Vec<InputImage>,
    pub mask: Option<InputImage>,
    pub variation: bool,
}

fn text_field(value: &Value, field: &'static str) -> Result<String, OpenAiError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        _ => Err(OpenAiError::invalid(format!("'{field}' must be a string")).param(field)),
    }
}

fn count_field(value: &Value, field: &'static str) -> Result<u64, OpenAiError> {
    let n = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.ok_or_else(|| OpenAiError::invalid(format!("'{field}' must be an integer")).param(field))
}

impl ImageCall {
    /// Reads the fields every route shares from a JSON object (or a form's text fields).
    pub fn from_fields(fields: &Map<String, Value>) -> Result<ImageCall, OpenAiError> {
        let mut call = ImageCall {
            n: 1,
            ..ImageCall::default()
        };
        for (name, value) in fields {
            if value.is_null() {
                continue;
            }
            match name.as_str() {
                "prompt" => call.prompt = text_field(value, "prompt")?,
                "model" => call.model = Some(text_field(value, "model")?),
                "n" => {
                    call.n = u32::try_from(count_field(value, "n")?)
                        .ok()
                        .filter(|n| (1..=10).contains(n))
                        .ok_or_else(|| {
                            OpenAiError::invalid("'n' must be between 1 and 10").param("n")
                        })?
                }
                "response_format" => {
                    call.response_format =
                        Some(match text_field(value, "response_format")?.as_str() {
                            "url" => ResponseFormat::Url,
                            "b64_json" => ResponseFormat::B64Json,
                            other => {
                                return Err(OpenAiError::invalid(format!(
                            "Invalid value for 'response_format': '{other}'; one of url, b64_json"
                        ))
                                .param("response_format"))
                            }
                        })
                }
                "output_compression" => {
                    let c = count_field(value, "output_compression")?;
                    call.options.insert(name.clone(), Value::from(c));
                }
                "stream" if value.as_bool() == Some(true) || value == "true" => {
                    return Err(
                        OpenAiError::invalid("streaming images is not supported").param("stream")
                    )
                }
                "stream" | "partial_images" => {}
                option if OPTION_NAMES.contains(&option) => {
                    call.options
                        .insert(name.clone(), Value::String(text_field(value, "option")?));
                }
                other => {
                    return Err(OpenAiError::invalid(format!(
                        "Unknown parameter: '{other}'."
                    )))
                }
            }
        }
        Ok(call)
    }

    /// Reads a multipart form: `image` or `image[]` parts (at most [`MAX_INPUT_IMAGES`]),
    /// `mask`, and text fields.
    pub async fn from_form(mut form: Multipart) -> Result<ImageCall, OpenAiError> {
        let mut fields = Map::new();
        let mut images = Vec::new();
        let mut mask = None;
        loop {
            let field = match form.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return Err(OpenAiError::invalid(format!("invalid multipart body: {e}"))),
            };
            let name = field.name().unwrap_or("").to_owned();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| OpenAiError::invalid(format!("invalid multipart body: {e}")))?;
            match name.as_str() {
                "image" | "image[]" => {
                    if images.len() == MAX_INPUT_IMAGES {
                        return Err(OpenAiError::invalid(format!(
                            "at most {MAX_INPUT_IMAGES} images may be sent"
                        ))
                        .param("image"));
                    }
                    images.push(image_part(bytes, "image")?);
                }
                "mask" => mask = Some(image_part(bytes, "mask")?),
                _ => {
                    let text = String::from_utf8(bytes.to_vec())
                        .map_err(|_| OpenAiError::invalid(format!("'{name}' is not UTF-8 text")))?;
                    fields.insert(name, Value::String(text));
                }
            }
        }
        let mut call = ImageCall::from_fields(&fields)?;
        call.images = images;
        call.mask = mask;
        Ok(call)
    }
}

/// An uploaded file, typed by its bytes (PNG, JPEG or WebP).
fn image_part(bytes: Bytes, field: &'static str) -> Result<InputImage, OpenAiError> {
    let mime = sniff_image(&bytes).ok_or_else(|| {
        OpenAiError::invalid(format!(
            "Invalid file '{field}': unsupported mimetype. Supported file formats are \
             'image/jpeg', 'image/png', and 'image/webp'."
        ))
        .param(field)
    })?;
    Ok(InputImage {
        bytes,
        mime: mime.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(v: Value) -> Result<ImageCall, OpenAiError> {
        ImageCall::from_fields(v.as_object().expect("object"))
    }

    #[test]
    fn fields_are_read_from_json_and_form_text() {
        let c = call(json!({"prompt": "a fox", "model": "gpt-image-1", "n": "3",
            "size": "1024x1024", "output_compression": "80", "response_format": "b64_json",
            "user": "u1", "stream": false}))
        .expect("ok");
        assert_eq!((c.prompt.as_str(), c.n), ("a fox", 3));
        assert_eq!(c.response_format, Some(ResponseFormat::B64Json));
        assert_eq!(c.options["output_compression"], 80);
        assert_eq!(c.options["size"], "1024x1024");
        assert_eq!(c.options.len(), 3);
    }

    #[test]
    fn bad_fields_name_their_param() {
        let e = call(json!({"prompt": "x", "n": 11})).expect_err("n");
        assert_eq!(e.param, Some("n"));
        let e = call(json!({"prompt": "x", "response_format": "png"})).expect_err("format");
        assert_eq!(e.param, Some("response_format"));
        let e = call(json!({"prompt": 3})).expect_err("prompt");
        assert_eq!(e.param, Some("prompt"));
        assert!(call(json!({"prompt": "x", "stream": true})).is_err());
        assert!(call(json!({"prompt": "x", "colour": "red"}))
            .expect_err("unknown")
            .message
            .contains("colour"));
    }

    #[test]
    fn uploads_are_typed_by_their_bytes() {
        let png = image_part(Bytes::from_static(b"\x89PNG\r\n\x1a\nrest"), "image").expect("png");
        assert_eq!(png.mime, "image/png");
        let e = image_part(Bytes::from_static(b"GIF89a"), "mask").expect_err("gif");
        assert_eq!(e.param, Some("mask"));
    }
}
