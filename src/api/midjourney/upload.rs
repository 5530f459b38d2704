//! `POST /upload` (multipart `file`, an image) and `POST /message` on the image library: the
//! image becomes one of the tenant's uploads, named `<image id>/<trigger id>.jpg` as the
//! origin's Discord file name was, which `/describe` and `/message` take back. No token.

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::AppKey;
use super::trigger::new_trigger_id;
use super::{json_body, required, MjError};
use crate::api::multipart::read_form;
use crate::app::App;
use crate::base::image::ImageOwner;
use crate::uploads::Upload;

/// The upload id in an `upload_filename`.
pub fn image_of(filename: &str) -> Option<String> {
    let (id, _) = filename.split_once('/')?;
    (!id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then(|| id.to_owned())
}

/// `POST /upload`.
pub async fn upload(
    State(app): State<App>,
    key: AppKey,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, MjError> {
    let multipart = multipart.map_err(|_| MjError::params("None"))?;
    let max_bytes = app.images.config().max_bytes;
    let mut form = read_form(multipart, &["file"], 1, max_bytes)
        .await
        .map_err(|e| MjError::params(format!("{e:?}")))?;
    let part = form
        .files
        .pop()
        .ok_or_else(|| MjError::params("file is required"))?;
    // The origin checks the part's type; Easel checks the bytes (any image type it takes).
    let Ok(bytes) = part.bytes else {
        return Ok(Json(json!({"message": "must image"})).into_response());
    };
    let mut upload = Upload::new(bytes);
    upload.original_name = part.file_name;
    let record = match app
        .images
        .upload(&ImageOwner::tenant(&key.0.tenant_id), upload)
        .await
    {
        Ok(record) => record,
        Err(crate::uploads::UploadError::Unavailable(e)) => {
            tracing::error!(error = %e, "image storage unavailable");
            return Ok(Json(json!({"message": "Failed to upload image"})).into_response());
        }
        Err(_) => return Ok(Json(json!({"message": "must image"})).into_response()),
    };
    let trigger_id = new_trigger_id();
    Ok(Json(json!({
        "message": "success",
        "upload_filename": format!("{}/{trigger_id}.jpg", record.id),
        "upload_url": app.images.link(&record.object.key).await,
        "trigger_id": trigger_id,
    }))
    .into_response())
}

/// `POST /message` `{"upload_filename"}`: the uploaded image's link as `picurl`.
pub async fn message(
    State(app): State<App>,
    key: AppKey,
    body: axum::body::Bytes,
) -> Result<Response, MjError> {
    let body = json_body(&body)?;
    let filename = required(&body, "upload_filename")?;
    let failed = || Json(json!({"message": "Failed to send message"})).into_response();
    let Some(id) = image_of(&filename) else {
        return Ok(failed());
    };
    match app
        .images
        .get(&ImageOwner::tenant(&key.0.tenant_id), &id)
        .await
    {
        Ok(record) => Ok(Json(json!({
            "message": "success",
            "picurl": app.images.link(&record.object.key).await,
        }))
        .into_response()),
        Err(_) => Ok(failed()),
    }
}
