//! A fake WeChat `code2Session` on `127.0.0.1:0` (`GET /sns/jscode2session`), in the real
//! wire format, for tests and benchmarks.
//!
//! The `js_code` chooses the answer:
//! - `user:<name>`: success without `errcode` (as WeChat answers since late 2022), as
//!   `text/plain`, openid `openid_<name>`, a `session_key` that must never leave Easel;
//! - `user0:<name>`: success with `errcode: 0`;
//! - `err:-1`, `err:40029`, `err:45011`, `err:40226`: that error with WeChat's `errmsg`.
//!
//! Like WeChat, a code works once (a second use is 40029), and a wrong `appid` or `secret` is
//! 40013 / 40125. Every answer is HTTP 200.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The app the fake expects.
pub const APP_ID: &str = "wx_fake_app";
pub const APP_SECRET: &str = "fake-app-secret";
/// Every success's `session_key` starts with this, so tests can look for it in answers.
pub const SESSION_KEY_PREFIX: &str = "sk_never_leaves_";

#[derive(Default)]
struct Seen {
    used_codes: HashSet<String>,
    requests: u64,
}

struct Shared {
    seen: Mutex<Seen>,
    stop: CancellationToken,
}

pub struct FakeWechat {
    pub base_url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeWechat {
    /// Starts on an ephemeral port; panics if it cannot bind (a broken test host).
    pub async fn start() -> FakeWechat {
        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen::default()),
            stop: CancellationToken::new(),
        });
        let router = Router::new()
            .route("/sns/jscode2session", get(code2session))
            .with_state(shared.clone());
        let addr = super::serve_local("fake WeChat", router, shared.stop.clone()).await;
        FakeWechat {
            base_url: format!("http://{addr}"),
            addr,
            shared,
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.seen.lock().map_or(0, |s| s.requests)
    }
}

impl Drop for FakeWechat {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

#[derive(serde::Deserialize)]
struct Params {
    appid: Option<String>,
    secret: Option<String>,
    js_code: Option<String>,
    grant_type: Option<String>,
}

fn error(errcode: i64, errmsg: &str) -> Response {
    axum::Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response()
}

async fn code2session(State(shared): State<Arc<Shared>>, Query(p): Query<Params>) -> Response {
    let code = p.js_code.unwrap_or_default();
    let first_use = match shared.seen.lock() {
        Ok(mut seen) => {
            seen.requests += 1;
            seen.used_codes.insert(code.clone())
        }
        Err(_) => false,
    };
    if p.appid.as_deref() != Some(APP_ID) {
        return error(40013, "invalid appid");
    }
    if p.secret.as_deref() != Some(APP_SECRET) {
        return error(40125, "invalid appsecret");
    }
    if p.grant_type.as_deref() != Some("authorization_code") {
        return error(40002, "invalid grant_type");
    }
    let rid = "rid: 668f2aa4-0d1e5e7a-3b2c1d0e";
    if let Some(name) = code.strip_prefix("user:").or(code.strip_prefix("user0:")) {
        if !first_use {
            return error(40029, &format!("invalid code, {rid}"));
        }
        let mut body = json!({
            "openid": format!("openid_{name}"),
            "session_key": format!("{SESSION_KEY_PREFIX}{name}"),
        });
        if code.starts_with("user0:") {
            body["errcode"] = Value::from(0);
            body["errmsg"] = Value::from("ok");
        }
        // WeChat sometimes labels its JSON as text.
        return ([(CONTENT_TYPE, "text/plain")], body.to_string()).into_response();
    }
    match code.as_str() {
        "err:-1" => error(-1, "system error"),
        "err:45011" => error(
            45011,
            "api minute-quota reach limit  mustslower  retry next minute",
        ),
        "err:40226" => error(40226, "code blocked"),
        _ => error(40029, &format!("invalid code, {rid}")),
    }
}
