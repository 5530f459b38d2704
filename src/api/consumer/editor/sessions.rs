//! `/api/sessions` and `/api/sessions/:id` (and `/stats`): the caller's editing sessions.
//! Listed newest-touched first (a change to a session or its messages touches it), deleted
//! ones left out; `?q=` searches titles and message texts (case-insensitive).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{created, failed, not_found, ok, pagination, session_json, Caller, PageQuery};
use crate::api::consumer::extract::JsonBody;
use crate::api::consumer::joi::{self, Kind};
use crate::api::consumer::reply::editor_invalid;
use crate::app::App;
use crate::store::sessions::SessionListQuery;

const TITLE: Kind = Kind::Text { min: 1, max: 100 };

/// The body's `title` after the origin's Joi check (`required` for an update), or the
/// `details` of its 400.
fn title(body: JsonBody, required: bool) -> Result<Option<String>, String> {
    let body: Map<String, Value> = body.0?;
    let field = if required {
        joi::required("title", TITLE)
    } else {
        joi::optional("title", TITLE)
    };
    if let Some(problem) = joi::check(&body, &[field], false).first() {
        return Err(problem.message.clone());
    }
    Ok(joi::text(&body, "title").map(str::to_owned))
}

/// `GET /api/sessions?limit=20&offset=0&q=`
pub async fn list(caller: Caller, Query(page): Query<PageQuery>) -> Response {
    let (limit, offset) = (page.limit(20), page.offset());
    let q = page.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let query = SessionListQuery {
        owner: caller.owner.clone(),
        q: q.map(str::to_owned),
        limit,
        offset,
    };
    match caller.sessions.list(query).await {
        Ok((sessions, all)) => ok(json!({
            "sessions": sessions.iter().map(session_json).collect::<Vec<_>>(),
            "pagination": pagination(limit, offset, sessions.len(), all),
        })),
        Err(e) => failed("get sessions", e),
    }
}

/// `POST /api/sessions` `{"title"?}` → 201.
pub async fn create(caller: Caller, body: JsonBody) -> Response {
    let title = match title(body, false) {
        Ok(title) => title,
        Err(why) => return editor_invalid(&why),
    };
    match caller
        .sessions
        .create(&caller.owner, title.as_deref())
        .await
    {
        Ok(session) => created(json!({
            "message": "Session created successfully",
            "session": session_json(&session),
        })),
        Err(e) => failed("create session", e),
    }
}

/// `GET /api/sessions/:id`
pub async fn get(caller: Caller, Path(id): Path<String>) -> Response {
    match caller.sessions.get(&caller.owner, &id).await {
        Ok(Some(session)) => ok(json!({"session": session_json(&session)})),
        Ok(None) => not_found("Session"),
        Err(e) => failed("get session", e),
    }
}

/// `PUT /api/sessions/:id` `{"title"}`
pub async fn update(caller: Caller, Path(id): Path<String>, body: JsonBody) -> Response {
    let title = match title(body, true) {
        Ok(title) => title.unwrap_or_default(),
        Err(why) => return editor_invalid(&why),
    };
    match caller.sessions.rename(&caller.owner, &id, &title).await {
        Ok(Some(session)) => ok(json!({
            "message": "Session updated successfully",
            "session": session_json(&session),
        })),
        Ok(None) => not_found("Session"),
        Err(e) => failed("update session", e),
    }
}

/// `DELETE /api/sessions/:id`: a soft delete (its messages stay, unlisted).
pub async fn delete(caller: Caller, Path(id): Path<String>) -> Response {
    match caller.sessions.delete(&caller.owner, &id).await {
        Ok(true) => ok(json!({"message": "Session deleted successfully"})),
        Ok(false) => not_found("Session"),
        Err(e) => failed("delete session", e),
    }
}

/// `GET /api/sessions/:id/stats`
pub async fn stats(State(_app): State<App>, caller: Caller, Path(id): Path<String>) -> Response {
    match caller.sessions.get(&caller.owner, &id).await {
        Ok(Some(s)) => ok(json!({"stats": {
            "messageCount": s.message_count,
            "totalMessages": s.message_count,
            "createdAt": crate::base::clock::format_millis(s.created_at),
            "updatedAt": crate::base::clock::format_millis(s.updated_at),
        }})),
        Ok(None) => not_found("Session"),
        Err(e) => failed("get session stats", e),
    }
}
