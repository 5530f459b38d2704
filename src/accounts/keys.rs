//! Tenant API keys: `img_` + 32 base62 characters (190 random bits), stored only as SHA-256.
//!
//! A fast hash is right here: the key is random and long, so there is nothing to brute-force
//! and a slow KDF would only cost every request.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::NewApiKey;

pub const KEY_PREFIX: &str = "img_";
const KEY_CHARS: usize = 32;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly made key: the plaintext (shown once) and what the store keeps.
pub struct IssuedKey {
    pub plaintext: String,
    pub record: NewApiKey,
}

pub fn hash_key(plaintext: &str) -> [u8; 32] {
    Sha256::digest(plaintext.as_bytes()).into()
}

/// Makes a new random key.
pub fn issue() -> IssuedKey {
    let mut rng = rand::thread_rng();
    let body: String = (0..KEY_CHARS)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    from_plaintext(format!("{KEY_PREFIX}{body}"))
}

/// Wraps a key chosen by the operator (`TEST_API_KEY`).
pub fn from_plaintext(plaintext: String) -> IssuedKey {
    let record = NewApiKey {
        id: format!("key_{}", ulid::Ulid::new().to_string().to_lowercase()),
        key_hash: hash_key(&plaintext),
        prefix: plaintext.chars().take(8).collect(),
    };
    IssuedKey { plaintext, record }
}

/// The header that carries a tenant key the SaaS origin's way (`X-API-Key: <key>`), accepted
/// wherever `Authorization: Bearer <key>` is.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Pulls the key out of an `X-API-Key` header value: the value itself, trimmed, not empty.
pub fn api_key_header(value: &str) -> Option<&str> {
    let key = value.trim();
    (!key.is_empty() && !key.contains(char::is_whitespace)).then_some(key)
}

/// Pulls the key out of an `Authorization: Bearer ...` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_are_long_random_and_hashed() {
        let a = issue();
        let b = issue();
        assert!(a.plaintext.starts_with("img_"));
        assert_eq!(a.plaintext.len(), 4 + KEY_CHARS);
        assert_ne!(a.plaintext, b.plaintext);
        assert_eq!(a.record.key_hash, hash_key(&a.plaintext));
        assert_eq!(a.record.prefix, &a.plaintext[..8]);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer img_x"), Some("img_x"));
        assert_eq!(bearer("bearer   img_x "), Some("img_x"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("img_x"), None);
    }

    #[test]
    fn api_key_header_parsing() {
        assert_eq!(api_key_header("img_x"), Some("img_x"));
        assert_eq!(api_key_header("  img_x "), Some("img_x"));
        assert_eq!(api_key_header(""), None);
        assert_eq!(api_key_header("   "), None);
        assert_eq!(api_key_header("Bearer img_x"), None);
    }
}
