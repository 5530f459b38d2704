//! Request extractors that turn HTTP input into typed values or contract errors: the tenant
//! behind an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`), a job id from the
//! path, and a JSON object body (413 past `server.max_body_bytes`).

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::accounts::keys::{api_key_header, bearer, API_KEY_HEADER};
use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use crate::store::Tenant;

/// The tenant whose API key authorised this request.
pub struct AuthTenant(pub Tenant);

impl FromRequestParts<App> for AuthTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let key = presented_key(&parts.headers)?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidApiKey,
                "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>",
            )
        })?;
        match app.auth.authenticate(key).await? {
            Some(tenant) => Ok(AuthTenant(tenant)),
            None => Err(ApiError::new(ErrorCode::InvalidApiKey, "invalid API key")),
        }
    }
}

/// The tenant key a request presents in its headers: `Authorization: Bearer <key>` first,
/// else `X-API-Key: <key>`. `None` when it sends neither; a header that is there but does not
/// hold a key is refused (401), whichever it is.
pub(super) fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .and_then(bearer)
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidApiKey,
                    "malformed Authorization header: expected Bearer <key>",
                )
            });
    }
    match headers.get(API_KEY_HEADER) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(api_key_header)
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidApiKey,
                    "malformed X-API-Key header: expected the key alone",
                )
            }),
    }
}

/// The `{job_id}` of a job route. A segment that does not decode (invalid UTF-8) names no
/// job, so it is a contract 404 rather than axum's plain-text 400.
pub struct JobId(pub String);

impl FromRequestParts<App> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, app).await {
            Ok(Path(job_id)) => Ok(JobId(job_id)),
            Err(PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::job_not_found()),
            Err(e) => {
                tracing::error!(error = %e, "job route without a job id");
                Err(ApiError::new(ErrorCode::UnknownError, "internal error"))
            }
        }
    }
}

/// A request body that must be a JSON object, sent as `application/json`.
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<App> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().eq_ignore_ascii_case("application/json"))
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::invalid("Content-Type must be application/json"));
        }
        let limit = app.config.server.max_body_bytes;
        let body = Bytes::from_request(req, app)
            .await
            .map_err(|e| body_refused(&e, limit))?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::invalid("request body must be a JSON object")),
            Err(e) => Err(ApiError::invalid(format!("malformed JSON body: {e}"))),
        }
    }
}

/// A body that could not be read: 413 when it is over the limit, else 400.
fn body_refused(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {limit} bytes"),
        );
    }
    ApiError::invalid(format!("request body could not be read: {rejection}"))
}
