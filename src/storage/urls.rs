//! Result links: `<public_base_url>/<key>` when a CDN or public bucket fronts the objects,
//! otherwise `<server>/v1/files/<key>?expires=<unix>&sig=<hex>`, an HMAC-SHA256 over the key
//! and expiry that only this deployment can make, checked when the link is used.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct UrlSigner {
    secret: Vec<u8>,
    server_url: String,
    public_base_url: Option<String>,
    ttl_secs: u64,
}

impl UrlSigner {
    pub fn new(
        secret: &[u8],
        server_url: &str,
        public_base_url: Option<&str>,
        ttl_secs: u64,
    ) -> UrlSigner {
        UrlSigner {
            secret: secret.to_vec(),
            server_url: server_url.trim_end_matches('/').to_owned(),
            public_base_url: public_base_url.map(|u| u.trim_end_matches('/').to_owned()),
            ttl_secs,
        }
    }

    fn mac(&self, key: &str, expires: i64) -> Vec<u8> {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("hmac takes any key");
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The URL a client gets for `key`, valid from `now_secs`.
    pub fn url(&self, key: &str, now_secs: i64) -> String {
        if let Some(base) = &self.public_base_url {
            return format!("{base}/{key}");
        }
        // Round the expiry up to the minute so repeated reads give the same URL (cacheable).
        let ttl = i64::try_from(self.ttl_secs).unwrap_or(i64::MAX / 2);
        let expires = (now_secs.saturating_add(ttl) / 60 + 1) * 60;
        let sig = hex::encode(self.mac(key, expires));
        format!(
            "{}/v1/files/{key}?expires={expires}&sig={sig}",
            self.server_url
        )
    }

    /// Whether a presented signature is valid and unexpired.
    pub fn verify(&self, key: &str, expires: i64, sig_hex: &str, now_secs: i64) -> bool {
        if expires < now_secs {
            return false;
        }
        let Ok(sig) = hex::decode(sig_hex) else {
            return false;
        };
        bool::from(self.mac(key, expires).ct_eq(&sig))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> (String, i64, String) {
        let (path, query) = url.split_once('?').expect("query");
        let key = path.split("/v1/files/").nth(1).expect("key").to_owned();
        let mut expires = 0;
        let mut sig = String::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => expires = v.parse().expect("int"),
                Some(("sig", v)) => sig = v.to_owned(),
                _ => {}
            }
        }
        (key, expires, sig)
    }

    #[test]
    fn signed_links_verify_and_expire() {
        let signer = UrlSigner::new(b"secret", "http://localhost:3000/", None, 3600);
        let url = signer.url("t/j/0.png", 1_000_000);
        assert!(url.starts_with("http://localhost:3000/v1/files/t/j/0.png?expires="));
        let (key, expires, sig) = parse(&url);
        assert!(signer.verify(&key, expires, &sig, 1_000_000));
        assert!(!signer.verify(&key, expires, &sig, expires + 1));
        assert!(!signer.verify("t/j/1.png", expires, &sig, 1_000_000));
        assert!(!signer.verify(&key, expires + 60, &sig, 1_000_000));
        let other = UrlSigner::new(b"other", "http://localhost:3000", None, 3600);
        assert!(!other.verify(&key, expires, &sig, 1_000_000));
    }

    #[test]
    fn public_base_url_wins() {
        let signer = UrlSigner::new(b"s", "http://x", Some("https://cdn.example.com/"), 60);
        assert_eq!(signer.url("a/b.png", 0), "https://cdn.example.com/a/b.png");
    }
}
