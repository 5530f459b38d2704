//! The `midjourney` provider: Midjourney through a midjourney-proxy (the C# trueai-org and
//! the Java novicezk editions, `contract/midjourney-proxy.md`). Each proxy endpoint is a key
//! in the pool (its URL the key's endpoint, its `mj-api-secret` the key), so concurrency,
//! breaker and priority work as for any upstream.
//!
//! A job is one submit (`/mj/submit/imagine`, `/action` with the parent's customId, or
//! `/change` on the open Java edition, `/describe`, `/blend`) and `fetch` polling until the
//! task ends; submit codes map to outcomes (1, 21, 22: wait for the task; 23 and 9: retry;
//! 24: `CONTENT_BLOCKED`; 3: the key has no account, try another; 4: final). A task still
//! unfinished after `task_timeout_secs` fails. The result image is downloaded before the job
//! succeeds (Discord links expire) and a grid is cut into its four images; the upstream task
//! id, message hash and buttons go into the job's result meta (`upstream`) so U/V/pan/zoom
//! jobs on its images can name it. With `notify_secret`, the proxy's notifyHook calls wake the
//! poll of their task at once ([`hooks`]). The proxy's endpoint and image URLs are trusted
//! configuration, like any upstream an operator sets.
//! Must not touch: keys, retries or job state (the worker and the pool do that).

pub mod hooks;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};

use super::{
    imageops, Capabilities, GenerateOutput, GenerateRequest, GeneratedImage, Progress, Provider,
    ProviderError, ProvidersConfig, UpstreamCredential,
};
use crate::base::job::Mode;
use crate::base::job_errors;
use crate::base::operation::Operation;
use crate::base::secret::Secret;
use crate::base::settings::Invalid;
use wire::{Submit, SubmitReply, TaskReply};

/// The header that carries the proxy's secret.
pub const SECRET_HEADER: &str = "mj-api-secret";

/// `[providers.midjourney]` in the configuration.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MidjourneyProviderConfig {
    /// How often a running task is fetched.
    pub poll_ms: u64,
    /// A task unfinished this long after its submit fails (and its tokens are released).
    pub task_timeout_secs: u64,
    /// One HTTP call's bound (submit, fetch, image download).
    pub request_timeout_secs: u64,
    /// `action` (customIds, the C# edition and the Java plus edition) or `change` (the open
    /// Java edition: U, V and reroll only).
    pub api: String,
    /// When set, submits ask the proxy to call `<server.public_url>/internal/mj-proxy/notify/
    /// <notify_secret>` on every change of their task, which wakes its poll at once; `poll_ms`
    /// fetches stay the safety net (and can then be slower).
    pub notify_secret: Option<Secret>,
    /// The notifyHook URL, made from `server.public_url` and `notify_secret` when the app is
    /// built (not configured).
    #[serde(skip)]
    pub notify_url: Option<String>,
}

/// The path of the route that hears the proxy's calls, before the secret.
pub const NOTIFY_PATH: &str = "/internal/mj-proxy/notify";

impl MidjourneyProviderConfig {
    /// This config with its notifyHook URL on the server at `public_url`.
    pub fn with_notify_url(mut self, public_url: &str) -> MidjourneyProviderConfig {
        self.notify_url = self.notify_secret.as_ref().map(|secret| {
            format!(
                "{}{NOTIFY_PATH}/{}",
                public_url.trim_end_matches('/'),
                secret.expose()
            )
        });
        self
    }
}

impl Default for MidjourneyProviderConfig {
    fn default() -> Self {
        MidjourneyProviderConfig {
            poll_ms: 2000,
            task_timeout_secs: 600,
            request_timeout_secs: 60,
            api: "action".into(),
            notify_secret: None,
            notify_url: None,
        }
    }
}

impl MidjourneyProviderConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.poll_ms == 0 || self.task_timeout_secs == 0 || self.request_timeout_secs == 0 {
            return Err((
                "providers.midjourney",
                "poll_ms, task_timeout_secs and request_timeout_secs must be at least 1".into(),
            ));
        }
        if !matches!(self.api.as_str(), "action" | "change") {
            return Err((
                "providers.midjourney.api",
                "must be action or change".into(),
            ));
        }
        Ok(())
    }
}

pub struct MidjourneyProvider {
    config: MidjourneyProviderConfig,
    http: reqwest::Client,
    capabilities: Capabilities,
}

fn retryable(code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::Retryable {
        code: code.into(),
        message: message.into(),
        retry_after: None,
    }
}

fn final_error(code: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::Final {
        code: code.into(),
        message: message.into(),
    }
}

fn transport(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        retryable(
            job_errors::UPSTREAM_TIMEOUT,
            "the proxy did not answer in time",
        )
    } else {
        retryable(
            job_errors::UPSTREAM_CONNECTION,
            format!("the proxy cannot be reached: {e}"),
        )
    }
}

impl MidjourneyProvider {
    pub fn new(config: MidjourneyProviderConfig) -> Result<MidjourneyProvider, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| format!("midjourney HTTP client: {e}"))?;
        Ok(MidjourneyProvider {
            config,
            http,
            capabilities: Capabilities {
                modes: vec![Mode::Draft, Mode::Final],
                image_to_image: true,
                max_images: 4,
                aspect_ratios: Vec::new(),
                image_sizes: Vec::new(),
                needs_key: true,
            },
        })
    }

    /// Its line in the registry.
    pub fn build(config: &ProvidersConfig) -> Result<Arc<dyn Provider>, String> {
        Ok(Arc::new(MidjourneyProvider::new(
            config.midjourney.clone(),
        )?))
    }

    fn url(credential: &UpstreamCredential, path: &str) -> String {
        format!("{}{path}", credential.base_url.trim_end_matches('/'))
    }

    async fn submit(
        &self,
        credential: &UpstreamCredential,
        submit: &Submit,
    ) -> Result<String, ProviderError> {
        let response = self
            .http
            .post(Self::url(credential, submit.path))
            .header(SECRET_HEADER, &credential.secret)
            .json(&submit.body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ProviderError::KeyRejected {
                message: format!("the proxy refused its secret ({status})"),
            });
        }
        let body = response.bytes().await.map_err(transport)?;
        let reply: SubmitReply = serde_json::from_slice(&body).map_err(|e| {
            retryable(
                job_errors::UPSTREAM_MALFORMED_RESPONSE,
                format!("the proxy's submit reply ({status}) is not its envelope: {e}"),
            )
        })?;
        wire::outcome(reply)
    }

    async fn fetch(
        &self,
        credential: &UpstreamCredential,
        task_id: &str,
    ) -> Result<TaskReply, ProviderError> {
        let response = self
            .http
            .get(Self::url(credential, &format!("/mj/task/{task_id}/fetch")))
            .header(SECRET_HEADER, &credential.secret)
            .send()
            .await
            .map_err(transport)?;
        let body = response.bytes().await.map_err(transport)?;
        serde_json::from_slice(&body).map_err(|e| {
            retryable(
                job_errors::UPSTREAM_MALFORMED_RESPONSE,
                format!("the proxy's task {task_id} is not a task: {e}"),
            )
        })
    }

    /// Polls the task until it ends or runs out of time, passing on the progress it shows.
    async fn wait(
        &self,
        credential: &UpstreamCredential,
        task_id: &str,
        progress: &Progress,
    ) -> Result<TaskReply, ProviderError> {
        let started = Instant::now();
        let deadline = Duration::from_secs(self.config.task_timeout_secs);
        let watch = hooks::Watch::new(task_id);
        loop {
            let task = self.fetch(credential, task_id).await?;
            match task.status.as_deref() {
                Some("SUCCESS") => return Ok(task),
                Some("FAILURE") | Some("CANCEL") => return Err(wire::failure(&task)),
                _ => {}
            }
            if let Some(percent) = task.percent() {
                progress.report(percent);
            }
            if started.elapsed() >= deadline {
                return Err(final_error(
                    job_errors::UPSTREAM_TIMEOUT,
                    format!(
                        "the proxy's task {task_id} is still {} after {}s",
                        task.status.as_deref().unwrap_or("unknown"),
                        deadline.as_secs()
                    ),
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(self.config.poll_ms)) => {}
                _ = watch.called() => {}
            }
        }
    }

    async fn download(&self, url: &str) -> Result<Bytes, ProviderError> {
        let response = self.http.get(url).send().await.map_err(transport)?;
        if !response.status().is_success() {
            return Err(retryable(
                job_errors::UPSTREAM_UNAVAILABLE,
                format!("the result image answered {}", response.status()),
            ));
        }
        response.bytes().await.map_err(transport)
    }

    /// The images of a finished task: a grid's four, or the one image.
    async fn images(
        &self,
        task: &TaskReply,
        operation: Operation,
    ) -> Result<Vec<GeneratedImage>, ProviderError> {
        let url = task.image_url.as_deref().unwrap_or_default();
        if url.is_empty() {
            return Err(final_error(
                job_errors::NO_IMAGE,
                "the proxy's task succeeded without an image",
            ));
        }
        let bytes = self.download(url).await?;
        let is_grid = !matches!(operation, Operation::Upscale { .. });
        tokio::task::spawn_blocking(move || -> Result<Vec<GeneratedImage>, String> {
            let image = imageops::decode(&bytes).map_err(|e| e.0)?;
            let parts = if is_grid {
                imageops::split_grid(&image)
            } else {
                vec![image]
            };
            parts
                .iter()
                .map(|p| {
                    imageops::encode_png(p).map(|png| GeneratedImage {
                        bytes: Bytes::from(png),
                        mime: "image/png".into(),
                        pixels: None,
                    })
                })
                .collect::<Result<_, _>>()
                .map_err(|e| e.0)
        })
        .await
        .map_err(|e| retryable(job_errors::UPSTREAM_MALFORMED_RESPONSE, e.to_string()))?
        .map_err(|e| retryable(job_errors::UPSTREAM_MALFORMED_RESPONSE, e))
    }
}

#[async_trait]
impl Provider for MidjourneyProvider {
    fn name(&self) -> &'static str {
        "midjourney"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Everything Midjourney does; `edit` is an imagine with the image as its reference.
    fn supports(&self, _operation: &Operation) -> bool {
        true
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.config.task_timeout_secs + self.config.request_timeout_secs * 2)
    }

    /// Lists the proxy's tasks (free): anything but 401/403 means the secret works.
    async fn probe(&self, credential: &UpstreamCredential) -> Result<(), ProviderError> {
        let response = self
            .http
            .post(Self::url(credential, "/mj/task/list-by-condition"))
            .header(SECRET_HEADER, &credential.secret)
            .json(&json!({"ids": []}))
            .send()
            .await
            .map_err(transport)?;
        match response.status().as_u16() {
            401 | 403 => Err(ProviderError::KeyRejected {
                message: "the proxy refused its secret".into(),
            }),
            _ => Ok(()),
        }
    }

    async fn generate(
        &self,
        request: &GenerateRequest,
        credential: Option<&UpstreamCredential>,
    ) -> Result<GenerateOutput, ProviderError> {
        let Some(credential) = credential else {
            return Err(ProviderError::key_missing(self.name()));
        };
        let mut submit = wire::build_submit(request, self.config.api == "change")
            .map_err(|m| final_error(job_errors::INVALID_REQUEST, m))?;
        if let Some(url) = &self.config.notify_url {
            submit.body["notifyHook"] = Value::String(url.clone());
        }
        let task_id = self.submit(credential, &submit).await?;
        let task = self
            .wait(credential, &task_id, &request.extra.progress)
            .await?;
        let operation = request.extra.operation;
        let details = json!({
            "taskId": task.id.clone().unwrap_or(task_id),
            "messageHash": task.message_hash(),
            "buttons": task.buttons.clone().unwrap_or(Value::Null),
            "imageUrl": task.image_url,
            "grid": !matches!(operation, Operation::Upscale { .. } | Operation::Describe),
        });
        if operation.gives_text() {
            return Ok(GenerateOutput {
                caption: task.final_prompt().or(task.prompt.clone()),
                details: Some(details),
                ..GenerateOutput::default()
            });
        }
        let images = self.images(&task, operation).await?;
        Ok(GenerateOutput {
            images,
            details: Some(details),
            model_version: Some("midjourney".into()),
            ..GenerateOutput::default()
        })
    }
}
