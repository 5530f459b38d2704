//! Tenant limits over HTTP: 429 with `Retry-After` and the IETF headers, and limits changed at
//! run time through the admin API and the CLI.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::header;

#[tokio::test]
async fn over_the_rate_is_429_with_headers_and_limits_change_at_run_time() {
    let app = common::spawn_app_with(
        |c| {
            c.auth.admin_token = Some(easel::base::secret::Secret::new("admin-secret"));
            // One submit at a time, so the second is over the rate.
            c.limits.tenant_burst = 1;
        },
        easel::server::Roles {
            api: true,
            worker: false,
        },
    )
    .await;
    let (tenant_id, key) = app.new_tenant("slow", 20, 2).await;

    let first = app.submit_as(&key, json!({"prompt": "a"}), None).await;
    assert_eq!(first.status(), 202);
    assert_eq!(header(&first, "ratelimit-policy"), "\"tenant\";q=20;w=60");
    assert!(
        header(&first, "ratelimit").starts_with("\"tenant\";r=0;t="),
        "{}",
        header(&first, "ratelimit")
    );

    let refused = app
        .submit_as(&key, json!({"prompt": "b"}), Some("k-1"))
        .await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = header(&refused, "retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=3).contains(&retry), "retry-after {retry}");
    assert_eq!(header(&refused, "ratelimit-policy"), "\"tenant\";q=20;w=60");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "RATE_LIMIT_EXCEEDED");

    // Admin API: wrong token, then raise the limit; it applies at once in this process.
    let admin = |path: &str| app.http.patch(app.url(path));
    let wrong = admin(&format!("/admin/v1/tenants/{tenant_id}"))
        .bearer_auth("nope")
        .json(&json!({"rpmLimit": 6000}))
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);
    // With room for a burst (the 1/20 of a minute it had before bursts were per tenant): the
    // drained bucket of the old rate must not hold back the next submit.
    let changed = admin(&format!("/admin/v1/tenants/{tenant_id}"))
        .bearer_auth("admin-secret")
        .json(&json!({"rpmLimit": 6000, "burst": 300}))
        .send()
        .await
        .expect("send");
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.expect("json");
    assert_eq!(changed["rpmLimit"], 6000);
    assert_eq!(changed["concurrencyLimit"], 2);

    // The refused request did not consume its idempotency key.
    let later = app
        .submit_as(&key, json!({"prompt": "b"}), Some("k-1"))
        .await;
    assert_eq!(later.status(), 202);
    assert!(later.headers().get("idempotent-replayed").is_none());
    assert_eq!(header(&later, "ratelimit-policy"), "\"tenant\";q=6000;w=60");

    let bad = admin(&format!("/admin/v1/tenants/{tenant_id}"))
        .bearer_auth("admin-secret")
        .json(&json!({"rpmLimit": 0}))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 400);
    let missing = admin("/admin/v1/tenants/ten_nope")
        .bearer_auth("admin-secret")
        .json(&json!({"rpmLimit": 5}))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);

    // The CLI changes limits too (another process, same database); the server sees it after
    // its auth cache entry expires.
    let out = app.cli(&["set-tenant-limits", &tenant_id, "20", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tenants: Value = app
        .http
        .get(app.url("/admin/v1/tenants"))
        .bearer_auth("admin-secret")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let row = tenants["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["id"] == tenant_id.as_str())
        .cloned()
        .expect("tenant");
    assert_eq!(
        (row["rpmLimit"].as_u64(), row["concurrencyLimit"].as_u64()),
        (Some(20), Some(1))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.submit_as(&key, json!({"prompt": "c"}), None).await;
        if header(&r, "ratelimit-policy") == "\"tenant\";q=20;w=60" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI change never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn admin_api_is_off_without_a_token() {
    let app = common::spawn_app().await;
    let r = app
        .http
        .get(app.url("/admin/v1/tenants"))
        .bearer_auth("x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    app.shutdown().await;
}

fn admin_app_config(c: &mut easel::config::Config) {
    c.auth.admin_token = Some(easel::base::secret::Secret::new("admin-secret"));
}

/// A retried submit (a seen `Idempotency-Key`) gets its job back whatever the rate; only new
/// work spends the rate, and a different body under the key is still 422.
#[tokio::test]
async fn a_replay_is_answered_even_over_the_rate() {
    let app = common::spawn_app_with(admin_app_config, common::API_ONLY).await;
    // 2 a minute: a burst of 1.
    let (_, key) = app.new_tenant("tight", 2, 1).await;
    let first = app
        .submit_as(&key, json!({"prompt": "a"}), Some("order-1"))
        .await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    let new_work = app.submit_as(&key, json!({"prompt": "b"}), None).await;
    assert_eq!(new_work.status(), 429);
    for _ in 0..3 {
        let replay = app
            .submit_as(&key, json!({"prompt": "a"}), Some("order-1"))
            .await;
        assert_eq!(replay.status(), 202);
        assert_eq!(header(&replay, "idempotent-replayed"), "true");
        let body: Value = replay.json().await.expect("json");
        assert_eq!(body["jobId"], first["jobId"]);
        assert_eq!(body["status"], "QUEUED");
    }
    let reused = app
        .submit_as(&key, json!({"prompt": "other"}), Some("order-1"))
        .await;
    common::expect_error(reused, 422, "IDEMPOTENCY_KEY_REUSED").await;
    // A new key is new work: still over the rate.
    let fresh = app
        .submit_as(&key, json!({"prompt": "a"}), Some("order-2"))
        .await;
    assert_eq!(fresh.status(), 429);
    app.shutdown().await;
}

/// A person clicking "Execute" a few times in a second is not refused: the default burst is
/// 10 at 60 RPM. Each tenant's burst can be set through the admin API (and back to the
/// default with `null`).
#[tokio::test]
async fn the_default_burst_is_ten_and_each_tenant_can_have_its_own() {
    let app = common::spawn_app_with(admin_app_config, common::API_ONLY).await;
    let (tenant_id, key) = app.new_tenant("clicker", 60, 5).await;
    for i in 0..10 {
        let r = app
            .submit_as(&key, json!({"prompt": format!("click {i}")}), None)
            .await;
        assert_eq!(r.status(), 202, "click {i}");
    }
    let over = app
        .submit_as(&key, json!({"prompt": "one more"}), None)
        .await;
    assert_eq!(over.status(), 429);

    let patch = |body: Value| {
        app.http
            .patch(app.url(&format!("/admin/v1/tenants/{tenant_id}")))
            .bearer_auth("admin-secret")
            .json(&body)
            .send()
    };
    let view: Value = patch(json!({}))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (view["burst"].as_u64(), view["burstIsDefault"].as_bool()),
        (Some(10), Some(true))
    );
    let view: Value = patch(json!({"burst": 3}))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (view["burst"].as_u64(), view["burstIsDefault"].as_bool()),
        (Some(3), Some(false))
    );
    assert_eq!(view["rpmLimit"], 60);
    let view: Value = patch(json!({"rpmLimit": 30}))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (view["burst"].as_u64(), view["rpmLimit"].as_u64()),
        (Some(3), Some(30))
    );
    let bad = patch(json!({"burst": 0})).await.expect("send");
    common::expect_error(bad, 400, "INVALID_REQUEST").await;
    let view: Value = patch(json!({"burst": null}))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (view["burst"].as_u64(), view["burstIsDefault"].as_bool()),
        (Some(10), Some(true))
    );

    // A new tenant with a burst of its own, from the admin API.
    let created: Value = app
        .http
        .post(app.url("/admin/v1/tenants"))
        .bearer_auth("admin-secret")
        .json(&json!({"name": "bursty", "rpmLimit": 100, "burst": 4}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(created["tenant"]["burst"], 4);
    let bursty = created["apiKey"].as_str().expect("key").to_owned();
    for i in 0..4 {
        let r = app
            .submit_as(&bursty, json!({"prompt": format!("b {i}")}), None)
            .await;
        assert_eq!(r.status(), 202, "b {i}");
    }
    let over = app.submit_as(&bursty, json!({"prompt": "b 5"}), None).await;
    assert_eq!(over.status(), 429);

    // The CLI sets it too.
    let out = app.cli(&["set-tenant-limits", &tenant_id, "60", "5", "--burst", "7"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rpm=60 concurrency=5 burst=7"), "{stdout}");
    let tenant = app
        .app
        .store
        .tenant_get(&tenant_id)
        .await
        .expect("get")
        .expect("tenant");
    assert_eq!(tenant.burst, Some(7));
    app.shutdown().await;
}
