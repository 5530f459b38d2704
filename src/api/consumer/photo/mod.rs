//! The photo app's routes (`photo-api.md`), one file per resource: [`scenes`], [`works`],
//! [`tasks`], [`uploads`] (the image library's `/api/upload/*`), [`callback`] (the n8n
//! workflow's answers). Here: what they share, the
//! body check (every problem, its own messages, unknown keys dropped), the answer to an
//! account error, the envelope, pages and the optionally signed-in viewer.

mod admin;
mod callback;
mod scenes;
mod socket;
mod tasks;
mod uploads;
mod works;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::extract::{authenticate, presented_token, HostTenant};
use super::joi::{self, Field};
use super::reply::{common_failure, internal, json, photo_error, with_retry_after};
use crate::accounts::users::{AccountError, Authed};
use crate::app::App;
use crate::base::clock::{format_millis, Millis};
use crate::base::user::Role;
use crate::store::StoreError;

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

/// The photo routes (the uploads, scenes, works and tasks of `photo-api.md`).
pub fn router() -> Router<App> {
    Router::new()
        .route("/api/upload/single", post(uploads::single))
        .route("/api/upload/multiple", post(uploads::multiple))
        .route("/api/upload/base64", post(uploads::base64))
        .route("/api/upload/base64/batch", post(uploads::base64_batch))
        .route(
            "/api/upload/{file_name}",
            axum::routing::delete(uploads::delete),
        )
        .route("/api/scenes", get(scenes::list).post(scenes::create))
        .route(
            "/api/scenes/{scene_id}",
            get(scenes::get).put(scenes::update).delete(scenes::delete),
        )
        .route("/api/works", get(works::list))
        .route("/api/works/batch/delete", post(works::batch_delete))
        .route(
            "/api/works/{work_id}",
            get(works::get).put(works::update).delete(works::delete),
        )
        .route("/api/tasks/create", post(tasks::create))
        .route("/api/tasks/user/list", get(tasks::list))
        .route("/api/tasks/stats/queue", get(tasks::queue))
        .route("/api/tasks/{task_id}", get(tasks::get))
        .route("/api/tasks/{task_id}/cancel", post(tasks::cancel))
        .route("/ws", get(socket::socket))
        .route("/api/callback/task-complete", post(callback::complete))
        .route("/api/callback/task-failed", post(callback::failed))
        .route("/api/admin/stats/overview", get(admin::overview))
        .route("/api/admin/users", get(admin::users))
        .route(
            "/api/admin/users/{user_id}",
            axum::routing::put(admin::update_user),
        )
        .route("/api/admin/works", get(admin::works))
        .route("/api/admin/tasks", get(admin::tasks))
        .route("/api/admin/orders", get(admin::orders))
        .route("/api/admin/config", get(admin::config))
        .route(
            "/api/admin/config/{config_key}",
            axum::routing::put(admin::set_config),
        )
}

/// `{"success": true, "data": data}`.
fn ok(data: Value) -> Response {
    json(StatusCode::OK, json!({"success": true, "data": data}))
}

/// `{"success": true, "message": message, "data": data}`.
fn ok_with(message: &str, data: Value) -> Response {
    json(
        StatusCode::OK,
        json!({"success": true, "message": message, "data": data}),
    )
}

/// `{"success": true, "message": message}`.
fn done(message: &str) -> Response {
    json(StatusCode::OK, json!({"success": true, "message": message}))
}

/// A store failure: 503 while it is unreachable, else 500, in the union body.
fn store_failure(e: StoreError) -> Response {
    common_failure(&AccountError::Store(e)).unwrap_or_else(internal)
}

/// A time as the origin's rows had it (ISO 8601).
fn iso(at: Millis) -> String {
    format_millis(at)
}

/// The origin's `?page=1&pageSize=N` (bad values: the defaults) and the list filters.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    page: Option<String>,
    #[serde(rename = "pageSize")]
    page_size: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    status: Option<String>,
    category: Option<String>,
    keyword: Option<String>,
    is_public: Option<String>,
    is_favorite: Option<String>,
    user_id: Option<String>,
    role: Option<String>,
}

impl ListQuery {
    /// `(page, pageSize, offset)`; `pageSize` at most 100.
    fn page(&self, default_size: u32) -> (u64, u32, u64) {
        let page = self
            .page
            .as_deref()
            .and_then(|p| p.parse::<u64>().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1);
        let size = self
            .page_size
            .as_deref()
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|p| (1..=100).contains(p))
            .unwrap_or(default_size);
        (page, size, (page - 1).saturating_mul(u64::from(size)))
    }
}

/// A filter value; an empty one is no filter.
fn filter(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

/// A boolean filter as the origin took it (`1`/`true`, `0`/`false`).
fn flag(value: &Option<String>) -> Option<bool> {
    match value.as_deref() {
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        _ => None,
    }
}

fn pagination(page: u64, size: u32, total: u64) -> Value {
    json!({
        "page": page,
        "pageSize": size,
        "total": total,
        "totalPages": total.div_ceil(u64::from(size)),
    })
}

/// `{"<name>": items, "pagination": ...}` in the success envelope.
fn listed(name: &str, items: Vec<Value>, page: (u64, u32, u64), total: u64) -> Response {
    let mut data = Map::new();
    data.insert(name.to_owned(), Value::Array(items));
    json(
        StatusCode::OK,
        json!({"success": true, "data": data, "pagination": pagination(page.0, page.1, total)}),
    )
}

/// The caller of a route open to anyone (the origin's `optionalAuth`): the signed-in user,
/// or nobody for a missing or bad token; and the tenant (the user's, else the host's).
struct Viewer {
    tenant_id: String,
    user: Option<Authed>,
}

impl Viewer {
    fn user_id(&self) -> Option<&str> {
        self.user.as_ref().map(|a| a.user.id.as_str())
    }

    fn is_admin(&self) -> bool {
        self.user
            .as_ref()
            .is_some_and(|a| a.user.role == Role::Admin)
    }
}

impl FromRequestParts<App> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        if presented_token(&parts.headers).is_some() {
            if let Ok(authed) = authenticate(app, &parts.headers).await {
                return Ok(Viewer {
                    tenant_id: authed.user.tenant_id.clone(),
                    user: Some(authed),
                });
            }
        }
        let HostTenant(tenant_id) = HostTenant::from_request_parts(parts, app).await?;
        Ok(Viewer {
            tenant_id,
            user: None,
        })
    }
}

/// Collects the `{field, message}` problems of a body checked by hand.
#[derive(Default)]
struct Problems(Vec<Value>);

impl Problems {
    fn add(&mut self, field: &str, message: &str) {
        self.0.push(json!({"field": field, "message": message}));
    }

    /// `Err` with every problem (for [`photo_invalid`]) if there was one.
    fn answer(self) -> Result<(), Vec<Value>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}
