//! The photo contract's credit routes (`/api/credits/*`, photo-api.md), in its envelope
//! (`{"success": true, "data": ...}` / `{"success": false, "message": ...}`):
//! `GET balance`, `GET records` (paged; `type`, `startDate`, `endDate`), `GET stats`,
//! `GET packages` (no sign-in), `POST recharge`, `GET orders`, `GET orders/:order_no`, and
//! `POST payment/callback`.
//!
//! Differences from the origin (contract rule 2): balances come from the ledger; a record's
//! `type` is the origin's (`consume` a job's hold or a negative adjustment, `refund` a
//! release, `recharge`, `gift` a gift, a positive adjustment or a reset); a settle (the credits
//! of a finished job, already counted at its hold) is not a record. The payment callback must
//! be signed (HMAC-SHA256 of the raw body with the tenant's payment secret, in
//! `X-Easel-Signature: sha256=<hex>`); an unsigned or wrongly signed one answers 401 and a
//! replay 404, and neither changes anything.
//!
//! Who is calling: the routes that need a signed-in end user take it through the
//! [`CreditsCaller`] extractor the router is built with, and `packages` its tenant through
//! [`CreditsTenant`] (the consumer routes give both: the token's user, the host's tenant).

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::base::clock::format_millis;
use crate::base::ledger::{
    AccountRef, CreditPackage, Entry, EntryKind, EntryQuery, Order, OrderQuery, OrderStatus,
};
use crate::ledger::payments::{
    create_order, handle_notification, HmacVerifier, NotifyError, OrderError, SIGNATURE_HEADER,
};

/// The signed-in end user a credits route serves.
pub trait CreditsCaller {
    fn tenant_id(&self) -> &str;
    fn user_id(&self) -> &str;
}

/// The tenant of a request made before sign-in (`packages`).
pub trait CreditsTenant {
    fn tenant_id(&self) -> &str;
}

/// The routes, with `U` the signed-in user's extractor and `T` the tenant's. The payment
/// callback needs neither and is served by the main router ([`payment_callback`]).
pub fn router<U, T>() -> Router<App>
where
    U: CreditsCaller + FromRequestParts<App, Rejection = Response> + Send + 'static,
    T: CreditsTenant + FromRequestParts<App, Rejection = Response> + Send + 'static,
{
    Router::new()
        .route("/api/credits/balance", get(balance::<U>))
        .route("/api/credits/records", get(records::<U>))
        .route("/api/credits/stats", get(stats::<U>))
        .route("/api/credits/packages", get(packages::<T>))
        .route("/api/credits/recharge", post(recharge::<U>))
        .route("/api/credits/orders", get(orders::<U>))
        .route("/api/credits/orders/{order_no}", get(order::<U>))
}

fn ok(data: Value) -> Response {
    Json(json!({ "success": true, "data": data })).into_response()
}

fn ok_with(message: &str, data: Value) -> Response {
    Json(json!({ "success": true, "message": message, "data": data })).into_response()
}

fn fail(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "success": false, "message": message })),
    )
        .into_response()
}

/// A store failure, in the envelope, never with its detail.
fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "credits route: store unavailable");
    fail(StatusCode::SERVICE_UNAVAILABLE, "服务暂不可用，请稍后再试")
}

fn account_of<U: CreditsCaller>(user: &U) -> AccountRef {
    AccountRef::user(user.tenant_id(), user.user_id())
}

/// The origin's pagination: `page` from 1, `pageSize` 1-100 (default 20).
#[derive(Debug, Deserialize)]
pub struct Paging {
    page: Option<String>,
    #[serde(rename = "pageSize")]
    page_size: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    status: Option<String>,
    #[serde(rename = "startDate")]
    start_date: Option<String>,
    #[serde(rename = "endDate")]
    end_date: Option<String>,
}

impl Paging {
    fn page(&self) -> (u64, u32) {
        let page = self
            .page
            .as_deref()
            .and_then(|p| p.parse::<u64>().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1);
        let size = self
            .page_size
            .as_deref()
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|p| (1..=100).contains(p))
            .unwrap_or(20);
        (page, size)
    }
}

fn pagination(page: u64, size: u32, total: u64) -> Value {
    json!({
        "page": page,
        "pageSize": size,
        "total": total,
        "totalPages": total.div_ceil(u64::from(size)),
    })
}

pub async fn balance<U: CreditsCaller>(State(app): State<App>, user: U) -> Response {
    match app.store.ledger_totals(&account_of(&user).id).await {
        Ok(t) => ok(json!({
            "credits": t.balance,
            "total_credits": t.granted,
            "total_consumed_credits": t.settled + t.held,
        })),
        Err(e) => unavailable(e),
    }
}

pub async fn stats<U: CreditsCaller>(State(app): State<App>, user: U) -> Response {
    match app.store.ledger_totals(&account_of(&user).id).await {
        Ok(t) => ok(json!({
            "current_balance": t.balance,
            "total_recharged": t.recharged,
            "total_consumed": t.settled + t.held,
            "recharge_count": t.recharge_count,
            "consume_count": t.hold_count,
        })),
        Err(e) => unavailable(e),
    }
}

/// The origin's record type of an entry.
fn record_type(e: &Entry) -> &'static str {
    match e.kind {
        EntryKind::Hold => "consume",
        EntryKind::Adjustment if e.amount < 0 => "consume",
        EntryKind::Release | EntryKind::Refund => "refund",
        EntryKind::Recharge => "recharge",
        EntryKind::Gift | EntryKind::Adjustment | EntryKind::Reset | EntryKind::Settle => "gift",
    }
}

/// Ledger kinds shown as records of an origin type (settles are never records).
fn kinds_for(record_type: Option<&str>) -> Option<Vec<EntryKind>> {
    use EntryKind::*;
    Some(match record_type {
        None | Some("") => vec![Hold, Release, Refund, Recharge, Gift, Adjustment, Reset],
        Some("consume") => vec![Hold],
        Some("refund") => vec![Release, Refund],
        Some("recharge") => vec![Recharge],
        Some("gift") => vec![Gift, Adjustment, Reset],
        Some(_) => return None,
    })
}

/// `2026-01-31` (the whole day) or an RFC 3339 time, as epoch milliseconds; `end` moves a
/// bare date to the next midnight, so the day is included.
fn parse_date(raw: &str, end: bool) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Some(t.timestamp_millis());
    }
    let day = chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()?;
    let day = if end { day.succ_opt()? } else { day };
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

fn record_view(user_id: &str, e: &Entry) -> Value {
    json!({
        "record_id": e.id,
        "user_id": user_id,
        "type": record_type(e),
        "amount": e.amount,
        "description": e.reason.clone().unwrap_or_else(|| match e.kind {
            EntryKind::Hold => "任务生成".to_owned(),
            EntryKind::Release => "任务失败退款".to_owned(),
            _ => String::new(),
        }),
        "related_id": e.job_id,
        "created_at": format_millis(e.created_at),
    })
}

pub async fn records<U: CreditsCaller>(
    State(app): State<App>,
    user: U,
    Query(q): Query<Paging>,
) -> Response {
    let Some(kinds) = kinds_for(q.kind.as_deref()) else {
        return fail(StatusCode::BAD_REQUEST, "参数验证失败");
    };
    let date = |raw: &Option<String>, end| match raw.as_deref() {
        None | Some("") => Ok(None),
        Some(d) => parse_date(d, end).map(Some).ok_or(()),
    };
    let (Ok(from), Ok(until)) = (date(&q.start_date, false), date(&q.end_date, true)) else {
        return fail(StatusCode::BAD_REQUEST, "参数验证失败");
    };
    let (page, size) = q.page();
    let query = EntryQuery {
        account_id: account_of(&user).id,
        kinds,
        from,
        until,
        offset: (page - 1).saturating_mul(u64::from(size)),
        limit: size,
    };
    match app.store.ledger_entries(query).await {
        Ok(found) => {
            let rows: Vec<Value> = found
                .items
                .iter()
                .map(|e| record_view(user.user_id(), e))
                .collect();
            ok(json!({ "records": rows, "pagination": pagination(page, size, found.total) }))
        }
        Err(e) => unavailable(e),
    }
}

fn yuan(cents: i64) -> f64 {
    cents as f64 / 100.0
}

fn package_view(p: &CreditPackage) -> Value {
    json!({
        "package_id": p.package_id,
        "name": p.name,
        "credits": p.credits,
        "price": yuan(p.price_cents),
        "original_price": yuan(p.original_cents),
        "discount": p.discount,
        "description": p.description,
        "popular": p.popular,
    })
}

pub async fn packages<T: CreditsTenant>(State(app): State<App>, tenant: T) -> Response {
    match app.store.packages(tenant.tenant_id()).await {
        Ok(found) => {
            let views: Vec<Value> = found.iter().map(package_view).collect();
            ok(json!({ "packages": views }))
        }
        Err(e) => unavailable(e),
    }
}

pub async fn recharge<U: CreditsCaller>(State(app): State<App>, user: U, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(package_id) = body
        .get("package_id")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    else {
        return fail(StatusCode::BAD_REQUEST, "请选择充值套餐");
    };
    let method = body
        .get("payment_method")
        .and_then(Value::as_str)
        .unwrap_or("wechat");
    match create_order(app.store.as_ref(), &account_of(&user), package_id, method).await {
        Ok(order) => ok_with(
            "订单创建成功",
            json!({
                "order_no": order.order_no,
                "amount": yuan(order.amount_cents),
                "credits": order.credits,
                "payment_method": order.payment_method,
                "payment_params": {},
            }),
        ),
        Err(OrderError::UnknownPackage) => fail(StatusCode::BAD_REQUEST, "套餐不存在"),
        Err(OrderError::UnknownMethod) => fail(StatusCode::BAD_REQUEST, "参数验证失败"),
        Err(OrderError::Store(e)) => unavailable(e),
    }
}

/// An order as the origin's row: `amount` is a DECIMAL, so a string (`"39.90"`).
fn order_view(user_id: &str, o: &Order) -> Value {
    json!({
        "order_id": o.order_no,
        "order_no": o.order_no,
        "user_id": user_id,
        "package_id": o.package_id,
        "credits": o.credits,
        "amount": format!("{:.2}", yuan(o.amount_cents)),
        "payment_method": o.payment_method,
        "status": o.status,
        "created_at": format_millis(o.created_at),
        "paid_at": o.paid_at.map(format_millis),
    })
}

pub async fn orders<U: CreditsCaller>(
    State(app): State<App>,
    user: U,
    Query(q): Query<Paging>,
) -> Response {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => match OrderStatus::parse(s) {
            Some(s) => Some(s),
            None => return fail(StatusCode::BAD_REQUEST, "参数验证失败"),
        },
    };
    let (page, size) = q.page();
    let query = OrderQuery {
        account_id: account_of(&user).id,
        status,
        offset: (page - 1).saturating_mul(u64::from(size)),
        limit: size,
    };
    match app.store.order_list(query).await {
        Ok(found) => {
            let rows: Vec<Value> = found
                .items
                .iter()
                .map(|o| order_view(user.user_id(), o))
                .collect();
            ok(json!({ "orders": rows, "pagination": pagination(page, size, found.total) }))
        }
        Err(e) => unavailable(e),
    }
}

pub async fn order<U: CreditsCaller>(
    State(app): State<App>,
    user: U,
    Path(order_no): Path<String>,
) -> Response {
    match app.store.order_get(user.tenant_id(), &order_no).await {
        // Another user's order is as unknown as a missing one.
        Ok(Some(o)) if o.account_id == account_of(&user).id => {
            ok(json!({ "order": order_view(user.user_id(), &o) }))
        }
        Ok(_) => fail(StatusCode::NOT_FOUND, "订单不存在"),
        Err(e) => unavailable(e),
    }
}

/// `POST /api/credits/payment/callback`: a signed notification pays its order, once.
pub async fn payment_callback(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    match handle_notification(
        app.store.as_ref(),
        &app.sealer,
        &HmacVerifier,
        &body,
        signature,
    )
    .await
    {
        Ok(order) => {
            tracing::info!(order = %order.order_no, credits = order.credits, "order paid");
            Json(json!({ "success": true, "message": "支付成功" })).into_response()
        }
        Err(NotifyError::Store(e)) => unavailable(e),
        Err(NotifyError::NotPayable) => {
            tracing::warn!("payment notification for an unknown or already paid order");
            fail(StatusCode::NOT_FOUND, "订单不存在或已处理")
        }
        Err(NotifyError::NotConfigured) => {
            tracing::warn!("payment notification for a tenant without a payment secret");
            fail(StatusCode::FORBIDDEN, "支付未配置")
        }
        Err(NotifyError::Refused(why)) => {
            tracing::warn!(reason = %why, "payment notification refused");
            fail(StatusCode::UNAUTHORIZED, "签名无效")
        }
    }
}
