//! Fetches a job's `inputImageUrl` safely: http(s) only, every resolved address checked
//! against private, loopback, link-local and metadata ranges (unless allow-listed), the
//! connection pinned to the checked address (no DNS rebinding), redirects followed by hand
//! with the same checks, a size limit, a timeout, and the bytes' magic number checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::providers::InputImage;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct InputImageConfig {
    pub max_bytes: u64,
    pub timeout_secs: u64,
    pub max_redirects: u32,
    /// Networks that may be fetched even though they are private (e.g. `10.0.0.0/8`, or
    /// `127.0.0.0/8` in tests).
    pub allow_networks: Vec<String>,
}

impl Default for InputImageConfig {
    fn default() -> Self {
        InputImageConfig {
            max_bytes: 20 * 1024 * 1024,
            timeout_secs: 15,
            max_redirects: 3,
            allow_networks: Vec::new(),
        }
    }
}

/// Why an input image could not be used; `code` becomes the job's `errorCode`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct InputImageError {
    pub code: &'static str,
    pub message: String,
    /// Worth another attempt (timeouts, 5xx), as opposed to a bad URL or file.
    pub retryable: bool,
}

fn final_error(code: &'static str, message: impl Into<String>) -> InputImageError {
    InputImageError {
        code,
        message: message.into(),
        retryable: false,
    }
}

fn retryable_error(code: &'static str, message: impl Into<String>) -> InputImageError {
    InputImageError {
        code,
        message: message.into(),
        retryable: true,
    }
}

/// Addresses no user-supplied URL may reach: loopback, private, link-local (cloud metadata
/// lives at 169.254.169.254), CGNAT, multicast, unspecified, documentation and reserved.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF 192.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b // NAT64 to anything
}

pub struct InputFetcher {
    config: InputImageConfig,
    allow: Vec<IpNet>,
}

impl InputFetcher {
    pub fn new(config: InputImageConfig) -> Result<InputFetcher, String> {
        let allow = config
            .allow_networks
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("inputs.allow_networks: '{n}' is not a network"))
            })
            .collect::<Result<_, _>>()?;
        Ok(InputFetcher { config, allow })
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        !is_forbidden(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// A check that needs no network: scheme, and a literal IP host that is forbidden.
    /// Lets the API refuse such URLs at submit with 400.
    pub fn precheck(&self, raw: &str) -> Result<url::Url, InputImageError> {
        let url = url::Url::parse(raw)
            .map_err(|e| final_error("INPUT_IMAGE_INVALID_URL", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(final_error(
                "INPUT_IMAGE_INVALID_URL",
                "only http and https URLs are fetched",
            ));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
            Some(url::Host::Domain(_)) => None,
            None => {
                return Err(final_error(
                    "INPUT_IMAGE_INVALID_URL",
                    "the URL has no host",
                ))
            }
        };
        if let Some(ip) = literal {
            if !self.allowed(ip) {
                return Err(final_error(
                    "INPUT_IMAGE_FORBIDDEN_ADDRESS",
                    "the URL points at a private, loopback or link-local address",
                ));
            }
        }
        Ok(url)
    }

    /// Resolves the URL's host and returns an address that may be reached.
    async fn resolve(&self, url: &url::Url) -> Result<SocketAddr, InputImageError> {
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| {
                retryable_error(
                    "INPUT_IMAGE_UNREACHABLE",
                    format!("cannot resolve host: {e}"),
                )
            })?
            .collect();
        if addrs.is_empty() {
            return Err(retryable_error(
                "INPUT_IMAGE_UNREACHABLE",
                "the host has no address",
            ));
        }
        // Every address must pass: a name that resolves to one public and one private
        // address is refused, so the choice of address cannot be steered.
        if addrs.iter().any(|a| !self.allowed(a.ip())) {
            return Err(final_error(
                "INPUT_IMAGE_FORBIDDEN_ADDRESS",
                "the URL's host resolves to a private, loopback or link-local address",
            ));
        }
        Ok(addrs[0])
    }

    /// Fetches the image, following at most `max_redirects` redirects, each checked.
    pub async fn fetch(&self, raw: &str) -> Result<InputImage, InputImageError> {
        let mut url = self.precheck(raw)?;
        for _ in 0..=self.config.max_redirects {
            let addr = self.resolve(&url).await?;
            let host = url.host_str().unwrap_or_default().to_owned();
            // One client per hop, pinned to the address we checked.
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(self.config.timeout_secs))
                .resolve(&host, addr)
                .build()
                .map_err(|e| retryable_error("INPUT_IMAGE_UNREACHABLE", e.to_string()))?;
            let response = client.get(url.clone()).send().await.map_err(|e| {
                let what = if e.is_timeout() {
                    "timed out"
                } else {
                    "could not be fetched"
                };
                retryable_error("INPUT_IMAGE_UNREACHABLE", format!("the input image {what}"))
            })?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        final_error("INPUT_IMAGE_FETCH_FAILED", "redirect without Location")
                    })?;
                url = url.join(location).map_err(|_| {
                    final_error("INPUT_IMAGE_FETCH_FAILED", "bad redirect Location")
                })?;
                url = self.precheck(url.as_str())?;
                continue;
            }
            if !status.is_success() {
                let message = format!("the input image URL answered HTTP {}", status.as_u16());
                return Err(if status.is_server_error() || status.as_u16() == 429 {
                    retryable_error("INPUT_IMAGE_FETCH_FAILED", message)
                } else {
                    final_error("INPUT_IMAGE_FETCH_FAILED", message)
                });
            }
            return self.read_image(response).await;
        }
        Err(final_error(
            "INPUT_IMAGE_FETCH_FAILED",
            "too many redirects",
        ))
    }

    async fn read_image(&self, response: reqwest::Response) -> Result<InputImage, InputImageError> {
        let too_big = || {
            final_error(
                "INPUT_IMAGE_TOO_LARGE",
                format!(
                    "the input image is larger than {} bytes",
                    self.config.max_bytes
                ),
            )
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.config.max_bytes)
        {
            return Err(too_big());
        }
        let declared = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        if let Some(ct) = &declared {
            if !ct.starts_with("image/") && ct != "application/octet-stream" {
                return Err(final_error(
                    "INPUT_IMAGE_UNSUPPORTED",
                    format!("the input URL is not an image (Content-Type {ct})"),
                ));
            }
        }
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                retryable_error(
                    "INPUT_IMAGE_UNREACHABLE",
                    "the input image download broke off",
                )
            })?;
            if body.len() as u64 + chunk.len() as u64 > self.config.max_bytes {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        let bytes: Bytes = body.freeze();
        let mime = sniff(&bytes).ok_or_else(|| {
            final_error(
                "INPUT_IMAGE_UNSUPPORTED",
                "the input is not a PNG, JPEG, WebP or GIF image",
            )
        })?;
        Ok(InputImage {
            bytes,
            mime: mime.to_owned(),
        })
    }
}

/// The image type by its magic number; the Content-Type header is not trusted.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "142.250.74.46", "2606:4700::1111"] {
            assert!(!is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn precheck_refuses_literal_private_hosts_unless_allowed() {
        let strict = InputFetcher::new(InputImageConfig::default()).expect("fetcher");
        for url in [
            "http://127.0.0.1/x.png",
            "http://localhost:8080/a",
            "http://[::1]/a",
            "http://169.254.169.254/latest",
        ] {
            let err = strict.precheck(url).expect_err(url);
            assert_eq!(err.code, "INPUT_IMAGE_FORBIDDEN_ADDRESS", "{url}");
        }
        assert_eq!(
            strict.precheck("ftp://x/y").expect_err("ftp").code,
            "INPUT_IMAGE_INVALID_URL"
        );
        assert!(strict.precheck("https://example.com/cat.png").is_ok());
        let open = InputFetcher::new(InputImageConfig {
            allow_networks: vec!["127.0.0.0/8".into()],
            ..InputImageConfig::default()
        })
        .expect("fetcher");
        assert!(open.precheck("http://127.0.0.1:9/x.png").is_ok());
        assert!(InputFetcher::new(InputImageConfig {
            allow_networks: vec!["nonsense".into()],
            ..InputImageConfig::default()
        })
        .is_err());
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"<html>"), None);
    }
}
