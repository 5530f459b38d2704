//! `GET /v1/files/{key}`: serves a stored image to whoever holds a valid Easel-signed link,
//! from whichever backend holds it: the local folder, or the S3 bucket as a proxy (when
//! `storage.s3.presign = false`, or presigning failed; see `storage::urls`).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::base::clock::now_millis;
use crate::error::{ApiError, ErrorCode};
use crate::storage::StorageError;

pub async fn get(
    State(app): State<App>,
    key: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = now_millis() / 1000;
    let expires = query.get("expires").and_then(|e| e.parse::<i64>().ok());
    // A key that does not decode was never signed here: refused like any other bad link.
    let key = match (key, expires, query.get("sig")) {
        (Ok(Path(key)), Some(expires), Some(sig)) if app.urls.verify(&key, expires, sig, now) => {
            key
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidSignature,
                "this link is invalid or has expired; fetch the job again for a fresh one",
            ))
        }
    };
    let object = match app.objects.get(&key).await {
        Ok(object) => object,
        Err(StorageError::NotFound | StorageError::InvalidKey) => {
            return Err(ApiError::new(ErrorCode::NotFound, "no such file"))
        }
        Err(e) => {
            tracing::error!(error = %e, "object storage read failed");
            return Err(ApiError::new(ErrorCode::Unavailable, "storage unavailable"));
        }
    };
    let max_age = (expires.unwrap_or(now) - now).max(0);
    let cache = format!("private, max-age={max_age}, immutable");
    let not_modified = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == object.etag));
    if not_modified {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(ETAG, object.etag), (CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    Ok((
        [
            (CONTENT_TYPE, object.content_type),
            (ETAG, object.etag),
            (CACHE_CONTROL, cache),
        ],
        Body::from(object.bytes),
    )
        .into_response())
}
