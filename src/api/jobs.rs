//! The origin's job routes: submit, read, list and cancel. A submit's body and headers are
//! parsed and validated in [`super::submit_request`].

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::extract::{AuthTenant, JobId, JsonObject};
use super::submit_request::{parse_body, parse_cancel_after, parse_idempotency_key};
use crate::app::App;
use crate::base::clock::{format_millis, now_millis};
use crate::base::job::{
    new_job_id, IdempotencyClaim, Job, JobListQuery, JobParams, JobStatus, NewJob, Operation,
    SubmitOutcome,
};
use crate::error::{ApiError, ErrorCode};
use crate::events::Change;
use crate::jobs::operations::{image_count, image_key};
use crate::ledger::pricing::{Payer, Priced};
use crate::ledger::InsufficientCredits;
use crate::store::{CancelOutcome, IdempotencyHit, StoreError};
use crate::telemetry;

const CURSOR_PREFIX: &str = "v1:";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    job_id: &'a str,
    status: JobStatus,
}

pub async fn submit(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let request = parse_body(&body, app.config.server.max_prompt_chars)?;
    let idempotency_key =
        parse_idempotency_key(headers.get("idempotency-key").map(|v| v.as_bytes()))?;
    let cancel_after = parse_cancel_after(headers.get("cancel-after").map(|v| v.as_bytes()))?;
    if let Some(url) = &request.input_image_url {
        // What can be known without the network is refused now, not at run time.
        app.inputs
            .precheck(url)
            .map_err(|e| ApiError::invalid(format!("inputImageUrl: {}", e.message)))?;
    }
    let webhook_url = match &request.webhook_url {
        Some(url) => Some(super::webhooks::check_job_webhook_url(&app, &tenant.id, url).await?),
        None => None,
    };
    let request_hash = request.fingerprint();
    // A retry of a submit already made is answered whatever the rate: only new work spends
    // it. Only a request with a key pays for this look-up.
    if let Some(key) = &idempotency_key {
        if let Some(hit) = app.store.idempotency_find(&tenant.id, key).await? {
            return answer_seen_key(hit, &request_hash);
        }
    }
    let provider = app.providers.default_name().to_owned();
    check_operation(&app, &tenant.id, &provider, &request.params).await?;
    let rate_headers = super::ratelimit::check_tenant(&app, &tenant).await?;
    let priced = Priced {
        operation: match request.params.operation {
            Operation::Generate if request.input_image_url.is_some() => "edit",
            op => op.kind(),
        },
        mode: request.mode.as_str(),
        provider: &provider,
        images: request.params.n.unwrap_or(1),
    };
    let charge = app
        .pricing
        .charge(&tenant.id, &Payer::Tenant, priced)
        .await?;
    let now = now_millis();
    let job = NewJob {
        id: new_job_id(),
        tenant_id: tenant.id.clone(),
        idempotency: idempotency_key.map(|key| IdempotencyClaim { key, request_hash }),
        prompt: request.prompt,
        mode: request.mode,
        input_image_url: request.input_image_url,
        params: request.params,
        provider,
        max_attempts: app.config.worker.max_attempts,
        created_at: now,
        cancel_at: cancel_after.map(|d| now + d.as_millis() as i64),
        deadline_at: app.config.worker.deadline_from(now),
        webhook_url,
        charge,
        follow_up: None,
    };
    let inputs = job.params.input_image_ids.clone();
    super::uploads::hold_inputs(&app, &tenant.id, &inputs).await?;
    let outcome = enqueue(&app, job).await;
    if !matches!(outcome, Ok(Enqueued::Created { .. })) {
        // No new job holds them: a replay's job took its own references.
        super::uploads::let_go(&app, &tenant.id, &inputs).await;
    }
    let mut response = match outcome? {
        Enqueued::Created { job_id } => {
            let body = Accepted {
                job_id: &job_id,
                status: JobStatus::Queued,
            };
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        // A first use of the key that raced this one (it was not there at the look-up).
        Enqueued::Replayed { job_id, status } => replayed(&job_id, status),
    };
    for (name, value) in rate_headers {
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

/// 400 `UNSUPPORTED_OPERATION` when `provider` cannot do the job's operation, and 400
/// `INVALID_REQUEST` when its parent job is not the tenant's, has not succeeded or has no
/// such image: refused now, never a failed job later.
pub(super) async fn check_operation(
    app: &App,
    tenant_id: &str,
    provider: &str,
    params: &JobParams,
) -> Result<(), ApiError> {
    check_supported(app, provider, params)?;
    let Some(parent_id) = &params.parent_job_id else {
        return Ok(());
    };
    let parent = app
        .store
        .job_get(tenant_id, parent_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid(format!("parentJobId '{parent_id}' is not a job of yours"))
        })?;
    check_parent(&parent, params)
}

/// 400 `UNSUPPORTED_OPERATION` when the provider cannot do the job's operation.
pub(super) fn check_supported(
    app: &App,
    provider: &str,
    params: &JobParams,
) -> Result<(), ApiError> {
    let op = params.operation;
    let supported = app.providers.get(provider).is_some_and(|p| p.supports(&op));
    if !supported {
        return Err(ApiError::new(
            ErrorCode::UnsupportedOperation,
            format!(
                "the provider '{provider}' cannot do the operation '{}'",
                op.kind()
            ),
        ));
    }
    Ok(())
}

/// 400 unless the parent job (read by the caller) succeeded and has the image asked for.
pub(super) fn check_parent(parent: &Job, params: &JobParams) -> Result<(), ApiError> {
    if parent.status != JobStatus::Succeeded {
        return Err(ApiError::invalid(format!(
            "the parent job is {}; only a SUCCEEDED job's images can be worked on",
            parent.status
        )));
    }
    let index = params.parent_index.unwrap_or(1);
    if image_key(parent, index).is_none() {
        return Err(ApiError::invalid(format!(
            "parentIndex {index}: the parent job has {} image(s)",
            image_count(parent)
        )));
    }
    Ok(())
}

/// The answer to a submit whose `Idempotency-Key` was seen: the stored job for the same
/// request, 422 for a different one.
fn answer_seen_key(hit: IdempotencyHit, request_hash: &str) -> Result<Response, ApiError> {
    if hit.request_hash != request_hash {
        return Err(key_reused());
    }
    Ok(replayed(&hit.job_id, hit.status))
}

fn replayed(job_id: &str, status: JobStatus) -> Response {
    telemetry::job_submitted("duplicate");
    let body = Accepted { job_id, status };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn key_reused() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was already used with a different request body",
    )
}

/// What [`enqueue`] did.
pub(super) enum Enqueued {
    Created {
        job_id: String,
    },
    /// The `Idempotency-Key` was seen before with the same request: its job.
    Replayed {
        job_id: String,
        status: JobStatus,
    },
}

/// Writes a checked job (its idempotency record, the job and its first event, in one
/// transaction) and tells the workers and the live streams. Every route that submits a job
/// ends here, so they all share the same accounting.
pub(super) async fn enqueue(app: &App, job: NewJob) -> Result<Enqueued, ApiError> {
    let tenant_id = job.tenant_id.clone();
    let reserved = match &app.direct_start {
        Some(direct) => direct.reserve(&job.provider).await,
        None => None,
    };
    let Some(reserved) = reserved else {
        let outcome = app.store.job_submit(job).await?;
        return enqueued(app, &tenant_id, outcome);
    };
    // In a task of its own: a call dropped while the submit commits (a client gone) must not
    // leave its claimed job RUNNING with nobody running it until the lease runs out.
    let store = app.store.clone();
    let submitted = tokio::spawn(async move {
        let (outcome, claimed) = store.job_submit_claimed(job, &reserved.claimer()).await?;
        let started = claimed.map(|claimed| {
            let id = claimed.job.id.clone();
            reserved.start(claimed);
            id
        });
        Ok::<_, StoreError>((outcome, started))
    });
    let (outcome, started) = submitted
        .await
        .map_err(|e| StoreError::Unavailable(format!("submit task: {e}")))??;
    if let Some(started) = &started {
        app.events.publish(Change::job_open(&tenant_id, started));
    }
    match outcome {
        // The job itself started: no worker needs waking.
        SubmitOutcome::Created { job_id } if started.as_ref() == Some(&job_id) => {
            telemetry::job_submitted("created");
            Ok(Enqueued::Created { job_id })
        }
        // Not started, or an older job of the tenant started in its place: this one waits for
        // the claim.
        outcome => enqueued(app, &tenant_id, outcome),
    }
}

/// What a submit's outcome answers, the workers and live streams told of a new job (for a
/// route that wrote its job with more of its own in one transaction).
pub(super) fn enqueued(
    app: &App,
    tenant_id: &str,
    outcome: SubmitOutcome,
) -> Result<Enqueued, ApiError> {
    match outcome {
        SubmitOutcome::Created { job_id } => {
            telemetry::job_submitted("created");
            app.wake.notify_one();
            app.events.publish(Change::job_open(tenant_id, &job_id));
            Ok(Enqueued::Created { job_id })
        }
        // Counted as a duplicate by the caller's answer.
        SubmitOutcome::Replayed { job_id, status } => Ok(Enqueued::Replayed { job_id, status }),
        SubmitOutcome::KeyReused => Err(key_reused()),
        SubmitOutcome::InsufficientCredits {
            required,
            available,
        } => {
            let refusal = InsufficientCredits {
                required,
                current: available,
            };
            Err(ApiError::new(
                ErrorCode::InsufficientCredits,
                refusal.message(),
            ))
        }
    }
}

/// An `Idempotency-Key` already used by the tenant, looked up before any rate is spent (a
/// retry of work already accepted is answered whatever the rate): the job id of the same
/// request (counted as a duplicate), `None` for a new key, 422 for a different request.
pub(super) async fn find_replay(
    app: &App,
    tenant_id: &str,
    key: Option<&str>,
    request_hash: &str,
) -> Result<Option<String>, ApiError> {
    let Some(key) = key else { return Ok(None) };
    match app.store.idempotency_find(tenant_id, key).await? {
        None => Ok(None),
        Some(hit) if hit.request_hash != request_hash => Err(key_reused()),
        Some(hit) => {
            telemetry::job_submitted("duplicate");
            Ok(Some(hit.job_id))
        }
    }
}

/// `GET /v1/jobs/{jobId}`: the origin fields plus timings, attempts and queue position.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobView {
    job_id: String,
    status: JobStatus,
    prompt: String,
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_image_url: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    input_image_ids: Vec<String>,
    result_urls: Vec<String>,
    error: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_position: Option<u64>,
    attempts: u32,
    max_attempts: u32,
    created_at: String,
    updated_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_at: Option<String>,
    /// Easel's additions: what the job does, what it works on, and its text result.
    operation: Operation,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grid_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_text: Option<String>,
}

/// A describe's text result.
pub(super) fn result_text(job: &Job) -> Option<String> {
    job.result_meta
        .as_ref()?
        .get("text")?
        .as_str()
        .map(str::to_owned)
}

/// The job's result links, as `storage` makes them (public, presigned or Easel-signed).
pub(super) async fn result_urls(app: &App, job: &Job) -> Vec<String> {
    app.urls.urls(&job.result_keys, now_millis() / 1000).await
}

pub async fn get(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    JobId(job_id): JobId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = app
        .store
        .job_get(&tenant.id, &job_id)
        .await?
        .ok_or_else(ApiError::job_not_found)?;
    let queue_position = if job.status.is_waiting() {
        Some(app.store.job_queue_position(&job).await?)
    } else {
        None
    };
    let mut view = JobView {
        job_id: job.id.clone(),
        status: job.status,
        prompt: job.prompt.clone(),
        mode: job.mode.as_str(),
        input_image_url: job.input_image_url.clone(),
        input_image_ids: job.params.input_image_ids.clone(),
        result_urls: Vec::new(),
        error: job.error_message.clone(),
        error_code: job.error_code.clone(),
        error_message: job.error_message.clone(),
        queue_position,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        created_at: format_millis(job.created_at),
        updated_at: format_millis(job.updated_at),
        started_at: job.started_at.map(format_millis),
        finished_at: job.finished_at.map(format_millis),
        cancel_at: job.cancel_at.map(format_millis),
        operation: job.params.operation,
        parent_job_id: job.params.parent_job_id.clone(),
        parent_index: job.params.parent_index,
        grid_url: None,
        result_text: result_text(&job),
    };
    view.result_urls = result_urls(&app, &job).await;
    if job.params.grid && view.result_urls.len() > 1 {
        // An imagine's images, then its grid on its own.
        view.grid_url = view.result_urls.pop();
    }
    Ok(super::with_etag(&headers, &view))
}

/// One item of `GET /v1/jobs`, exactly the origin's fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListItem {
    id: String,
    status: JobStatus,
    prompt: String,
    mode: &'static str,
    result_urls: Vec<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    items: Vec<ListItem>,
    has_more: bool,
    next_cursor: Option<String>,
}

fn parse_list_query(
    tenant_id: &str,
    q: &HashMap<String, String>,
) -> Result<JobListQuery, ApiError> {
    let (limit, before_seq) = super::paging::page(CURSOR_PREFIX, q)?;
    let status = match q.get("status") {
        None => None,
        Some(raw) => Some(JobStatus::parse(raw).ok_or_else(|| {
            ApiError::invalid(format!(
                "status '{raw}' is not one of: QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED, CANCELED"
            ))
        })?),
    };
    Ok(JobListQuery {
        tenant_id: tenant_id.to_owned(),
        status,
        limit,
        before_seq,
    })
}

pub async fn list(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(format!("bad query string: {e}")))?;
    let query = parse_list_query(&tenant.id, &query)?;
    let page = app.store.job_list(query).await?;
    let next_cursor = match (page.has_more, page.items.last()) {
        (true, Some(last)) => Some(super::paging::encode_cursor(CURSOR_PREFIX, last.seq)),
        _ => None,
    };
    let mut items = Vec::with_capacity(page.items.len());
    for job in &page.items {
        items.push(ListItem {
            id: job.id.clone(),
            status: job.status,
            prompt: job.prompt.clone(),
            mode: job.mode.as_str(),
            result_urls: result_urls(&app, job).await,
            error_code: job.error_code.clone(),
            error_message: job.error_message.clone(),
            created_at: format_millis(job.created_at),
            updated_at: format_millis(job.updated_at),
        });
    }
    Ok(Json(ListPage {
        items,
        has_more: page.has_more,
        next_cursor,
    })
    .into_response())
}

/// `DELETE /v1/jobs/{jobId}`: a QUEUED, RETRYING or RUNNING job becomes CANCELED (a running
/// attempt is aborted and its late result discarded); a finished one is 400 `INVALID_STATE`.
pub async fn cancel(
    State(app): State<App>,
    AuthTenant(tenant): AuthTenant,
    JobId(job_id): JobId,
) -> Result<Response, ApiError> {
    match app.store.job_cancel(&tenant.id, &job_id).await? {
        CancelOutcome::Canceled => {
            // A running attempt hears this and stops; its tenant slot is free again.
            app.events.publish(Change::job(&tenant.id, &job_id));
            app.wake.notify_one();
            Ok(Json(Accepted {
                job_id: &job_id,
                status: JobStatus::Canceled,
            })
            .into_response())
        }
        CancelOutcome::InvalidState(status) => Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("a {status} job cannot be canceled; it has already finished"),
        )),
        CancelOutcome::NotFound => Err(ApiError::job_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(
            crate::api::paging::decode_cursor(
                CURSOR_PREFIX,
                &crate::api::paging::encode_cursor(CURSOR_PREFIX, 42)
            ),
            Some(42)
        );
        assert_eq!(
            crate::api::paging::decode_cursor(CURSOR_PREFIX, "nope"),
            None
        );
        assert_eq!(
            crate::api::paging::decode_cursor(
                CURSOR_PREFIX,
                &crate::api::paging::encode_cursor(CURSOR_PREFIX, 0)
            ),
            None
        );
        use base64::Engine;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1:abc");
        assert_eq!(
            crate::api::paging::decode_cursor(CURSOR_PREFIX, &forged),
            None
        );
    }
}
