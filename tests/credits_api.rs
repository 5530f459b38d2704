//! The photo contract's credit routes over real HTTP: packages, recharge, orders, balance,
//! records and stats, and the signed payment callback (unsigned, wrongly signed, replayed and
//! twenty at once). The signed-in user comes from a test extractor (the consumer routes'
//! sign-in supplies the real one); everything else is the real server.

mod common;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use easel::api::credits::{CreditsCaller, CreditsTenant};
use easel::app::App;
use easel::base::ledger::{AccountRef, Charge};
use serde_json::{json, Value};

/// `X-Test-User: <tenant id>/<user id>`.
struct TestUser(String, String);

impl FromRequestParts<App> for TestUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &App) -> Result<Self, Response> {
        let value = parts
            .headers
            .get("x-test-user")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once('/'));
        match value {
            Some((t, u)) => Ok(TestUser(t.to_owned(), u.to_owned())),
            None => Err(StatusCode::UNAUTHORIZED.into_response()),
        }
    }
}

impl CreditsCaller for TestUser {
    fn tenant_id(&self) -> &str {
        &self.0
    }
    fn user_id(&self) -> &str {
        &self.1
    }
}

/// The tenant from `X-Test-Tenant`.
struct TestTenant(String);

impl FromRequestParts<App> for TestTenant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &App) -> Result<Self, Response> {
        let tenant = parts
            .headers
            .get("x-test-tenant")
            .and_then(|v| v.to_str().ok());
        tenant
            .map(|t| TestTenant(t.to_owned()))
            .ok_or_else(|| StatusCode::BAD_REQUEST.into_response())
    }
}

impl CreditsTenant for TestTenant {
    fn tenant_id(&self) -> &str {
        &self.0
    }
}

struct Harness {
    app: common::TestApp,
    credits: String,
}

impl Harness {
    async fn start() -> Harness {
        let app = common::spawn_app_with(
            |c| c.auth.admin_token = Some(easel::base::secret::Secret::new("adm".to_owned())),
            common::API_ONLY,
        )
        .await;
        let router =
            easel::api::credits::router::<TestUser, TestTenant>().with_state(app.app.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let credits = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Harness { app, credits }
    }

    fn user(&self, user: &str) -> String {
        format!("{}/{user}", self.app.tenant_id)
    }

    async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        let r = self
            .app
            .http
            .get(format!("{}{path}", self.credits))
            .header("x-test-user", self.user(user))
            .header("x-test-tenant", &self.app.tenant_id)
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, user: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .app
            .http
            .post(format!("{}{path}", self.credits))
            .header("x-test-user", self.user(user))
            .json(&body)
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn notify(&self, body: &str, signature: Option<&str>) -> (u16, Value) {
        let mut request = self
            .app
            .http
            .post(self.app.url("/api/credits/payment/callback"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(sig) = signature {
            request = request.header("x-easel-signature", sig);
        }
        let r = request.send().await.expect("send");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_recharge_and_a_signed_callback_credit_once() {
    let h = Harness::start().await;
    let (status, body) = h.get("u1", "/api/credits/packages").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["packages"][0],
        json!({"package_id": "basic", "name": "基础套餐", "credits": 10, "price": 9.9,
               "original_price": 10.0, "discount": 0.99, "description": "适合尝鲜用户",
               "popular": false})
    );
    assert_eq!(body["data"]["packages"].as_array().map(Vec::len), Some(4));
    let (status, body) = h.post("u1", "/api/credits/recharge", json!({})).await;
    assert_eq!(
        (status, body["message"].clone()),
        (400, json!("请选择充值套餐"))
    );
    assert_eq!(body["success"], false);
    let (status, body) = h
        .post("u1", "/api/credits/recharge", json!({"package_id": "gold"}))
        .await;
    assert_eq!(
        (status, body["message"].clone()),
        (400, json!("套餐不存在"))
    );
    let (status, body) = h
        .post(
            "u1",
            "/api/credits/recharge",
            json!({"package_id": "standard"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "订单创建成功");
    let data = &body["data"];
    assert_eq!(
        (data["amount"].clone(), data["credits"].clone()),
        (json!(39.9), json!(50))
    );
    assert_eq!(data["payment_method"], "wechat");
    let order_no = data["order_no"].as_str().expect("order_no").to_owned();
    assert!(order_no.starts_with("ORDER"));
    let (status, body) = h
        .get("u1", &format!("/api/credits/orders/{order_no}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            body["data"]["order"]["status"].clone(),
            body["data"]["order"]["amount"].clone()
        ),
        (json!("pending"), json!("39.90"))
    );
    let (status, _) = h
        .get("u2", &format!("/api/credits/orders/{order_no}"))
        .await;
    assert_eq!(status, 404, "another user's order is not found");

    let notice = format!(r#"{{"order_no":"{order_no}"}}"#);
    // No payment secret yet: nothing can be verified.
    assert_eq!(h.notify(&notice, Some("sha256=00")).await.0, 403);
    let secret: Value = h
        .app
        .http
        .post(h.app.url(&format!(
            "/admin/v1/tenants/{}/payment-secret",
            h.app.tenant_id
        )))
        .bearer_auth("adm")
        .send()
        .await
        .expect("secret")
        .json()
        .await
        .expect("json");
    let secret = secret["secret"].as_str().expect("secret").to_owned();
    let signed = easel::ledger::payments::sign(secret.as_bytes(), notice.as_bytes());
    let wrong = easel::ledger::payments::sign(b"not the secret", notice.as_bytes());
    assert_eq!(h.notify(&notice, None).await.0, 401);
    assert_eq!(h.notify(&notice, Some(&wrong)).await.0, 401);
    assert_eq!(h.notify("not json", Some(&signed)).await.0, 401);
    let (_, balance) = h.get("u1", "/api/credits/balance").await;
    assert_eq!(
        balance["data"]["credits"], 0,
        "refused notices change nothing"
    );
    // The same notice twenty times at once: credited once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (http, url, notice, signed) = (
            h.app.http.clone(),
            h.app.url("/api/credits/payment/callback"),
            notice.clone(),
            signed.clone(),
        );
        tasks.spawn(async move {
            http.post(url)
                .header("content-type", "application/json")
                .header("x-easel-signature", signed)
                .body(notice)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.expect("task"));
    }
    statuses.sort();
    assert_eq!(statuses, [vec![200], vec![404; 19]].concat());
    let (status, body) = h.notify(&notice, Some(&signed)).await;
    assert_eq!(
        (status, body["message"].clone()),
        (404, json!("订单不存在或已处理"))
    );
    let (_, balance) = h.get("u1", "/api/credits/balance").await;
    assert_eq!(
        balance["data"],
        json!({"credits": 50, "total_credits": 50, "total_consumed_credits": 0})
    );
    let (_, orders) = h.get("u1", "/api/credits/orders?status=paid").await;
    assert_eq!(orders["data"]["pagination"]["total"], 1);
    assert!(h
        .app
        .app
        .store
        .ledger_check()
        .await
        .expect("check")
        .is_empty());
    h.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_stats_follow_jobs_and_gifts() {
    let h = Harness::start().await;
    let store = h.app.app.store.clone();
    let account = AccountRef::user(&h.app.tenant_id, "u1");
    let gift = easel::ledger::Adjustment {
        account: account.clone(),
        amount: 5,
        gift: true,
        reason: "管理员调整".into(),
        actor: "admin_1".into(),
        idem_key: None,
    };
    easel::ledger::adjust(store.as_ref(), gift)
        .await
        .expect("gift");
    // Two paid jobs: one canceled (released), one left running (held).
    let mut ids = Vec::new();
    for _ in 0..2 {
        let now = easel::base::clock::now_millis();
        let job = easel::base::job::NewJob {
            id: easel::base::job::new_job_id(),
            tenant_id: h.app.tenant_id.clone(),
            prompt: "a portrait".into(),
            mode: easel::base::job::Mode::Draft,
            input_image_url: None,
            params: Default::default(),
            provider: "local".into(),
            max_attempts: 1,
            created_at: now,
            cancel_at: None,
            deadline_at: now + 3_600_000,
            idempotency: None,
            webhook_url: None,
            charge: Some(Charge {
                account: account.clone(),
                amount: 2,
            }),
            follow_up: None,
        };
        ids.push(job.id.clone());
        store.job_submit(job).await.expect("submit");
    }
    store
        .job_cancel(&h.app.tenant_id, &ids[0])
        .await
        .expect("cancel");
    let (status, body) = h.get("u1", "/api/credits/records?page=1&pageSize=2").await;
    assert_eq!(status, 200);
    let records = body["data"]["records"].as_array().expect("records");
    assert_eq!(
        body["data"]["pagination"],
        json!({"page": 1, "pageSize": 2, "total": 4, "totalPages": 2})
    );
    // Newest first: the cancel's release, then the second job's hold.
    assert_eq!(records[0]["type"], "refund");
    assert_eq!(records[0]["related_id"], json!(ids[0]));
    assert_eq!(
        (records[1]["type"].clone(), records[1]["amount"].clone()),
        (json!("consume"), json!(-2))
    );
    let (_, body) = h.get("u1", "/api/credits/records?type=gift").await;
    assert_eq!(body["data"]["records"][0]["description"], "管理员调整");
    assert_eq!(body["data"]["pagination"]["total"], 1);
    let (status, _) = h.get("u1", "/api/credits/records?type=bogus").await;
    assert_eq!(status, 400);
    let (_, body) = h
        .get(
            "u1",
            "/api/credits/records?startDate=2000-01-01&endDate=2000-01-02",
        )
        .await;
    assert_eq!(body["data"]["pagination"]["total"], 0);
    let (_, stats) = h.get("u1", "/api/credits/stats").await;
    assert_eq!(
        stats["data"],
        json!({"current_balance": 3, "total_recharged": 0, "total_consumed": 2,
               "recharge_count": 0, "consume_count": 2})
    );
    assert!(store.ledger_check().await.expect("check").is_empty());
    h.app.shutdown().await;
}
