//! The `workflow` provider: a task type run on the deployment's n8n workflow (`[photo.<type>]
//! workflow_url`), as the origin did. Each job of a task asks the workflow for its image: the
//! first to find no run posts the origin's body (`{task_id, user_id, type, images, parameters,
//! scene_id, custom_description, batch_count}`, travel adding `destination`, plus Easel's
//! `image_urls`, signed links of the inputs, and `callback_url`s when `[photo] public_url` is
//! set) to the webhook, signed like the callbacks; every job then waits for the run's one
//! outcome, written by `POST /api/callback/task-complete|task-failed`
//! (`api::consumer::photo::callback`), woken by the bus (across processes) with the safety
//! poll behind it. Job `i` takes the image with `batch_index` `i + 1` (`data:` URLs decoded,
//! links downloaded) and the worker stores it, so each image settles its own credit; a job
//! with no image, or a failed run, fails and releases its credit. A callback that never comes
//! is the job's deadline (`[photo] workflow_timeout_secs`, enforced by the worker and the
//! maintenance pass like any job's).
//!
//! Owns: the webhook call, the wait and the reading of a run's images; the callback's
//! signature check ([`verify`]). Must not touch: job state, credits, HTTP routes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::PhotoConfig;
use crate::base::clock::now_millis;
use crate::base::job::Mode;
use crate::base::job_errors;
use crate::events::{EventBus, Wake, SAFETY_POLL};
use crate::ledger::payments::sign;
use crate::providers::{
    Capabilities, GenerateOutput, GenerateRequest, GeneratedImage, Provider, ProviderError,
    UpstreamCredential,
};
use crate::store::photo::{Task, WorkflowRun};
use crate::store::Store;
use crate::uploads::Library;

/// The provider's name (what a workflow task type's jobs carry).
pub const PROVIDER: &str = "workflow";
/// The header of the signature (`sha256=<hex HMAC-SHA256 of the raw body>`) on the webhook
/// call and on the callbacks.
pub const SIGNATURE_HEADER: &str = "x-easel-signature";
/// The key of a job's options holding the object keys of its task's inputs.
pub const INPUT_KEYS: &str = "input_keys";
/// The largest image a run may hand back by link.
const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// Whether a callback proves it comes from the deployment's workflow: a `secret` in its URL
/// equal to the deployment's, or a signature of its raw body made with it.
pub fn verify(
    secret: &str,
    body: &[u8],
    signature: Option<&str>,
    url_secret: Option<&str>,
) -> bool {
    if secret.is_empty() {
        return false;
    }
    let same = |a: &str, b: &str| bool::from(a.as_bytes().ct_eq(b.as_bytes()));
    if url_secret.is_some_and(|given| same(given, secret)) {
        return true;
    }
    signature.is_some_and(|given| same(given.trim(), &sign(secret.as_bytes(), body)))
}

pub struct WorkflowProvider {
    store: Arc<dyn Store>,
    events: Arc<dyn EventBus>,
    images: Library,
    config: PhotoConfig,
    http: reqwest::Client,
    capabilities: Capabilities,
}

impl WorkflowProvider {
    pub fn new(
        store: Arc<dyn Store>,
        events: Arc<dyn EventBus>,
        images: Library,
        config: PhotoConfig,
    ) -> Result<WorkflowProvider, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.workflow_request_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(WorkflowProvider {
            store,
            events,
            images,
            config,
            http,
            capabilities: Capabilities {
                modes: vec![Mode::Draft, Mode::Final],
                image_to_image: true,
                max_images: 1,
                aspect_ratios: Vec::new(),
                image_sizes: Vec::new(),
                needs_key: false,
            },
        })
    }

    /// The origin's body for the webhook, with Easel's additions.
    async fn body(&self, task: &Task, request: &GenerateRequest) -> Value {
        let mut image_urls = Vec::new();
        let keys = request
            .extra
            .options
            .get(INPUT_KEYS)
            .and_then(Value::as_array);
        for key in keys.into_iter().flatten().filter_map(Value::as_str) {
            image_urls.push(self.images.link(key).await);
        }
        let mut body = json!({
            "task_id": task.task_id,
            "user_id": task.user_seq,
            "type": task.task_type,
            "images": task.images,
            "parameters": task.parameters,
            "scene_id": task.scene_id,
            "custom_description": task.custom_description,
            "batch_count": task.batch_count,
            "image_urls": image_urls,
        });
        if task.task_type == "travel" {
            body["destination"] = task.parameters["destination"].clone();
        }
        if let (Some(base), Some(secret)) = (&self.config.public_url, &self.config.workflow_secret)
        {
            let base = base.trim_end_matches('/');
            let secret = secret.expose();
            body["callback_url"] =
                json!(format!("{base}/api/callback/task-complete?secret={secret}"));
            body["failed_callback_url"] =
                json!(format!("{base}/api/callback/task-failed?secret={secret}"));
        }
        body
    }

    /// Posts the task to its type's webhook.
    async fn post(&self, task: &Task, request: &GenerateRequest) -> Result<(), ProviderError> {
        let url = self
            .config
            .task_type(&task.task_type)
            .and_then(|t| t.workflow_url.clone())
            .ok_or_else(|| ProviderError::Final {
                code: job_errors::PROVIDER_UNAVAILABLE.into(),
                message: format!("no workflow_url for task type '{}'", task.task_type),
            })?;
        let body = self.body(task, request).await.to_string();
        let mut call = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.config.workflow_secret {
            call = call.header(
                SIGNATURE_HEADER,
                sign(secret.expose().as_bytes(), body.as_bytes()),
            );
        }
        match call.body(body).send().await {
            Ok(answer) if answer.status().is_success() => Ok(()),
            Ok(answer) => Err(status_error(answer.status())),
            Err(e) => Err(retryable(
                if e.is_timeout() {
                    job_errors::UPSTREAM_TIMEOUT
                } else {
                    job_errors::UPSTREAM_CONNECTION
                },
                format!("the workflow webhook was not reached: {}", without_url(&e)),
            )),
        }
    }

    /// The run of the task once it has an outcome; posts it first when no job has.
    async fn outcome(
        &self,
        task: &Task,
        request: &GenerateRequest,
    ) -> Result<WorkflowRun, ProviderError> {
        let mut notices = self.events.subscribe();
        loop {
            notices.drain();
            match self
                .store
                .photo_workflow_get(&task.task_id)
                .await
                .map_err(store_error)?
            {
                Some(run) if run.outcome.is_some() => return Ok(run),
                Some(_) => {}
                None => {
                    let started = self
                        .store
                        .photo_workflow_begin(&task.tenant_id, &task.task_id, now_millis())
                        .await
                        .map_err(store_error)?;
                    if started {
                        if let Err(e) = self.post(task, request).await {
                            // The next job (or this one's retry) posts again.
                            let _ = self.store.photo_workflow_abandon(&task.task_id).await;
                            return Err(e);
                        }
                    }
                }
            }
            // Until a change of this job is announced (the callback's), or the safety poll.
            let wait = async {
                loop {
                    match notices.recv().await {
                        Wake::Changed(c) if c.job_id.as_deref() != Some(&request.job_id) => {}
                        Wake::Closed => std::future::pending::<()>().await,
                        _ => return,
                    }
                }
            };
            let _ = tokio::time::timeout(SAFETY_POLL, wait).await;
        }
    }

    /// The image of batch index `index + 1` in a completed run.
    async fn image(
        &self,
        run: &WorkflowRun,
        index: usize,
    ) -> Result<GeneratedImage, ProviderError> {
        let images = run.images.as_array().map(Vec::as_slice).unwrap_or_default();
        let wanted = (index + 1) as u64;
        let entry = images
            .iter()
            .find(|i| i["batch_index"].as_u64() == Some(wanted))
            .or_else(|| {
                images
                    .iter()
                    .filter(|i| i["batch_index"].is_null())
                    .nth(index)
            })
            .ok_or_else(|| ProviderError::Final {
                code: job_errors::NO_IMAGE.into(),
                message: format!("the workflow returned no image {wanted}"),
            })?;
        let url = entry["url"].as_str().or(entry.as_str()).unwrap_or_default();
        let (bytes, mime) = match url.strip_prefix("data:") {
            Some(data) => decode_data_url(data)?,
            None => self.download(url).await?,
        };
        Ok(GeneratedImage {
            bytes,
            mime,
            pixels: None,
        })
    }

    async fn download(&self, url: &str) -> Result<(Bytes, String), ProviderError> {
        let malformed = |message: String| ProviderError::Final {
            code: job_errors::UPSTREAM_MALFORMED_RESPONSE.into(),
            message,
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(malformed(
                "a workflow image is neither a data: URL nor a link".into(),
            ));
        }
        let answer = self.http.get(url).send().await.map_err(|e| {
            retryable(
                job_errors::UPSTREAM_CONNECTION,
                format!("a workflow image was not downloaded: {}", without_url(&e)),
            )
        })?;
        if !answer.status().is_success() {
            return Err(status_error(answer.status()));
        }
        let mime = answer
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("image/png")
            .to_owned();
        let bytes = answer.bytes().await.map_err(|e| {
            retryable(
                job_errors::UPSTREAM_CONNECTION,
                format!("a workflow image broke off: {}", without_url(&e)),
            )
        })?;
        if bytes.len() > MAX_IMAGE_BYTES {
            return Err(ProviderError::Final {
                code: job_errors::UPSTREAM_RESPONSE_TOO_LARGE.into(),
                message: "a workflow image is larger than 20 MB".into(),
            });
        }
        Ok((bytes, mime))
    }
}

/// `image/png;base64,<data>` (what follows `data:`) as bytes and their type.
fn decode_data_url(data: &str) -> Result<(Bytes, String), ProviderError> {
    let bad = || ProviderError::Final {
        code: job_errors::UPSTREAM_MALFORMED_RESPONSE.into(),
        message: "a workflow image's data: URL is not base64".into(),
    };
    let (head, payload) = data.split_once(',').ok_or_else(bad)?;
    let mime = head.strip_suffix(";base64").ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|_| bad())?;
    let mime = if mime.is_empty() { "image/png" } else { mime };
    Ok((Bytes::from(bytes), mime.to_owned()))
}

fn retryable(code: &str, message: String) -> ProviderError {
    ProviderError::Retryable {
        code: code.into(),
        message,
        retry_after: None,
    }
}

fn status_error(status: reqwest::StatusCode) -> ProviderError {
    let message = format!("the workflow answered {status}");
    if status.is_server_error() || status.as_u16() == 429 {
        retryable(job_errors::UPSTREAM_UNAVAILABLE, message)
    } else {
        ProviderError::Final {
            code: job_errors::UPSTREAM_REJECTED.into(),
            message,
        }
    }
}

/// A transport error without its URL (a webhook URL may carry a token).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<webhook>");
    }
    text
}

fn store_error(e: crate::store::StoreError) -> ProviderError {
    retryable(job_errors::STORAGE_ERROR, format!("the store failed: {e}"))
}

#[async_trait]
impl Provider for WorkflowProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.config.workflow_timeout_secs)
    }

    async fn probe(&self, _credential: &UpstreamCredential) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn generate(
        &self,
        request: &GenerateRequest,
        _credential: Option<&UpstreamCredential>,
    ) -> Result<GenerateOutput, ProviderError> {
        let not_a_task = || ProviderError::Final {
            code: job_errors::PROVIDER_UNAVAILABLE.into(),
            message: "the workflow provider runs photo tasks only".into(),
        };
        let task = self
            .store
            .photo_task_of_job(&request.job_id)
            .await
            .map_err(store_error)?
            .ok_or_else(not_a_task)?;
        let jobs = self
            .store
            .photo_task_jobs(&task.task_id)
            .await
            .map_err(store_error)?;
        let index = jobs
            .iter()
            .position(|j| j.job_id == request.job_id)
            .ok_or_else(not_a_task)?;
        let run = self.outcome(&task, request).await?;
        if run.outcome.as_deref() != Some("completed") {
            return Err(ProviderError::Final {
                code: job_errors::UPSTREAM_REJECTED.into(),
                message: run.error.unwrap_or_else(|| "未知错误".into()),
            });
        }
        let image = self.image(&run, index).await?;
        Ok(GenerateOutput {
            images: vec![image],
            caption: run.ai_description,
            ..GenerateOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callback_proves_itself_by_url_secret_or_signature() {
        let body = br#"{"task_id":"t"}"#;
        let good = sign(b"s3cret", body);
        assert!(verify("s3cret", body, Some(&good), None));
        assert!(verify("s3cret", body, None, Some("s3cret")));
        assert!(!verify("s3cret", body, None, None));
        assert!(!verify("s3cret", body, Some("sha256=00"), Some("guess")));
        assert!(!verify("s3cret", b"{}", Some(&good), None), "another body");
        assert!(!verify("", body, Some(&sign(b"", body)), Some("")));
    }

    #[test]
    fn data_urls_decode() {
        let (bytes, mime) = decode_data_url("image/jpeg;base64,aGk=").unwrap();
        assert_eq!(
            (bytes.as_ref(), mime.as_str()),
            (b"hi".as_ref(), "image/jpeg")
        );
        assert!(decode_data_url("image/png,raw").is_err());
        assert!(decode_data_url("image/png;base64,@@").is_err());
    }
}
