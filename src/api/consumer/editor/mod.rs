//! The editor seed's session routes (`editor-api.md` §2.2): `/api/sessions*`,
//! `/api/messages*` and the image library's `/api/images/*`, one file per resource, in the
//! editor's own bodies (`{"error": ...}`, `{"message": ..., "<thing>": ...}`). The live socket
//! `/ws/{sessionId}` is [`live`].
//!
//! Every route needs a signed-in end user ([`Caller`]); a session, message or image of another
//! user or tenant is a 404 on every route (the origin answered 403 after the 404 check, which
//! told a caller the id exists). Store failures are the origin's 500 `{"error":"Failed to
//! <verb> <thing>"}`. Differences from the origin, each listed in README.md:
//! - the `/api/messages/*` routes work (the origin's always failed with a 500: `Session` was
//!   never imported in `routes/messages.js`);
//! - deleted sessions are not listed; the first page of messages is not one short (no
//!   `placeholder` entry); `editedOf` is `null`, `params`/`imageIds` are JSON values on every
//!   route (the origin returned strings after an update and `""` in lists);
//! - `pagination.total` stays the number of items returned (as the origin), and
//!   `pagination.totalAll` (added) counts every match;
//! - a malformed JSON body is a 400 `Validation failed` (the origin's was a 500);
//! - `GET /api/sessions?q=` searches titles and message texts; a session created without a
//!   title takes one from its first message;
//! - `POST /api/sessions/:id/messages` may ask for an image (`"generate": true`, see
//!   [`messages`]).

pub mod generate;
pub mod images;
pub mod live;
pub mod messages;
pub mod sessions;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::SignedIn;
use super::reply::{editor_error, json};
use crate::app::App;
use crate::base::clock::format_millis;
use crate::base::image::ImageOwner;
use crate::sessions::Sessions;
use crate::store::sessions::{EditorMessage, EditorSession, SessionOwner};
use crate::uploads::Library;

/// The editor's routes (the consumer router adds its request limit).
pub fn router(app: &App) -> Router<App> {
    Router::new()
        .route("/api/sessions", get(sessions::list).post(sessions::create))
        .route(
            "/api/sessions/{id}",
            get(sessions::get)
                .put(sessions::update)
                .delete(sessions::delete),
        )
        .route("/api/sessions/{id}/stats", get(sessions::stats))
        .route(
            "/api/sessions/{id}/messages",
            get(messages::list).post(messages::create),
        )
        .route(
            "/api/messages/{id}",
            get(messages::get)
                .put(messages::update)
                .delete(messages::delete),
        )
        .route(
            "/api/messages/{id}/images",
            get(messages::images).post(messages::add_image),
        )
        .route(
            "/api/messages/{id}/images/{image_id}",
            delete(messages::remove_image),
        )
        .route("/ws/{session_id}", get(live::socket))
        .merge(images::router(app))
}

/// The signed-in end user, as the owner of sessions and images, with the sessions on this
/// process's store and bus.
pub struct Caller {
    pub owner: SessionOwner,
    pub sessions: Sessions,
}

impl Caller {
    pub fn image_owner(&self) -> ImageOwner {
        ImageOwner::user(&self.owner.tenant_id, &self.owner.user_id)
    }
}

/// The sessions of this process.
pub fn sessions_of(app: &App) -> Sessions {
    Sessions::new(
        app.store.clone(),
        app.events.clone(),
        app.config.editor.clone(),
    )
}

impl FromRequestParts<App> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let SignedIn(authed) = SignedIn::from_request_parts(parts, app).await?;
        Ok(Caller {
            owner: SessionOwner::new(authed.user.tenant_id, authed.user.id),
            sessions: sessions_of(app),
        })
    }
}

/// `?limit=&offset=` as the origin read them (`parseInt(...) || default`): what does not parse
/// is the default. A limit is at least 1 and at most 1,000.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<String>,
    pub offset: Option<String>,
    pub q: Option<String>,
}

impl PageQuery {
    pub fn limit(&self, default: u32) -> u32 {
        self.limit
            .as_deref()
            .and_then(|l| l.trim().parse::<i64>().ok())
            .filter(|l| *l != 0)
            .map_or(default, |l| l.clamp(1, 1000) as u32)
    }

    pub fn offset(&self) -> u64 {
        self.offset
            .as_deref()
            .and_then(|o| o.trim().parse::<i64>().ok())
            .map_or(0, |o| o.max(0) as u64)
    }
}

pub fn pagination(limit: u32, offset: u64, returned: usize, all: u64) -> Value {
    json!({"limit": limit, "offset": offset, "total": returned, "totalAll": all})
}

pub fn not_found(thing: &str) -> Response {
    editor_error(StatusCode::NOT_FOUND, &format!("{thing} not found"))
}

/// The origin's handler failure: 500 `{"error":"Failed to <what>"}` (logged).
pub fn failed(what: &str, error: impl std::fmt::Display) -> Response {
    tracing::error!(error = %error, "editor: failed to {what}");
    editor_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("Failed to {what}"),
    )
}

pub fn created(body: Value) -> Response {
    json(StatusCode::CREATED, body)
}

pub fn ok(body: Value) -> Response {
    json(StatusCode::OK, body)
}

/// The editor's Session object.
pub fn session_json(session: &EditorSession) -> Value {
    json!({
        "id": session.id,
        "userId": session.user_id,
        "title": session.title,
        "createdAt": format_millis(session.created_at),
        "updatedAt": format_millis(session.updated_at),
        "messageCount": session.message_count,
        "deletedAt": session.deleted_at.map(format_millis),
    })
}

/// The editor's Message object (`jobId`, added, names the job a generating message started).
pub fn message_json(message: &EditorMessage) -> Value {
    json!({
        "id": message.id,
        "sessionId": message.session_id,
        "role": message.role,
        "text": message.text,
        "params": message.params,
        "imageIds": message.image_ids,
        "createdAt": format_millis(message.created_at),
        "updatedAt": format_millis(message.updated_at),
        "editedOf": message.edited_of,
        "jobId": message.job_id.as_ref().or(message.answers_job.as_ref()),
    })
}

/// The caller's images among `ids`, as Image objects, in order (unknown ids are skipped, as
/// the origin kept them silently).
pub async fn images_of(library: &Library, owner: &ImageOwner, ids: &[String]) -> Vec<Value> {
    let mut images = Vec::with_capacity(ids.len());
    for id in ids {
        if let Ok(record) = library.get(owner, id).await {
            images.push(crate::api::editor_images::image_json(library, &record).await);
        }
    }
    images
}

/// A message with its `images`.
pub async fn message_with_images(app: &App, caller: &Caller, message: &EditorMessage) -> Value {
    let mut body = message_json(message);
    body["images"] =
        Value::Array(images_of(&app.images, &caller.image_owner(), &message.image_ids).await);
    body
}
