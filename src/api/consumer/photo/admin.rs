//! The photo app's admin area (`/api/admin/*`, admins only: 401 `请先登录`, 403
//! `需要管理员权限`): `stats/overview`, `users` (list; `PUT` role, status and a credit
//! adjustment through the ledger), `works`, `tasks`, `orders`, and `config` (`GET`, `PUT
//! :config_key`, values typed by `value_type`).
//!
//! Differences from the origin (listed in the README): a credit adjustment is one ledger
//! `adjustment` entry (shown as `gift` or `consume` in the credit records), refused with 400
//! `积分不足` when it would take the balance below zero; a config value must match its type
//! (a 400 in the validation shape otherwise); money figures are strings with two decimals;
//! the user list is read whole and paged in memory (admin pages, not a hot path).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::tasks::task_json;
use super::works::work_json;
use super::{done, filter, listed, ok, ok_with, photo_invalid, store_failure, ListQuery, Problems};
use crate::accounts::users::credit_balance;
use crate::api::consumer::extract::{AdminUser, JsonBody};
use crate::api::consumer::reply::{photo_error, user_json};
use crate::app::App;
use crate::base::clock::{format_millis, now_millis};
use crate::base::ledger::{AccountRef, EntryKind, NewEntry, Order, PostOutcome};
use crate::base::user::{EndUser, Role, UserStatus};
use crate::store::photo::{ConfigEntry, OrderListQuery, TaskQuery, WorkQuery, OVERVIEW};

const DAY_MS: i64 = 86_400_000;

fn yuan(cents: i64) -> String {
    format!("{:.2}", cents as f64 / 100.0)
}

pub async fn overview(State(app): State<App>, AdminUser(admin): AdminUser) -> Response {
    let today = now_millis() / DAY_MS * DAY_MS;
    let figures = match app.store.photo_overview(&admin.user.tenant_id, today).await {
        Ok(figures) => figures,
        Err(e) => return store_failure(e),
    };
    let mut data = Map::new();
    for ((group, name, _), value) in OVERVIEW.iter().zip(figures) {
        let shown = if group == &"orders" && name.ends_with("revenue") {
            json!(yuan(value))
        } else {
            json!(value)
        };
        let entry = data
            .entry((*group).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(fields) = entry {
            fields.insert((*name).to_owned(), shown);
        }
    }
    ok(Value::Object(data))
}

/// Users by internal id, read once per page: the rows' `user_id` (number), `nickname` and
/// `avatar_url`.
struct Names<'a> {
    app: &'a App,
    tenant_id: &'a str,
    seen: HashMap<String, Option<EndUser>>,
}

impl Names<'_> {
    async fn add_to(&mut self, row: &mut Value, user_id: &str) {
        if !self.seen.contains_key(user_id) {
            let user = self
                .app
                .store
                .user_get(self.tenant_id, user_id)
                .await
                .ok()
                .flatten();
            self.seen.insert(user_id.to_owned(), user);
        }
        let user = self.seen.get(user_id).and_then(Option::as_ref);
        row["user_id"] = json!(user.map(|u| u.seq));
        row["nickname"] = json!(user.and_then(|u| u.nickname.clone()));
        row["avatar_url"] = json!(user.and_then(|u| u.avatar.clone()));
    }
}

/// The internal id of the user numbered `seq` (the origin's `user_id` filter); `Err` when
/// there is none (an empty list then).
async fn user_of_seq(
    app: &App,
    tenant_id: &str,
    seq: &Option<String>,
) -> Result<Option<String>, ()> {
    let Some(seq) = filter(seq) else {
        return Ok(None);
    };
    let seq: i64 = seq.parse().map_err(|_| ())?;
    match app.store.user_get_by_seq(tenant_id, seq).await {
        Ok(Some(user)) => Ok(Some(user.id)),
        _ => Err(()),
    }
}

fn empty(name: &str, page: (u64, u32, u64)) -> Response {
    listed(name, Vec::new(), page, 0)
}

pub async fn users(
    State(app): State<App>,
    AdminUser(admin): AdminUser,
    Query(q): Query<ListQuery>,
) -> Response {
    let page = q.page(20);
    let all = match app.store.user_list(&admin.user.tenant_id).await {
        Ok(all) => all,
        Err(e) => return store_failure(e),
    };
    let keyword = filter(&q.keyword).map(|k| k.to_lowercase());
    let (role, status) = (filter(&q.role), filter(&q.status));
    let matching: Vec<&EndUser> = all
        .iter()
        .filter(|u| role.as_deref().is_none_or(|r| u.role.as_str() == r))
        .filter(|u| status.as_deref().is_none_or(|s| u.status.as_str() == s))
        .filter(|u| {
            keyword.as_deref().is_none_or(|k| {
                [&u.nickname, &u.wechat_openid]
                    .iter()
                    .any(|f| f.as_deref().is_some_and(|v| v.to_lowercase().contains(k)))
            })
        })
        .collect();
    let total = matching.len() as u64;
    let mut rows = Vec::new();
    for user in matching
        .into_iter()
        .rev()
        .skip(usize::try_from(page.2).unwrap_or(usize::MAX))
        .take(page.1 as usize)
    {
        rows.push(user_json(
            user,
            credit_balance(app.store.as_ref(), user).await,
        ));
    }
    listed("users", rows, page, total)
}

/// A checked `PUT /api/admin/users/:id` body.
struct UserChange {
    role: Option<Role>,
    status: Option<UserStatus>,
    adjustment: Option<i64>,
    reason: Option<String>,
}

fn user_change(body: &Map<String, Value>) -> Result<UserChange, Vec<Value>> {
    let mut problems = Problems::default();
    let text = |name: &str| body.get(name).and_then(Value::as_str);
    let role = body.get("role").map(|_| text("role").and_then(Role::parse));
    if role == Some(None) {
        problems.add("role", "角色必须是 user 或 admin");
    }
    let status = body
        .get("status")
        .map(|_| text("status").and_then(UserStatus::parse));
    if status == Some(None) {
        problems.add("status", "状态必须是 active 或 inactive");
    }
    let adjustment = body.get("credits_adjustment").map(Value::as_i64);
    if adjustment == Some(None) {
        problems.add("credits_adjustment", "积分调整必须是整数");
    }
    problems.answer()?;
    Ok(UserChange {
        role: role.flatten(),
        status: status.flatten(),
        adjustment: adjustment.flatten().filter(|n| *n != 0),
        reason: text("adjustment_reason").map(str::to_owned),
    })
}

pub async fn update_user(
    State(app): State<App>,
    AdminUser(admin): AdminUser,
    Path(seq): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let change = match user_change(&body.unwrap_or_default()) {
        Ok(change) => change,
        Err(errors) => return photo_invalid(errors),
    };
    let tenant_id = admin.user.tenant_id.clone();
    let found = match seq.parse() {
        Ok(seq) => app.store.user_get_by_seq(&tenant_id, seq).await,
        Err(_) => Ok(None),
    };
    let mut user = match found {
        Ok(Some(user)) => user,
        Ok(None) => return photo_error(StatusCode::NOT_FOUND, "用户不存在"),
        Err(e) => return store_failure(e),
    };
    if let Some(amount) = change.adjustment {
        let entry = NewEntry {
            account: AccountRef::user(&tenant_id, &user.id),
            kind: EntryKind::Adjustment,
            amount,
            idem_key: format!("admin:{}", crate::photo::new_uuid()),
            reason: Some(change.reason.unwrap_or_else(|| "管理员调整".into())),
            actor: Some(admin.user.id.clone()),
            at: now_millis(),
        };
        match app.store.ledger_post(entry).await {
            Ok(PostOutcome::Insufficient { .. }) => {
                return photo_error(StatusCode::BAD_REQUEST, "积分不足")
            }
            Ok(_) => {}
            Err(e) => return store_failure(e),
        }
    }
    if let Some(role) = change.role {
        match app.store.user_set_role(&tenant_id, &user.id, role).await {
            Ok(changed) => user = changed,
            Err(e) => return store_failure(e),
        }
    }
    if let Some(status) = change.status {
        match app
            .store
            .user_set_status(&tenant_id, &user.id, status)
            .await
        {
            Ok(changed) => user = changed,
            Err(e) => return store_failure(e),
        }
    }
    let credits = credit_balance(app.store.as_ref(), &user).await;
    ok_with("用户更新成功", json!({"user": user_json(&user, credits)}))
}

/// Rows of an admin list, each with its user's `nickname` and `avatar_url`.
async fn with_names(
    app: &App,
    tenant_id: &str,
    name: &str,
    page: (u64, u32, u64),
    (rows, total): (Vec<(Value, String)>, u64),
) -> Response {
    let mut names = Names {
        app,
        tenant_id,
        seen: HashMap::new(),
    };
    let mut named = Vec::with_capacity(rows.len());
    for (mut row, owner) in rows {
        names.add_to(&mut row, &owner).await;
        named.push(row);
    }
    listed(name, named, page, total)
}

/// An admin list's page and `user_id` filter; `None` when no user has that number.
async fn listing(
    app: &App,
    tenant_id: &str,
    q: &ListQuery,
) -> Option<((u64, u32, u64), Option<String>)> {
    let user_id = user_of_seq(app, tenant_id, &q.user_id).await.ok()?;
    Some((q.page(20), user_id))
}

pub async fn works(
    State(app): State<App>,
    AdminUser(admin): AdminUser,
    Query(q): Query<ListQuery>,
) -> Response {
    let tenant_id = &admin.user.tenant_id;
    let Some((page, user_id)) = listing(&app, tenant_id, &q).await else {
        return empty("works", q.page(20));
    };
    let query = WorkQuery {
        tenant_id: tenant_id.clone(),
        user_id,
        work_type: filter(&q.kind),
        status: filter(&q.status),
        offset: page.2,
        limit: page.1,
        ..WorkQuery::default()
    };
    let (found, total) = match app.store.photo_work_list(query).await {
        Ok(found) => found,
        Err(e) => return store_failure(e),
    };
    let mut rows = Vec::with_capacity(found.len());
    for w in &found {
        rows.push((work_json(&app, w).await, w.user_id.clone()));
    }
    with_names(&app, tenant_id, "works", page, (rows, total)).await
}

pub async fn tasks(
    State(app): State<App>,
    AdminUser(admin): AdminUser,
    Query(q): Query<ListQuery>,
) -> Response {
    let tenant_id = &admin.user.tenant_id;
    let Some((page, user_id)) = listing(&app, tenant_id, &q).await else {
        return empty("tasks", q.page(20));
    };
    let query = TaskQuery {
        tenant_id: tenant_id.clone(),
        user_id,
        task_type: filter(&q.kind),
        status: filter(&q.status),
        offset: page.2,
        limit: page.1,
    };
    let found = app
        .store
        .photo_task_list(query)
        .await
        .map(|(found, total)| {
            let rows = found
                .iter()
                .map(|t| (task_json(t, None), t.user_id.clone()));
            (rows.collect(), total)
        });
    match found {
        Ok(found) => with_names(&app, tenant_id, "tasks", page, found).await,
        Err(e) => store_failure(e),
    }
}

pub async fn orders(
    State(app): State<App>,
    AdminUser(admin): AdminUser,
    Query(q): Query<ListQuery>,
) -> Response {
    let tenant_id = &admin.user.tenant_id;
    let Some((page, user_id)) = listing(&app, tenant_id, &q).await else {
        return empty("orders", q.page(20));
    };
    let query = OrderListQuery {
        tenant_id: tenant_id.clone(),
        account_id: user_id.map(|id| AccountRef::user(tenant_id, &id).id),
        status: filter(&q.status),
        offset: page.2,
        limit: page.1,
    };
    let found = app
        .store
        .photo_orders(query)
        .await
        .map(|(found, total)| (found.iter().map(order_row).collect(), total));
    match found {
        Ok(found) => with_names(&app, tenant_id, "orders", page, found).await,
        Err(e) => store_failure(e),
    }
}

/// An order as the admin list shows it, and its owner's id.
fn order_row(o: &Order) -> (Value, String) {
    let row = json!({
        "order_id": o.order_no,
        "order_no": o.order_no,
        "package_id": o.package_id,
        "credits": o.credits,
        "amount": yuan(o.amount_cents),
        "payment_method": o.payment_method,
        "status": o.status,
        "created_at": format_millis(o.created_at),
        "paid_at": o.paid_at.map(format_millis),
    });
    let owner = o.account_id.strip_prefix("user:").unwrap_or_default();
    (row, owner.to_owned())
}

/// A setting's value as its type reads it; `None` when the text does not parse.
fn typed(entry: &ConfigEntry) -> Option<Value> {
    let text = entry.value.trim();
    match entry.value_type.as_str() {
        "number" => text
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| text.parse::<f64>().ok().map(Value::from)),
        "boolean" => match text {
            "true" | "1" => Some(Value::Bool(true)),
            "false" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        "json" => serde_json::from_str(text).ok(),
        _ => Some(Value::String(entry.value.clone())),
    }
}

pub async fn config(State(app): State<App>, AdminUser(admin): AdminUser) -> Response {
    let entries = match app.store.photo_config_list(&admin.user.tenant_id).await {
        Ok(entries) => entries,
        Err(e) => return store_failure(e),
    };
    let configs: Map<String, Value> = entries
        .iter()
        .map(|e| {
            (
                e.key.clone(),
                typed(e).unwrap_or(Value::String(e.value.clone())),
            )
        })
        .collect();
    let raw: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({"config_key": e.key, "config_value": e.value, "value_type": e.value_type,
                   "description": e.description})
        })
        .collect();
    ok(json!({"configs": configs, "raw": raw}))
}

pub async fn set_config(
    State(app): State<App>,
    AdminUser(admin): AdminUser,
    Path(key): Path<String>,
    JsonBody(body): JsonBody,
) -> Response {
    let value = match body.unwrap_or_default().get("config_value") {
        None | Some(Value::Null) => return photo_error(StatusCode::BAD_REQUEST, "配置值不能为空"),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let tenant_id = &admin.user.tenant_id;
    let entries = match app.store.photo_config_list(tenant_id).await {
        Ok(entries) => entries,
        Err(e) => return store_failure(e),
    };
    let Some(entry) = entries.into_iter().find(|e| e.key == key) else {
        return photo_error(StatusCode::NOT_FOUND, "配置不存在");
    };
    let candidate = ConfigEntry {
        value: value.clone(),
        ..entry
    };
    if typed(&candidate).is_none() {
        let message = format!("配置值必须是 {} 类型", candidate.value_type);
        return photo_invalid(vec![json!({"field": "config_value", "message": message})]);
    }
    match app
        .store
        .photo_config_set(tenant_id, &key, &value, now_millis())
        .await
    {
        Ok(true) => done("配置更新成功"),
        Ok(false) => photo_error(StatusCode::NOT_FOUND, "配置不存在"),
        Err(e) => store_failure(e),
    }
}
