//! Fetches a job's `inputImageUrl` safely: every hop checked by the network guard
//! ([`NetGuard`]: http(s) only, no private, loopback, link-local or metadata address unless
//! `inputs.allow_networks` lists it, the connection pinned to the checked address), redirects
//! followed by hand with the same checks, a size limit, a timeout, and the bytes' magic number
//! checked. Owns the `[inputs]` configuration section ([`InputImageConfig`]).
//! [`job_input`] picks a job's input: one of its tenant's uploads, or the fetched URL.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::base::image::ImageOwner;
use crate::base::job::Job;
use crate::base::job_errors;
use crate::base::netguard::{pinned_client, NetGuard, Refusal};
use crate::base::settings::Invalid;
use crate::providers::InputImage;
use crate::uploads::{Library, UploadError};

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

/// The guard's refusal as the job's error.
fn refused(refusal: Refusal) -> InputImageError {
    match refusal {
        Refusal::NotHttp => final_error(
            job_errors::INPUT_IMAGE_INVALID_URL,
            "only http and https URLs are fetched",
        ),
        Refusal::NoHost => final_error(job_errors::INPUT_IMAGE_INVALID_URL, refusal.to_string()),
        Refusal::ForbiddenHost | Refusal::ForbiddenAddress => final_error(
            job_errors::INPUT_IMAGE_FORBIDDEN_ADDRESS,
            refusal.to_string(),
        ),
        Refusal::Unresolved(_) | Refusal::NoAddress => {
            retryable_error(job_errors::INPUT_IMAGE_UNREACHABLE, refusal.to_string())
        }
    }
}

pub struct InputFetcher {
    config: InputImageConfig,
    guard: NetGuard,
}

impl InputImageConfig {
    /// The first problem found, with the key it concerns.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.guard().map(|_| ())
    }

    fn guard(&self) -> Result<NetGuard, Invalid> {
        const KEY: &str = "inputs.allow_networks";
        NetGuard::new(KEY, &self.allow_networks).map_err(|problem| (KEY, problem))
    }
}

impl InputFetcher {
    pub fn new(config: InputImageConfig) -> Result<InputFetcher, String> {
        let guard = config.guard().map_err(|(_, problem)| problem)?;
        Ok(InputFetcher { config, guard })
    }

    /// A check that needs no network (scheme, and a host that is a forbidden literal address
    /// or a `localhost` name). Lets the API refuse such URLs at submit with 400.
    pub fn precheck(&self, raw: &str) -> Result<url::Url, InputImageError> {
        let url = url::Url::parse(raw).map_err(|e| {
            final_error(
                job_errors::INPUT_IMAGE_INVALID_URL,
                format!("not a URL: {e}"),
            )
        })?;
        self.guard.precheck(&url).map_err(refused)?;
        Ok(url)
    }

    /// Fetches the image, following at most `max_redirects` redirects, each checked.
    pub async fn fetch(&self, raw: &str) -> Result<InputImage, InputImageError> {
        let mut url = self.precheck(raw)?;
        for _ in 0..=self.config.max_redirects {
            let addr = self.guard.resolve(&url).await.map_err(refused)?;
            let host = url.host_str().unwrap_or_default();
            // One client per hop, pinned to the address we checked.
            let client = pinned_client(host, addr)
                .timeout(Duration::from_secs(self.config.timeout_secs))
                .build()
                .map_err(|e| retryable_error(job_errors::INPUT_IMAGE_UNREACHABLE, e.to_string()))?;
            let response = client.get(url.clone()).send().await.map_err(|e| {
                let what = if e.is_timeout() {
                    "timed out"
                } else {
                    "could not be fetched"
                };
                retryable_error(
                    job_errors::INPUT_IMAGE_UNREACHABLE,
                    format!("the input image {what}"),
                )
            })?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        final_error(
                            job_errors::INPUT_IMAGE_FETCH_FAILED,
                            "redirect without Location",
                        )
                    })?;
                url = url.join(location).map_err(|_| {
                    final_error(
                        job_errors::INPUT_IMAGE_FETCH_FAILED,
                        "bad redirect Location",
                    )
                })?;
                url = self.precheck(url.as_str())?;
                continue;
            }
            if !status.is_success() {
                let message = format!("the input image URL answered HTTP {}", status.as_u16());
                return Err(if status.is_server_error() || status.as_u16() == 429 {
                    retryable_error(job_errors::INPUT_IMAGE_FETCH_FAILED, message)
                } else {
                    final_error(job_errors::INPUT_IMAGE_FETCH_FAILED, message)
                });
            }
            return self.read_image(response).await;
        }
        Err(final_error(
            job_errors::INPUT_IMAGE_FETCH_FAILED,
            "too many redirects",
        ))
    }

    async fn read_image(&self, response: reqwest::Response) -> Result<InputImage, InputImageError> {
        let too_big = || {
            final_error(
                job_errors::INPUT_IMAGE_TOO_LARGE,
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
                    job_errors::INPUT_IMAGE_UNSUPPORTED,
                    format!("the input URL is not an image (Content-Type {ct})"),
                ));
            }
        }
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                retryable_error(
                    job_errors::INPUT_IMAGE_UNREACHABLE,
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
                job_errors::INPUT_IMAGE_UNSUPPORTED,
                "the input is not a PNG, JPEG, WebP or GIF image",
            )
        })?;
        Ok(InputImage {
            bytes,
            mime: mime.to_owned(),
        })
    }
}

/// The job's input image: its upload (`inputImageIds`, read from the image library) or its
/// `inputImageUrl` (fetched); `None` for a job without one.
pub async fn job_input(
    images: &Library,
    fetcher: &InputFetcher,
    job: &Job,
) -> Result<Option<InputImage>, InputImageError> {
    if let Some(url) = &job.input_image_url {
        return fetcher.fetch(url).await.map(Some);
    }
    let Some(id) = job.params.input_image_ids.first() else {
        return Ok(None);
    };
    match images.load(&ImageOwner::tenant(&job.tenant_id), id).await {
        Ok(loaded) => Ok(Some(InputImage {
            bytes: loaded.bytes,
            mime: loaded.mime,
        })),
        Err(UploadError::Unavailable(_)) => Err(retryable_error(
            job_errors::INPUT_IMAGE_UNREACHABLE,
            "image storage is unavailable",
        )),
        Err(_) => Err(final_error(
            job_errors::INPUT_IMAGE_NOT_FOUND,
            format!("the input image '{id}' no longer exists"),
        )),
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
