//! `GET /api/works` (own works when signed in, public ones otherwise; `status` defaults to
//! `completed`; `type`, `is_public`, `is_favorite`, and `user_id` for admins), `GET`, `PUT`
//! and `DELETE /api/works/:work_id`, and `POST /api/works/batch/delete` (all or nothing).
//!
//! Differences from the origin (listed in the README): a work's `images` are
//! `[{url, format, batch_index}]` with signed (or public) links to Easel's storage, so the
//! mini-program's `<image>` tags load them without a header; a work exists once its task
//! ended (the origin wrote a pending one at creation); `PUT`'s fields are checked (a
//! non-boolean `is_public` is a 400 in the validation shape).

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{
    done, filter, flag, iso, listed, ok, ok_with, store_failure, ListQuery, Problems, Viewer,
};
use crate::api::consumer::extract::{JsonBody, SignedIn};
use crate::api::consumer::reply::photo_error;
use crate::app::App;
use crate::base::clock::now_millis;
use crate::store::photo::{Work, WorkPatch, WorkQuery};

/// A work as the origin's row, with links to its images.
pub async fn work_json(app: &App, w: &Work) -> Value {
    let mut images = Vec::with_capacity(w.images.len());
    for (index, key) in w.images.iter().enumerate() {
        let format = key.rsplit('.').next().unwrap_or("png");
        images.push(json!({
            "url": app.images.link(key).await,
            "format": format,
            "batch_index": index + 1,
        }));
    }
    json!({
        "work_id": w.work_id,
        "user_id": w.user_seq,
        "task_id": w.task_id,
        "type": w.work_type,
        "status": w.status,
        "images": images,
        "original_images": w.original_images,
        "parameters": w.parameters,
        "custom_description": w.custom_description,
        "ai_description": w.ai_description,
        "is_public": u8::from(w.is_public),
        "is_favorite": u8::from(w.is_favorite),
        "tags": w.tags,
        "error": w.error,
        "created_at": iso(w.created_at),
        "updated_at": iso(w.updated_at),
        "completed_at": w.completed_at.map(iso),
    })
}

pub async fn list(State(app): State<App>, viewer: Viewer, Query(q): Query<ListQuery>) -> Response {
    let page = q.page(20);
    let user_seq = q
        .user_id
        .as_deref()
        .filter(|_| viewer.is_admin())
        .and_then(|id| id.parse().ok());
    let signed_in = viewer.user_id().map(str::to_owned);
    let query = WorkQuery {
        tenant_id: viewer.tenant_id.clone(),
        is_public: if signed_in.is_none() {
            Some(true)
        } else {
            flag(&q.is_public)
        },
        user_id: signed_in,
        user_seq,
        work_type: filter(&q.kind),
        status: Some(filter(&q.status).unwrap_or_else(|| "completed".into())),
        is_favorite: flag(&q.is_favorite),
        offset: page.2,
        limit: page.1,
    };
    match app.store.photo_work_list(query).await {
        Ok((works, total)) => {
            let mut items = Vec::with_capacity(works.len());
            for w in &works {
                items.push(work_json(&app, w).await);
            }
            listed("works", items, page, total)
        }
        Err(e) => store_failure(e),
    }
}

pub async fn get(State(app): State<App>, viewer: Viewer, Path(id): Path<String>) -> Response {
    match app.store.photo_work_get(&viewer.tenant_id, &id).await {
        Ok(Some(w)) if w.is_public || viewer.user_id() == Some(w.user_id.as_str()) => {
            ok(json!({"work": work_json(&app, &w).await}))
        }
        Ok(_) => photo_error(StatusCode::NOT_FOUND, "作品不存在"),
        Err(e) => store_failure(e),
    }
}

fn not_yours() -> Response {
    photo_error(StatusCode::NOT_FOUND, "作品不存在或无权操作")
}

fn patch_of(body: &serde_json::Map<String, Value>) -> Result<WorkPatch, Vec<Value>> {
    let mut problems = Problems::default();
    let mut patch = WorkPatch::default();
    for (name, slot, message) in [
        (
            "is_favorite",
            &mut patch.is_favorite,
            "收藏状态必须是布尔值",
        ),
        ("is_public", &mut patch.is_public, "公开状态必须是布尔值"),
    ] {
        match body.get(name) {
            None => {}
            Some(Value::Bool(b)) => *slot = Some(*b),
            Some(_) => problems.add(name, message),
        }
    }
    match body.get("tags") {
        None => {}
        Some(Value::Array(tags)) if tags.iter().all(Value::is_string) => {
            patch.tags = Some(
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect(),
            );
        }
        Some(_) => problems.add("tags", "标签必须是字符串数组"),
    }
    problems.answer()?;
    Ok(patch)
}

pub async fn update(
    State(app): State<App>,
    SignedIn(authed): SignedIn,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let patch = match patch_of(&body.unwrap_or_default()) {
        Ok(patch) => patch,
        Err(errors) => return super::photo_invalid(errors),
    };
    if patch == WorkPatch::default() {
        return photo_error(StatusCode::BAD_REQUEST, "没有需要更新的字段");
    }
    let user = &authed.user;
    match app
        .store
        .photo_work_update(&user.tenant_id, &user.id, &id, patch, now_millis())
        .await
    {
        Ok(Some(w)) => ok_with("更新成功", json!({"work": work_json(&app, &w).await})),
        Ok(None) => not_yours(),
        Err(e) => store_failure(e),
    }
}

pub async fn delete(
    State(app): State<App>,
    SignedIn(authed): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let user = &authed.user;
    match app
        .store
        .photo_works_delete(&user.tenant_id, &user.id, &[id])
        .await
    {
        Ok(true) => done("删除成功"),
        Ok(false) => not_yours(),
        Err(e) => store_failure(e),
    }
}

pub async fn batch_delete(
    State(app): State<App>,
    SignedIn(authed): SignedIn,
    JsonBody(body): JsonBody,
) -> Response {
    let body = body.unwrap_or_default();
    let ids: Option<BTreeSet<String>> = body
        .get("work_ids")
        .and_then(Value::as_array)
        .filter(|ids| !ids.is_empty())
        .and_then(|ids| ids.iter().map(|v| v.as_str().map(str::to_owned)).collect());
    let Some(ids) = ids else {
        return photo_error(StatusCode::BAD_REQUEST, "请提供要删除的作品ID列表");
    };
    let ids: Vec<String> = ids.into_iter().collect();
    let user = &authed.user;
    match app
        .store
        .photo_works_delete(&user.tenant_id, &user.id, &ids)
        .await
    {
        Ok(true) => done(&format!("成功删除 {} 个作品", ids.len())),
        Ok(false) => photo_error(StatusCode::FORBIDDEN, "部分作品不存在或无权操作"),
        Err(e) => store_failure(e),
    }
}
