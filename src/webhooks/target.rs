//! Where a webhook may be sent: http(s) URLs whose every resolved address is public (the same
//! rules as input images, [`is_forbidden`]) unless `webhooks.allow_networks` lists it. The
//! dispatcher connects to the address it checked (no DNS rebinding between check and use).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

use crate::jobs::input_image::is_forbidden;

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

#[derive(Debug, Clone)]
pub struct TargetGuard {
    allow: Vec<IpNet>,
}

impl TargetGuard {
    pub fn new(allow_networks: &[String]) -> Result<TargetGuard, String> {
        let allow = allow_networks
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("webhooks.allow_networks: '{n}' is not a network"))
            })
            .collect::<Result<_, _>>()?;
        Ok(TargetGuard { allow })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        !is_forbidden(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// The checks that need no network: length, scheme, host, and a literal IP host (or
    /// `localhost`) that is forbidden. Returns the URL normalised, without a fragment.
    pub fn precheck(&self, raw: &str) -> Result<url::Url, TargetError> {
        if raw.len() > MAX_URL_CHARS {
            return Err(refused(format!(
                "the URL is longer than {MAX_URL_CHARS} characters"
            )));
        }
        let mut url =
            url::Url::parse(raw.trim()).map_err(|e| refused(format!("not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused("only http and https URLs can receive webhooks"));
        }
        url.set_fragment(None);
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain("")) => return Err(refused("the URL has no host")),
            Some(url::Host::Domain(d))
                if d.eq_ignore_ascii_case("localhost")
                    || d.to_ascii_lowercase().ends_with(".localhost") =>
            {
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
            Some(url::Host::Domain(_)) => None,
            None => return Err(refused("the URL has no host")),
        };
        if let Some(ip) = literal {
            if !self.allowed(ip) {
                return Err(refused(
                    "the URL points at a private, loopback or link-local address",
                ));
            }
        }
        Ok(url)
    }

    /// Resolves the URL's host; every address must be allowed. Returns the one to connect to.
    pub async fn resolve(&self, url: &url::Url) -> Result<SocketAddr, TargetError> {
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| TargetError {
                message: format!("cannot resolve the host: {e}"),
                retryable: true,
            })?
            .collect();
        let Some(first) = addrs.first().copied() else {
            return Err(TargetError {
                message: "the host has no address".into(),
                retryable: true,
            });
        };
        // A name with one public and one private address is refused as a whole, so which
        // address gets used cannot be steered.
        if addrs.iter().any(|a| !self.allowed(a.ip())) {
            return Err(refused(
                "the URL's host resolves to a private, loopback or link-local address",
            ));
        }
        Ok(first)
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
