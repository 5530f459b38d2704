//! `/api/sessions/:id/messages` and `/api/messages/:id` (with its image sub-routes): the
//! messages of the caller's sessions, oldest first. A message's images each hold a reference
//! (`refCount`) on the caller's image while the message names them; ids that are not the
//! caller's images are kept, as the origin kept unknown ids, and hold nothing.
//!
//! `POST /api/sessions/:id/messages` with `"generate": true` (beyond the origin) also starts a
//! job from the message, see [`super::generate`]; the answer then carries `jobId`.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{
    created, failed, images_of, message_with_images, not_found, ok, pagination, Caller, PageQuery,
};
use crate::api::consumer::extract::JsonBody;
use crate::api::consumer::reply::editor_invalid;
use crate::app::App;
use crate::store::sessions::{EditorMessage, MessagePatch, NewMessage};

/// What a create or update body may hold, after the origin's Joi rules.
#[derive(Debug, Default)]
pub struct MessageBody {
    pub role: Option<String>,
    pub text: Option<String>,
    pub params: Option<Map<String, Value>>,
    pub image_ids: Option<Vec<String>>,
    pub generate: bool,
}

fn is_allowed(key: &str, create: bool) -> bool {
    matches!(key, "text" | "params" | "imageIds") || (create && matches!(key, "role" | "generate"))
}

/// The first problem, as Joi words it, in the schema's order; unknown keys last.
fn parse_body(body: &Map<String, Value>, create: bool) -> Result<MessageBody, String> {
    let mut out = MessageBody::default();
    if create {
        out.role = Some(match body.get("role") {
            None => return Err("\"role\" is required".into()),
            Some(Value::String(r)) if r == "user" || r == "assistant" => r.clone(),
            Some(_) => return Err("\"role\" must be one of [user, assistant]".into()),
        });
    }
    out.text = match body.get("text") {
        None if create => return Err("\"text\" is required".into()),
        None => None,
        Some(Value::String(t)) if t.is_empty() => {
            return Err("\"text\" is not allowed to be empty".into())
        }
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err("\"text\" must be a string".into()),
    };
    out.params = match body.get("params") {
        None => None,
        Some(Value::Object(p)) => Some(p.clone()),
        Some(_) => return Err("\"params\" must be of type object".into()),
    };
    out.image_ids = match body.get("imageIds") {
        None => None,
        Some(Value::Array(items)) => Some(image_ids(items)?),
        Some(_) => return Err("\"imageIds\" must be an array".into()),
    };
    if create {
        out.generate = match body.get("generate") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("\"generate\" must be a boolean".into()),
        };
    }
    if let Some(key) = body.keys().find(|k| !is_allowed(k, create)) {
        return Err(format!("\"{key}\" is not allowed"));
    }
    Ok(out)
}

fn image_ids(items: &[Value]) -> Result<Vec<String>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::String(_) => Err(format!("\"imageIds[{i}]\" is not allowed to be empty")),
            _ => Err(format!("\"imageIds[{i}]\" must be a string")),
        })
        .collect()
}

/// The checked body, or the `details` of its 400.
fn read(body: JsonBody, create: bool) -> Result<MessageBody, String> {
    parse_body(&body.0?, create)
}

/// `GET /api/sessions/:id/messages?limit=50&offset=0`
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    Path(session_id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Response {
    let (limit, offset) = (page.limit(50), page.offset());
    let listed = caller
        .sessions
        .store
        .editor_message_list(&caller.owner, &session_id, limit, offset)
        .await;
    match listed {
        Ok(Some((messages, all))) => {
            let mut items = Vec::with_capacity(messages.len());
            for message in &messages {
                items.push(message_with_images(&app, &caller, message).await);
            }
            ok(json!({
                "messages": items,
                "pagination": pagination(limit, offset, messages.len(), all),
            }))
        }
        Ok(None) => not_found("Session"),
        Err(e) => failed("get messages", e),
    }
}

/// `POST /api/sessions/:id/messages` → 201 `{"message", "messageData"}` (and `jobId` when it
/// generates).
pub async fn create(
    State(app): State<App>,
    caller: Caller,
    Path(session_id): Path<String>,
    body: JsonBody,
) -> Response {
    let body = match read(body, true) {
        Ok(body) => body,
        Err(why) => return editor_invalid(&why),
    };
    if body.generate {
        return super::generate::create(&app, &caller, &session_id, body).await;
    }
    let new = new_message(&session_id, body, None);
    match caller.sessions.add_message(&caller.owner, new).await {
        Ok(Some(message)) => created(json!({
            "message": "Message created successfully",
            "messageData": message_with_images(&app, &caller, &message).await,
        })),
        Ok(None) => not_found("Session"),
        Err(e) => failed("create message", e),
    }
}

/// The message a checked create body makes.
pub fn new_message(session_id: &str, body: MessageBody, job_id: Option<String>) -> NewMessage {
    NewMessage {
        id: ulid::Ulid::new().to_string(),
        session_id: session_id.to_owned(),
        role: body.role.unwrap_or_else(|| "user".into()),
        text: body.text.unwrap_or_default(),
        params: Value::Object(body.params.unwrap_or_default()),
        image_ids: body.image_ids.unwrap_or_default(),
        edited_of: None,
        job_id,
        answers_job: None,
        auto_title: None,
    }
}

/// The caller's message, or the answer to give instead.
async fn owned(caller: &Caller, id: &str) -> Result<EditorMessage, Response> {
    match caller.sessions.get_message(&caller.owner, id).await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(not_found("Message")),
        Err(e) => Err(failed("get message", e)),
    }
}

/// `GET /api/messages/:id` → `{"message": {..., "images": [...]}}`
pub async fn get(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> Response {
    match owned(&caller, &id).await {
        Ok(message) => ok(json!({"message": message_with_images(&app, &caller, &message).await})),
        Err(response) => response,
    }
}

async fn patch(app: &App, caller: &Caller, id: &str, patch: MessagePatch, done: &str) -> Response {
    match caller
        .sessions
        .update_message(&caller.owner, id, patch)
        .await
    {
        Ok(Some(message)) => ok(json!({
            "message": done,
            "messageData": message_with_images(app, caller, &message).await,
        })),
        Ok(None) => not_found("Message"),
        Err(e) => failed("update message", e),
    }
}

/// `PUT /api/messages/:id` `{"text"?, "params"?, "imageIds"?}`
pub async fn update(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody,
) -> Response {
    let body = match read(body, false) {
        Ok(body) => body,
        Err(why) => return editor_invalid(&why),
    };
    let change = MessagePatch {
        text: body.text,
        params: body.params.map(Value::Object),
        image_ids: body.image_ids,
    };
    patch(&app, &caller, &id, change, "Message updated successfully").await
}

/// `DELETE /api/messages/:id`
pub async fn delete(caller: Caller, Path(id): Path<String>) -> Response {
    match caller.sessions.delete_message(&caller.owner, &id).await {
        Ok(Some(_)) => ok(json!({"message": "Message deleted successfully"})),
        Ok(None) => not_found("Message"),
        Err(e) => failed("delete message", e),
    }
}

/// `GET /api/messages/:id/images` → `{"images": [...]}`
pub async fn images(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> Response {
    match owned(&caller, &id).await {
        Ok(message) => ok(
            json!({"images": images_of(&app.images, &caller.image_owner(), &message.image_ids).await}),
        ),
        Err(response) => response,
    }
}

/// `POST /api/messages/:id/images` `{"imageId"}`: the caller's image joins the message.
pub async fn add_image(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    body: JsonBody,
) -> Response {
    let image_id = match body.0.as_ref().map(|b| (b.get("imageId"), b.len())) {
        Err(why) => return editor_invalid(why),
        Ok((None, _)) => return editor_invalid("\"imageId\" is required"),
        Ok((Some(Value::String(s)), 1)) if !s.is_empty() => s.clone(),
        Ok((Some(Value::String(s)), 1)) if s.is_empty() => {
            return editor_invalid("\"imageId\" is not allowed to be empty")
        }
        Ok((Some(Value::String(_)), _)) => {
            let map = body.0.unwrap_or_default();
            let key = map
                .keys()
                .find(|k| *k != "imageId")
                .cloned()
                .unwrap_or_default();
            return editor_invalid(&format!("\"{key}\" is not allowed"));
        }
        Ok((Some(_), _)) => return editor_invalid("\"imageId\" must be a string"),
    };
    if app
        .images
        .get(&caller.image_owner(), &image_id)
        .await
        .is_err()
    {
        return not_found("Image");
    }
    let mut message = match owned(&caller, &id).await {
        Ok(message) => message,
        Err(response) => return response,
    };
    if !message.image_ids.contains(&image_id) {
        message.image_ids.push(image_id);
    }
    let change = MessagePatch {
        image_ids: Some(message.image_ids),
        ..MessagePatch::default()
    };
    patch(
        &app,
        &caller,
        &id,
        change,
        "Image added to message successfully",
    )
    .await
}

/// `DELETE /api/messages/:id/images/:imageId`: 404 when the message does not hold it.
pub async fn remove_image(
    State(app): State<App>,
    caller: Caller,
    Path((id, image_id)): Path<(String, String)>,
) -> Response {
    let message = match owned(&caller, &id).await {
        Ok(message) => message,
        Err(response) => return response,
    };
    if !message.image_ids.contains(&image_id) {
        return not_found("Image");
    }
    let change = MessagePatch {
        image_ids: Some(
            message
                .image_ids
                .into_iter()
                .filter(|i| *i != image_id)
                .collect(),
        ),
        ..MessagePatch::default()
    };
    patch(
        &app,
        &caller,
        &id,
        change,
        "Image removed from message successfully",
    )
    .await
}
