//! Accounts: tenants' API keys (made, hashed, checked), the auth cache, and end users (sign-up,
//! sign-in by password or WeChat, sessions, tokens, brute-force limits, the tenant a consumer
//! request belongs to).
//!
//! Owns: key and token formats, hashing, constant-time checks. Must not touch: HTTP (the API
//! layer calls [`auth::Authenticator`] and [`users::Accounts`]) or job state. The `[auth]`,
//! `[users]` and `[wechat]` configuration sections live here ([`AuthConfig`], [`config`]).

pub mod auth;
pub mod config;
pub mod guard;
pub mod keys;
pub mod passwords;
pub mod tenancy;
pub mod tokens;
pub mod users;
pub mod wechat;

use crate::base::secret::Secret;

/// `[auth]` in the configuration: the tokens that open the default tenant, the admin API and
/// the metrics.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Origin name: `TEST_API_KEY`. Used as the default tenant's key on first start.
    pub test_api_key: Option<Secret>,
    /// Bearer token for the admin API (`/admin/v1/...`); the admin API is off without it.
    pub admin_token: Option<Secret>,
    /// Bearer token `GET /metrics` asks for; without it the metrics are open (they carry no
    /// tenant, prompt or secret, only counts, route templates and upstream key ids).
    pub metrics_token: Option<Secret>,
}
