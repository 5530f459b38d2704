//! The editor's account routes (`/api/auth/register`, `login`, `me`, `password`) and the two
//! paths the editor and photo contracts share (`GET /api/auth/me`, `POST /api/auth/refresh`),
//! which answer one body satisfying both, plus Easel's `POST /api/auth/logout`.
//!
//! Differences from the origins (listed in the README): a bad or expired token is 401 (the
//! editor said 403); sign-in answers also carry `refreshToken`; `POST /api/auth/refresh`
//! with `{"refreshToken"}` rotates it; a password change ends every session and answers with
//! a new one; malformed JSON is a 400, not a 500.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::extract::{authenticate, ClientAddr, HostTenant, JsonBody, SignedIn};
use super::joi::{self, optional, required, Kind};
use super::reply::{
    common_failure, editor_error, editor_invalid, internal, json, union_error, user_json,
    with_retry_after,
};
use crate::accounts::users::{credit_balance, AccountError, SignedIn as Session};
use crate::app::App;
use crate::base::user::{EndUser, ProfileUpdate};

const USERNAME: Kind = Kind::Text { min: 3, max: 30 };
/// No origin capped it; a cap keeps hashing cost bounded.
const PASSWORD: Kind = Kind::Text { min: 6, max: 256 };
const ANY_PASSWORD: Kind = Kind::Text { min: 1, max: 256 };

/// The editor's body check: the first problem (the `details` of its 400).
fn editor_body(
    body: Result<Map<String, Value>, String>,
    fields: &[joi::Field],
) -> Result<Map<String, Value>, String> {
    let body = body?;
    match joi::check(&body, fields, false).into_iter().next() {
        Some(problem) => Err(problem.message),
        None => Ok(body),
    }
}

/// An editor route's answer to an account error.
fn editor_failure(error: AccountError) -> Response {
    if let Some(response) = common_failure(&error) {
        return response;
    }
    match error {
        AccountError::InvalidCredentials => {
            editor_error(StatusCode::UNAUTHORIZED, "Invalid credentials")
        }
        AccountError::Deactivated => editor_error(StatusCode::FORBIDDEN, "Account is deactivated"),
        AccountError::EmailTaken => editor_error(StatusCode::CONFLICT, "User already exists"),
        AccountError::CurrentPasswordWrong => {
            editor_error(StatusCode::UNAUTHORIZED, "Current password is incorrect")
        }
        AccountError::TooManyAttempts(wait) => with_retry_after(
            json(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "Too many failed sign-in attempts, please try again later.",
                       "retryAfter": wait.as_secs().max(1)}),
            ),
            wait,
        ),
        other => {
            tracing::error!(error = %other, "unexpected account error");
            internal()
        }
    }
}

async fn user_value(app: &App, user: &EndUser) -> Value {
    user_json(user, credit_balance(app.store.as_ref(), user).await)
}

/// A sign-in answer: the editor's `{message, user, token}` plus `refreshToken`.
async fn signed_in(app: &App, status: StatusCode, message: &str, session: &Session) -> Response {
    json(
        status,
        json!({
            "message": message,
            "user": user_value(app, &session.user).await,
            "token": session.access_token,
            "refreshToken": session.refresh_token,
        }),
    )
}

/// `POST /api/auth/register` `{email, username, password}` → 201.
pub async fn register(
    State(app): State<App>,
    HostTenant(tenant): HostTenant,
    JsonBody(body): JsonBody,
) -> Response {
    let fields = [
        required("email", Kind::Email),
        required("username", USERNAME),
        required("password", PASSWORD),
    ];
    let body = match editor_body(body, &fields) {
        Ok(body) => body,
        Err(details) => return editor_invalid(&details),
    };
    let text = |name| joi::text(&body, name).unwrap_or_default();
    match app
        .accounts
        .register(&tenant, text("email"), text("username"), text("password"))
        .await
    {
        Ok(session) => {
            signed_in(
                &app,
                StatusCode::CREATED,
                "User created successfully",
                &session,
            )
            .await
        }
        Err(e) => editor_failure(e),
    }
}

/// `POST /api/auth/login` `{email, password}`.
pub async fn login(
    State(app): State<App>,
    HostTenant(tenant): HostTenant,
    ClientAddr(addr): ClientAddr,
    JsonBody(body): JsonBody,
) -> Response {
    let fields = [
        required("email", Kind::Email),
        required("password", ANY_PASSWORD),
    ];
    let body = match editor_body(body, &fields) {
        Ok(body) => body,
        Err(details) => return editor_invalid(&details),
    };
    let text = |name| joi::text(&body, name).unwrap_or_default();
    match app
        .accounts
        .login(&tenant, text("email"), text("password"), &addr)
        .await
    {
        Ok(session) => signed_in(&app, StatusCode::OK, "Login successful", &session).await,
        Err(e) => editor_failure(e),
    }
}

/// `GET /api/auth/me`: `{"user", "success": true, "data": {"user"}}` (both contracts).
pub async fn me(State(app): State<App>, SignedIn(authed): SignedIn) -> Response {
    let user = user_value(&app, &authed.user).await;
    json(
        StatusCode::OK,
        json!({"user": user, "success": true, "data": {"user": user}}),
    )
}

/// `PUT /api/auth/me` `{username?, avatar?}`.
pub async fn update_me(
    State(app): State<App>,
    SignedIn(authed): SignedIn,
    JsonBody(body): JsonBody,
) -> Response {
    let fields = [
        optional("username", USERNAME),
        optional("avatar", Kind::Uri),
    ];
    let body = match editor_body(body, &fields) {
        Ok(body) => body,
        Err(details) => return editor_invalid(&details),
    };
    let update = ProfileUpdate {
        username: joi::text(&body, "username").map(str::to_owned),
        avatar: joi::text(&body, "avatar").map(str::to_owned),
        nickname: None,
    };
    match app.accounts.update_profile(&authed, update).await {
        Ok(user) => json(
            StatusCode::OK,
            json!({"message": "User updated successfully", "user": user_value(&app, &user).await}),
        ),
        Err(e) => editor_failure(e),
    }
}

/// `PUT /api/auth/password` `{currentPassword, newPassword}`. Every session ends; the answer
/// carries a new `token` and `refreshToken` for this client.
pub async fn change_password(
    State(app): State<App>,
    SignedIn(authed): SignedIn,
    ClientAddr(addr): ClientAddr,
    JsonBody(body): JsonBody,
) -> Response {
    let fields = [
        required("currentPassword", ANY_PASSWORD),
        required("newPassword", PASSWORD),
    ];
    let body = match editor_body(body, &fields) {
        Ok(body) => body,
        Err(details) => return editor_invalid(&details),
    };
    let text = |name| joi::text(&body, name).unwrap_or_default();
    match app
        .accounts
        .change_password(&authed, text("currentPassword"), text("newPassword"), &addr)
        .await
    {
        Ok(session) => json(
            StatusCode::OK,
            json!({"message": "Password updated successfully",
                   "token": session.access_token, "refreshToken": session.refresh_token}),
        ),
        Err(e) => editor_failure(e),
    }
}

/// `DELETE /api/auth/me`.
pub async fn delete_me(State(app): State<App>, SignedIn(authed): SignedIn) -> Response {
    match app.accounts.delete(&authed).await {
        Ok(()) => json(
            StatusCode::OK,
            json!({"message": "Account deleted successfully"}),
        ),
        Err(e) => editor_failure(e),
    }
}

/// `POST /api/auth/logout`: ends this token's session (and its refresh tokens).
pub async fn logout(State(app): State<App>, SignedIn(authed): SignedIn) -> Response {
    match app.accounts.sign_out(&authed).await {
        Ok(()) => json(
            StatusCode::OK,
            json!({"message": "Logged out successfully", "success": true}),
        ),
        Err(e) => editor_failure(e),
    }
}

/// `POST /api/auth/refresh`: with `{"refreshToken"}`, rotates it (a new access and refresh
/// token; a token used twice ends its session); without, the origins' refresh of the bearer
/// access token. Both answer `{"message", "token", "success": true, "data": {"token"}}`.
pub async fn refresh(
    State(app): State<App>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Response {
    let presented = body
        .as_ref()
        .ok()
        .and_then(|b| b.get("refreshToken"))
        .cloned();
    let session = match presented {
        Some(Value::String(token)) if !token.is_empty() => app.accounts.refresh(&token).await,
        Some(_) => return editor_invalid("\"refreshToken\" must be a string"),
        None => match authenticate(&app, &headers).await {
            Ok(authed) => Ok(app.accounts.reissue(&authed)),
            Err(response) => return response,
        },
    };
    match session {
        Ok(session) => {
            let data =
                json!({"token": session.access_token, "refreshToken": session.refresh_token});
            json(
                StatusCode::OK,
                json!({"message": "Token refreshed successfully", "token": session.access_token,
                       "refreshToken": session.refresh_token, "success": true, "data": data}),
            )
        }
        Err(AccountError::RefreshInvalid) => union_error(
            StatusCode::UNAUTHORIZED,
            "Invalid refresh token",
            "无效的刷新令牌",
        ),
        Err(AccountError::RefreshReused) => union_error(
            StatusCode::UNAUTHORIZED,
            "Refresh token already used; the session has been ended",
            "刷新令牌已被使用，会话已结束",
        ),
        Err(e) => editor_failure(e),
    }
}
