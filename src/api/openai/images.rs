//! `POST /v1/images/generations`, `/v1/images/edits` and `/v1/images/variations`: each call is
//! an Easel job. The call is read ([`ImageCall`]), routed to a provider by its `model`, checked
//! against that provider's model, its uploads stored (by content hash, so a retried call stores
//! nothing twice), and submitted through [`enqueue`] like any job (tenant rate, idempotency with
//! `Idempotency-Key`, events, webhooks). Then the call waits for the job ([`wait`]) and answers
//! with OpenAI's `ImagesResponse`, or 202 with the job id under `Prefer: respond-async`.

use std::time::Duration;

use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::error::OpenAiError;
use super::request::{ImageCall, ResponseFormat};
use super::wait::{self, Since};
use super::OpenAiTenant;
use crate::api::jobs::{enqueue, find_replay, Enqueued};
use crate::api::submit_request::parse_idempotency_key;
use crate::app::App;
use crate::base::clock::now_millis;
use crate::base::job::{new_job_id, IdempotencyClaim, Job, JobParams, JobStatus, Mode, NewJob};
use crate::base::ledger::Charge;
use crate::error::ApiError;
use crate::events::Change;
use crate::ledger::pricing::{Payer, Priced};
use crate::providers::openai::Family;
use crate::providers::{GenerateRequest, InputImage, RequestExtras};
use crate::store::Tenant;

pub async fn generations(
    State(app): State<App>,
    OpenAiTenant(tenant): OpenAiTenant,
    headers: HeaderMap,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> Result<Response, OpenAiError> {
    let Json(fields) = body.map_err(|e| {
        OpenAiError::invalid(format!("the body must be a JSON object: {}", e.body_text()))
    })?;
    let call = ImageCall::from_fields(&fields)?;
    run(app, tenant, headers, call).await
}

pub async fn edits(
    State(app): State<App>,
    OpenAiTenant(tenant): OpenAiTenant,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, OpenAiError> {
    let call = read_form(form).await?;
    if call.images.is_empty() {
        return Err(OpenAiError::invalid("Missing required parameter: 'image'.").param("image"));
    }
    run(app, tenant, headers, call).await
}

pub async fn variations(
    State(app): State<App>,
    OpenAiTenant(tenant): OpenAiTenant,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, OpenAiError> {
    let mut call = read_form(form).await?;
    if call.images.len() != 1 || call.mask.is_some() || !call.prompt.is_empty() {
        return Err(
            OpenAiError::invalid("a variation takes one 'image', and no prompt or mask")
                .param("image"),
        );
    }
    call.variation = true;
    run(app, tenant, headers, call).await
}

async fn read_form(form: Result<Multipart, MultipartRejection>) -> Result<ImageCall, OpenAiError> {
    let form = form.map_err(|e| {
        OpenAiError::invalid(format!(
            "the body must be multipart/form-data: {}",
            e.body_text()
        ))
    })?;
    ImageCall::from_form(form).await
}

/// Where a call goes: the provider, and the model it is asked for (`None`: its own default).
struct Route {
    provider: String,
    model: Option<String>,
}

fn route(app: &App, call: &ImageCall) -> Result<Route, OpenAiError> {
    let routed = match &call.model {
        None => Route {
            provider: app.providers.default_name().to_owned(),
            model: None,
        },
        Some(model) => {
            let table = app.config.openai_api.route(model).ok_or_else(|| {
                OpenAiError::invalid(format!("The model '{model}' does not exist."))
                    .param("model")
                    .code("model_not_found")
            })?;
            let named = table.model.clone().unwrap_or_else(|| model.clone());
            Route {
                model: (table.provider != "local").then_some(named),
                provider: table.provider.clone(),
            }
        }
    };
    let Some(provider) = app.providers.get(&routed.provider) else {
        return Err(OpenAiError::invalid(format!(
            "provider '{}' is not available on this server",
            routed.provider
        ))
        .param("model")
        .code("model_not_found"));
    };
    if provider.capabilities().needs_key && app.keys.enabled_keys(&routed.provider) == 0 {
        return Err(OpenAiError::invalid(format!(
            "no upstream key is configured for provider '{}'",
            routed.provider
        ))
        .param("model")
        .code("model_not_available"));
    }
    // A variation is dall-e-2's; an unnamed one on OpenAI asks for it.
    let model = match (&routed.model, call.variation, routed.provider.as_str()) {
        (None, true, "openai") => Some("dall-e-2".to_owned()),
        _ => routed.model,
    };
    Ok(Route {
        provider: routed.provider,
        model,
    })
}

/// The request the worker will build, for the provider's own check now.
fn provider_request(call: &ImageCall, route: &Route) -> GenerateRequest {
    let mut images = call.images.iter().cloned();
    GenerateRequest {
        job_id: String::new(),
        prompt: call.prompt.clone(),
        mode: Mode::Final,
        input_image: images.next(),
        seed: None,
        n: call.n,
        aspect_ratio: None,
        image_size: None,
        extra: RequestExtras {
            more_images: images.collect(),
            mask: call.mask.clone(),
            model: route.model.clone(),
            variation: call.variation,
            options: provider_options(call, route),
            ..RequestExtras::default()
        },
    }
}

/// Only the openai provider reads OpenAI's parameters; others go without them.
fn provider_options(call: &ImageCall, route: &Route) -> Map<String, Value> {
    match route.provider.as_str() {
        "openai" => call.options.clone(),
        _ => Map::new(),
    }
}

fn check(app: &App, call: &ImageCall, route: &Route) -> Result<(), String> {
    if !call.variation && call.prompt.trim().is_empty() {
        return Err("Missing required parameter: 'prompt'.".into());
    }
    let max = app.config.server.max_prompt_chars;
    if call.prompt.chars().count() > max {
        return Err(format!("prompt is longer than {max} characters"));
    }
    let request = provider_request(call, route);
    let providers = &app.config.providers;
    match route.provider.as_str() {
        "openai" => crate::providers::openai::validate(&request, &providers.openai),
        "gemini" => crate::providers::gemini::validate(&request, &providers.gemini),
        other => match app.providers.get(other) {
            Some(p) if call.n > p.capabilities().max_images => Err(format!(
                "n must be between 1 and {} for {other}",
                p.capabilities().max_images
            )),
            _ => Ok(()),
        },
    }
}

fn extension(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        _ => "png",
    }
}

/// Where an upload is stored: under its content hash, so the key is the same every time the
/// same image is sent (a retried call stores nothing new, and its fingerprint matches).
fn upload_key(tenant: &str, image: &InputImage) -> String {
    let hash = hex::encode(Sha256::digest(&image.bytes));
    format!("{tenant}/inputs/{hash}.{}", extension(&image.mime))
}

async fn store_upload(app: &App, key: &str, image: &InputImage) -> Result<(), OpenAiError> {
    app.objects
        .put(key, image.bytes.clone(), &image.mime)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "storing an upload failed");
            OpenAiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the image store is unavailable; try again",
            )
        })
}

/// A fingerprint of the call, to tell an idempotent replay from a reuse of the key.
fn fingerprint(
    call: &ImageCall,
    route: &Route,
    inputs: &[String],
    mask: &Option<String>,
) -> String {
    let canonical = json!({
        "provider": route.provider, "model": route.model, "prompt": call.prompt, "n": call.n,
        "options": call.options, "variation": call.variation, "inputs": inputs, "mask": mask,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The job of a call, for [`enqueue`].
fn new_job(
    app: &App,
    tenant: &Tenant,
    call: &ImageCall,
    route: &Route,
    inputs: Vec<String>,
    mask: Option<String>,
    idempotency: Option<IdempotencyClaim>,
) -> NewJob {
    let now = now_millis();
    let options = provider_options(call, route);
    NewJob {
        id: new_job_id(),
        tenant_id: tenant.id.clone(),
        idempotency,
        prompt: call.prompt.clone(),
        mode: Mode::Final,
        input_image_url: None,
        params: JobParams {
            n: Some(call.n),
            model: route.model.clone(),
            inputs,
            mask,
            variation: call.variation,
            options: (!options.is_empty()).then_some(options),
            ..JobParams::default()
        },
        provider: route.provider.clone(),
        max_attempts: app.config.worker.max_attempts,
        created_at: now,
        cancel_at: None,
        deadline_at: app.config.worker.deadline_from(now),
        webhook_url: None,
        // Priced by the caller ([`price`]), as the job API prices its jobs.
        charge: None,
        follow_up: None,
    }
}

/// The call's price, held from a prepaid tenant as the job API holds it (`None`: free).
async fn price(
    app: &App,
    tenant: &Tenant,
    call: &ImageCall,
    route: &Route,
    with_inputs: bool,
) -> Result<Option<Charge>, OpenAiError> {
    let operation = match (call.variation, with_inputs) {
        (true, _) => "variation",
        (false, true) => "edit",
        (false, false) => "generate",
    };
    let priced = Priced {
        operation,
        mode: Mode::Final.as_str(),
        provider: &route.provider,
        images: call.n,
    };
    app.pricing
        .charge(&tenant.id, &Payer::Tenant, priced)
        .await
        .map_err(|e| OpenAiError::from(ApiError::from(e)))
}

async fn run(
    app: App,
    tenant: Tenant,
    headers: HeaderMap,
    call: ImageCall,
) -> Result<Response, OpenAiError> {
    let route = route(&app, &call)?;
    check(&app, &call, &route).map_err(OpenAiError::invalid)?;
    let idempotency_key =
        parse_idempotency_key(headers.get("idempotency-key").map(|v| v.as_bytes()))?;
    let inputs: Vec<String> = call
        .images
        .iter()
        .map(|i| upload_key(&tenant.id, i))
        .collect();
    let mask = call.mask.as_ref().map(|m| upload_key(&tenant.id, m));
    let request_hash = fingerprint(&call, &route, &inputs, &mask);
    let replay = find_replay(&app, &tenant.id, idempotency_key.as_deref(), &request_hash).await?;
    let (job_id, rate_headers, watched, since) = match replay {
        Some(job_id) => {
            let watched = app.job_watch.watch(&job_id);
            (job_id, Vec::new(), watched, Since::Unknown)
        }
        None => {
            let rate_headers = crate::api::ratelimit::check_tenant(&app, &tenant).await?;
            let uploads = call.images.iter().zip(&inputs);
            for (image, key) in uploads.chain(call.mask.iter().zip(&mask)) {
                store_upload(&app, key, image).await?;
            }
            let idempotency = idempotency_key.map(|key| IdempotencyClaim { key, request_hash });
            let charge = price(&app, &tenant, &call, &route, !inputs.is_empty()).await?;
            let mut job = new_job(&app, &tenant, &call, &route, inputs, mask, idempotency);
            job.charge = charge;
            // Watched before it exists, so no change of the new job goes unheard.
            let watched = app.job_watch.watch(&job.id);
            match enqueue(&app, job).await? {
                Enqueued::Created { job_id } if job_id == watched.job_id() => {
                    (job_id, rate_headers, watched, Since::Submitted)
                }
                Enqueued::Created { job_id } => {
                    let watched = app.job_watch.watch(&job_id);
                    (job_id, rate_headers, watched, Since::Unknown)
                }
                Enqueued::Replayed { job_id, .. } => {
                    crate::telemetry::job_submitted("duplicate");
                    let watched = app.job_watch.watch(&job_id);
                    (job_id, rate_headers, watched, Since::Unknown)
                }
            }
        }
    };
    let mut response = if prefers_async(&headers) {
        accepted(&job_id)
    } else {
        let limit = Duration::from_secs(app.config.openai_api.wait_secs);
        let mut guard = CancelOnDrop::new(&app, &tenant.id, &job_id);
        let job = wait::until_done(&app, &tenant.id, &job_id, &watched, since, limit).await?;
        guard.disarm();
        answer(&app, &job, &call, &route).await?
    };
    let headers = response.headers_mut();
    for (name, value) in rate_headers {
        headers.insert(name, value);
    }
    if let Ok(value) = HeaderValue::from_str(&job_id) {
        headers.insert("easel-job-id", value);
    }
    Ok(response)
}

/// `Prefer: respond-async` (RFC 7240).
fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

fn accepted(job_id: &str) -> Response {
    let body = json!({"id": job_id, "object": "image.job", "status": "queued",
        "created": now_millis() / 1000});
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/jobs/{job_id}")) {
        response.headers_mut().insert("location", location);
    }
    response
}

/// The answer for the job as the wait left it.
async fn answer(
    app: &App,
    job: &Job,
    call: &ImageCall,
    route: &Route,
) -> Result<Response, OpenAiError> {
    match job.status {
        JobStatus::Succeeded => images_response(app, job, call, route).await,
        status if status.is_terminal() => Err(OpenAiError::for_job(job)),
        _ => Err(OpenAiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            format!(
                "the job is still {}; read it at GET /v1/jobs/{}",
                job.status, job.id
            ),
        )
        .code("timeout")
        .final_answer()
        .header("easel-job-id", &job.id)),
    }
}

/// `ImagesResponse`: `created`, `data` (`url` or `b64_json`, and `revised_prompt`), then what
/// the upstream said of the result (`usage`, `size`, `quality`, `output_format`, `background`).
async fn images_response(
    app: &App,
    job: &Job,
    call: &ImageCall,
    route: &Route,
) -> Result<Response, OpenAiError> {
    let upstream_model = route.model.as_deref().unwrap_or("");
    let format = call.response_format.unwrap_or(
        match route.provider == "openai" && Family::of(upstream_model) == Family::GptImage {
            true => ResponseFormat::B64Json,
            false => ResponseFormat::Url,
        },
    );
    let meta = job.result_meta.clone().unwrap_or(Value::Null);
    let upstream = &meta["upstream"];
    let mut data = Vec::with_capacity(job.result_keys.len());
    let urls = match format {
        ResponseFormat::Url => app.urls.urls(&job.result_keys, now_millis() / 1000).await,
        ResponseFormat::B64Json => Vec::new(),
    };
    for (index, key) in job.result_keys.iter().enumerate() {
        let mut item = Map::new();
        match urls.get(index) {
            Some(url) => item.insert("url".into(), json!(url)),
            None => item.insert("b64_json".into(), json!(read_b64(app, key).await?)),
        };
        if let Some(revised) = upstream["revised_prompts"][index].as_str() {
            item.insert("revised_prompt".into(), json!(revised));
        }
        data.push(Value::Object(item));
    }
    let created = job.finished_at.unwrap_or_else(now_millis) / 1000;
    let mut body = json!({"created": created, "data": data});
    for field in ["size", "quality", "output_format", "background"] {
        if let Some(value) = upstream[field].as_str() {
            body[field] = json!(value);
        }
    }
    if body.get("output_format").is_none() {
        if let Some(ext) = job.result_keys.first().and_then(|k| k.rsplit('.').next()) {
            body["output_format"] = json!(if ext == "jpg" { "jpeg" } else { ext });
        }
    }
    if route.provider == "openai" && meta["usage"].is_object() {
        body["usage"] = meta["usage"].clone();
    }
    Ok(Json(body).into_response())
}

async fn read_b64(app: &App, key: &str) -> Result<String, OpenAiError> {
    let object = app.objects.get(key).await.map_err(|e| {
        tracing::error!(error = %e, key, "reading a result image failed");
        OpenAiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the image store is unavailable; try again",
        )
    })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(&object.bytes))
}

/// With `openai_api.cancel_on_disconnect`, cancels the job if the call is dropped (the client
/// hung up) before it answered, whether it waits or runs (a running attempt is aborted).
struct CancelOnDrop {
    armed: Option<(App, String, String)>,
}

impl CancelOnDrop {
    fn new(app: &App, tenant_id: &str, job_id: &str) -> CancelOnDrop {
        let armed = app
            .config
            .openai_api
            .cancel_on_disconnect
            .then(|| (app.clone(), tenant_id.to_owned(), job_id.to_owned()));
        CancelOnDrop { armed }
    }

    fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some((app, tenant_id, job_id)) = self.armed.take() else {
            return;
        };
        tokio::spawn(async move {
            match app.store.job_cancel(&tenant_id, &job_id).await {
                Ok(crate::store::CancelOutcome::Canceled) => {
                    app.events.publish(Change::job(&tenant_id, &job_id))
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, job = %job_id, "cancel on disconnect failed"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_respond_async_is_found_among_preferences() {
        let mut h = HeaderMap::new();
        assert!(!prefers_async(&h));
        h.insert(
            "prefer",
            HeaderValue::from_static("return=minimal, respond-async"),
        );
        assert!(prefers_async(&h));
    }
}
