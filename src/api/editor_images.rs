//! The editor seed's image routes (`editor-api.md` §2.2), on the image library, in the
//! editor's own shapes: `{"message", "image"}` on success, `{"error"[, "message"|"details"]}`
//! on failure.
//!
//! Each handler takes the signed-in end user as an [`ImageOwner`]; the router mounts them
//! behind the end-user extractor (`/api/images/...`). Differences from the origin, listed:
//! - a file is judged by its bytes, not its declared type; a broken or empty one is a 400
//!   `{"error":"Invalid image","message":<why>}` (the origin failed with a 500);
//! - more than 10 files in a batch is a 400 `{"error":"Too many files",...}` (the origin's
//!   multer error was a 500);
//! - another user's image is a 404 `Image not found`, never a 403 that confirms it exists;
//! - `path`/`thumbPath` are signed, expiring links; `contentHash` is added.

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::multipart::{read_form, Form, FormError};
use crate::app::App;
use crate::base::clock::format_millis;
use crate::base::image::{ImageDeleteOutcome, ImageListQuery, ImageOwner, ImageRecord};
use crate::uploads::{Library, Upload, UploadError};

/// Files one batch takes (the origin's `upload.array('images', 10)`).
pub const MAX_BATCH_FILES: usize = 10;

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn validation_failed(details: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        json!({"error": "Validation failed", "details": details}),
    )
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, json!({"error": "Image not found"}))
}

fn unavailable(what: &str) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": format!("Failed to {what}")}),
    )
}

/// The editor's answer to a refused file.
fn refused(e: &UploadError) -> Response {
    match e {
        e if e.is_too_large() => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "File too large",
                   "message": "The uploaded file exceeds the maximum allowed size",
                   "reason": e.to_string()}),
        ),
        UploadError::Unsupported(_) => error(
            StatusCode::BAD_REQUEST,
            json!({"error": "Invalid file type", "message": "Only image files are allowed",
                   "reason": e.to_string()}),
        ),
        UploadError::Unavailable(detail) => {
            tracing::error!(error = %detail, "image storage unavailable");
            unavailable("upload image")
        }
        other => error(
            StatusCode::BAD_REQUEST,
            json!({"error": "Invalid image", "message": other.to_string()}),
        ),
    }
}

fn form_refused(e: FormError) -> Response {
    match e {
        FormError::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "File too large",
                   "message": "The uploaded file exceeds the maximum allowed size"}),
        ),
        FormError::TooManyFiles(n) => error(
            StatusCode::BAD_REQUEST,
            json!({"error": "Too many files", "message": format!("At most {n} files per batch")}),
        ),
        FormError::Malformed(why) => error(
            StatusCode::BAD_REQUEST,
            json!({"error": "Invalid request", "message": why}),
        ),
    }
}

/// The editor's Image object.
pub async fn image_json(images: &Library, record: &ImageRecord) -> Value {
    json!({
        "id": record.id,
        "sessionId": record.session_id,
        "userId": record.owner.user_id,
        "type": record.kind,
        "path": images.link(&record.object.key).await,
        "thumbPath": images.link(&record.object.thumb_key).await,
        "mime": record.object.mime,
        "width": record.object.width,
        "height": record.object.height,
        "size": record.object.size,
        "refCount": record.ref_count,
        "contentHash": record.object.content_hash,
        "createdAt": format_millis(record.created_at),
        "updatedAt": format_millis(record.updated_at),
    })
}

/// `sessionId` and `type`, checked as the origin's Joi schema does (before the file).
fn upload_fields(form: &Form) -> Result<(String, String), String> {
    let session = match form.texts.get("sessionId").map(String::as_str) {
        None => return Err("\"sessionId\" is required".into()),
        Some("") => return Err("\"sessionId\" is not allowed to be empty".into()),
        Some(s) => s.to_owned(),
    };
    let kind = match form.texts.get("type").map(String::as_str) {
        None => return Err("\"type\" is required".into()),
        Some(k @ ("uploaded" | "generated")) => k.to_owned(),
        Some(_) => return Err("\"type\" must be one of [uploaded, generated]".into()),
    };
    if let Some(unknown) = form
        .texts
        .keys()
        .find(|k| !matches!(k.as_str(), "sessionId" | "type"))
    {
        return Err(format!("\"{unknown}\" is not allowed"));
    }
    Ok((session, kind))
}

async fn read(
    app: &App,
    multipart: Result<Multipart, MultipartRejection>,
    field: &str,
    max: usize,
) -> Result<Form, Response> {
    let multipart = multipart.map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            json!({"error": "Invalid request", "message": "send multipart/form-data"}),
        )
    })?;
    read_form(multipart, &[field], max, app.images.config().max_bytes)
        .await
        .map_err(form_refused)
}

/// The files of a form as uploads of `session` and `kind`.
fn uploads(
    form: Form,
    session: &str,
    kind: &str,
) -> Vec<(Option<String>, Result<Upload, UploadError>)> {
    form.files
        .into_iter()
        .map(|part| {
            let upload = part.bytes.map(|bytes| Upload {
                bytes,
                original_name: part.file_name.clone(),
                kind: kind.to_owned(),
                session_id: Some(session.to_owned()),
            });
            (part.file_name, upload)
        })
        .collect()
}

/// `POST /api/images/upload`: multipart `image`, `sessionId`, `type` → 201.
pub async fn upload(
    app: App,
    owner: ImageOwner,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let form = match read(&app, multipart, "image", 1).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let (session, kind) = match upload_fields(&form) {
        Ok(fields) => fields,
        Err(details) => return validation_failed(&details),
    };
    let Some((_, upload)) = uploads(form, &session, &kind).pop() else {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": "No image file provided"}),
        );
    };
    let stored = match upload {
        Ok(upload) => app.images.upload(&owner, upload).await,
        Err(e) => Err(e),
    };
    match stored {
        Ok(record) => (
            StatusCode::CREATED,
            Json(json!({"message": "Image uploaded successfully",
                        "image": image_json(&app.images, &record).await})),
        )
            .into_response(),
        Err(e) => refused(&e),
    }
}

/// `POST /api/images/upload/batch`: multipart `images` (at most 10) → 201 with each file's
/// own result.
pub async fn upload_batch(
    app: App,
    owner: ImageOwner,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let form = match read(&app, multipart, "images", MAX_BATCH_FILES).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let (session, kind) = match upload_fields(&form) {
        Ok(fields) => fields,
        Err(details) => return validation_failed(&details),
    };
    let files = uploads(form, &session, &kind);
    if files.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"error": "No image files provided"}),
        );
    }
    let total = files.len();
    let (names, parsed): (Vec<_>, Vec<_>) = files.into_iter().unzip();
    let mut ready = Vec::new();
    let mut outcomes: Vec<Option<Result<ImageRecord, UploadError>>> = Vec::new();
    for upload in parsed {
        match upload {
            Ok(upload) => {
                ready.push(upload);
                outcomes.push(None);
            }
            Err(e) => outcomes.push(Some(Err(e))),
        }
    }
    let mut stored = app.images.upload_many(&owner, ready).await.into_iter();
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    for (name, outcome) in names.into_iter().zip(outcomes) {
        match outcome.or_else(|| stored.next()) {
            Some(Ok(record)) => successful.push(image_json(&app.images, &record).await),
            Some(Err(e)) => failed.push(json!({"error": e.to_string(), "filename": name})),
            None => failed.push(json!({"error": "not processed", "filename": name})),
        }
    }
    (
        StatusCode::CREATED,
        Json(json!({"message": "Batch upload completed",
                    "results": {"successful": successful, "failed": failed, "total": total}})),
    )
        .into_response()
}

/// `GET /api/images/:imageId`.
pub async fn get(app: App, owner: ImageOwner, id: String) -> Response {
    match app.images.get(&owner, &id).await {
        Ok(record) => {
            Json(json!({"image": image_json(&app.images, &record).await})).into_response()
        }
        Err(UploadError::NotFound) => not_found(),
        Err(_) => unavailable("get image"),
    }
}

/// `DELETE /api/images/:imageId`: 400 while messages still use it.
pub async fn delete(app: App, owner: ImageOwner, id: String) -> Response {
    match app.images.delete(&owner, &id).await {
        Ok(ImageDeleteOutcome::Deleted(_)) => {
            Json(json!({"message": "Image deleted successfully"})).into_response()
        }
        Ok(ImageDeleteOutcome::Referenced(_)) => error(
            StatusCode::BAD_REQUEST,
            json!({"error": "Cannot delete image that is still referenced by messages"}),
        ),
        Ok(ImageDeleteOutcome::NotFound) => not_found(),
        Err(_) => unavailable("delete image"),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

/// `GET /api/images/session/:sessionId?type=&limit=100&offset=0` (and, with no session,
/// `GET /api/images/user/all`): the caller's images, newest first.
pub async fn list(
    app: App,
    owner: ImageOwner,
    session: Option<String>,
    Query(params): Query<ListParams>,
) -> Response {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let offset = params.offset.unwrap_or(0);
    let query = ImageListQuery {
        owner,
        session_id: session,
        kind: params.kind,
        limit,
        offset,
    };
    match app.images.list(query).await {
        Ok((records, total)) => {
            let mut images = Vec::with_capacity(records.len());
            for record in &records {
                images.push(image_json(&app.images, record).await);
            }
            Json(json!({"images": images,
                        "pagination": {"limit": limit, "offset": offset, "total": total}}))
            .into_response()
        }
        Err(_) => unavailable("get images"),
    }
}
