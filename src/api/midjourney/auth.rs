//! The origin's app-key auth: `Authorization: Bearer <app_key>` checked as FastAPI's
//! `HTTPBearer` and the origin's second exact check do, each refusal with its own
//! `403 {"detail": ...}`; the key is a Midjourney app key of the ledger ([`crate::ledger::mj`]).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::MjError;
use crate::app::App;
use crate::base::ledger::MjAppKey;
use crate::ledger::mj::{self, MjError as KeyError};

/// The caller's app key.
pub struct AppKey(pub MjAppKey);

impl AppKey {
    /// The API key id behind the app key (its account is `key:<id>`).
    pub fn api_key_id(&self) -> &str {
        self.0
            .account_id
            .strip_prefix("key:")
            .unwrap_or(&self.0.account_id)
    }
}

/// The app key of an `Authorization` value, or the origin's refusal.
pub fn bearer(value: Option<&str>) -> Result<&str, MjError> {
    let value = value.map(str::trim).unwrap_or("");
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    if value.is_empty() || scheme.is_empty() || credentials.is_empty() {
        return Err(MjError::forbidden("Not authenticated"));
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(MjError::forbidden("Invalid authentication credentials"));
    }
    if scheme != "Bearer" {
        return Err(MjError::forbidden("Invalid authentication scheme."));
    }
    Ok(credentials)
}

impl FromRequestParts<App> for AppKey {
    type Rejection = MjError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<AppKey, MjError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let key = bearer(header)?;
        match mj::by_key(app.store.as_ref(), key).await {
            Ok(found) => Ok(AppKey(found)),
            Err(KeyError::UnknownKey) => Err(MjError::forbidden("Invalid token or expired token.")),
            Err(e) => {
                tracing::error!(error = %e, "app key look-up failed");
                Err(MjError {
                    status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    body: serde_json::json!({"detail": "Failed to get user information."}),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(r: Result<&str, MjError>) -> String {
        r.expect_err("refused").body["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn refusals_are_the_origins() {
        assert_eq!(bearer(Some("Bearer abc")).ok(), Some("abc"));
        assert_eq!(detail(bearer(None)), "Not authenticated");
        assert_eq!(detail(bearer(Some(""))), "Not authenticated");
        assert_eq!(detail(bearer(Some("Bearer"))), "Not authenticated");
        assert_eq!(
            detail(bearer(Some("Basic abc"))),
            "Invalid authentication credentials"
        );
        assert_eq!(
            detail(bearer(Some("bearer abc"))),
            "Invalid authentication scheme."
        );
    }
}
