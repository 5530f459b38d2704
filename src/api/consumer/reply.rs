//! The consumer contracts' bodies: the editor's `{"error": ...}`, the photo app's envelope
//! `{"success": ..., "message": ..., "data": ...}`, their union where one answer must satisfy
//! both (shared paths, and token errors on any consumer route), and the user object.

use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::accounts::users::{AccountError, AuthFailure};
use crate::base::clock::format_millis;
use crate::base::user::{EndUser, UserStatus};

/// `status` with a JSON body.
pub fn json(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// The editor's error: `{"error": message}`.
pub fn editor_error(status: StatusCode, error: &str) -> Response {
    json(status, json!({ "error": error }))
}

/// The editor's validation error: 400 `{"error": "Validation failed", "details": ...}`.
pub fn editor_invalid(details: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        json!({"error": "Validation failed", "details": details}),
    )
}

/// The photo app's error: `{"success": false, "message": message}`.
pub fn photo_error(status: StatusCode, message: &str) -> Response {
    json(status, json!({"success": false, "message": message}))
}

/// One body for both contracts: the editor's `error` and the photo app's envelope.
pub fn union_error(status: StatusCode, error: &str, message: &str) -> Response {
    json(
        status,
        json!({"error": error, "success": false, "message": message}),
    )
}

/// Adds `Retry-After` (whole seconds, rounded up, at least 1).
pub fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(RETRY_AFTER, value);
    }
    response
}

/// A missing, bad, expired or revoked token, in the union body. 401 for all of them (the
/// editor origin answered 403 for a bad token; HTTP and the photo origin say 401).
pub fn auth_failure(failure: AuthFailure) -> Response {
    let (error, message) = match failure {
        AuthFailure::Missing => ("Access token required", "未提供认证令牌"),
        AuthFailure::Invalid => ("Invalid or expired token", "无效的认证令牌"),
        AuthFailure::Expired => ("Invalid or expired token", "认证令牌已过期"),
        AuthFailure::Revoked => ("Invalid or expired token", "用户不存在或已被禁用"),
    };
    union_error(StatusCode::UNAUTHORIZED, error, message)
}

/// Errors every consumer route shares (store down, internal), in the union body; `None` for
/// errors the route answers in its own words.
pub fn common_failure(error: &AccountError) -> Option<Response> {
    match error {
        AccountError::Unauthenticated(failure) => Some(auth_failure(*failure)),
        AccountError::Store(crate::store::StoreError::Unavailable(detail)) => {
            tracing::error!(error = %detail, "store unavailable");
            Some(with_retry_after(
                union_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service unavailable",
                    "服务暂不可用，请稍后再试",
                ),
                Duration::from_secs(1),
            ))
        }
        AccountError::Store(other) => {
            tracing::error!(error = %other, "unexpected store error");
            Some(internal())
        }
        AccountError::Internal(detail) => {
            tracing::error!(error = %detail, "accounts failure");
            Some(internal())
        }
        _ => None,
    }
}

pub fn internal() -> Response {
    union_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal server error",
        "服务器内部错误",
    )
}

/// The user object of both contracts: the editor's fields (`id`, `email`, `username`,
/// `avatar`, `createdAt`, `updatedAt`, `lastLoginAt`, `isActive`) and the photo app's
/// (`user_id`, `openid`, `nickname`, `avatar_url`, `role`, `credits`), plus `status`.
pub fn user_json(user: &EndUser, credits: i64) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "avatar": user.avatar,
        "createdAt": format_millis(user.created_at),
        "updatedAt": format_millis(user.updated_at),
        "lastLoginAt": user.last_login_at.map(format_millis),
        "isActive": user.status == UserStatus::Active,
        "user_id": user.seq,
        "openid": user.wechat_openid,
        "nickname": user.nickname,
        "avatar_url": user.avatar,
        "role": user.role.as_str(),
        "credits": credits,
        "status": user.status.as_str(),
    })
}
