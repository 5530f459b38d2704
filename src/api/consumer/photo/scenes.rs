//! `GET /api/scenes` (anyone: `category`, `status` default `active`, `keyword` on the name and
//! description, display order then newest), `GET /api/scenes/:scene_id`, and for admins
//! `POST`, `PUT` and `DELETE`.
//!
//! Differences from the origin (listed in the README): a new scene gets a `scene_id` (a UUID;
//! the origin never set one); `PUT` checks what it is given as `POST` does (the origin took
//! anything); the keyword match ignores case.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{done, filter, iso, listed, ok, ok_with, store_failure, ListQuery, Problems, Viewer};
use crate::api::consumer::extract::{AdminUser, JsonBody};
use crate::api::consumer::reply::photo_error;
use crate::app::App;
use crate::base::clock::now_millis;
use crate::store::photo::{Scene, SceneQuery};

const CATEGORIES: [&str; 3] = ["indoor", "outdoor", "studio"];

pub fn scene_json(s: &Scene) -> Value {
    json!({
        "scene_id": s.scene_id,
        "scene_name": s.scene_name,
        "category": s.category,
        "description": s.description,
        "prompt_template": s.prompt_template,
        "cover_image": s.cover_image,
        "parameters": s.parameters,
        "tags": s.tags,
        "status": s.status,
        "display_order": s.display_order,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    })
}

fn not_found() -> Response {
    photo_error(StatusCode::NOT_FOUND, "场景不存在")
}

pub async fn list(State(app): State<App>, viewer: Viewer, Query(q): Query<ListQuery>) -> Response {
    let page = q.page(50);
    let query = SceneQuery {
        tenant_id: viewer.tenant_id,
        category: filter(&q.category),
        status: Some(filter(&q.status).unwrap_or_else(|| "active".into())),
        keyword: filter(&q.keyword),
        offset: page.2,
        limit: page.1,
    };
    match app.store.photo_scene_list(query).await {
        Ok((scenes, total)) => listed(
            "scenes",
            scenes.iter().map(scene_json).collect(),
            page,
            total,
        ),
        Err(e) => store_failure(e),
    }
}

pub async fn get(State(app): State<App>, viewer: Viewer, Path(id): Path<String>) -> Response {
    match app.store.photo_scene_get(&viewer.tenant_id, &id).await {
        Ok(Some(scene)) => ok(json!({"scene": scene_json(&scene)})),
        Ok(None) => not_found(),
        Err(e) => store_failure(e),
    }
}

/// Applies the body's fields to `scene`; every problem of the body. `creating`: the name,
/// category and template are required.
fn apply(scene: &mut Scene, body: &Map<String, Value>, creating: bool) -> Result<bool, Vec<Value>> {
    let mut problems = Problems::default();
    let mut changed = false;
    let text = |name: &str| body.get(name).map(|v| v.as_str().map(str::to_owned));
    match text("scene_name") {
        Some(Some(n)) if !n.is_empty() && n.chars().count() <= 100 => {
            scene.scene_name = n;
            changed = true;
        }
        None if !creating => {}
        _ => problems.add("scene_name", "场景名称是必填项，且不超过100个字符"),
    }
    match text("category") {
        Some(Some(c)) if CATEGORIES.contains(&c.as_str()) => {
            scene.category = c;
            changed = true;
        }
        None if !creating => {}
        _ => problems.add("category", "场景分类必须是 indoor、outdoor 或 studio"),
    }
    match text("prompt_template") {
        Some(Some(t)) if !t.is_empty() => {
            scene.prompt_template = t;
            changed = true;
        }
        None if !creating => {}
        _ => problems.add("prompt_template", "提示词模板是必填项"),
    }
    match text("description") {
        Some(Some(d)) => {
            scene.description = Some(d);
            changed = true;
        }
        None => {}
        Some(None) => problems.add("description", "描述必须是字符串"),
    }
    match text("cover_image") {
        Some(Some(u)) if url::Url::parse(&u).is_ok() => {
            scene.cover_image = Some(u);
            changed = true;
        }
        None => {}
        _ => problems.add("cover_image", "封面图片必须是有效的URL"),
    }
    match text("status") {
        Some(Some(s)) if !s.is_empty() => {
            scene.status = s;
            changed = true;
        }
        None => {}
        _ => problems.add("status", "状态必须是字符串"),
    }
    match body.get("display_order").map(Value::as_i64) {
        Some(Some(order)) => {
            scene.display_order = order;
            changed = true;
        }
        None => {}
        Some(None) => problems.add("display_order", "排序必须是整数"),
    }
    for (name, slot) in [
        ("parameters", &mut scene.parameters),
        ("tags", &mut scene.tags),
    ] {
        if let Some(v) = body.get(name) {
            *slot = Some(v.clone());
            changed = true;
        }
    }
    problems.answer()?;
    Ok(changed)
}

pub async fn create(
    State(app): State<App>,
    AdminUser(admin): AdminUser,
    JsonBody(body): JsonBody,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(why) => return super::photo_invalid(vec![json!({"field": "body", "message": why})]),
    };
    let now = now_millis();
    let mut scene = Scene {
        scene_id: crate::photo::new_uuid(),
        tenant_id: admin.user.tenant_id.clone(),
        scene_name: String::new(),
        category: String::new(),
        description: None,
        prompt_template: String::new(),
        cover_image: None,
        parameters: None,
        tags: None,
        status: "active".into(),
        display_order: 0,
        created_at: now,
        updated_at: now,
    };
    if let Err(errors) = apply(&mut scene, &body, true) {
        return super::photo_invalid(errors);
    }
    match app.store.photo_scene_put(scene.clone()).await {
        Ok(()) => ok_with("场景创建成功", json!({"scene": scene_json(&scene)})),
        Err(e) => store_failure(e),
    }
}

pub async fn update(
    State(app): State<App>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let body = body.unwrap_or_default();
    let mut scene = match app.store.photo_scene_get(&admin.user.tenant_id, &id).await {
        Ok(Some(scene)) => scene,
        Ok(None) => return not_found(),
        Err(e) => return store_failure(e),
    };
    match apply(&mut scene, &body, false) {
        Err(errors) => return super::photo_invalid(errors),
        Ok(false) => return photo_error(StatusCode::BAD_REQUEST, "没有需要更新的字段"),
        Ok(true) => {}
    }
    scene.updated_at = now_millis();
    match app.store.photo_scene_put(scene.clone()).await {
        Ok(()) => ok_with("场景更新成功", json!({"scene": scene_json(&scene)})),
        Err(e) => store_failure(e),
    }
}

pub async fn delete(
    State(app): State<App>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Response {
    match app
        .store
        .photo_scene_delete(&admin.user.tenant_id, &id)
        .await
    {
        Ok(true) => done("场景删除成功"),
        Ok(false) => not_found(),
        Err(e) => store_failure(e),
    }
}
