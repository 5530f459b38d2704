//! WeChat mini-program sign-in: `code2Session` (`GET <base>/sns/jscode2session`).
//!
//! A missing `errcode` is success (WeChat has omitted it on success since late 2022); the body
//! is parsed as JSON whatever its `Content-Type`. The `session_key` is never read into memory
//! we keep, returned or logged, and neither is the app secret: the request URL carries it, so
//! no error here ever includes the URL.

use std::time::Duration;

use serde::Deserialize;

use crate::base::secret::Secret;

/// One mini-program's credentials and where to call.
#[derive(Debug, Clone)]
pub struct MiniProgram {
    pub base_url: String,
    pub app_id: String,
    pub app_secret: Secret,
}

/// Who WeChat says signed in.
#[derive(Debug, Clone, PartialEq)]
pub struct WechatIdentity {
    pub openid: String,
    pub unionid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WechatError {
    /// The code is invalid, used, expired, or the user is blocked (40029, 40226, ...).
    #[error("wechat refused the code: {errcode} {errmsg}")]
    Refused { errcode: i64, errmsg: String },
    /// WeChat is busy (-1): try again shortly.
    #[error("wechat is busy: {errmsg}")]
    Busy { errmsg: String },
    /// WeChat's quota for this app is spent (45011): slow down.
    #[error("wechat rate limit: {errmsg}")]
    Limited { errmsg: String },
    /// No answer, or an answer that is not code2Session's.
    #[error("wechat unreachable: {0}")]
    Unreachable(String),
    /// The tenant has no mini-program configured.
    #[error("wechat sign-in is not configured")]
    NotConfigured,
}

/// code2Session's body; `session_key` is deliberately not a field.
#[derive(Deserialize)]
struct Code2Session {
    openid: Option<String>,
    unionid: Option<String>,
    errcode: Option<i64>,
    errmsg: Option<String>,
}

#[derive(Clone)]
pub struct WechatClient {
    http: reqwest::Client,
}

impl WechatClient {
    pub fn new(timeout: Duration) -> WechatClient {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        WechatClient { http }
    }

    /// Exchanges a `wx.login` code for the user's openid.
    pub async fn code_to_session(
        &self,
        app: &MiniProgram,
        code: &str,
    ) -> Result<WechatIdentity, WechatError> {
        let url = format!("{}/sns/jscode2session", app.base_url.trim_end_matches('/'));
        let response = self
            .http
            .get(&url)
            .query(&[
                ("appid", app.app_id.as_str()),
                ("secret", app.app_secret.expose()),
                ("js_code", code),
                ("grant_type", "authorization_code"),
            ])
            .send()
            .await
            .map_err(|e| WechatError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| WechatError::Unreachable(e.without_url().to_string()))?;
        let parsed: Code2Session = serde_json::from_slice(&body).map_err(|_| {
            WechatError::Unreachable(format!("HTTP {status} without a code2Session body"))
        })?;
        interpret(parsed)
    }
}

/// A code2Session base URL: http(s) with a host. Trusted configuration, so private and
/// loopback addresses are allowed (a relay, a test server).
pub fn check_base_url(url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(()),
        _ => Err(format!("{url:?} is not an http(s) URL")),
    }
}

fn interpret(body: Code2Session) -> Result<WechatIdentity, WechatError> {
    let errmsg = body.errmsg.unwrap_or_default();
    match body.errcode.unwrap_or(0) {
        0 => match body.openid {
            Some(openid) if !openid.is_empty() => Ok(WechatIdentity {
                openid,
                unionid: body.unionid.filter(|u| !u.is_empty()),
            }),
            _ => Err(WechatError::Unreachable(
                "code2Session answered without an openid".into(),
            )),
        },
        -1 => Err(WechatError::Busy { errmsg }),
        45011 => Err(WechatError::Limited { errmsg }),
        errcode => Err(WechatError::Refused { errcode, errmsg }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<WechatIdentity, WechatError> {
        interpret(serde_json::from_str(json).expect("json"))
    }

    #[test]
    fn missing_errcode_is_success_and_codes_are_classified() {
        let ok = parse(r#"{"session_key":"sk","openid":"o1"}"#).expect("ok");
        assert_eq!(ok.openid, "o1");
        assert!(parse(r#"{"openid":"o1","errcode":0,"errmsg":"ok"}"#).is_ok());
        assert!(matches!(
            parse(r#"{"errcode":-1,"errmsg":"busy"}"#),
            Err(WechatError::Busy { .. })
        ));
        assert!(matches!(
            parse(r#"{"errcode":45011,"errmsg":"quota"}"#),
            Err(WechatError::Limited { .. })
        ));
        assert!(matches!(
            parse(r#"{"errcode":40029,"errmsg":"invalid code"}"#),
            Err(WechatError::Refused { errcode: 40029, .. })
        ));
        assert!(parse(r#"{"session_key":"sk"}"#).is_err());
    }
}
