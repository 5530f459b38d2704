//! The ledger's admin API (`/admin/v1/...`, behind the admin token like the rest of it): a
//! tenant's billing (prepaid on or off, the payment secret), prices, credit packages, balances,
//! adjustments and gifts, order confirmation, and the ledger check.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::admin::Admin;
use super::extract::JsonObject;
use crate::app::App;
use crate::base::clock::now_millis;
use crate::base::ledger::{CreditPackage, Entry, PayOutcome, PriceRule, ANY};
use crate::error::{ApiError, ErrorCode};
use crate::ledger::{adjust, parse_account, AdjustError, Adjustment};

async fn known_tenant(app: &App, tenant_id: &str) -> Result<(), ApiError> {
    match app.store.tenant_get(tenant_id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::new(ErrorCode::NotFound, "no such tenant")),
    }
}

fn string_field(body: &Map<String, Value>, field: &str, max: usize) -> Result<String, ApiError> {
    match body.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => {
            Ok(s.trim().to_owned())
        }
        _ => Err(ApiError::invalid(format!(
            "{field} must be a string of 1-{max} characters"
        ))),
    }
}

fn int_field(body: &Map<String, Value>, field: &str) -> Result<i64, ApiError> {
    body.get(field)
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::invalid(format!("{field} must be an integer")))
}

/// `GET /admin/v1/tenants/{id}/billing`.
pub async fn get_billing(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
) -> Result<Response, ApiError> {
    known_tenant(&app, &tenant_id).await?;
    let billing = app.store.billing_get(&tenant_id).await?;
    Ok(Json(json!({
        "tenantId": tenant_id,
        "prepaid": billing.prepaid,
        "paymentSecretSet": billing.payment_secret.is_some(),
    }))
    .into_response())
}

/// `PUT /admin/v1/tenants/{id}/billing` with `{"prepaid": bool}`.
pub async fn put_billing(
    admin: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    known_tenant(&app, &tenant_id).await?;
    let prepaid = body
        .get("prepaid")
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::invalid("prepaid must be true or false"))?;
    app.store.billing_set_prepaid(&tenant_id, prepaid).await?;
    app.pricing.forget(&tenant_id);
    get_billing(admin, State(app), Path(tenant_id)).await
}

/// `POST /admin/v1/tenants/{id}/payment-secret`: a new secret for payment notifications,
/// returned once.
pub async fn new_payment_secret(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
) -> Result<Response, ApiError> {
    known_tenant(&app, &tenant_id).await?;
    let bytes: [u8; 32] = rand::random();
    let secret = hex::encode(bytes);
    app.store
        .billing_set_payment_secret(&tenant_id, app.sealer.seal(&secret))
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "secret": secret }))).into_response())
}

/// `GET /admin/v1/tenants/{id}/prices`: the tenant's rules (without one, 1 credit per image).
pub async fn list_prices(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
) -> Result<Response, ApiError> {
    known_tenant(&app, &tenant_id).await?;
    let rules = app.store.price_rules(&tenant_id).await?;
    Ok(Json(json!({ "prices": rules, "defaultCreditsPerImage": 1 })).into_response())
}

fn rule_key(body: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(ANY.to_owned()),
        Some(_) => string_field(body, field, 64),
    }
}

/// `PUT /admin/v1/tenants/{id}/prices` with `{"operation", "mode", "provider", "credits"}`
/// (a missing field is `*`, any).
pub async fn put_price(
    admin: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    known_tenant(&app, &tenant_id).await?;
    let credits = int_field(&body, "credits")?;
    if credits < 0 {
        return Err(ApiError::invalid("credits must not be negative"));
    }
    let rule = PriceRule {
        operation: rule_key(&body, "operation")?,
        mode: rule_key(&body, "mode")?,
        provider: rule_key(&body, "provider")?,
        credits,
    };
    app.store.price_set(&tenant_id, rule).await?;
    app.pricing.forget(&tenant_id);
    list_prices(admin, State(app), Path(tenant_id)).await
}

#[derive(Deserialize)]
pub struct RuleQuery {
    operation: Option<String>,
    mode: Option<String>,
    provider: Option<String>,
}

/// `DELETE /admin/v1/tenants/{id}/prices?operation=&mode=&provider=` (missing: `*`).
pub async fn delete_price(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    Query(q): Query<RuleQuery>,
) -> Result<Response, ApiError> {
    known_tenant(&app, &tenant_id).await?;
    let any = |v: Option<String>| v.unwrap_or_else(|| ANY.to_owned());
    let deleted = app
        .store
        .price_delete(
            &tenant_id,
            &any(q.operation),
            &any(q.mode),
            &any(q.provider),
        )
        .await?;
    app.pricing.forget(&tenant_id);
    if !deleted {
        return Err(ApiError::new(ErrorCode::NotFound, "no such price rule"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn package_view(p: &CreditPackage) -> Value {
    json!({
        "package_id": p.package_id,
        "name": p.name,
        "credits": p.credits,
        "price": p.price_cents as f64 / 100.0,
        "original_price": p.original_cents as f64 / 100.0,
        "discount": p.discount,
        "description": p.description,
        "popular": p.popular,
        "sort_order": p.sort_order,
    })
}

/// A tenant id, or `*` for the defaults every tenant without packages of its own sees.
async fn package_owner(app: &App, tenant_id: &str) -> Result<(), ApiError> {
    if tenant_id == ANY {
        return Ok(());
    }
    known_tenant(app, tenant_id).await
}

/// `GET /admin/v1/tenants/{id}/packages` (`*`: the defaults).
pub async fn list_packages(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
) -> Result<Response, ApiError> {
    package_owner(&app, &tenant_id).await?;
    let packages = app.store.packages(&tenant_id).await?;
    let views: Vec<Value> = packages.iter().map(package_view).collect();
    Ok(Json(json!({ "packages": views })).into_response())
}

fn cents(body: &Map<String, Value>, field: &str) -> Result<Option<i64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(yuan) if (0.0..=1e9).contains(&yuan) => Ok(Some((yuan * 100.0).round() as i64)),
            _ => Err(ApiError::invalid(format!(
                "{field} must be a number between 0 and 1e9"
            ))),
        },
    }
}

/// `PUT /admin/v1/tenants/{id}/packages/{package_id}` with `{"name", "credits", "price",
/// "original_price"?, "description"?, "popular"?, "sort_order"?}`.
pub async fn put_package(
    admin: Admin,
    State(app): State<App>,
    Path((tenant_id, package_id)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    package_owner(&app, &tenant_id).await?;
    if package_id.is_empty() || package_id.len() > 64 {
        return Err(ApiError::invalid("package_id must be 1-64 characters"));
    }
    let credits = int_field(&body, "credits")?;
    if credits <= 0 {
        return Err(ApiError::invalid("credits must be at least 1"));
    }
    let price_cents =
        cents(&body, "price")?.ok_or_else(|| ApiError::invalid("price is required"))?;
    let original_cents = cents(&body, "original_price")?.unwrap_or(price_cents);
    let discount = match original_cents {
        0 => 1.0,
        o => (price_cents as f64 / o as f64 * 100.0).round() / 100.0,
    };
    let description = match body.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(_) => string_field(&body, "description", 200)?,
    };
    let package = CreditPackage {
        package_id,
        name: string_field(&body, "name", 100)?,
        credits,
        price_cents,
        original_cents,
        discount,
        description,
        popular: body
            .get("popular")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        sort_order: body.get("sort_order").and_then(Value::as_i64).unwrap_or(0),
    };
    app.store.package_set(&tenant_id, package).await?;
    list_packages(admin, State(app), Path(tenant_id)).await
}

/// `DELETE /admin/v1/tenants/{id}/packages/{package_id}`.
pub async fn delete_package(
    _: Admin,
    State(app): State<App>,
    Path((tenant_id, package_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    package_owner(&app, &tenant_id).await?;
    if !app.store.package_delete(&tenant_id, &package_id).await? {
        return Err(ApiError::new(ErrorCode::NotFound, "no such package"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct AccountQuery {
    account: Option<String>,
}

fn account_of(
    tenant_id: &str,
    name: Option<&str>,
) -> Result<crate::base::ledger::AccountRef, ApiError> {
    parse_account(tenant_id, name.unwrap_or("tenant")).ok_or_else(|| {
        ApiError::invalid("account must be `tenant`, `user:<id>` or `key:<api key id>`")
    })
}

/// `GET /admin/v1/tenants/{id}/credits?account=tenant|user:<id>|key:<id>`.
pub async fn get_credits(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    Query(q): Query<AccountQuery>,
) -> Result<Response, ApiError> {
    known_tenant(&app, &tenant_id).await?;
    let account = account_of(&tenant_id, q.account.as_deref())?;
    let t = app.store.ledger_totals(&account.id).await?;
    Ok(Json(json!({
        "account": account.id,
        "balance": t.balance,
        "held": t.held,
        "granted": t.granted,
        "settled": t.settled,
    }))
    .into_response())
}

fn entry_view(e: &Entry) -> Value {
    json!({
        "id": e.id,
        "account": e.account_id,
        "kind": e.kind,
        "amount": e.amount,
        "reason": e.reason,
        "actor": e.actor,
        "createdAt": crate::base::clock::format_millis(e.created_at),
    })
}

/// `POST /admin/v1/tenants/{id}/credits` with `{"account", "amount", "reason", "gift"?,
/// "adminId"?, "idempotencyKey"?}`: an `adjustment` (or `gift`) entry with its reason and the
/// admin's id.
pub async fn post_credits(
    _: Admin,
    State(app): State<App>,
    Path(tenant_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    known_tenant(&app, &tenant_id).await?;
    let account = account_of(&tenant_id, body.get("account").and_then(Value::as_str))?;
    let optional = |field: &str| -> Result<Option<String>, ApiError> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => string_field(&body, field, 128).map(Some),
        }
    };
    let adjustment = Adjustment {
        account,
        amount: int_field(&body, "amount")?,
        gift: body.get("gift").and_then(Value::as_bool).unwrap_or(false),
        reason: string_field(&body, "reason", 500)?,
        actor: optional("adminId")?.unwrap_or_else(|| "admin-api".into()),
        idem_key: optional("idempotencyKey")?,
    };
    match adjust(app.store.as_ref(), adjustment).await {
        Ok(entry) => Ok((StatusCode::CREATED, Json(entry_view(&entry))).into_response()),
        Err(AdjustError::Invalid(why)) => Err(ApiError::invalid(why)),
        Err(e @ AdjustError::Insufficient { .. }) => {
            Err(ApiError::new(ErrorCode::InsufficientCredits, e.to_string()))
        }
        Err(AdjustError::Store(e)) => Err(e.into()),
    }
}

/// `POST /admin/v1/tenants/{id}/orders/{order_no}/confirm`: pays a pending order (once).
pub async fn confirm_order(
    _: Admin,
    State(app): State<App>,
    Path((tenant_id, order_no)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    match app
        .store
        .order_pay(&tenant_id, &order_no, "admin-api", now_millis())
        .await?
    {
        PayOutcome::Paid(order) => Ok(Json(json!({
            "orderNo": order.order_no,
            "status": "paid",
            "credits": order.credits,
        }))
        .into_response()),
        PayOutcome::AlreadyPaid => Err(ApiError::new(
            ErrorCode::InvalidState,
            "the order was already paid",
        )),
        PayOutcome::NotFound => Err(ApiError::new(ErrorCode::NotFound, "no such order")),
    }
}

/// `GET /admin/v1/ledger/check`: the differences between cached and derived balances and
/// holds (none: `{"differences": []}`).
pub async fn check(_: Admin, State(app): State<App>) -> Result<Response, ApiError> {
    let found = crate::ledger::check(app.store.as_ref()).await?;
    let lines: Vec<String> = found.iter().map(ToString::to_string).collect();
    Ok(Json(json!({ "differences": lines })).into_response())
}
