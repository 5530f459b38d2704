//! `POST /api/auth/admin/login` (the photo contract): an end user with role `admin` (made by
//! `easel create-admin`) signs in by username and password. The token it gets is an ordinary
//! end-user token of the admin's tenant; its role comes from the user row, so demoting the
//! user takes effect at once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::extract::{ClientAddr, HostTenant, JsonBody};
use super::joi::{self, required, Kind};
use super::photo::{photo_body, photo_failure, photo_invalid};
use super::reply::json;
use crate::app::App;

/// `POST /api/auth/admin/login` `{"username" (3–50), "password" (≥6)}`.
pub async fn login(
    State(app): State<App>,
    HostTenant(tenant): HostTenant,
    ClientAddr(addr): ClientAddr,
    JsonBody(body): JsonBody,
) -> Response {
    let fields = [
        required("username", Kind::Text { min: 3, max: 50 }),
        required("password", Kind::Text { min: 6, max: 256 }),
    ];
    let messages = [
        ("username", "用户名长度为3-50个字符"),
        ("password", "密码长度至少为6个字符"),
    ];
    let body = match photo_body(body, &fields, &messages) {
        Ok(body) => body,
        Err(errors) => return photo_invalid(errors),
    };
    let text = |name| joi::text(&body, name).unwrap_or_default();
    let session = match app
        .accounts
        .admin_login(&tenant, text("username"), text("password"), &addr)
        .await
    {
        Ok(session) => session,
        Err(e) => return photo_failure(e, "用户名或密码错误"),
    };
    let user = &session.user;
    json(
        StatusCode::OK,
        json!({"success": true, "message": "登录成功", "data": {
            "token": session.access_token,
            "refreshToken": session.refresh_token,
            "admin": {
                "admin_id": user.seq,
                "username": user.username,
                "role": user.role.as_str(),
                "nickname": user.nickname,
            },
        }}),
    )
}
