//! Webhook secrets and the two signatures every delivery carries.
//!
//! Secrets follow the Standard Webhooks format: `whsec_` + base64 (standard alphabet, padded)
//! of 32 random bytes. They are shown once, stored sealed, and opened only to sign.
//!
//! - **Standard Webhooks** (`webhook-signature`): `v1,` + base64 of HMAC-SHA256 over
//!   `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the base64-decoded bytes after
//!   the `whsec_` prefix. Several space-separated signatures during a rotation overlap, newest
//!   first; a receiver accepts the request if any one verifies.
//! - **Origin** (`X-Signature`): `sha256=` + lowercase hex of HMAC-SHA256 over the raw body,
//!   keyed with the secret string exactly as shown to the tenant (its UTF-8 bytes, `whsec_`
//!   prefix included): that is what an origin receiver does with "the tenant's webhook secret"
//!   (`createHmac('sha256', secret)`), so such receivers keep working by pasting the secret.
//!   Only the newest secret signs it (the header has room for one signature).

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::base::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

pub const SECRET_PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;

/// A new random secret, `whsec_...`.
pub fn generate_secret() -> Secret {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::new(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The HMAC key of a `whsec_` secret for Standard Webhooks: the decoded bytes after the
/// prefix. `None` if the secret is not in that format.
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    (!bytes.is_empty()).then_some(bytes)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length; new_from_slice cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `X-Signature: sha256=<hex>`, keyed with the secret string as given.
pub fn origin_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &[body])))
}

/// One Standard Webhooks signature, `v1,<base64>`.
pub fn standard_signature(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac(key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

/// The signing headers of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedHeaders {
    pub x_signature: String,
    pub webhook_signature: String,
}

/// Signs `body` with every live secret (newest first): all of them in `webhook-signature`,
/// the newest in `X-Signature`. `None` when there is no usable secret.
pub fn sign(
    secrets: &[Secret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Option<SignedHeaders> {
    let newest = secrets.first()?;
    let signatures: Vec<String> = secrets
        .iter()
        .filter_map(|s| standard_key(s.expose()))
        .map(|key| standard_signature(&key, msg_id, timestamp, body))
        .collect();
    if signatures.is_empty() {
        return None;
    }
    Some(SignedHeaders {
        x_signature: origin_signature(newest.expose(), body),
        webhook_signature: signatures.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn standard_webhooks_reference_vector() {
        let key = standard_key(SECRET).expect("key");
        assert_eq!(
            standard_signature(&key, MSG_ID, TIMESTAMP, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn origin_signature_is_hex_hmac_of_the_body_keyed_by_the_secret_string() {
        assert_eq!(
            origin_signature(SECRET, BODY),
            "sha256=80ec8a89ce3cd22133a1066caecb4d04fea7467657c8514d717ec42c38a5c94c"
        );
    }

    #[test]
    fn generated_secrets_have_the_standard_format() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.expose().starts_with("whsec_"));
        assert_eq!(standard_key(a.expose()).expect("decodes").len(), 32);
        assert_eq!(standard_key("whsec_!!"), None);
        assert_eq!(standard_key("nope"), None);
    }

    #[test]
    fn rotation_signs_with_every_live_secret_newest_first() {
        let new = generate_secret();
        let old = Secret::new(SECRET);
        let signed = sign(&[new.clone(), old], MSG_ID, TIMESTAMP, BODY).expect("signed");
        let parts: Vec<&str> = signed.webhook_signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(signed.x_signature, origin_signature(new.expose(), BODY));
        assert_eq!(sign(&[], MSG_ID, TIMESTAMP, BODY), None);
    }
}
