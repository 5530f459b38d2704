//! The network guard: where Easel may send a request whose address a client supplied (an
//! input image URL, a webhook receiver, and the notify hooks and callbacks still to come).
//!
//! The rule: http(s) only, and no loopback, private, link-local (cloud metadata lives at
//! 169.254.169.254), CGNAT, multicast, unspecified, documentation or reserved address, nor a
//! `localhost` or `*.localhost` name, unless the operator's allow-list names the network.
//! Every address a name resolves to must pass (a name with one public and one private address
//! is refused, so which one gets used cannot be steered), and the request then connects only
//! to the address that was checked ([`pinned_client`]): a DNS answer that changes between the
//! check and the connection (rebinding) reaches nothing.
//!
//! Owns: that rule and its allow-list. Must not touch: anything else in the crate. Upstream
//! endpoints an operator configures (`--endpoint`, base URLs) are trusted configuration and do
//! not come through here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Why a client-supplied address is refused or cannot be reached yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("only http and https URLs are allowed")]
    NotHttp,
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL points at a private, loopback or link-local address")]
    ForbiddenHost,
    #[error("the URL's host resolves to a private, loopback or link-local address")]
    ForbiddenAddress,
    #[error("cannot resolve the host: {0}")]
    Unresolved(String),
    #[error("the host has no address")]
    NoAddress,
}

impl Refusal {
    /// Worth another try later (the name may resolve next time), as opposed to a refusal.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Refusal::Unresolved(_) | Refusal::NoAddress)
    }
}

/// The rule with the operator's allow-list.
#[derive(Debug, Clone)]
pub struct NetGuard {
    allow: Vec<IpNet>,
}

impl NetGuard {
    /// `allow_networks` are CIDR networks or single addresses; a bad one is refused with the
    /// name of the setting it came from (`allow_key`, e.g. `webhooks.allow_networks`).
    pub fn new(allow_key: &str, allow_networks: &[String]) -> Result<NetGuard, String> {
        let allow = allow_networks
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{allow_key}: '{n}' is not a network"))
            })
            .collect::<Result<_, _>>()?;
        Ok(NetGuard { allow })
    }

    /// Public, or in a network the operator allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        !is_forbidden(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// The checks that need no network: the scheme, a host, and a host that is a forbidden
    /// literal address or a `localhost` name. Lets an API refuse such URLs when they are given.
    pub fn precheck(&self, url: &url::Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::NotHttp);
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain("")) | None => return Err(Refusal::NoHost),
            Some(url::Host::Domain(name)) if is_localhost_name(name) => {
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
            }
            Some(url::Host::Domain(_)) => None,
        };
        match literal {
            Some(ip) if !self.allows(ip) => Err(Refusal::ForbiddenHost),
            _ => Ok(()),
        }
    }

    /// Resolves the URL's host; every address must be allowed. Returns the one to connect to
    /// (through [`pinned_client`]).
    pub async fn resolve(&self, url: &url::Url) -> Result<SocketAddr, Refusal> {
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Refusal::Unresolved(e.to_string()))?
            .collect();
        let Some(first) = addrs.first().copied() else {
            return Err(Refusal::NoAddress);
        };
        if addrs.iter().any(|a| !self.allows(a.ip())) {
            return Err(Refusal::ForbiddenAddress);
        }
        Ok(first)
    }
}

/// An HTTP client builder that reaches `host` only at `addr` (the address the guard checked):
/// no environment proxy (which would resolve the name again), no redirects (each hop must be
/// checked by the caller).
pub fn pinned_client(host: &str, addr: SocketAddr) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve(host, addr)
}

/// `localhost`, `*.localhost` (RFC 6761: always loopback), with or without the final dot.
fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Addresses no client-supplied URL may reach: loopback, private, link-local, CGNAT,
/// multicast, unspecified, documentation, NAT64 and reserved ranges, also when written as an
/// IPv4-mapped IPv6 address.
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
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF 192.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let [first, second, ..] = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first == 0x2001 && second == 0x0db8) // documentation
        || (first == 0x0064 && second == 0xff9b) // NAT64 to anything
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> url::Url {
        url::Url::parse(raw).expect("url")
    }

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
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::",
            "64:ff9b::a00:1",
        ] {
            assert!(is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "142.250.74.46", "2606:4700::1111"] {
            assert!(!is_forbidden(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn precheck_refuses_what_it_can_see() {
        let strict = NetGuard::new("inputs.allow_networks", &[]).expect("guard");
        for raw in [
            "http://127.0.0.1/x",
            "http://localhost:8080/x",
            "http://LOCALHOST./x",
            "http://api.localhost/x",
            "http://[::1]/x",
            "http://[::ffff:127.0.0.1]/x",
            "http://169.254.169.254/latest",
            "http://0.0.0.0/x",
            "http://2130706433/x",
        ] {
            assert_eq!(
                strict.precheck(&url(raw)),
                Err(Refusal::ForbiddenHost),
                "{raw}"
            );
        }
        assert_eq!(strict.precheck(&url("ftp://x/y")), Err(Refusal::NotHttp));
        assert_eq!(
            strict.precheck(&url("file:///etc/passwd")),
            Err(Refusal::NotHttp)
        );
        assert!(strict.precheck(&url("https://example.com/cat.png")).is_ok());
        assert!(strict
            .precheck(&url("https://localhost.example.com/"))
            .is_ok());
    }

    #[test]
    fn the_allow_list_opens_only_its_networks() {
        let open =
            NetGuard::new("webhooks.allow_networks", &["127.0.0.0/8".into()]).expect("guard");
        assert!(open.precheck(&url("http://127.0.0.1:9/x")).is_ok());
        assert!(open.precheck(&url("http://localhost:9/x")).is_ok());
        assert_eq!(
            open.precheck(&url("http://10.0.0.1/x")),
            Err(Refusal::ForbiddenHost)
        );
        let single = NetGuard::new("k", &["10.0.0.7".into()]).expect("one address");
        assert!(single.allows("10.0.0.7".parse().expect("ip")));
        assert!(!single.allows("10.0.0.8".parse().expect("ip")));
        let err = NetGuard::new("webhooks.allow_networks", &["nonsense".into()])
            .expect_err("not a network");
        assert_eq!(err, "webhooks.allow_networks: 'nonsense' is not a network");
    }

    #[tokio::test]
    async fn resolve_checks_every_address() {
        let loopback = url("http://127.0.0.1:9/x");
        let strict = NetGuard::new("k", &[]).expect("guard");
        let refused = strict.resolve(&loopback).await.expect_err("refused");
        assert_eq!(refused, Refusal::ForbiddenAddress);
        assert!(!refused.is_retryable());
        let open = NetGuard::new("k", &["127.0.0.1/32".into()]).expect("guard");
        assert_eq!(
            open.resolve(&loopback).await.expect("allowed"),
            "127.0.0.1:9".parse().expect("addr")
        );
    }
}
