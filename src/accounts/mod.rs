//! Accounts: tenants' API keys (made, hashed, checked), the auth cache, and the sealing of
//! upstream provider keys at rest.
//!
//! Owns: key formats, hashing, constant-time checks and encryption. Must not touch: HTTP
//! (the API layer calls [`auth::Authenticator`]) or job state.

pub mod auth;
pub mod keys;
