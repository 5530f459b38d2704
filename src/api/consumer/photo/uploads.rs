//! `/api/upload/*` for the signed-in end user: the routes of [`crate::api::photo_uploads`] on
//! the user's share of the image library (the differences from the origin are listed there).

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use crate::api::consumer::extract::{JsonBody, SignedIn};
use crate::api::photo_uploads;
use crate::app::App;
use crate::base::image::ImageOwner;

fn owner(SignedIn(authed): &SignedIn) -> ImageOwner {
    ImageOwner::user(&authed.user.tenant_id, &authed.user.id)
}

pub async fn single(
    State(app): State<App>,
    user: SignedIn,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    photo_uploads::single(app, owner(&user), multipart).await
}

pub async fn multiple(
    State(app): State<App>,
    user: SignedIn,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    photo_uploads::multiple(app, owner(&user), multipart).await
}

pub async fn base64(State(app): State<App>, user: SignedIn, JsonBody(body): JsonBody) -> Response {
    photo_uploads::base64(app, owner(&user), body.unwrap_or_default()).await
}

pub async fn base64_batch(
    State(app): State<App>,
    user: SignedIn,
    JsonBody(body): JsonBody,
) -> Response {
    photo_uploads::base64_batch(app, owner(&user), body.unwrap_or_default()).await
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(rename = "subDir")]
    sub_dir: Option<String>,
}

pub async fn delete(
    State(app): State<App>,
    user: SignedIn,
    Path(file_name): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Response {
    photo_uploads::delete(app, owner(&user), file_name, query.sub_dir).await
}
