//! Tenant uploads on the job API: `POST /v1/uploads` (multipart `file`), `GET` and `DELETE
//! /v1/uploads/{id}`, and the references jobs hold on the uploads named in `inputImageIds`.
//! Errors are the job API's `{"error": CODE, "message"}`: 413 `PAYLOAD_TOO_LARGE` (bytes or
//! pixels), 415 `UNSUPPORTED_MEDIA_TYPE`, 400 `INVALID_REQUEST` (empty, broken), 404.

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::extract::AuthTenant;
use super::multipart::{read_form, FormError};
use crate::app::App;
use crate::base::clock::format_millis;
use crate::base::image::{ImageDeleteOutcome, ImageOwner, ImageRecord};
use crate::error::{ApiError, ErrorCode};
use crate::uploads::{Upload, UploadError};

/// An upload as the job API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadView {
    id: String,
    content_hash: String,
    width: u32,
    height: u32,
    mime: String,
    size: u64,
    url: String,
    thumb_url: String,
    ref_count: u32,
    created_at: String,
}

async fn view(app: &App, record: ImageRecord) -> UploadView {
    UploadView {
        url: app.images.link(&record.object.key).await,
        thumb_url: app.images.link(&record.object.thumb_key).await,
        id: record.id,
        content_hash: record.object.content_hash,
        width: record.object.width,
        height: record.object.height,
        mime: record.object.mime,
        size: record.object.size,
        ref_count: record.ref_count,
        created_at: format_millis(record.created_at),
    }
}

/// The job API's error for a refused upload.
pub(super) fn upload_error(e: UploadError) -> ApiError {
    let code = match &e {
        UploadError::TooLarge { .. } | UploadError::TooManyPixels { .. } => {
            ErrorCode::PayloadTooLarge
        }
        UploadError::Unsupported(_) => ErrorCode::UnsupportedMediaType,
        UploadError::Empty | UploadError::Corrupt(_) | UploadError::BadEncoding(_) => {
            ErrorCode::InvalidRequest
        }
        UploadError::NotFound => ErrorCode::NotFound,
        UploadError::Unavailable(detail) => {
            tracing::error!(error = %detail, "image storage unavailable");
            return ApiError::new(
                ErrorCode::Unavailable,
                "image storage is unavailable; try again",
            )
            .with_header(axum::http::header::RETRY_AFTER, 1);
        }
    };
    ApiError::new(code, format!("{}: {e}", e.reason()))
}

fn form_error(e: FormError) -> ApiError {
    match e {
        FormError::TooLarge => ApiError::new(
            ErrorCode::PayloadTooLarge,
            "FILE_TOO_LARGE: the request body is over the upload limit",
        ),
        FormError::TooManyFiles(n) => ApiError::invalid(format!("send at most {n} file")),
        FormError::Malformed(why) => ApiError::invalid(format!("malformed multipart body: {why}")),
    }
}

/// `POST /v1/uploads`: 201 with the stored image's record.
pub async fn create(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let multipart = multipart
        .map_err(|_| ApiError::invalid("send multipart/form-data with the image in 'file'"))?;
    let max_bytes = app.images.config().max_bytes;
    let mut form = read_form(multipart, &["file"], 1, max_bytes)
        .await
        .map_err(form_error)?;
    let part = form.files.pop().ok_or_else(|| {
        ApiError::invalid("no file: send the image in the multipart field 'file'")
    })?;
    let mut upload = Upload::new(part.bytes.map_err(upload_error)?);
    upload.original_name = part.file_name;
    let record = app
        .images
        .upload(&ImageOwner::tenant(&tenant.id), upload)
        .await
        .map_err(upload_error)?;
    Ok((StatusCode::CREATED, Json(view(&app, record).await)).into_response())
}

fn image_not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "image not found")
}

/// `GET /v1/uploads/{id}`.
pub async fn get(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = app
        .images
        .get(&ImageOwner::tenant(&tenant.id), &id)
        .await
        .map_err(upload_error)?;
    Ok(Json(view(&app, record).await).into_response())
}

/// `DELETE /v1/uploads/{id}`: 204; 400 `INVALID_STATE` while jobs still use it.
pub async fn delete(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match app
        .images
        .delete(&ImageOwner::tenant(&tenant.id), &id)
        .await
        .map_err(upload_error)?
    {
        ImageDeleteOutcome::Deleted(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        ImageDeleteOutcome::Referenced(n) => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("the image is still used by {n} job(s)"),
        )),
        ImageDeleteOutcome::NotFound => Err(image_not_found()),
    }
}

/// Takes a reference on each of a submitted job's input images; 400 naming an id the tenant
/// does not have.
pub(super) async fn hold_inputs(
    app: &App,
    tenant_id: &str,
    ids: &[String],
) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Ok(());
    }
    let missing = app
        .images
        .retain(&ImageOwner::tenant(tenant_id), ids)
        .await
        .map_err(upload_error)?;
    match missing.first() {
        None => Ok(()),
        Some(id) => Err(ApiError::invalid(format!(
            "inputImageIds: no upload '{id}' (POST /v1/uploads first)"
        ))),
    }
}

/// Gives back references taken by [`hold_inputs`] for a submit that made no job (a job lets
/// go of them itself, in the transaction that ends it: migration 0016); a failure is logged (the count stays high,
/// which only keeps an image from being deleted).
pub(super) async fn let_go(app: &App, tenant_id: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    if let Err(e) = app
        .images
        .release(&ImageOwner::tenant(tenant_id), ids)
        .await
    {
        tracing::warn!(error = %e, "input image references not released");
    }
}
