//! The OpenAI-compatible images API, so the official OpenAI SDKs (and every tool built on
//! them) use Easel unchanged apart from their base URL (`http://easel/v1`).
//!
//! Owns: the routes `POST /v1/images/generations`, `/v1/images/edits`, `/v1/images/variations`
//! ([`images`]) and `GET /v1/models` ([`models`]); reading their bodies ([`request`]); waiting
//! for the job underneath ([`wait`]); OpenAI's error shape ([`error`]); the `[openai_api]`
//! section ([`config`]: the model routing table, the wait bound). Must not: talk to an upstream
//! or the store's SQL; each call is an Easel job submitted through the job API's own path.
//!
//! Differences from OpenAI, on purpose: `url` answers are Easel's signed links (they last
//! `storage.url_ttl_secs`, not OpenAI's hour); GPT image models may be asked for `url` too;
//! `Idempotency-Key` is honoured; `Prefer: respond-async` answers 202 with the job id; a call
//! still waiting after `openai_api.wait_secs` answers 504 with `x-should-retry: false` and
//! the job id (the job runs on); streaming (`stream: true`) is refused.

mod error;
mod images;
mod models;
mod request;
mod wait;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;

pub use crate::config::openai_api::{ModelRoute, OpenAiApiConfig};
pub use error::OpenAiError;

use super::extract::AuthTenant;
use crate::app::App;
use crate::store::Tenant;

/// The facade's routes, merged into the API router.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/v1/images/generations", post(images::generations))
        .route("/v1/images/edits", post(images::edits))
        .route("/v1/images/variations", post(images::variations))
        .route("/v1/models", get(models::list))
}

/// The tenant behind `Authorization: Bearer <tenant key>`, refused in OpenAI's shape.
pub struct OpenAiTenant(pub Tenant);

impl FromRequestParts<App> for OpenAiTenant {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let AuthTenant(tenant) = AuthTenant::from_request_parts(parts, app).await?;
        Ok(OpenAiTenant(tenant))
    }
}
