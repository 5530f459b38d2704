//! The admin API for what a tenant configures for its consumer apps:
//! `GET|PUT /admin/v1/tenants/{id}/hosts` (`{"hosts": [...]}`, the host names whose consumer
//! requests belong to the tenant before sign-in) and `PUT /admin/v1/tenants/{id}/wechat`
//! (`{"appId", "appSecret", "baseUrl"?}`; the secret is stored sealed and never shown again).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::admin::Admin;
use super::extract::JsonObject;
use crate::accounts::tenancy::parse_hosts;
use crate::accounts::wechat::check_base_url;
use crate::app::App;
use crate::base::user::WechatSettings;
use crate::error::{ApiError, ErrorCode};
use crate::store::StoreError;

fn no_tenant() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such tenant")
}

async fn known_tenant(app: &App, tenant_id: &str) -> Result<(), ApiError> {
    match app.store.tenant_get(tenant_id).await? {
        Some(_) => Ok(()),
        None => Err(no_tenant()),
    }
}

/// `GET /admin/v1/tenants/{id}/hosts`.
pub async fn get_hosts(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
) -> Result<Response, ApiError> {
    known_tenant(&app, &tenant_id).await?;
    let hosts = app.store.tenant_hosts(&tenant_id).await?;
    Ok(Json(json!({"tenantId": tenant_id, "hosts": hosts})).into_response())
}

/// `PUT /admin/v1/tenants/{id}/hosts` `{"hosts": ["photo.example.com", ...]}`: replaces them.
pub async fn put_hosts(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let listed: Vec<String> = match body.get("hosts") {
        Some(Value::Array(items)) if items.len() <= 100 => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::invalid("hosts must be strings"))?,
        _ => {
            return Err(ApiError::invalid(
                "hosts must be an array of at most 100 host names",
            ))
        }
    };
    let hosts = parse_hosts(&listed).map_err(ApiError::invalid)?;
    match app.store.tenant_hosts_set(&tenant_id, hosts).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(no_tenant()),
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "another tenant already claims one of these hosts",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    app.tenancy.forget_hosts();
    get_hosts(Admin, State(app), Path(tenant_id)).await
}

/// `PUT /admin/v1/tenants/{id}/wechat` `{"appId", "appSecret", "baseUrl"?}`.
pub async fn put_wechat(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let text = |name: &str| match body.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 512 => Ok(s.trim().to_owned()),
        _ => Err(ApiError::invalid(format!("{name} is required"))),
    };
    let (app_id, secret) = (text("appId")?, text("appSecret")?);
    let base_url = match body.get("baseUrl") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => {
            check_base_url(url).map_err(ApiError::invalid)?;
            Some(url.clone())
        }
        Some(_) => return Err(ApiError::invalid("baseUrl must be a string")),
    };
    known_tenant(&app, &tenant_id).await?;
    app.store
        .wechat_settings_set(WechatSettings {
            tenant_id: tenant_id.clone(),
            app_id: app_id.clone(),
            secret_sealed: app.sealer.seal(&secret),
            base_url: base_url.clone(),
        })
        .await?;
    Ok(Json(json!({"tenantId": tenant_id, "appId": app_id, "baseUrl": base_url})).into_response())
}
