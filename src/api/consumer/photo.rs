//! The photo app's body check (every problem, its own messages, unknown keys dropped) and its
//! answer to an account error.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::joi::{self, Field};
use super::reply::{common_failure, internal, json, photo_error, with_retry_after};
use crate::accounts::users::AccountError;

/// The photo app's body check: every problem as `{field, message}` (the `errors` of
/// [`photo_invalid`]), each field's message from `messages`.
pub fn photo_body(
    body: Result<Map<String, Value>, String>,
    fields: &[Field],
    messages: &[(&str, &str)],
) -> Result<Map<String, Value>, Vec<Value>> {
    let body = body.map_err(|why| vec![json!({"field": "body", "message": why})])?;
    let problems = joi::check(&body, fields, true);
    if problems.is_empty() {
        return Ok(body);
    }
    Err(problems
        .iter()
        .map(|p| {
            let message = messages
                .iter()
                .find(|(field, _)| *field == p.field)
                .map_or(p.message.as_str(), |(_, m)| m);
            json!({"field": p.field, "message": message})
        })
        .collect())
}

/// 400 `参数验证失败` with `errors: [{field, message}]`.
pub fn photo_invalid(errors: Vec<Value>) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        json!({"success": false, "message": "参数验证失败", "errors": errors}),
    )
}

/// The photo app's answer to an error every sign-in route shares.
pub fn photo_failure(error: AccountError, refused: &str) -> Response {
    if let Some(response) = common_failure(&error) {
        return response;
    }
    match error {
        AccountError::InvalidCredentials => photo_error(StatusCode::UNAUTHORIZED, refused),
        AccountError::Deactivated => photo_error(StatusCode::FORBIDDEN, "用户不存在或已被禁用"),
        AccountError::TooManyAttempts(wait) => with_retry_after(
            photo_error(
                StatusCode::TOO_MANY_REQUESTS,
                "登录尝试过于频繁，请稍后再试",
            ),
            wait,
        ),
        other => {
            tracing::error!(error = %other, "unexpected account error");
            internal()
        }
    }
}
