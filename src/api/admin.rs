//! The admin API (`/admin/v1/...`): tenants and their limits, changed at run time. Off unless
//! `auth.admin_token` is set; every call needs `Authorization: Bearer <admin token>`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::extract::JsonObject;
use crate::accounts::keys::bearer;
use crate::app::{create_tenant, App};
use crate::base::clock::format_millis;
use crate::error::{ApiError, ErrorCode};
use crate::store::{StoreError, Tenant};

/// Proof that the caller holds the admin token.
pub struct Admin;

impl FromRequestParts<App> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let Some(expected) = &app.config.auth.admin_token else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "the admin API is not enabled (set auth.admin_token)",
            ));
        };
        if bearer_matches(&parts.headers, expected.expose()) {
            Ok(Admin)
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidApiKey,
                "invalid admin token",
            ))
        }
    }
}

/// Whether the request's `Authorization: Bearer` token is `expected` (constant time).
pub(super) fn bearer_matches(headers: &axum::http::HeaderMap, expected: &str) -> bool {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .unwrap_or("");
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantView {
    id: String,
    name: String,
    rpm_limit: u32,
    concurrency_limit: u32,
    /// The burst in force: the tenant's own, else the configured default.
    burst: u32,
    /// Whether `burst` is the configured default (`limits.tenant_burst`).
    burst_is_default: bool,
    created_at: String,
}

impl TenantView {
    fn of(t: Tenant, app: &App) -> TenantView {
        TenantView {
            id: t.id,
            name: t.name,
            rpm_limit: t.rpm_limit,
            concurrency_limit: t.concurrency_limit,
            burst: t.burst.unwrap_or(app.config.limits.tenant_burst),
            burst_is_default: t.burst.is_none(),
            created_at: format_millis(t.created_at),
        }
    }
}

/// `burst` in a body: absent keeps `current`; `null` goes back to the default; else a
/// positive integer.
fn burst_field(body: &Map<String, Value>, current: Option<u32>) -> Result<Option<u32>, ApiError> {
    match body.get("burst") {
        None => Ok(current),
        Some(Value::Null) => Ok(None),
        Some(_) => limit_field(body, "burst"),
    }
}

fn limit_field(body: &Map<String, Value>, field: &str) -> Result<Option<u32>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
            .map(|n| Some(n as u32))
            .ok_or_else(|| ApiError::invalid(format!("{field} must be a positive integer"))),
    }
}

pub async fn list_tenants(_: Admin, State(app): State<App>) -> Result<Response, ApiError> {
    let tenants: Vec<TenantView> = app
        .store
        .tenant_list()
        .await?
        .into_iter()
        .map(|t| TenantView::of(t, &app))
        .collect();
    Ok(Json(serde_json::json!({ "items": tenants })).into_response())
}

pub async fn create(
    _: Admin,
    State(app): State<App>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let name = match body.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err(ApiError::invalid("name is required")),
    };
    let rpm = limit_field(&body, "rpmLimit")?.unwrap_or(app.config.limits.tenant_rpm);
    let concurrency =
        limit_field(&body, "concurrencyLimit")?.unwrap_or(app.config.limits.tenant_concurrency);
    let burst = burst_field(&body, None)?;
    let mut created = create_tenant(app.store.as_ref(), &name, rpm, concurrency, None)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "tenant creation failed");
            ApiError::new(ErrorCode::UnknownError, "tenant creation failed")
        })?;
    if burst.is_some() {
        created.tenant = app
            .store
            .tenant_update_limits(&created.tenant.id, rpm, concurrency, burst)
            .await?;
    }
    let body = serde_json::json!({
        "tenant": TenantView::of(created.tenant, &app),
        "apiKey": created.api_key,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `PATCH /admin/v1/tenants/{id}` with `rpmLimit`, `concurrencyLimit` and/or `burst` (`null`:
/// back to the configured default).
pub async fn update(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let current = app
        .store
        .tenant_get(&tenant_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such tenant"))?;
    let rpm = limit_field(&body, "rpmLimit")?.unwrap_or(current.rpm_limit);
    let concurrency = limit_field(&body, "concurrencyLimit")?.unwrap_or(current.concurrency_limit);
    let burst = burst_field(&body, current.burst)?;
    let updated = match app
        .store
        .tenant_update_limits(&tenant_id, rpm, concurrency, burst)
        .await
    {
        Ok(t) => t,
        Err(StoreError::NotFound) => {
            return Err(ApiError::new(ErrorCode::NotFound, "no such tenant"))
        }
        Err(e) => return Err(e.into()),
    };
    app.auth.forget_tenant(&tenant_id);
    Ok(Json(TenantView::of(updated, &app)).into_response())
}

/// `PUT /admin/v1/tenants/{id}/webhook`: as the tenant's own `PUT /v1/webhook`, for an
/// operator setting a customer's endpoint.
pub async fn put_webhook(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    if app.store.tenant_get(&tenant_id).await?.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, "no such tenant"));
    }
    super::webhooks::set_endpoint_from_body(&app, &tenant_id, &body).await
}

fn pool_error(e: crate::keypool::KeyPoolError) -> ApiError {
    match e {
        crate::keypool::KeyPoolError::UnknownKey(_) => {
            ApiError::new(ErrorCode::NotFound, "no such provider key")
        }
        other => {
            tracing::error!(error = %other, "key pool error");
            ApiError::new(ErrorCode::Unavailable, "key pool unavailable")
        }
    }
}

/// `GET /admin/v1/provider-keys`: every key's state in this process (never the secret).
pub async fn list_keys(_: Admin, State(app): State<App>) -> Result<Response, ApiError> {
    let keys = app.keys.snapshot().await.map_err(pool_error)?;
    Ok(Json(serde_json::json!({ "items": keys })).into_response())
}

/// `POST /admin/v1/provider-keys/{id}/{enable|disable|test}`.
pub async fn key_action(
    _: Admin,
    State(app): State<App>,
    Path((key_id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    match action.as_str() {
        "enable" => app.keys.enable(&key_id).await.map_err(pool_error)?,
        "disable" => app.keys.disable(&key_id).await.map_err(pool_error)?,
        "test" => {
            let key = app
                .keys
                .key(&key_id)
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such provider key"))?;
            if let Err(why) = crate::keypool::probe::probe_key(&app.providers, &key).await {
                let body =
                    serde_json::json!({"keyId": key_id, "ok": false, "error": why.to_string()});
                return Ok(Json(body).into_response());
            }
            app.keys.enable(&key_id).await.map_err(pool_error)?;
        }
        _ => return Err(ApiError::new(ErrorCode::NotFound, "no such action")),
    }
    let status = app
        .keys
        .snapshot()
        .await
        .map_err(pool_error)?
        .into_iter()
        .find(|k| k.id == key_id);
    Ok(Json(serde_json::json!({"keyId": key_id, "ok": true, "key": status})).into_response())
}
