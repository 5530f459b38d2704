//! End users over real HTTP: the editor's account routes, the photo app's WeChat and admin
//! sign-in, the shared paths (`/api/auth/me`, `/api/auth/refresh`), tokens (tampered,
//! `alg: none`, expired, another tenant's, refresh reuse), brute-force and request limits,
//! host-name tenancy, and that no secret reaches a log line or an error.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use common::{spawn_app_with, TestApp};
use easel::config::Config;
use easel::server::Roles;
use easel::testing::fake_wechat::{self, FakeWechat};
use reqwest::header::{HOST, RETRY_AFTER};
use serde_json::{json, Value};

const PASSWORD: &str = "Pa55word-Zq7";

/// Cheap hashing for tests (the parameters are checked by unit tests and the benchmark).
fn cheap(config: &mut Config) {
    config.users.argon2_memory_kib = 64;
    config.users.argon2_iterations = 1;
    config.auth.admin_token = Some(easel::base::secret::Secret::new("admin-token"));
}

async fn start() -> TestApp {
    spawn_app_with(cheap, Roles::ALL).await
}

async fn start_with_wechat(fake: &FakeWechat) -> TestApp {
    let base = fake.base_url.clone();
    spawn_app_with(
        move |c| {
            cheap(c);
            c.wechat.base_url = base;
            c.wechat.app_id = Some(fake_wechat::APP_ID.into());
            c.wechat.app_secret = Some(easel::base::secret::Secret::new(fake_wechat::APP_SECRET));
        },
        Roles::ALL,
    )
    .await
}

/// A request with an optional bearer token and `Host`.
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
    host: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(host) = host {
        request = request.header(HOST, host);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, value)
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let (status, _, body) = call(app, reqwest::Method::POST, path, Some(body), None, None).await;
    (status, body)
}

async fn get_me(app: &TestApp, token: &str) -> (u16, Value) {
    let (status, _, body) = call(
        app,
        reqwest::Method::GET,
        "/api/auth/me",
        None,
        Some(token),
        None,
    )
    .await;
    (status, body)
}

/// Registers `email` and returns (access token, refresh token, user).
async fn register(app: &TestApp, email: &str) -> (String, String, Value) {
    let (status, body) = post(
        app,
        "/api/auth/register",
        json!({"email": email, "username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["token"].as_str().expect("token").to_owned(),
        body["refreshToken"]
            .as_str()
            .expect("refreshToken")
            .to_owned(),
        body["user"].clone(),
    )
}

fn assert_union_401(status: u16, body: &Value, message: &str) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["message"], message, "{body}");
    assert!(body["error"].is_string(), "{body}");
}

#[tokio::test]
async fn register_login_and_me_follow_the_editor_contract() {
    let app = start().await;
    let (token, refresh, user) = register(&app, "Alice@Example.com").await;
    assert!(refresh.starts_with("rt_"));
    for field in ["id", "email", "username", "createdAt", "updatedAt"] {
        assert!(user[field].is_string(), "{field}: {user}");
    }
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["avatar"], Value::Null);
    assert_eq!(user["isActive"], true);
    assert!(user["user_id"].is_i64(), "{user}");
    assert_eq!(user["role"], "user");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());

    let (status, body) = post(
        &app,
        "/api/auth/register",
        json!({"email": "alice@example.com", "username": "alice2", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        (status, body),
        (409, json!({"error": "User already exists"}))
    );

    let (status, body) = post(
        &app,
        "/api/auth/login",
        json!({"email": "ALICE@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Login successful");
    assert!(body["user"]["lastLoginAt"].is_string(), "{body}");
    assert!(body["refreshToken"].is_string());

    // Wrong password and unknown email: the same answer.
    let wrong = post(
        &app,
        "/api/auth/login",
        json!({"email": "alice@example.com", "password": "nope-nope"}),
    )
    .await;
    let unknown = post(
        &app,
        "/api/auth/login",
        json!({"email": "bob@example.com", "password": "nope-nope"}),
    )
    .await;
    assert_eq!(wrong, (401, json!({"error": "Invalid credentials"})));
    assert_eq!(unknown, wrong);

    // GET /api/auth/me: one body for both contracts.
    let (status, me) = get_me(&app, &token).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["success"], true);
    assert_eq!(me["user"], me["data"]["user"]);
    assert_eq!(me["user"]["id"], user["id"]);
    assert_eq!(
        me["user"]["credits"], 10,
        "the starting credits, from the ledger"
    );

    // Deactivated: a right password says so, a wrong one does not.
    let user_id = user["id"].as_str().unwrap();
    app.app
        .accounts
        .set_status(
            &app.tenant_id,
            user_id,
            easel::base::user::UserStatus::Inactive,
        )
        .await
        .unwrap();
    let (status, body) = post(
        &app,
        "/api/auth/login",
        json!({"email": "alice@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        (status, body),
        (403, json!({"error": "Account is deactivated"}))
    );
    let (status, body) = get_me(&app, &token).await;
    assert_union_401(status, &body, "用户不存在或已被禁用");
    app.shutdown().await;
}

#[tokio::test]
async fn editor_validation_answers_like_joi() {
    let app = start().await;
    let cases = [
        (
            json!({"username": "alice", "password": PASSWORD}),
            "\"email\" is required",
        ),
        (
            json!({"email": "not-an-email", "username": "alice", "password": PASSWORD}),
            "\"email\" must be a valid email",
        ),
        (
            json!({"email": "a@b.io", "username": "al", "password": PASSWORD}),
            "\"username\" length must be at least 3 characters long",
        ),
        (
            json!({"email": "a@b.io", "username": "a".repeat(31), "password": PASSWORD}),
            "\"username\" length must be less than or equal to 30 characters long",
        ),
        (
            json!({"email": "a@b.io", "username": "alice", "password": "12345"}),
            "\"password\" length must be at least 6 characters long",
        ),
        (
            json!({"email": "a@b.io", "username": "alice", "password": "x".repeat(300)}),
            "\"password\" length must be less than or equal to 256 characters long",
        ),
        (
            json!({"email": "a@b.io", "username": "alice", "password": PASSWORD, "role": "admin"}),
            "\"role\" is not allowed",
        ),
        (
            json!({"email": "", "username": "alice", "password": PASSWORD}),
            "\"email\" is not allowed to be empty",
        ),
        (
            json!({"email": 7, "username": "alice", "password": PASSWORD}),
            "\"email\" must be a string",
        ),
    ];
    for (body, details) in cases {
        let (status, got) = post(&app, "/api/auth/register", body).await;
        assert_eq!(status, 400, "{got}");
        assert_eq!(
            got,
            json!({"error": "Validation failed", "details": details})
        );
    }
    // Malformed JSON is a 400 (the origin answered 500).
    let response = app
        .http
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Validation failed");
    app.shutdown().await;
}

#[tokio::test]
async fn profile_password_delete_and_logout() {
    let app = start().await;
    let (token, _, _) = register(&app, "p@example.com").await;
    let (status, _, body) = call(
        &app,
        reqwest::Method::PUT,
        "/api/auth/me",
        Some(json!({"username": "renamed", "avatar": "https://cdn.example.com/a.png"})),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "User updated successfully");
    assert_eq!(body["user"]["username"], "renamed");
    assert_eq!(body["user"]["avatar"], "https://cdn.example.com/a.png");
    let (status, _, body) = call(
        &app,
        reqwest::Method::PUT,
        "/api/auth/me",
        Some(json!({"avatar": "not a uri"})),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "Validation failed", "details": "\"avatar\" must be a valid uri"})
        )
    );

    // Password: a wrong current one, then a change that ends every session.
    let (status, _, body) = call(
        &app,
        reqwest::Method::PUT,
        "/api/auth/password",
        Some(json!({"currentPassword": "wrong-one", "newPassword": "N3w-password"})),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "Current password is incorrect"}))
    );
    let (status, _, body) = call(
        &app,
        reqwest::Method::PUT,
        "/api/auth/password",
        Some(json!({"currentPassword": PASSWORD, "newPassword": "N3w-password"})),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Password updated successfully");
    let fresh = body["token"].as_str().unwrap().to_owned();
    let (status, body) = get_me(&app, &token).await;
    assert_union_401(status, &body, "用户不存在或已被禁用");
    assert_eq!(get_me(&app, &fresh).await.0, 200);
    let (status, _) = post(
        &app,
        "/api/auth/login",
        json!({"email": "p@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = post(
        &app,
        "/api/auth/login",
        json!({"email": "p@example.com", "password": "N3w-password"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let other = body["token"].as_str().unwrap().to_owned();

    // Sign-out ends only that session.
    let (status, _, _) = call(
        &app,
        reqwest::Method::POST,
        "/api/auth/logout",
        None,
        Some(&fresh),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(get_me(&app, &fresh).await.0, 401);
    assert_eq!(get_me(&app, &other).await.0, 200);

    // Delete: every token dies, the email is free again.
    let (status, _, body) = call(
        &app,
        reqwest::Method::DELETE,
        "/api/auth/me",
        None,
        Some(&other),
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Account deleted successfully"}))
    );
    assert_eq!(get_me(&app, &other).await.0, 401);
    assert_eq!(
        post(
            &app,
            "/api/auth/login",
            json!({"email": "p@example.com", "password": "N3w-password"})
        )
        .await
        .0,
        401
    );
    register(&app, "p@example.com").await;
    app.shutdown().await;
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn tokens_tampered_none_expired_and_missing_are_401() {
    let app = start().await;
    let (token, _, _) = register(&app, "t@example.com").await;
    let (status, body) = get_me(&app, "").await;
    assert_union_401(status, &body, "未提供认证令牌");
    let (status, _, body) =
        call(&app, reqwest::Method::GET, "/api/auth/me", None, None, None).await;
    assert_union_401(status, &body, "未提供认证令牌");
    assert_eq!(body["error"], "Access token required");

    // A changed signature.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (status, body) = get_me(&app, &tampered).await;
    assert_union_401(status, &body, "无效的认证令牌");
    // A changed payload under the old signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["role"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(get_me(&app, &forged).await.0, 401);
    // alg: none, with and without a signature part.
    let none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    for unsigned in [
        format!("{none}.{}.", parts[1]),
        format!("{none}.{}", parts[1]),
    ] {
        let (status, body) = get_me(&app, &unsigned).await;
        assert_union_401(status, &body, "无效的认证令牌");
    }
    // Expired: issued eight days ago (time injected, no sleep).
    let authed = app.app.accounts.authenticate(&token).await.unwrap();
    let eight_days_ago = easel::base::clock::now_millis() - 8 * 86_400_000;
    let old = app
        .app
        .accounts
        .tokens()
        .issue(&authed.user, &authed.session_id, eight_days_ago);
    let (status, body) = get_me(&app, &old).await;
    assert_union_401(status, &body, "认证令牌已过期");
    // The origin's scheme word does not matter.
    let response = app
        .http
        .get(app.url("/api/auth/me"))
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_ends_the_session() {
    let app = start().await;
    let (token, first, _) = register(&app, "r@example.com").await;
    let (status, body) = post(&app, "/api/auth/refresh", json!({"refreshToken": first})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "Token refreshed successfully");
    assert_eq!(body["token"], body["data"]["token"]);
    let second = body["refreshToken"].as_str().unwrap().to_owned();
    let access = body["token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(get_me(&app, &access).await.0, 200);
    // The first one again: reuse. The family ends: the newer refresh and every access token.
    let (status, body) = post(&app, "/api/auth/refresh", json!({"refreshToken": first})).await;
    assert_union_401(status, &body, "刷新令牌已被使用，会话已结束");
    let (status, body) = post(&app, "/api/auth/refresh", json!({"refreshToken": second})).await;
    assert_union_401(status, &body, "无效的刷新令牌");
    assert_eq!(get_me(&app, &access).await.0, 401);
    assert_eq!(get_me(&app, &token).await.0, 401);
    let (status, body) = post(
        &app,
        "/api/auth/refresh",
        json!({"refreshToken": "rt_made_up"}),
    )
    .await;
    assert_union_401(status, &body, "无效的刷新令牌");
    let (status, body) = post(&app, "/api/auth/refresh", json!({"refreshToken": 5})).await;
    assert_eq!(status, 400, "{body}");

    // The origins' refresh: Bearer access token, no body.
    let (status, body) = post(
        &app,
        "/api/auth/login",
        json!({"email": "r@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200);
    let live = body["token"].as_str().unwrap().to_owned();
    let (status, _, body) = call(
        &app,
        reqwest::Method::POST,
        "/api/auth/refresh",
        None,
        Some(&live),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["token"], body["token"]);
    assert_eq!(get_me(&app, body["token"].as_str().unwrap()).await.0, 200);
    let (status, _, body) = call(
        &app,
        reqwest::Method::POST,
        "/api/auth/refresh",
        None,
        None,
        None,
    )
    .await;
    assert_union_401(status, &body, "未提供认证令牌");
    app.shutdown().await;
}

#[tokio::test]
async fn wechat_sign_in_and_its_errors() {
    let fake = FakeWechat::start().await;
    let app = start_with_wechat(&fake).await;
    let login =
        |code: &str| json!({"code": code, "userInfo": {"nickname": "小王", "avatar_url": ""}});
    let (status, body) = post(&app, "/api/auth/wechat/login", login("user:wang")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "登录成功");
    let data = &body["data"];
    assert_eq!(data["user"]["is_new_user"], true);
    assert_eq!(data["user"]["nickname"], "小王");
    assert_eq!(data["user"]["role"], "user");
    assert_eq!(data["user"]["openid"], "openid_wang");
    assert!(data["user"]["user_id"].is_i64());
    assert!(data["refreshToken"].is_string());
    assert!(
        !body.to_string().contains(fake_wechat::SESSION_KEY_PREFIX),
        "{body}"
    );
    let token = data["token"].as_str().unwrap().to_owned();
    // The same person again (a new code, with errcode 0 this time): not new.
    let (status, again) = post(
        &app,
        "/api/auth/wechat/login",
        json!({"code": "user0:wang"}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["user"]["is_new_user"], false);
    assert_eq!(again["data"]["user"]["user_id"], data["user"]["user_id"]);
    // One user, one token: a WeChat token works on the editor's routes too.
    assert_eq!(get_me(&app, &token).await.0, 200);
    let (status, _, _) = call(
        &app,
        reqwest::Method::PUT,
        "/api/auth/me",
        Some(json!({"username": "wangwang"})),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200);

    let cases: [(&str, u16, &str, Option<&str>); 5] = [
        (
            "err:40029",
            400,
            "登录失败: invalid code, rid: 668f2aa4-0d1e5e7a-3b2c1d0e",
            None,
        ),
        (
            "user:wang",
            400,
            "登录失败: invalid code, rid: 668f2aa4-0d1e5e7a-3b2c1d0e",
            None,
        ),
        ("err:40226", 403, "登录失败: code blocked", None),
        ("err:-1", 503, "登录失败: system error", Some("1")),
        (
            "err:45011",
            429,
            "登录失败: api minute-quota reach limit  mustslower  retry next minute",
            Some("60"),
        ),
    ];
    for (code, want_status, message, retry_after) in cases {
        let (status, headers, body) = call(
            &app,
            reqwest::Method::POST,
            "/api/auth/wechat/login",
            Some(json!({"code": code})),
            None,
            None,
        )
        .await;
        assert_eq!(status, want_status, "{code}: {body}");
        assert_eq!(
            body,
            json!({"success": false, "message": message}),
            "{code}"
        );
        assert_eq!(
            headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()),
            retry_after,
            "{code}"
        );
    }
    let (status, body) = post(&app, "/api/auth/wechat/login", json!({"userInfo": {}})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"success": false, "message": "参数验证失败", "errors": [{"field": "code", "message": "登录凭证是必填项"}]})
    );
    let (status, body) = post(
        &app,
        "/api/auth/wechat/login",
        json!({"code": "user:li", "userInfo": {"avatar_url": "nope"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn wechat_without_settings_and_per_tenant_settings() {
    let fake = FakeWechat::start().await;
    // No app configured: 503 in the photo envelope, never a 500.
    let app = start().await;
    let (status, body) = post(&app, "/api/auth/wechat/login", json!({"code": "user:a"})).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"success": false, "message": "登录失败: 微信登录未配置"})
        )
    );
    // A tenant's own app, set through the admin API, serves its claimed host.
    let (other, _) = app.new_tenant("photo", 60, 5).await;
    let admin = |path: String, body: Value| {
        app.http
            .put(app.url(&path))
            .bearer_auth("admin-token")
            .json(&body)
            .send()
    };
    let response = admin(format!("/admin/v1/tenants/{other}/wechat"), json!({"appId": fake_wechat::APP_ID, "appSecret": fake_wechat::APP_SECRET, "baseUrl": fake.base_url})).await.unwrap();
    assert_eq!(response.status(), 200);
    let shown: Value = response.json().await.unwrap();
    assert!(!shown.to_string().contains(fake_wechat::APP_SECRET));
    let response = admin(
        format!("/admin/v1/tenants/{other}/hosts"),
        json!({"hosts": ["Photo.Example.com"]}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["hosts"],
        json!(["photo.example.com"])
    );
    let (status, _, body) = call(
        &app,
        reqwest::Method::POST,
        "/api/auth/wechat/login",
        Some(json!({"code": "user:a"})),
        None,
        Some("photo.example.com"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_owned();
    let authed = app.app.accounts.authenticate(&token).await.unwrap();
    assert_eq!(authed.user.tenant_id, other);
    // Another tenant cannot claim the same host.
    let response = admin(
        format!("/admin/v1/tenants/{}/hosts", app.tenant_id),
        json!({"hosts": ["photo.example.com"]}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 400);
    let response = admin(
        "/admin/v1/tenants/ten_nope/hosts".into(),
        json!({"hosts": []}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn tenants_by_host_and_another_tenant_s_token() {
    let app = start().await;
    let (other, _) = app.new_tenant("b", 60, 5).await;
    app.app
        .store
        .tenant_hosts_set(&other, vec!["b.example".into()])
        .await
        .unwrap();
    let register_at = |host: Option<&'static str>| {
        call(
            &app,
            reqwest::Method::POST,
            "/api/auth/register",
            Some(json!({"email": "same@example.com", "username": "same", "password": PASSWORD})),
            None,
            host,
        )
    };
    // The same email in two tenants is two users.
    let (status, _, a) = register_at(None).await;
    assert_eq!(status, 201, "{a}");
    let (status, _, b) = register_at(Some("b.example:3000")).await;
    assert_eq!(status, 201, "{b}");
    assert_ne!(a["user"]["id"], b["user"]["id"]);
    let b_token = b["token"].as_str().unwrap();
    let a_token = a["token"].as_str().unwrap();
    assert_eq!(
        app.app
            .accounts
            .authenticate(b_token)
            .await
            .unwrap()
            .user
            .tenant_id,
        other
    );
    // A's token on B's host: refused. Each on its own host: fine.
    let (status, _, body) = call(
        &app,
        reqwest::Method::GET,
        "/api/auth/me",
        None,
        Some(a_token),
        Some("b.example"),
    )
    .await;
    assert_union_401(status, &body, "无效的认证令牌");
    let (status, _, _) = call(
        &app,
        reqwest::Method::GET,
        "/api/auth/me",
        None,
        Some(b_token),
        Some("b.example"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = call(
        &app,
        reqwest::Method::GET,
        "/api/auth/me",
        None,
        Some(a_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    // A token signed with another deployment's secret.
    let foreign = easel::accounts::tokens::TokenKeys::new(
        b"someone else",
        std::time::Duration::from_secs(600),
        std::time::Duration::from_secs(600),
    );
    let authed = app.app.accounts.authenticate(a_token).await.unwrap();
    let forged = foreign.issue(
        &authed.user,
        &authed.session_id,
        easel::base::clock::now_millis(),
    );
    assert_eq!(get_me(&app, &forged).await.0, 401);
    app.shutdown().await;
}

#[tokio::test]
async fn admin_login() {
    let app = start().await;
    app.app
        .accounts
        .create_admin(&app.tenant_id, "boss", PASSWORD)
        .await
        .unwrap();
    let (status, body) = post(
        &app,
        "/api/auth/admin/login",
        json!({"username": "boss", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "登录成功");
    let admin = &body["data"]["admin"];
    assert_eq!(admin["username"], "boss");
    assert_eq!(admin["role"], "admin");
    assert!(admin["admin_id"].is_i64());
    let token = body["data"]["token"].as_str().unwrap();
    let (_, me) = get_me(&app, token).await;
    assert_eq!(me["user"]["role"], "admin");
    // A wrong password and an unknown admin: the same answer.
    for username in ["boss", "nobody"] {
        let body = json!({"username": username, "password": "wrong-password"});
        let answer = post(&app, "/api/auth/admin/login", body).await;
        let refused = json!({"success": false, "message": "用户名或密码错误"});
        assert_eq!(answer, (401, refused), "{username}");
    }
    let (status, body) = post(
        &app,
        "/api/auth/admin/login",
        json!({"username": "bo", "password": "123"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "参数验证失败");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(2), "{body}");
    // An ordinary user is no admin.
    register(&app, "plain@example.com").await;
    let (status, _) = post(
        &app,
        "/api/auth/admin/login",
        json!({"username": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 401);
    app.shutdown().await;
}

#[tokio::test]
async fn failed_sign_ins_lock_the_account_not_its_neighbours() {
    let app = start().await;
    register(&app, "victim@example.com").await;
    register(&app, "bystander@example.com").await;
    for _ in 0..5 {
        let (status, _) = post(
            &app,
            "/api/auth/login",
            json!({"email": "victim@example.com", "password": "guess-guess"}),
        )
        .await;
        assert_eq!(status, 401);
    }
    // Now even the right password waits.
    let (status, headers, body) = call(
        &app,
        reqwest::Method::POST,
        "/api/auth/login",
        Some(json!({"email": "victim@example.com", "password": PASSWORD})),
        None,
        None,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let wait: u64 = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(body["error"].is_string());
    // Another account from the same address still signs in.
    let (status, _) = post(
        &app,
        "/api/auth/login",
        json!({"email": "bystander@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn parallel_guesses_are_counted_one_by_one() {
    let app = start().await;
    register(&app, "target@example.com").await;
    let guesses = (0..20).map(|n| {
        post(
            &app,
            "/api/auth/login",
            json!({"email": "target@example.com", "password": format!("guess-{n}")}),
        )
    });
    let statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (5, 15), "{statuses:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn failed_sign_ins_per_address_and_the_request_limit() {
    let app = spawn_app_with(
        |c| {
            cheap(c);
            c.users.address_failures = 3;
            c.users.requests_per_window = 12;
        },
        Roles::ALL,
    )
    .await;
    for n in 0..3 {
        let (status, _) = post(
            &app,
            "/api/auth/login",
            json!({"email": format!("u{n}@example.com"), "password": "guess-guess"}),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, headers, _) = call(
        &app,
        reqwest::Method::POST,
        "/api/auth/login",
        Some(json!({"email": "fresh@example.com", "password": "guess-guess"})),
        None,
        None,
    )
    .await;
    assert_eq!(status, 429);
    assert!(headers.get(RETRY_AFTER).is_some());
    // 4 requests so far; the window holds 12.
    for _ in 4..12 {
        let (status, headers, _) =
            call(&app, reqwest::Method::GET, "/api/auth/me", None, None, None).await;
        assert_eq!(status, 401);
        assert!(headers.get("ratelimit-remaining").is_some());
    }
    let (status, headers, body) =
        call(&app, reqwest::Method::GET, "/api/auth/me", None, None, None).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["error"],
        "Too many requests from this IP, please try again later."
    );
    assert_eq!(body["message"], "请求过于频繁，请稍后再试");
    assert!(headers.get(RETRY_AFTER).is_some());
    // Only /api/* shares it.
    let health = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.shutdown().await;
}

/// Everything logged by this test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || SharedWriter(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error() {
    let logs = captured_logs();
    let fake = FakeWechat::start().await;
    let app = start_with_wechat(&fake).await;
    let (token, refresh, _) = register(&app, "quiet@example.com").await;
    let mut answers = String::new();
    for body in [
        json!({"email": "quiet@example.com", "password": "Wr0ng-but-secret"}),
        json!({"email": "nobody@example.com", "password": "Wr0ng-but-secret"}),
    ] {
        answers.push_str(&post(&app, "/api/auth/login", body).await.1.to_string());
    }
    for code in [
        "user:quiet",
        "err:-1",
        "err:45011",
        "err:40029",
        "err:40226",
    ] {
        answers.push_str(
            &post(&app, "/api/auth/wechat/login", json!({"code": code}))
                .await
                .1
                .to_string(),
        );
    }
    answers.push_str(
        &post(&app, "/api/auth/refresh", json!({"refreshToken": refresh}))
            .await
            .1
            .to_string(),
    );
    answers.push_str(
        &post(&app, "/api/auth/refresh", json!({"refreshToken": refresh}))
            .await
            .1
            .to_string(),
    );
    answers.push_str(&get_me(&app, &format!("{token}x")).await.1.to_string());
    app.shutdown().await;
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logged.contains("refresh token reused"), "the capture works");
    for secret in [
        PASSWORD,
        "Wr0ng-but-secret",
        &token,
        &refresh,
        fake_wechat::SESSION_KEY_PREFIX,
        fake_wechat::APP_SECRET,
    ] {
        assert!(!logged.contains(secret), "a log line holds {secret:?}");
        assert!(!answers.contains(secret), "an answer holds {secret:?}");
    }
}

/// A login failure from `forwarded` (as `X-Forwarded-For`); its status.
async fn fail_from(app: &TestApp, forwarded: &str) -> u16 {
    let body = json!({"email": "x@example.com", "password": "guess-guess"});
    let response = app
        .http
        .post(app.url("/api/auth/login"))
        .header("x-forwarded-for", forwarded)
        .json(&body)
        .send()
        .await
        .expect("send");
    response.status().as_u16()
}

#[tokio::test]
async fn the_client_address_is_forwarded_only_by_trusted_proxies() {
    let tweak = |trusted: bool| {
        move |c: &mut Config| {
            cheap(c);
            c.users.address_failures = 2;
            c.users.account_failures = 100;
            if trusted {
                c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
            }
        }
    };
    // Behind a trusted proxy each forwarded client has its own budget.
    let app = spawn_app_with(tweak(true), Roles::ALL).await;
    assert_eq!(fail_from(&app, "203.0.113.7").await, 401);
    assert_eq!(fail_from(&app, "198.51.100.1, 203.0.113.7").await, 401);
    assert_eq!(fail_from(&app, "203.0.113.7").await, 429);
    assert_eq!(fail_from(&app, "203.0.113.8").await, 401);
    app.shutdown().await;
    // From an untrusted peer the header is ignored: one budget for the peer.
    let app = spawn_app_with(tweak(false), Roles::ALL).await;
    assert_eq!(fail_from(&app, "203.0.113.7").await, 401);
    assert_eq!(fail_from(&app, "203.0.113.8").await, 401);
    assert_eq!(fail_from(&app, "203.0.113.9").await, 429);
    app.shutdown().await;
}

#[test]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
fn the_editor_origin_s_rate_limit_variables_set_the_request_limit() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("RATE_LIMIT_WINDOW_MS", "60000");
        jail.set_env("RATE_LIMIT_MAX_REQUESTS", "250");
        jail.set_env("EASEL_USERS__ACCESS_TOKEN_TTL", "15m");
        let c = Config::load(None, &easel::config::FlagOverrides::default()).expect("load");
        assert_eq!(
            (c.users.request_window_ms, c.users.requests_per_window),
            (60_000, 250)
        );
        assert_eq!(c.users.access_ttl(), std::time::Duration::from_secs(900));
        jail.set_env("EASEL_USERS__ACCESS_TOKEN_TTL", "soon");
        let err = Config::load(None, &easel::config::FlagOverrides::default()).expect_err("bad");
        assert!(err.to_string().contains("users.access_token_ttl"), "{err}");
        Ok(())
    });
}

/// A new user is given the tenant's starting credits in the ledger, in the creating
/// transaction: `credits` on the user, the credits routes and `ledger check` agree.
#[tokio::test]
async fn new_users_hold_their_starting_credits_in_the_ledger() {
    let app = start().await;
    let (token, _, user) = register(&app, "credits@example.com").await;
    assert_eq!(user["credits"], 10, "{user}");
    let get = |path: &'static str| call(&app, reqwest::Method::GET, path, None, Some(&token), None);
    let (status, _, balance) = get("/api/credits/balance").await;
    assert_eq!(status, 200, "{balance}");
    assert_eq!(balance["data"]["credits"], 10, "{balance}");
    let (status, _, records) = get("/api/credits/records").await;
    assert_eq!(status, 200, "{records}");
    let rows = records["data"]["records"].as_array().expect("records");
    assert_eq!(rows.len(), 1, "one gift entry: {records}");
    let (status, _, me) = get("/api/auth/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["user"]["credits"], 10, "{me}");
    let differences = app.app.store.ledger_check().await.expect("ledger check");
    assert!(differences.is_empty(), "{differences:?}");
    let (status, _, anonymous) = call(
        &app,
        reqwest::Method::GET,
        "/api/credits/balance",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 401, "{anonymous}");
}
