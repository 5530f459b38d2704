//! The `[users]` and `[wechat]` configuration sections: end-user tokens, password hashing,
//! sign-in limits, and the default tenant's WeChat mini-program. `config.rs` only includes
//! them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::secret::Secret;
use crate::base::settings::{at_least_one, Invalid};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UsersConfig {
    /// HS256 signing secret of access tokens; default: generated into `<data_dir>/jwt.key`.
    pub jwt_secret: Option<Secret>,
    /// Life of an access token (`15m`, `7d`, ...). 7 days, as the origins, so their clients
    /// (which never refresh) keep working; an operator whose clients refresh sets minutes.
    pub access_token_ttl: String,
    /// Life of a refresh token; each use rotates it.
    pub refresh_token_ttl: String,
    /// argon2id memory cost in KiB (OWASP: 19 MiB, 2 iterations, 1 lane).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Password hashes computed at once (each takes `argon2_memory_kib`); more wait. 0: the
    /// number of CPUs.
    pub max_concurrent_hashes: usize,
    /// Credits every new end user gets.
    pub starting_credits: i64,
    /// Failed sign-ins an account may have before it waits; the wait then grows.
    pub account_failures: u32,
    /// Failed sign-ins one client address may have per `address_failure_window`.
    pub address_failures: u32,
    pub address_failure_window: String,
    /// Requests one client address may make to the consumer routes (`/api/*`) per
    /// `request_window_ms` (origin names: `RATE_LIMIT_MAX_REQUESTS`, `RATE_LIMIT_WINDOW_MS`).
    pub requests_per_window: u32,
    pub request_window_ms: u64,
    /// The tenant of consumer requests no token or claimed host name places: a tenant id or
    /// name. Default: the oldest tenant (the one made at first start).
    pub default_tenant: Option<String>,
    /// How long a checked session is trusted without asking the store again, across
    /// processes (this process forgets it at once on sign-out, password change, ...).
    pub session_cache_ms: u64,
}

impl Default for UsersConfig {
    fn default() -> Self {
        UsersConfig {
            jwt_secret: None,
            access_token_ttl: "7d".into(),
            refresh_token_ttl: "30d".into(),
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            max_concurrent_hashes: 0,
            starting_credits: 10,
            account_failures: 5,
            address_failures: 50,
            address_failure_window: "15m".into(),
            requests_per_window: 1000,
            request_window_ms: 15 * 60 * 1000,
            default_tenant: None,
            session_cache_ms: 2000,
        }
    }
}

fn duration(key: &'static str, text: &str) -> Result<Duration, Invalid> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err((key, "must be longer than zero".into())),
        Err(e) => Err((
            key,
            format!("{text:?} is not a duration such as 15m or 7d: {e}"),
        )),
    }
}

impl UsersConfig {
    pub fn access_ttl(&self) -> Duration {
        duration("users.access_token_ttl", &self.access_token_ttl)
            .unwrap_or(Duration::from_secs(7 * 86_400))
    }

    pub fn refresh_ttl(&self) -> Duration {
        duration("users.refresh_token_ttl", &self.refresh_token_ttl)
            .unwrap_or(Duration::from_secs(30 * 86_400))
    }

    pub fn address_window(&self) -> Duration {
        duration("users.address_failure_window", &self.address_failure_window)
            .unwrap_or(Duration::from_secs(900))
    }

    /// The first bad value, as (key, problem).
    pub fn validate(&self) -> Result<(), Invalid> {
        duration("users.access_token_ttl", &self.access_token_ttl)?;
        duration("users.refresh_token_ttl", &self.refresh_token_ttl)?;
        duration("users.address_failure_window", &self.address_failure_window)?;
        argon2::Params::new(
            self.argon2_memory_kib,
            self.argon2_iterations,
            self.argon2_parallelism,
            None,
        )
        .map_err(|e| ("users.argon2_memory_kib", format!("argon2 parameters: {e}")))?;
        at_least_one([
            ("users.account_failures", self.account_failures.into()),
            ("users.address_failures", self.address_failures.into()),
            ("users.requests_per_window", self.requests_per_window.into()),
        ])?;
        if self.request_window_ms < 1000 {
            return Err(("users.request_window_ms", "must be at least 1000".into()));
        }
        if self.starting_credits < 0 {
            return Err(("users.starting_credits", "must not be negative".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WechatConfig {
    /// Where `code2Session` is called (`<base_url>/sns/jscode2session`): the official API, a
    /// relay, or a test server. Trusted configuration: private addresses are allowed.
    pub base_url: String,
    /// The default tenant's mini-program; other tenants' come from `easel tenants wechat`.
    pub app_id: Option<String>,
    pub app_secret: Option<Secret>,
    pub timeout_ms: u64,
}

impl Default for WechatConfig {
    fn default() -> Self {
        WechatConfig {
            base_url: "https://api.weixin.qq.com".into(),
            app_id: None,
            app_secret: None,
            timeout_ms: 5000,
        }
    }
}

impl WechatConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        super::wechat::check_base_url(&self.base_url).map_err(|e| ("wechat.base_url", e))
    }
}
