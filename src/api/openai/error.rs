//! OpenAI's error body, `{"error": {message, type, param, code}}`, with the statuses the
//! official SDK maps to its typed exceptions (400, 401, 403, 404, 409, 422, 429, 5xx), made from
//! Easel's own errors and from a job that did not succeed.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::base::job::{Job, JobStatus};
use crate::error::{ApiError, ErrorCode};

/// An error on its way to an OpenAI client.
#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl OpenAiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            headers: Vec::new(),
        }
    }

    /// 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> OpenAiError {
        OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn param(mut self, param: &'static str) -> OpenAiError {
        self.param = Some(param);
        self
    }

    pub fn code(mut self, code: impl Into<String>) -> OpenAiError {
        self.code = Some(code.into());
        self
    }

    pub fn header(mut self, name: &'static str, value: impl ToString) -> OpenAiError {
        if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
            self.headers.push((HeaderName::from_static(name), value));
        }
        self
    }

    /// Tells the SDK not to retry (it honours `x-should-retry`): retrying would submit the
    /// same work again.
    pub fn final_answer(self) -> OpenAiError {
        self.header("x-should-retry", "false")
    }

    /// The answer for a job that ended without images (or is still running at the deadline).
    pub fn for_job(job: &Job) -> OpenAiError {
        let message = job
            .error_message
            .clone()
            .unwrap_or_else(|| format!("the job ended {}", job.status));
        let code = job.error_code.as_deref().unwrap_or("");
        let error = match (job.status, code) {
            (JobStatus::Canceled, _) => OpenAiError::new(
                StatusCode::CONFLICT,
                "invalid_request_error",
                "the job was canceled",
            )
            .code("job_canceled")
            .final_answer(),
            (_, "CONTENT_BLOCKED") => OpenAiError::new(
                StatusCode::BAD_REQUEST,
                "image_generation_user_error",
                format!("Your request was rejected by the safety system ({message})."),
            )
            .code("moderation_blocked"),
            (_, "UPSTREAM_RATE_LIMITED") => {
                OpenAiError::new(StatusCode::TOO_MANY_REQUESTS, "requests", message)
                    .code("rate_limit_exceeded")
                    .header("retry-after", 1)
            }
            (_, "UPSTREAM_QUOTA_EXHAUSTED_DAILY") => {
                OpenAiError::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
                    .code("insufficient_quota")
                    .final_answer()
            }
            (_, "JOB_TIMEOUT") => {
                OpenAiError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message)
                    .code("timeout")
                    .final_answer()
            }
            (_, c) if is_request_fault(c) => OpenAiError::invalid(message).code(c.to_lowercase()),
            (_, c) => OpenAiError::new(StatusCode::BAD_GATEWAY, "server_error", message)
                .code(c.to_lowercase()),
        };
        error.header("easel-job-id", &job.id)
    }
}

/// Job error codes that mean the request itself was wrong.
fn is_request_fault(code: &str) -> bool {
    matches!(
        code,
        "INVALID_REQUEST" | "UPSTREAM_BAD_REQUEST" | "UPSTREAM_NOT_FOUND" | "NO_IMAGE"
    ) || code.starts_with("INPUT_IMAGE")
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> OpenAiError {
        let (kind, code) = match e.code {
            ErrorCode::InvalidApiKey => ("invalid_request_error", Some("invalid_api_key")),
            ErrorCode::RateLimitExceeded => ("requests", Some("rate_limit_exceeded")),
            ErrorCode::IdempotencyKeyReused => {
                ("invalid_request_error", Some("idempotency_key_reused"))
            }
            ErrorCode::NotFound | ErrorCode::JobNotFound => ("invalid_request_error", None),
            ErrorCode::InsufficientCredits => ("insufficient_quota", Some("insufficient_credits")),
            ErrorCode::Unavailable | ErrorCode::UnknownError => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        OpenAiError {
            status: e.code.status(),
            message: e.message,
            kind,
            param: None,
            code: code.map(str::to_owned),
            headers: e.headers,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
