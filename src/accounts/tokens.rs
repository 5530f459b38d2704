//! End-user tokens: HS256 access JWTs that name their session, and opaque refresh tokens
//! stored only as SHA-256.
//!
//! Only HS256 is accepted: a token whose header says `none`, `HS512`, `RS256` or anything
//! else is refused before its signature is looked at.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::base::clock::Millis;
use crate::base::user::{EndUser, NewRefreshToken};

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user's id.
    pub sub: String,
    /// The user's tenant.
    pub tid: String,
    /// The session; revoked sessions end their tokens.
    pub sid: String,
    /// The origins' payload field (`userId`), for clients that read it.
    #[serde(rename = "userId")]
    pub user_id: String,
    pub role: String,
    /// Unique per token, so two tokens issued in the same second differ.
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> TokenKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// An access token for `user` in `session_id`, issued at `now` (ms).
    pub fn issue(&self, user: &EndUser, session_id: &str, now: Millis) -> String {
        let iat = now / 1000;
        let claims = Claims {
            sub: user.id.clone(),
            tid: user.tenant_id.clone(),
            sid: session_id.to_owned(),
            user_id: user.id.clone(),
            role: user.role.as_str().to_owned(),
            jti: hex::encode(rand::random::<[u8; 12]>()),
            iat,
            exp: iat + self.access_ttl.as_secs() as i64,
        };
        // HMAC signing of a serialisable struct cannot fail.
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// The claims of a genuine, unexpired HS256 token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    /// A new refresh token: the value for the client (shown once) and what the store keeps.
    pub fn new_refresh(&self, now: Millis) -> (String, NewRefreshToken) {
        let bytes: [u8; 32] = rand::random();
        let token = format!(
            "rt_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let record = NewRefreshToken {
            token_hash: refresh_hash(&token),
            expires_at: now + self.refresh_ttl.as_millis() as i64,
        };
        (token, record)
    }
}

pub fn refresh_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random signing secret (for the generated `jwt.key`).
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::user::{Role, UserStatus};

    fn user() -> EndUser {
        EndUser {
            seq: 1,
            id: "usr_1".into(),
            tenant_id: "ten_1".into(),
            email: None,
            username: None,
            password_hash: None,
            wechat_openid: None,
            wechat_unionid: None,
            nickname: None,
            avatar: None,
            role: Role::User,
            status: UserStatus::Active,
            created_at: 0,
            updated_at: 0,
            last_login_at: None,
        }
    }

    fn keys() -> TokenKeys {
        TokenKeys::new(b"k", Duration::from_secs(60), Duration::from_secs(600))
    }

    #[test]
    fn round_trip_expiry_and_algorithms() {
        let keys = keys();
        let now = crate::base::clock::now_millis();
        let token = keys.issue(&user(), "ses_1", now);
        let claims = keys.verify(&token).expect("valid");
        assert_eq!(
            (claims.sub.as_str(), claims.sid.as_str()),
            ("usr_1", "ses_1")
        );
        let old = keys.issue(&user(), "ses_1", now - 3_600_000);
        assert_eq!(keys.verify(&old), Err(TokenError::Expired));
        let other = TokenKeys::new(b"other", Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));
        // The same claims under HS512 with the right secret are still refused.
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"k"),
        )
        .expect("encode");
        assert_eq!(keys.verify(&hs512), Err(TokenError::Invalid));
    }
}
