//! The photo seed's upload routes (`photo-api.md` §3.2, `/api/upload/*`), on the image
//! library, in the photo app's envelope: `{"success": true, "message", "data"}` and
//! `{"success": false, "message"}`.
//!
//! Each handler takes the signed-in end user as an [`ImageOwner`]. Differences from the
//! origin, listed:
//! - `file_name` is `<image id>.jpg` and names the user's image record; `file_url` is a signed,
//!   expiring link; `file_hash` is the SHA-256 of the uploaded bytes (the origin's was MD5);
//! - the delete route finds the caller's image by that name: another user's is a 404, and
//!   `subDir` must be a plain folder name (letters, digits, `_`, `-`), so no path can escape
//!   its folder (the origin joined it into a file path unchecked);
//! - a rejected file type is a 400 (the origin's was a 500); WebP and GIF are accepted too;
//! - `multiple` stores the good files and lists the refused ones in `data.failed` (the origin
//!   failed the whole request).

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::multipart::{read_form, FormError};
use crate::app::App;
use crate::base::image::{ImageDeleteOutcome, ImageOwner, ImageRecord};
use crate::uploads::intake::decode_base64;
use crate::uploads::{Upload, UploadError};

/// Files (or base64 images) one request takes.
pub const MAX_FILES: usize = 50;
const DEFAULT_SUB_DIR: &str = "users";

fn fail(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"success": false, "message": message}))).into_response()
}

fn ok(message: String, data: Value) -> Response {
    Json(json!({"success": true, "message": message, "data": data})).into_response()
}

/// The photo app's message for a refused file.
fn refusal(e: &UploadError) -> String {
    match e {
        e if e.is_too_large() => format!("文件大小超出限制: {e}"),
        UploadError::Unsupported(_) => format!("不支持的文件类型: {e}"),
        UploadError::Unavailable(detail) => {
            tracing::error!(error = %detail, "image storage unavailable");
            "上传失败".into()
        }
        other => format!("无效的图片: {other}"),
    }
}

fn refused(e: &UploadError) -> Response {
    let status = match e {
        UploadError::Unavailable(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    fail(status, &refusal(e))
}

fn form_refused(e: FormError) -> Response {
    match e {
        FormError::TooLarge => fail(StatusCode::BAD_REQUEST, "文件大小超出限制"),
        FormError::TooManyFiles(_) => fail(StatusCode::BAD_REQUEST, "上传的文件字段不正确"),
        // An empty or broken body carries no file, as multer would find.
        FormError::Malformed(_) => fail(StatusCode::BAD_REQUEST, "未找到上传的文件"),
    }
}

/// A `subDir` that is one plain folder name; `None` for anything else (`..`, `/`, `\`).
pub fn sub_dir(raw: Option<&str>) -> Option<&str> {
    let dir = raw.filter(|d| !d.is_empty()).unwrap_or(DEFAULT_SUB_DIR);
    let plain = dir.len() <= 64
        && dir
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    plain.then_some(dir)
}

fn bad_dir() -> Response {
    fail(StatusCode::BAD_REQUEST, "非法的目录")
}

fn file_name(record: &ImageRecord) -> String {
    format!("{}.jpg", record.id)
}

/// The multipart routes' file object (snake_case).
async fn file_json(app: &App, record: &ImageRecord, dir: &str) -> Value {
    let name = file_name(record);
    json!({
        "file_name": name,
        "file_url": app.images.link(&record.object.key).await,
        "file_path": format!("uploads/{dir}/{name}"),
        "file_size": record.object.size,
        "mime_type": record.object.mime,
        "file_hash": record.object.content_hash,
    })
}

/// The base64 routes' file object (camelCase, with `file_hash` as the origin has it).
async fn base64_json(app: &App, record: &ImageRecord, dir: &str) -> Value {
    let name = file_name(record);
    json!({
        "fileName": name,
        "filePath": format!("uploads/{dir}/{name}"),
        "fileUrl": app.images.link(&record.object.key).await,
        "fileSize": record.object.size,
        "mimeType": record.object.mime,
        "file_hash": record.object.content_hash,
    })
}

async fn store(
    app: &App,
    owner: &ImageOwner,
    bytes: Result<bytes::Bytes, UploadError>,
    name: Option<String>,
) -> Result<ImageRecord, UploadError> {
    let mut upload = Upload::new(bytes?);
    upload.original_name = name;
    app.images.upload(owner, upload).await
}

/// `POST /api/upload/single`: multipart `file`.
pub async fn single(
    app: App,
    owner: ImageOwner,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let Ok(multipart) = multipart else {
        return fail(StatusCode::BAD_REQUEST, "未找到上传的文件");
    };
    let form = match read_form(multipart, &["file"], 1, app.images.config().max_bytes).await {
        Ok(form) => form,
        Err(e) => return form_refused(e),
    };
    let Some(part) = form.files.into_iter().next() else {
        return fail(StatusCode::BAD_REQUEST, "未找到上传的文件");
    };
    match store(&app, &owner, part.bytes, part.file_name).await {
        Ok(record) => ok(
            "上传成功".into(),
            file_json(&app, &record, DEFAULT_SUB_DIR).await,
        ),
        Err(e) => refused(&e),
    }
}

/// `POST /api/upload/multiple`: multipart `files` (at most 50).
pub async fn multiple(
    app: App,
    owner: ImageOwner,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let Ok(multipart) = multipart else {
        return fail(StatusCode::BAD_REQUEST, "未找到上传的文件");
    };
    let form = match read_form(
        multipart,
        &["files"],
        MAX_FILES,
        app.images.config().max_bytes,
    )
    .await
    {
        Ok(form) => form,
        Err(e) => return form_refused(e),
    };
    if form.files.is_empty() {
        return fail(StatusCode::BAD_REQUEST, "未找到上传的文件");
    }
    let mut files = Vec::new();
    let mut failed = Vec::new();
    for part in form.files {
        let name = part.file_name.clone();
        match store(&app, &owner, part.bytes, part.file_name).await {
            Ok(record) => files.push(file_json(&app, &record, DEFAULT_SUB_DIR).await),
            Err(e) => failed.push(json!({"original_name": name, "error": refusal(&e)})),
        }
    }
    ok(
        format!("成功上传 {} 个文件", files.len()),
        json!({"files": files, "failed": failed}),
    )
}

/// `POST /api/upload/base64`: `{"base64", "subDir"?}`.
pub async fn base64(app: App, owner: ImageOwner, body: Map<String, Value>) -> Response {
    let Some(dir) = sub_dir(body.get("subDir").and_then(Value::as_str)).map(str::to_owned) else {
        return bad_dir();
    };
    let Some(text) = body
        .get("base64")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return fail(StatusCode::BAD_REQUEST, "缺少base64数据");
    };
    let bytes = decode_base64(text, app.images.config().max_bytes);
    match store(&app, &owner, bytes, None).await {
        Ok(record) => ok("上传成功".into(), base64_json(&app, &record, &dir).await),
        Err(e) => refused(&e),
    }
}

/// `POST /api/upload/base64/batch`: `{"images": [...] (at most 50), "subDir"?}`, each
/// image's own result.
pub async fn base64_batch(app: App, owner: ImageOwner, body: Map<String, Value>) -> Response {
    let Some(dir) = sub_dir(body.get("subDir").and_then(Value::as_str)).map(str::to_owned) else {
        return bad_dir();
    };
    let Some(images) = body
        .get("images")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    else {
        return fail(StatusCode::BAD_REQUEST, "请提供base64图片数组");
    };
    if images.len() > MAX_FILES {
        return fail(StatusCode::BAD_REQUEST, "单次最多上传50张图片");
    }
    let max_bytes = app.images.config().max_bytes;
    let decoded: Vec<Result<bytes::Bytes, UploadError>> = images
        .iter()
        .map(|v| match v.as_str() {
            Some(text) => decode_base64(text, max_bytes),
            None => Err(UploadError::BadEncoding("not a base64 string".into())),
        })
        .collect();
    let mut files = Vec::with_capacity(decoded.len());
    for bytes in decoded {
        files.push(match store(&app, &owner, bytes, None).await {
            Ok(record) => {
                let mut file = base64_json(&app, &record, &dir).await;
                file["success"] = Value::Bool(true);
                file
            }
            Err(e) => json!({"success": false, "error": refusal(&e)}),
        });
    }
    let succeeded = files.iter().filter(|f| f["success"] == true).count();
    let failed = files.len() - succeeded;
    let message = if failed == 0 {
        format!("成功上传 {succeeded} 张图片")
    } else {
        format!("成功上传 {succeeded} 张图片，{failed} 张失败")
    };
    ok(
        message,
        json!({"files": files,
               "summary": {"total": files.len(), "success": succeeded, "failed": failed}}),
    )
}

/// `DELETE /api/upload/:fileName?subDir=users`: the caller's image named `<id>.jpg`.
pub async fn delete(
    app: App,
    owner: ImageOwner,
    file_name: String,
    sub: Option<String>,
) -> Response {
    if sub_dir(sub.as_deref()).is_none() {
        return bad_dir();
    }
    let gone = || fail(StatusCode::NOT_FOUND, "文件不存在或删除失败");
    let Some(id) = file_name
        .strip_suffix(".jpg")
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    else {
        return gone();
    };
    match app.images.delete(&owner, id).await {
        Ok(ImageDeleteOutcome::Deleted(_)) => {
            Json(json!({"success": true, "message": "文件删除成功"})).into_response()
        }
        Ok(ImageDeleteOutcome::Referenced(_)) => {
            fail(StatusCode::BAD_REQUEST, "数据正在被引用，无法删除")
        }
        Ok(ImageDeleteOutcome::NotFound) | Err(_) => gone(),
    }
}
