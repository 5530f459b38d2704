//! Reading `multipart/form-data` upload bodies for every upload route: the files of the
//! named fields (each read in chunks and stopped at the byte limit, so an oversized file is
//! refused without being held whole) and the text fields beside them. Each route answers in
//! its own contract's shape from the [`Form`] and [`FormError`] given here.

use std::collections::HashMap;

use axum::extract::multipart::{Field, Multipart, MultipartError};
use bytes::{Bytes, BytesMut};

use crate::uploads::UploadError;

/// One file part: the client's file name, and its bytes or why they were refused.
#[derive(Debug)]
pub struct FilePart {
    pub file_name: Option<String>,
    pub bytes: Result<Bytes, UploadError>,
}

#[derive(Debug, Default)]
pub struct Form {
    pub files: Vec<FilePart>,
    pub texts: HashMap<String, String>,
}

/// Why a body could not be read as a form at all.
#[derive(Debug, PartialEq)]
pub enum FormError {
    /// Not multipart, or broken.
    Malformed(String),
    /// More file parts than the route takes.
    TooManyFiles(usize),
    /// The whole body is over the route's body limit.
    TooLarge,
}

/// The largest text field kept (a session id, a type, a subfolder name).
const MAX_TEXT_BYTES: usize = 4096;

/// Reads every part: files of `file_fields` (at most `max_files`, each at most `max_bytes`),
/// and text fields. Parts of other names that carry a file name are refused as malformed, as
/// multer does (`LIMIT_UNEXPECTED_FILE`).
pub async fn read_form(
    mut multipart: Multipart,
    file_fields: &[&str],
    max_files: usize,
    max_bytes: u64,
) -> Result<Form, FormError> {
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await.map_err(form_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        if file_fields.contains(&name.as_str()) {
            if form.files.len() == max_files {
                return Err(FormError::TooManyFiles(max_files));
            }
            let bytes = read_capped(field, max_bytes).await?;
            form.files.push(FilePart { file_name, bytes });
        } else if file_name.is_some() {
            return Err(FormError::Malformed(format!(
                "unexpected file field '{name}'"
            )));
        } else {
            let text = field.text().await.map_err(form_error)?;
            if text.len() <= MAX_TEXT_BYTES {
                form.texts.insert(name, text);
            }
        }
    }
    Ok(form)
}

/// The field's bytes; past `max_bytes` the rest is drained and the file refused.
async fn read_capped(
    mut field: Field<'_>,
    max_bytes: u64,
) -> Result<Result<Bytes, UploadError>, FormError> {
    let mut body = BytesMut::new();
    let mut size: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(form_error)? {
        size += chunk.len() as u64;
        if size <= max_bytes {
            body.extend_from_slice(&chunk);
        } else {
            body.clear();
        }
    }
    if size > max_bytes {
        return Ok(Err(UploadError::TooLarge {
            size,
            limit: max_bytes,
        }));
    }
    Ok(Ok(body.freeze()))
}

fn form_error(e: MultipartError) -> FormError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        FormError::TooLarge
    } else {
        FormError::Malformed(e.body_text())
    }
}
