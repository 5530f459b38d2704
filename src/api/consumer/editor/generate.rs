//! `POST /api/sessions/:id/messages` with `"generate": true` (beyond the origin): the message
//! is stored, and an `edit` job (a `generate` job when no image goes with it) is submitted for
//! it, paid by the user through the ledger like every consumer job. Its input is the
//! message's text and images plus the session's earlier turns (at most
//! `editor.context_turns`, with the `thoughtSignature` of earlier answers). The answer comes
//! at once: 201 with the message and `jobId`; the `editor` follower adds the assistant's
//! answer when the job ends.
//!
//! The message's `params` may choose the job: `provider` (a configured one), `model`, `mode`
//! (`draft` default, or `final`), `aspectRatio`, `imageSize` (or `size`). A job the ledger
//! refuses leaves no message: 402 `{"error":"Insufficient credits","required","current"}`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::messages::{new_message, MessageBody};
use super::{created, failed, message_with_images, not_found, Caller};
use crate::api::consumer::reply::{editor_invalid, json as reply_json};
use crate::api::jobs::{enqueue, Enqueued};
use crate::app::App;
use crate::base::clock::now_millis;
use crate::base::image::ImageOwner;
use crate::base::job::{new_job_id, JobParams, Mode, NewJob};
use crate::error::{ApiError, ErrorCode};
use crate::ledger::pricing::{Payer, Priced};
use crate::sessions::context::{image_keys, turns};
use crate::sessions::follower::NAME as FOLLOWER;

/// What the message's `params` ask of the job.
struct Choice {
    provider: String,
    model: Option<String>,
    mode: Mode,
    aspect_ratio: Option<String>,
    image_size: Option<String>,
}

fn text_param(params: &Map<String, Value>, names: &[&str]) -> Result<Option<String>, String> {
    for name in names {
        match params.get(*name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if !s.is_empty() => return Ok(Some(s.clone())),
            Some(_) => return Err(format!("\"params.{name}\" must be a non-empty string")),
        }
    }
    Ok(None)
}

fn choice(app: &App, params: &Map<String, Value>) -> Result<Choice, String> {
    let provider = match text_param(params, &["provider"])? {
        Some(p) if app.providers.get(&p).is_some() => p,
        Some(p) => return Err(format!("\"params.provider\" '{p}' is not available")),
        None => app.providers.default_name().to_owned(),
    };
    let mode = match text_param(params, &["mode"])?.as_deref() {
        None | Some("draft") => Mode::Draft,
        Some("final") => Mode::Final,
        Some(_) => return Err("\"params.mode\" must be one of [draft, final]".into()),
    };
    Ok(Choice {
        provider,
        model: text_param(params, &["model"])?,
        mode,
        aspect_ratio: text_param(params, &["aspectRatio"])?,
        image_size: text_param(params, &["imageSize", "size"])?,
    })
}

pub async fn create(app: &App, caller: &Caller, session_id: &str, body: MessageBody) -> Response {
    let choice = match choice(app, body.params.as_ref().unwrap_or(&Map::new())) {
        Ok(choice) => choice,
        Err(why) => return editor_invalid(&why),
    };
    let owner = &caller.owner;
    match caller.sessions.get(owner, session_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found("Session"),
        Err(e) => return failed("create message", e),
    }
    let earlier = caller
        .sessions
        .store
        .editor_messages_before(owner, session_id, i64::MAX, app.config.editor.context_turns)
        .await;
    let earlier = match earlier {
        Ok(earlier) => earlier,
        Err(e) => return failed("create message", e),
    };
    let image_owner = ImageOwner::user(&owner.tenant_id, &owner.user_id);
    let inputs = image_keys(
        &app.images,
        &image_owner,
        body.image_ids.as_deref().unwrap_or(&[]),
    )
    .await;
    let history = turns(&app.images, owner, &earlier).await;
    let job_id = new_job_id();
    let prompt = body.text.clone().unwrap_or_default();
    let message = new_message(session_id, body, Some(job_id.clone()));
    let message = match caller.sessions.add_message(owner, message).await {
        Ok(Some(message)) => message,
        Ok(None) => return not_found("Session"),
        Err(e) => return failed("create message", e),
    };
    let job = Submit {
        session_id,
        job_id: &job_id,
        prompt,
        inputs,
        history,
        choice,
    };
    match submit(app, caller, job).await {
        Ok(()) => created(json!({
            "message": "Message created successfully",
            "messageData": message_with_images(app, caller, &message).await,
            "jobId": job_id,
        })),
        Err(refusal) => {
            // No job: the message goes too.
            if let Err(e) = caller.sessions.delete_message(owner, &message.id).await {
                tracing::warn!(error = %e, message = %message.id, "editor: unsubmitted message not removed");
            }
            refused(refusal)
        }
    }
}

struct Submit<'a> {
    session_id: &'a str,
    job_id: &'a str,
    prompt: String,
    inputs: Vec<String>,
    history: Vec<crate::base::job::Turn>,
    choice: Choice,
}

async fn submit(app: &App, caller: &Caller, job: Submit<'_>) -> Result<(), ApiError> {
    let owner = &caller.owner;
    let priced = Priced {
        operation: if job.inputs.is_empty() {
            "generate"
        } else {
            "edit"
        },
        mode: job.choice.mode.as_str(),
        provider: &job.choice.provider,
        images: 1,
    };
    let payer = Payer::EndUser {
        user_id: owner.user_id.clone(),
    };
    let charge = app.pricing.charge(&owner.tenant_id, &payer, priced).await?;
    let now = now_millis();
    let new = NewJob {
        id: job.job_id.to_owned(),
        tenant_id: owner.tenant_id.clone(),
        idempotency: None,
        prompt: job.prompt,
        mode: job.choice.mode,
        input_image_url: None,
        params: JobParams {
            aspect_ratio: job.choice.aspect_ratio,
            image_size: job.choice.image_size,
            model: job.choice.model,
            inputs: job.inputs,
            history: job.history,
            ..JobParams::default()
        },
        provider: job.choice.provider,
        max_attempts: app.config.worker.max_attempts,
        created_at: now,
        cancel_at: None,
        deadline_at: app.config.worker.deadline_from(now),
        webhook_url: None,
        charge,
        follow_up: Some(FOLLOWER.into()),
    };
    match enqueue(app, new).await? {
        Enqueued::Created { .. } => {
            let detail = json!({"jobId": job.job_id, "status": "QUEUED"});
            let told = caller
                .sessions
                .job_progress(owner, job.session_id, job.job_id, detail)
                .await;
            if let Err(e) = told {
                tracing::warn!(error = %e, job = %job.job_id, "editor: job start not recorded");
            }
            Ok(())
        }
        Enqueued::Replayed { .. } => Ok(()),
    }
}

/// A job that was not submitted, in the editor's words.
fn refused(error: ApiError) -> Response {
    match error.code {
        ErrorCode::InsufficientCredits => reply_json(
            StatusCode::PAYMENT_REQUIRED,
            json!({"error": "Insufficient credits", "message": error.message}),
        ),
        _ => failed("create message", error.message),
    }
}
