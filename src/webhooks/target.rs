//! Where a webhook may be sent: an http(s) URL of at most [`MAX_URL_CHARS`] that the network
//! guard ([`NetGuard`], the same rule as input images) lets through, with
//! `webhooks.allow_networks` as its allow-list. The dispatcher connects only to the address the
//! guard checked ([`crate::base::netguard::pinned_client`]: no DNS rebinding between check and
//! use).

use std::net::SocketAddr;

use crate::base::netguard::{NetGuard, Refusal};

pub const MAX_URL_CHARS: usize = 2048;

/// Why a target cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    pub message: String,
    /// Worth another attempt (DNS failure), as opposed to a forbidden or malformed target.
    pub retryable: bool,
}

fn refused(message: impl Into<String>) -> TargetError {
    TargetError {
        message: message.into(),
        retryable: false,
    }
}

/// The network guard with `webhooks.allow_networks`, and the webhook's own URL rules.
#[derive(Debug, Clone)]
pub struct TargetGuard {
    guard: NetGuard,
}

impl TargetGuard {
    pub fn new(allow_networks: &[String]) -> Result<TargetGuard, String> {
        let guard = NetGuard::new("webhooks.allow_networks", allow_networks)?;
        Ok(TargetGuard { guard })
    }

    /// The checks that need no network: length, then the guard's (scheme, host, a forbidden
    /// literal address or `localhost` name). Returns the URL normalised, without a fragment.
    pub fn precheck(&self, raw: &str) -> Result<url::Url, TargetError> {
        if raw.len() > MAX_URL_CHARS {
            return Err(refused(format!(
                "the URL is longer than {MAX_URL_CHARS} characters"
            )));
        }
        let mut url =
            url::Url::parse(raw.trim()).map_err(|e| refused(format!("not a valid URL: {e}")))?;
        self.guard.precheck(&url).map_err(target_error)?;
        url.set_fragment(None);
        Ok(url)
    }

    /// Resolves the URL's host; every address must be allowed. Returns the one to connect to.
    pub async fn resolve(&self, url: &url::Url) -> Result<SocketAddr, TargetError> {
        self.guard.resolve(url).await.map_err(target_error)
    }
}

/// The guard's refusal in the webhook's words.
fn target_error(refusal: Refusal) -> TargetError {
    match refusal {
        Refusal::NotHttp => refused("only http and https URLs can receive webhooks"),
        other => TargetError {
            retryable: other.is_retryable(),
            message: other.to_string(),
        },
    }
}

/// The URL for display (logs, delivery log): a password in it is replaced by `****`.
pub fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("****"));
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precheck_refuses_what_it_can_see() {
        let strict = TargetGuard::new(&[]).expect("guard");
        for url in [
            "http://127.0.0.1/hook",
            "http://localhost:8080/hook",
            "http://api.localhost/hook",
            "http://[::1]/hook",
            "http://169.254.169.254/latest",
            "http://10.0.0.8/hook",
            "ftp://example.com/hook",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(strict.precheck(url).is_err(), "{url}");
        }
        assert_eq!(
            strict
                .precheck("https://hooks.example.com/in#frag")
                .expect("ok")
                .as_str(),
            "https://hooks.example.com/in"
        );
        let open = TargetGuard::new(&["127.0.0.0/8".into()]).expect("guard");
        assert!(open.precheck("http://127.0.0.1:9/hook").is_ok());
        assert!(TargetGuard::new(&["nonsense".into()]).is_err());
    }

    #[tokio::test]
    async fn resolve_checks_every_address() {
        let strict = TargetGuard::new(&[]).expect("guard");
        let url = url::Url::parse("http://127.0.0.1:9/x").expect("url");
        assert!(!strict.resolve(&url).await.expect_err("refused").retryable);
        let open = TargetGuard::new(&["127.0.0.1/32".into()]).expect("guard");
        assert_eq!(
            open.resolve(&url).await.expect("allowed"),
            "127.0.0.1:9".parse().expect("addr")
        );
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact("https://u:p@example.com/x"),
            "https://u:****@example.com/x"
        );
        assert_eq!(
            redact("https://example.com/x?a=1"),
            "https://example.com/x?a=1"
        );
    }
}
