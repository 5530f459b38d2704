//! Accounts: tenants' API keys (made, hashed, checked), the auth cache, and the sealing of
//! upstream provider keys at rest.
//!
//! Owns: key formats, hashing, constant-time checks and encryption. Must not touch: HTTP
//! (the API layer calls [`auth::Authenticator`]) or job state. The `[auth]` configuration
//! section ([`AuthConfig`]) lives here.

pub mod auth;
pub mod keys;

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
