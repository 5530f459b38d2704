//! `/api/images/*`: the image library in the editor's shapes ([`crate::api::editor_images`]
//! holds the handlers), mounted for the signed-in end user. Upload routes take the library's
//! file limit (per file, times ten for a batch) instead of the JSON body limit.

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::Caller;
use crate::api::editor_images::{self as handlers, ListParams, MAX_BATCH_FILES};
use crate::app::App;

pub fn router(app: &App) -> Router<App> {
    Router::new()
        .route(
            "/api/images/upload",
            post(upload).layer(crate::api::upload_body_limit(app, 1)),
        )
        .route(
            "/api/images/upload/batch",
            post(upload_batch).layer(crate::api::upload_body_limit(app, MAX_BATCH_FILES as u64)),
        )
        .route("/api/images/user/all", get(list_all))
        .route("/api/images/session/{session_id}", get(list_session))
        .route("/api/images/{id}", get(get_one).delete(delete_one))
}

async fn upload(
    State(app): State<App>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    handlers::upload(app, caller.image_owner(), multipart).await
}

async fn upload_batch(
    State(app): State<App>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    handlers::upload_batch(app, caller.image_owner(), multipart).await
}

async fn get_one(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> Response {
    handlers::get(app, caller.image_owner(), id).await
}

async fn delete_one(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> Response {
    handlers::delete(app, caller.image_owner(), id).await
}

async fn list_all(State(app): State<App>, caller: Caller, query: Query<ListParams>) -> Response {
    handlers::list(app, caller.image_owner(), None, query).await
}

async fn list_session(
    State(app): State<App>,
    caller: Caller,
    Path(session_id): Path<String>,
    query: Query<ListParams>,
) -> Response {
    handlers::list(app, caller.image_owner(), Some(session_id), query).await
}
