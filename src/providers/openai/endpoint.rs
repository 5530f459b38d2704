//! Where one key's requests go and how they are signed: the key's base URL (OpenAI, an Azure
//! OpenAI deployment, or any compatible relay) and the per-key headers.
//!
//! A key's base URL is the API root with its version, as the SDK's `base_url`
//! (`https://api.openai.com/v1`, `http://relay:3000/v1`), or an Azure deployment with its
//! `api-version` query (`https://res.openai.azure.com/openai/deployments/img?api-version=2025-04-01-preview`);
//! routes are joined under its path and the query is kept. Settings that belong to one key ride
//! in the URL's fragment, which HTTP never sends: `#organization=org-1&project=proj-2` adds the
//! `OpenAI-Organization` and `OpenAI-Project` headers, and `#auth=api-key` signs with Azure's
//! `api-key` header instead of `Authorization: Bearer` (the default for `*.openai.azure.com`
//! and `*.cognitiveservices.azure.com` hosts).

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};

/// One key's endpoint, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Without the fragment, path without a trailing `/`.
    base: url::Url,
    pub organization: Option<String>,
    pub project: Option<String>,
    /// Sign with `api-key` (Azure) rather than a bearer token.
    pub api_key_header: bool,
}

impl Endpoint {
    /// The key's own base URL when it has one, else `default`.
    pub fn parse(own: &str, default: &str) -> Result<Endpoint, String> {
        let raw = match own.trim() {
            "" => default.trim(),
            own => own,
        };
        let mut base = url::Url::parse(raw).map_err(|e| format!("the base URL is invalid: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err("the base URL is not http(s)".into());
        }
        let azure_host = base.host_str().is_some_and(|h| {
            h.ends_with(".openai.azure.com") || h.ends_with(".cognitiveservices.azure.com")
        });
        let mut endpoint = Endpoint {
            base: base.clone(),
            organization: None,
            project: None,
            api_key_header: azure_host,
        };
        if let Some(fragment) = base.fragment() {
            for (name, value) in url::form_urlencoded::parse(fragment.as_bytes()) {
                let value = Some(value.into_owned()).filter(|v| !v.is_empty());
                match name.as_ref() {
                    "organization" => endpoint.organization = value,
                    "project" => endpoint.project = value,
                    "auth" => endpoint.api_key_header = value.as_deref() == Some("api-key"),
                    other => return Err(format!("unknown base URL setting '#{other}'")),
                }
            }
        }
        base.set_fragment(None);
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&path);
        endpoint.base = base;
        Ok(endpoint)
    }

    /// The URL of `route` (`images/generations`, `models`) under this base, query kept.
    pub fn url(&self, route: &str) -> String {
        let mut url = self.base.clone();
        let path = format!("{}/{route}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.to_string()
    }

    /// Every header that authenticates a request with `secret`, marked sensitive.
    pub fn auth_headers(&self, secret: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let value = |text: &str| {
            HeaderValue::from_str(text)
                .map_err(|_| "a key setting holds characters a header cannot carry".to_owned())
        };
        let mut headers = Vec::with_capacity(3);
        let mut auth = if self.api_key_header {
            value(secret)?
        } else {
            value(&format!("Bearer {secret}"))?
        };
        auth.set_sensitive(true);
        let name = if self.api_key_header {
            HeaderName::from_static("api-key")
        } else {
            AUTHORIZATION
        };
        headers.push((name, auth));
        if let Some(org) = &self.organization {
            headers.push((HeaderName::from_static("openai-organization"), value(org)?));
        }
        if let Some(project) = &self.project {
            headers.push((HeaderName::from_static("openai-project"), value(project)?));
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_and_relays_join_under_the_version() {
        let e = Endpoint::parse("", "https://api.openai.com/v1").expect("ok");
        assert_eq!(
            e.url("images/generations"),
            "https://api.openai.com/v1/images/generations"
        );
        let e = Endpoint::parse("http://127.0.0.1:9/relay/v1/", "https://x/v1").expect("ok");
        assert_eq!(e.url("models"), "http://127.0.0.1:9/relay/v1/models");
        let headers = e.auth_headers("sk-1").expect("headers");
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, AUTHORIZATION);
        assert_eq!(headers[0].1, "Bearer sk-1");
        assert!(headers[0].1.is_sensitive());
    }

    #[test]
    fn fragment_settings_become_headers_and_are_never_sent() {
        let e = Endpoint::parse(
            "https://api.openai.com/v1#organization=org-1&project=proj-2",
            "",
        )
        .expect("ok");
        assert_eq!(
            e.url("images/edits"),
            "https://api.openai.com/v1/images/edits"
        );
        let headers = e.auth_headers("sk").expect("headers");
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["authorization", "openai-organization", "openai-project"]
        );
        assert_eq!(headers[2].1, "proj-2");
        assert!(Endpoint::parse("https://x/v1#colour=red", "").is_err());
        assert!(Endpoint::parse("ftp://x/v1", "").is_err());
    }

    #[test]
    fn azure_deployments_keep_the_api_version_and_use_api_key() {
        let e = Endpoint::parse(
            "https://res.openai.azure.com/openai/deployments/img?api-version=2025-04-01-preview",
            "",
        )
        .expect("ok");
        assert_eq!(
            e.url("images/generations"),
            "https://res.openai.azure.com/openai/deployments/img/images/generations?api-version=2025-04-01-preview"
        );
        let headers = e.auth_headers("azkey").expect("headers");
        assert_eq!(headers[0].0.as_str(), "api-key");
        assert_eq!(headers[0].1, "azkey");
        let relay = Endpoint::parse("http://relay/v1#auth=api-key", "").expect("ok");
        assert!(relay.api_key_header);
    }
}
