//! `POST /api/auth/wechat/login` (the photo contract): `code2Session`, then the user with that
//! openid, made on first sign-in with the tenant's starting credits.
//!
//! Differences from the origin (listed in the README): `is_new_user` is true for a new user;
//! WeChat's errors are 4xx (a bad or blocked code) or 503/429 with `Retry-After` (WeChat busy
//! or limiting), never 500; the answer also carries `refreshToken`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::extract::{HostTenant, JsonBody};
use super::joi::{self, required, Kind};
use super::photo::{photo_body, photo_failure, photo_invalid};
use super::reply::{json, photo_error, user_json, with_retry_after};
use crate::accounts::users::{credit_balance, AccountError};
use crate::accounts::wechat::WechatError;
use crate::app::App;
use crate::base::user::ProfileUpdate;

/// The optional `userInfo` `{nickname, avatar_url (uri or "")}`; other keys are dropped.
fn profile(body: &Map<String, Value>) -> Result<ProfileUpdate, Vec<Value>> {
    let Some(info) = body.get("userInfo") else {
        return Ok(ProfileUpdate::default());
    };
    let Some(info) = info.as_object() else {
        return Err(vec![
            json!({"field": "userInfo", "message": "用户信息格式不正确"}),
        ]);
    };
    let mut errors = Vec::new();
    let nickname = match info.get("nickname") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= 64 => Some(s.clone()),
        Some(_) => {
            errors.push(json!({"field": "userInfo.nickname", "message": "昵称格式不正确"}));
            None
        }
    };
    let avatar_fields = [joi::optional("avatar_url", Kind::Uri)];
    let avatar = match info.get("avatar_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(_) if !joi::check(info, &avatar_fields, true).is_empty() => {
            errors.push(json!({"field": "userInfo.avatar_url", "message": "头像地址格式不正确"}));
            None
        }
        Some(v) => v.as_str().map(str::to_owned),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ProfileUpdate {
        nickname,
        avatar,
        username: None,
    })
}

/// `POST /api/auth/wechat/login` `{"code", "userInfo"?}`.
pub async fn login(
    State(app): State<App>,
    HostTenant(tenant): HostTenant,
    JsonBody(body): JsonBody,
) -> Response {
    let fields = [required("code", Kind::Text { min: 1, max: 512 })];
    let body = match photo_body(body, &fields, &[("code", "登录凭证是必填项")]) {
        Ok(body) => body,
        Err(errors) => return photo_invalid(errors),
    };
    let profile = match profile(&body) {
        Ok(profile) => profile,
        Err(errors) => return photo_invalid(errors),
    };
    let code = joi::text(&body, "code").unwrap_or_default();
    let is_default = app.tenancy.default_tenant().await.ok().as_deref() == Some(&tenant);
    let signed = match app.accounts.mini_program(&tenant, is_default).await {
        Ok(mini) => {
            app.accounts
                .wechat_login(&mini, &tenant, code, profile)
                .await
        }
        Err(e) => Err(e),
    };
    let session = match signed {
        Ok(session) => session,
        Err(AccountError::Wechat(e)) => return wechat_failure(e),
        Err(e) => return photo_failure(e, "登录失败"),
    };
    let mut user = user_json(
        &session.user,
        credit_balance(app.store.as_ref(), &session.user).await,
    );
    user["is_new_user"] = Value::Bool(session.is_new_user);
    json(
        StatusCode::OK,
        json!({"success": true, "message": "登录成功", "data": {
            "token": session.access_token,
            "refreshToken": session.refresh_token,
            "user": user,
        }}),
    )
}

/// `登录失败: <errmsg>` with a status that says whose fault it was.
fn wechat_failure(error: WechatError) -> Response {
    let message = |errmsg: &str| format!("登录失败: {errmsg}");
    match error {
        WechatError::Refused { errcode, errmsg } => {
            let status = match errcode {
                40226 => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            tracing::info!(errcode, "wechat refused a sign-in code");
            photo_error(status, &message(&errmsg))
        }
        WechatError::Busy { errmsg } => with_retry_after(
            photo_error(StatusCode::SERVICE_UNAVAILABLE, &message(&errmsg)),
            Duration::from_secs(1),
        ),
        WechatError::Limited { errmsg } => with_retry_after(
            photo_error(StatusCode::TOO_MANY_REQUESTS, &message(&errmsg)),
            Duration::from_secs(60),
        ),
        WechatError::Unreachable(detail) => {
            tracing::warn!(error = %detail, "wechat code2Session failed");
            with_retry_after(
                photo_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &message("微信服务暂不可用"),
                ),
                Duration::from_secs(5),
            )
        }
        WechatError::NotConfigured => {
            photo_error(StatusCode::SERVICE_UNAVAILABLE, &message("微信登录未配置"))
        }
    }
}
