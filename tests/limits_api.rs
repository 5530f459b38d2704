//! Tenant limits over HTTP: 429 with `Retry-After` and the IETF headers, and limits changed at
//! run time through the admin API and the CLI.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn over_the_rate_is_429_with_headers_and_limits_change_at_run_time() {
    let app = common::spawn_app_with(
        |c| c.auth.admin_token = Some(easel::base::secret::Secret::new("admin-secret")),
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
    let changed = admin(&format!("/admin/v1/tenants/{tenant_id}"))
        .bearer_auth("admin-secret")
        .json(&json!({"rpmLimit": 6000}))
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_easel"))
        .args([
            "--data-dir",
            app.dir.path().to_str().expect("path"),
            "set-tenant-limits",
            &tenant_id,
            "20",
            "1",
        ])
        .output()
        .expect("run");
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
