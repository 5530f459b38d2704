//! `POST /api/sessions/:id/messages` with `"generate": true`: the message and the job it
//! starts.

use axum::http::StatusCode;
use axum::response::Response;

use super::messages::MessageBody;
use super::Caller;
use crate::api::consumer::reply::editor_error;
use crate::app::App;

pub async fn create(
    _app: &App,
    _caller: &Caller,
    _session_id: &str,
    _body: MessageBody,
) -> Response {
    editor_error(
        StatusCode::NOT_IMPLEMENTED,
        "Generation is not available yet",
    )
}
