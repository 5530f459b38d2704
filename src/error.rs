//! The contract's error body, `{"error": CODE, "message": ...}`, and the one place a status
//! code is chosen for it.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;

/// Stable, machine-readable error codes of the origin contract, plus Easel's additions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidApiKey,
    RateLimitExceeded,
    JobNotFound,
    InvalidState,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidSignature,
    NotFound,
    PayloadTooLarge,
    MethodNotAllowed,
    Unavailable,
    UnknownError,
    /// An upload that is not an image type Easel takes.
    UnsupportedMediaType,
    /// The job's provider cannot do the operation asked for.
    UnsupportedOperation,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::InvalidApiKey => "INVALID_API_KEY",
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::JobNotFound => "JOB_NOT_FOUND",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            ErrorCode::InsufficientCredits => "INSUFFICIENT_CREDITS",
            ErrorCode::InvalidSignature => "INVALID_SIGNATURE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Unavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::UnknownError => "UNKNOWN_ERROR",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::UnsupportedOperation => "UNSUPPORTED_OPERATION",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidRequest
            | ErrorCode::InvalidState
            | ErrorCode::UnsupportedOperation => StatusCode::BAD_REQUEST,
            ErrorCode::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ErrorCode::RateLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::JobNotFound | ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            ErrorCode::InvalidSignature => StatusCode::FORBIDDEN,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::UnknownError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra headers (`Retry-After`, `RateLimit`, ...); a Vec keeps the error small.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    pub fn job_not_found() -> ApiError {
        ApiError::new(ErrorCode::JobNotFound, "job not found")
    }

    pub fn with_header(mut self, name: HeaderName, value: impl ToString) -> ApiError {
        if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((name, value));
        }
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::new(ErrorCode::NotFound, "not found"),
            StoreError::Unavailable(detail) => {
                // The detail goes to the log, not to the client.
                tracing::error!(error = %detail, "store unavailable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the database is unavailable; try again",
                )
                .with_header(axum::http::header::RETRY_AFTER, 1)
            }
            other => {
                tracing::error!(error = %other, "unexpected store error");
                ApiError::new(ErrorCode::UnknownError, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.as_str(),
            message: &self.message,
        };
        let mut response = (self.code.status(), Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
